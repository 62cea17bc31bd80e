"""multi_margin_loss: the multi-class hinge loss, exactly as
``torch.nn.functional.multi_margin_loss``.

In row form (class axis last) each sample ``r`` with logits ``x`` ``(C)`` and target
class ``y`` gives ``l_r = (w_y / C) sum_{c != y} h(d_c)`` with the margin violation
``d_c = margin - x_y + x_c`` and ``h(d) = max(0, d)^p`` (p = 1 or 2). As torch, a
term counts only where ``d_c > 0``: at ``d_c = 0`` its derivative is taken as 0.
The reduction divides by the number of samples (``mean``), or not (``sum``).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UsageError
from ..core.options import Reduction
from ..core.rowform import RowKernel, RowLayout
from .base import ArrayArg, ArrayKind, Function, Param, Structure
from .losses import class_axis, pick


class MultiMarginLoss(Function):
    name = "multi_margin_loss"
    summary = "multi-class hinge loss of scores at class indices (torch.nn.functional.multi_margin_loss)"
    structure = Structure.BLOCKS
    arrays = (
        ArrayArg("input", "scores of shape (C) or (N, C)", required=True),
        ArrayArg("target", "class indices: integers of shape () or (N)", required=True, kind=ArrayKind.INDEX),
        ArrayArg("class_weight", "a weight per class, shape (C,)"),
    )
    params = (
        Param("p", 1, "the exponent of the hinge: 1 or 2"),
        Param("margin", 1.0, "how far the target's score must lead the others", kind=float),
        Param("reduction", Reduction.MEAN, "mean | sum | none, as torch", kind=Reduction,
              choices=(Reduction.MEAN, Reduction.SUM, Reduction.NONE)),
    )
    formulas = (
        "x = scores of a sample (C classes), y = its target, w_y = class weight of y (1 if not given)",
        "d_c = margin - x_y + x_c;  l = (w_y / C) sum_{c != y, d_c > 0} d_c^p",
        "dl/dx_c = (w_y / C) p d_c^(p-1) for c != y with d_c > 0, else 0;  dl/dx_y = -sum_{c != y} dl/dx_c",
        "mean: divide by the number of samples N; sum: no division; none: one loss per sample",
    )
    second_formulas = (
        "p = 1: d2 l / dx dx = 0 (piecewise linear)",
        "p = 2: d2 l / dx dx = (2 w_y / C) sum_{c != y, d_c > 0} (e_c - e_y)(e_c - e_y)^T per sample",
    )

    def check(self, args, params):
        x = args["input"]
        if x.ndim not in (1, 2):
            raise UsageError(f"--input: {self.name} needs scores of shape (C) or (N, C), as torch; got "
                             f"{list(x.shape)}")
        if params["p"] not in (1, 2):
            raise UsageError(f"--p: {params['p']} is not supported; torch's multi_margin_loss takes p = 1 or 2")
        n_classes = x.shape[-1]
        t = args["target"]
        if t.shape != x.shape[:-1]:
            raise UsageError(f"--target: class indices of shape {list(t.shape)} do not match --input "
                             f"{list(x.shape)}; give shape {list(x.shape[:-1])}")
        bad = (t < 0) | (t >= n_classes)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0]) if t.ndim else ()
            raise UsageError(f"--target: class index {int(t[index])} at {list(index)} is out of range for "
                             f"{n_classes} classes; use 0..{n_classes - 1}")
        w = args.get("class_weight")
        if w is not None and w.shape != (n_classes,):
            raise UsageError(f"--class-weight: shape {list(w.shape)} does not match the {n_classes} classes of "
                             f"--input; give shape [{n_classes}]")
        return []

    def output_shape(self, args, params):
        return args["input"].shape[:-1] if params["reduction"] is Reduction.NONE else ()

    def row_layout(self, args, params, wrt, axis=None):
        x = args[wrt]
        return RowLayout(x.shape, class_axis(x.ndim), None, 1, reduced=params["reduction"] is not Reduction.NONE)

    def kinks(self, args, params):
        """p = 1: where a violation is exactly 0, the hinge's one-sided slopes differ at the
        entries ``x_c`` and ``x_y`` (torch takes 0); p = 2 is differentiable there."""
        if params["p"] != 1:
            return None
        x, y = args["input"], args["target"]
        d, other = self._violations(x, y, params["margin"])
        at = (d == 0) & other
        mask = at.copy()
        np.put_along_axis(mask, y[..., None], at.any(-1, keepdims=True), -1)
        return mask if mask.any() else None

    @staticmethod
    def _violations(x: np.ndarray, y: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
        """``d = margin - x_y + x`` ``(..., *rows, C)`` and the mask of the classes other than ``y``."""
        d = margin - pick(x, y)[..., None] + x
        other = np.ones(d.shape[-len(y.shape) - 1:], dtype=bool)
        np.put_along_axis(other, y[..., None], False, -1)
        return d, other

    def kernel(self, args, params, wrt, axis=None):
        z, y = args["input"], args["target"]
        p, margin = params["p"], params["margin"]
        n_classes = z.shape[-1]
        w = args.get("class_weight")
        scale = (np.ones(y.shape, dtype=z.dtype) if w is None else w[y]) / n_classes  # w_y / C per sample
        reduction = params["reduction"]
        coef = None if reduction is Reduction.NONE else np.full(y.shape, 1.0 / max(y.size, 1) if reduction is
                                                                Reduction.MEAN else 1.0, dtype=z.dtype)

        def forward(x):
            d, other = self._violations(x, y, margin)
            h = np.where((d > 0) & other, d, 0.0) ** p
            return scale * h.sum(-1)

        d0, other0 = self._violations(z, y, margin)
        active = (d0 > 0) & other0  # (*rows, C): the terms that count, torch's d > 0

        def blocks():
            g = np.where(active, p * d0 ** (p - 1), 0.0) * scale[..., None]
            np.put_along_axis(g, y[..., None], -g.sum(-1, keepdims=True), -1)
            return g

        curvature = 2.0 * scale if p == 2 else np.zeros_like(scale)  # d2h/dd2 (w_y / C)

        def hvp(u, t):
            """``u_r (d2 l_r) t_r`` = a_r u_r sum_c m_c (t_c - t_y)(e_c - e_y), without forming d2 l."""
            diff = np.where(active, t - pick(t, y)[..., None], 0.0)
            out = (u * curvature)[..., None] * diff
            np.put_along_axis(out, np.broadcast_to(y[..., None], out.shape[:-1] + (1,)), -out.sum(-1, keepdims=True),
                              -1)
            return out

        return RowKernel(x0=z, forward=forward, blocks=blocks, coef=coef, hvp=hvp)

    def torch_forward(self, args, params):
        import torch.nn.functional as F

        return F.multi_margin_loss(args["input"], args["target"], p=params["p"], margin=params["margin"],
                                   weight=args.get("class_weight"), reduction=params["reduction"].value)
