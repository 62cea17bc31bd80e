"""Classification losses with class-index or probability targets:
cross_entropy and nll_loss, exactly as ``torch.nn.functional``.

In row form (class axis last) each sample ``r`` gives a loss ``l_r``; the
reduction is ``sum_r coef_r l_r`` with ``coef`` fixed by targets and weights:
``mean`` divides by the total weight of the non-ignored targets (class
indices) or by the number of rows (probabilities), as torch does.
"""

from __future__ import annotations

import functools

import numpy as np

from ..core.errors import UsageError
from ..core.options import Reduction
from ..core.rowform import RowKernel, RowLayout
from .base import ArrayArg, ArrayKind, Function, Param, Structure
from .softmax import _softmax_apply, log_softmax_rows, log_softmax_rows_parallel, softmax_blocks, softmax_rows

_REDUCTION = Param("reduction", Reduction.MEAN, "mean | sum | none, as torch", kind=Reduction,
                   choices=(Reduction.MEAN, Reduction.SUM, Reduction.NONE))
_IGNORE = Param("ignore_index", -100, "target value whose rows contribute nothing (class indices only)")
_CLASS_WEIGHT = ArrayArg("class_weight", "a weight per class, shape (C,)")


def pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[..., index]`` per row: ``(..., *rows, C)`` at ``(*rows)`` indices -> ``(..., *rows)``
    (leading stack axes broadcast over the same indices)."""
    return np.take_along_axis(values, np.broadcast_to(index[..., None], values.shape[:-1] + (1,)), -1)[..., 0]


def class_axis(input_ndim: int) -> int:
    """torch's class dim: 0 for an unbatched (C,) input, else 1."""
    return 0 if input_ndim == 1 else 1


def _scatter_rows(values: np.ndarray, index: np.ndarray, n_classes: int, dtype) -> np.ndarray:
    """``(*rows, C)`` zeros with ``values[r]`` at class ``index[r]`` of each row (a weighted one-hot)."""
    out = np.zeros(index.shape + (n_classes,), dtype=dtype)
    np.put_along_axis(out, index[..., None], values[..., None].astype(dtype), -1)
    return out


class _ClassLoss(Function):
    """Shared validation and row structure of cross_entropy and nll_loss."""

    structure = Structure.BLOCKS

    def check(self, args, params):
        x = args["input"]
        if x.ndim == 0:
            raise UsageError(f"--input: {self.name} needs an input of shape (C), (N, C) or (N, C, d1, ...); got a scalar")
        axis = class_axis(x.ndim)
        n_classes = x.shape[axis]
        if params.get("dim") is not None and params["dim"] % x.ndim != axis:
            raise UsageError(f"--dim: {self.name} always uses dim {axis} as the class dim, as torch; drop --dim")
        params["dim"] = axis
        if "class_weight" in args:
            w = args["class_weight"]
            if w.shape != (n_classes,):
                raise UsageError(f"--class-weight: shape {list(w.shape)} does not match the {n_classes} classes of --input; give shape [{n_classes}]")
        t = args["target"]
        if t.dtype.kind == "f":
            return self._check_probabilities(x, t, params)
        rows_shape = x.shape[:axis] + x.shape[axis + 1 :]
        if t.shape != rows_shape:
            raise UsageError(
                f"--target: class indices of shape {list(t.shape)} do not match --input {list(x.shape)}; "
                f"give shape {list(rows_shape)} (the input without its class dim {axis})"
            )
        bad = ((t < 0) | (t >= n_classes)) & (t != params["ignore_index"])
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0]) if t.ndim else ()
            raise UsageError(
                f"--target: class index {int(t[index])} at {list(index)} is out of range for {n_classes} classes; "
                f"use 0..{n_classes - 1} (or --ignore-index {params['ignore_index']} to skip a row)"
            )
        return []

    def _check_probabilities(self, x, t, params):
        raise UsageError(f"--target: {self.name} needs integer class indices; got {t.dtype} values. "
                         'Write them without decimal points, or as {"data": [...], "dtype": "int64"}')

    def output_shape(self, args, params):
        if params["reduction"] is not Reduction.NONE:
            return ()
        x = args["input"]
        return x.shape[: params["dim"]] + x.shape[params["dim"] + 1 :]

    def row_layout(self, args, params, wrt, axis=None):
        shape = args[wrt].shape
        return RowLayout(shape, params["dim"], None, 1, reduced=params["reduction"] is not Reduction.NONE)

    # --- shared pieces of the row-form kernels --------------------------------

    @staticmethod
    def _index_rows(args, params):
        """Row-form targets: safe indices, ignore mask and per-row target weight."""
        y = args["target"]
        ignored = y == params["ignore_index"]
        y_safe = np.where(ignored, 0, y)
        w = args.get("class_weight")
        w_y = (np.ones(y.shape, dtype=args["input"].dtype) if w is None else w[y_safe]) * ~ignored
        return y_safe, ignored, w_y

    @staticmethod
    def _coef(params, rows_shape, dtype, total_weight=None, ignored=None):
        """Reduction weights: ``sum`` -> 1, ``mean`` -> 1 / total weight (torch's
        normaliser); 0 on ignored rows, which contribute nothing.

        A total weight of 0 (every counted target's class weight is 0) makes
        torch's mean 0/0: the value is nan and so is the gradient of every
        counted row (ignored rows keep 0), so the counted rows' coef is nan.
        """
        reduction = params["reduction"]
        if reduction is Reduction.NONE:
            return None
        coef = np.ones(rows_shape, dtype=dtype)
        if reduction is Reduction.MEAN:
            coef *= dtype.type(1 / total_weight) if total_weight else dtype.type(np.nan)
        return coef if ignored is None else np.where(ignored, dtype.type(0), coef)

    @staticmethod
    def _empty_mean(params, ignored) -> bool:
        return params["reduction"] is Reduction.MEAN and bool(ignored.all())

    def notes(self, args, params, wrt):
        notes = []
        if args["target"].dtype.kind in "iu":
            ignored = int((args["target"] == params["ignore_index"]).sum())
            if ignored:
                notes.append(f"{ignored} row(s) have target {params['ignore_index']} (--ignore-index): their loss and gradient are 0")
                if ignored == args["target"].size and params["reduction"] is Reduction.MEAN:
                    notes.append("every target is ignored: the mean divides 0 by 0 and is nan, as in torch")
        return notes


class CrossEntropy(_ClassLoss):
    name = "cross_entropy"
    summary = "cross entropy of logits against class indices or probabilities (torch.nn.functional.cross_entropy)"
    arrays = (
        ArrayArg("input", "logits of shape (C), (N, C) or (N, C, d1, ...)", required=True),
        ArrayArg("target", "class indices (integers, the input's shape without dim 1) or probabilities (floats, the input's shape)",
                 required=True, kind=ArrayKind.INDEX_OR_FLOAT),
        _CLASS_WEIGHT,
    )
    params = (
        Param("dim", None, "fixed by torch: 1, or 0 for an unbatched (C) input"),
        _REDUCTION,
        _IGNORE,
        Param("label_smoothing", 0.0, "eps in [0, 1]: mixes the target with the uniform distribution", kind=float),
    )
    formulas = (
        "s = softmax(z) over the class dim; y = target; w = class weight (1 if not given); eps = label smoothing; C classes",
        "class indices: l = (1 - eps) w_y (-log s_y) + (eps / C) sum_c w_c (-log s_c)",
        "  dl/dz = (1 - eps) w_y (s - onehot(y)) + (eps / C) (sum_c w_c s - w)",
        "probabilities: t = (1 - eps) y + eps / C; l = -sum_c w_c t_c log s_c",
        "  dl/dz = (sum_c w_c t_c) s - w t;  dl/dy = -(1 - eps) w log s",
        "mean: divide by sum of w_y over non-ignored rows (indices) or by the number of rows (probabilities); sum: no division",
        "so with no weights, mean reduction over N rows: dL/dz = (softmax(z) - onehot(y)) / N",
    )
    second_formulas = (
        "d2 l / dz dz = a (diag(s) - s s^T) per row: the softmax Jacobian (story 4) times the row's weight a",
        "  class indices: a = (1 - eps) w_y + (eps / C) sum_c w_c (0 on an ignored row);  probabilities: a = sum_c w_c t_c",
        "  reduced: block r of the Hessian of the one number is coef_r a_r (diag(s_r) - s_r s_r^T), coef_r as above "
        "(1, or 1 / the mean's divisor)",
        "  positive semi-definite; the all-ones vector is in its null space: shifting every logit of a row by the same "
        "amount changes neither the softmax nor the loss",
        "d2 l / dy dy = 0 (probability targets: the loss is linear in the target)",
    )

    def check(self, args, params):
        if not 0.0 <= params["label_smoothing"] <= 1.0:
            raise UsageError(f"--label-smoothing: {params['label_smoothing']} is outside [0, 1]; use e.g. 0.1")
        return super().check(args, params)

    def _check_probabilities(self, x, t, params):
        if t.shape != x.shape:
            axis = class_axis(x.ndim)
            raise UsageError(
                f"--target: float values are read as class probabilities, which need the input's shape {list(x.shape)}; "
                f"got {list(t.shape)}. For class indices give integers of shape {list(x.shape[:axis] + x.shape[axis + 1:])}"
            )
        if params["ignore_index"] >= 0:
            raise UsageError("--ignore-index: torch does not support ignore_index with probability targets; drop it")
        sums = np.moveaxis(t, class_axis(x.ndim), -1).sum(axis=-1)
        if (t < 0).any() or not np.allclose(sums, 1.0, atol=1e-6):
            return ["--target: probability rows are not all non-negative and summing to 1; torch computes the loss anyway"]
        return []

    def differentiable(self, args):
        return ("input", "target") if args["target"].dtype.kind == "f" else ("input",)

    def kernel(self, args, params, wrt, axis=None):
        axis, eps = params["dim"], params["label_smoothing"]
        z = np.moveaxis(args["input"], axis, -1)
        n_classes = z.shape[-1]
        dtype = z.dtype
        w = args.get("class_weight")
        w_c = np.ones(n_classes, dtype=dtype) if w is None else w
        if args["target"].dtype.kind == "f":
            y = np.moveaxis(args["target"], axis, -1)
            coef = self._coef(params, z.shape[:-1], dtype, total_weight=int(np.prod(z.shape[:-1])))
            if wrt == "target":
                logp0 = log_softmax_rows(z)
                return RowKernel(
                    x0=y,
                    forward=lambda t: -(logp0 * ((1 - eps) * t + eps / n_classes) * w_c).sum(-1),
                    blocks=lambda: -(1 - eps) * w_c * logp0,
                    coef=coef,
                    hvp=_zero_hvp,
                )
            t = (1 - eps) * y + eps / n_classes
            wt = w_c * t

            def blocks():
                return wt.sum(-1, keepdims=True) * softmax_rows(z) - wt

            return RowKernel(x0=z, forward=lambda x: -(log_softmax_rows(x) * wt).sum(-1), blocks=blocks, coef=coef,
                             **_softmax_curvature(z, wt.sum(-1)))

        y_safe, ignored, w_y = self._index_rows(args, params)
        keep = (~ignored).astype(dtype)
        coef = self._coef(params, z.shape[:-1], dtype, total_weight=w_y.sum(), ignored=ignored)

        def loss_rows(logp):
            nll = -pick(logp, y_safe)
            smooth = -(logp @ w_c) if eps else 0.0  # (the smoothing term only where it counts)
            return (1 - eps) * w_y * nll + (eps / n_classes) * keep * smooth

        def forward(x):
            return loss_rows(log_softmax_rows(x))

        logp0 = functools.cache(lambda: log_softmax_rows_parallel(z))  # one log-softmax: the value and the gradient share it
        weight = (1 - eps) * w_y + (eps / n_classes) * keep * w_c.sum()

        def scaled_gradient(scale):
            """``scale_r`` times row r's gradient, formed in place (a vjp with the
            per-row cotangent ``scale``; ``scale = 1`` gives the blocks):
            (1 - eps) w_y (s - onehot) + (eps / C) keep (sum(w) s - w) = weight s - (eps / C) keep w - (1 - eps) w_y onehot."""
            g = np.exp(logp0())
            g *= (weight * scale)[..., None]
            if eps:
                g -= ((eps / n_classes) * keep * scale)[..., None] * w_c
            np.put_along_axis(g, y_safe[..., None],
                              pick(g, y_safe)[..., None] - ((1 - eps) * w_y * scale)[..., None], -1)
            return g

        def vjp(u):  # u: (..., *rows) per-row cotangents; stacks of them go through the blocks
            return scaled_gradient(u) if u.shape == w_y.shape else u[..., None] * scaled_gradient(1.0)

        return RowKernel(x0=z, forward=forward, blocks=lambda: scaled_gradient(1.0), coef=coef,
                         empty_mean=self._empty_mean(params, ignored), vjp=vjp,
                         forward0=lambda: loss_rows(logp0()), **_softmax_curvature(z, weight))

    def torch_forward(self, args, params):
        import torch.nn.functional as F

        return F.cross_entropy(
            args["input"], args["target"], weight=args.get("class_weight"), ignore_index=params["ignore_index"],
            reduction=params["reduction"].value, label_smoothing=params["label_smoothing"],
        )


def _softmax_curvature(z: np.ndarray, weight: np.ndarray) -> dict:
    """cross_entropy's second order at logits ``z`` ``(*rows, C)``: per row
    ``weight_r (diag(s) - s s^T)``, as blocks and as an O(C) hvp."""
    s = functools.cache(lambda: softmax_rows(z))
    return {"hessian": lambda scale: softmax_blocks(s(), weight if scale is None else weight * scale),
            "hvp": lambda u, t: (u * weight)[..., None] * _softmax_apply(s(), t)}


def _zero_hvp(u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """A per-row-scalar function linear in its argument: no curvature."""
    return np.zeros(np.broadcast_shapes(u.shape + (1,), t.shape), dtype=t.dtype)


class NllLoss(_ClassLoss):
    name = "nll_loss"
    summary = "negative log-likelihood of log-probabilities at class indices (torch.nn.functional.nll_loss)"
    arrays = (
        ArrayArg("input", "log-probabilities of shape (C), (N, C) or (N, C, d1, ...)", required=True),
        ArrayArg("target", "class indices: integers, the input's shape without dim 1", required=True, kind=ArrayKind.INDEX),
        _CLASS_WEIGHT,
    )
    params = (Param("dim", None, "fixed by torch: 1, or 0 for an unbatched (C) input"), _REDUCTION, _IGNORE)
    formulas = (
        "x = input (log-probabilities), y = target index, w = class weight (1 if not given)",
        "l = -w_y x_y: only the true class's entry is picked",
        "dl/dx = -w_y onehot(y): zero for every other class, whatever x holds",
        "mean: divide by sum of w_y over non-ignored rows; sum: no division",
    )
    second_formulas = ("d2 l / dx dx = 0: the loss is linear in its input (it only picks an entry)",)

    def kernel(self, args, params, wrt, axis=None):
        x0 = np.moveaxis(args["input"], params["dim"], -1)
        y_safe, ignored, w_y = self._index_rows(args, params)
        n_classes = x0.shape[-1]
        coef = self._coef(params, x0.shape[:-1], x0.dtype, total_weight=w_y.sum(), ignored=ignored)
        if coef is not None and np.isnan(coef).any():
            # A mean over a total weight of 0: torch's backward writes -w_y / 0 = nan at each
            # counted row's target entry alone and 0 elsewhere, so the nan goes into the row's
            # loss and block (on the target entry), not into coef (which would fill the row).
            w_y, coef = np.where(ignored, w_y, np.nan), np.where(ignored, coef, 1).astype(x0.dtype)

        def forward(x):
            return -w_y * pick(x, y_safe)

        return RowKernel(
            x0=x0,
            forward=forward,
            blocks=lambda: _scatter_rows(-w_y, y_safe, n_classes, x0.dtype),
            coef=coef,
            empty_mean=self._empty_mean(params, ignored),
            hvp=_zero_hvp,
        )

    def notes(self, args, params, wrt):
        notes = super().notes(args, params, wrt)
        if (args["input"] > 0).any():
            notes.append("nll_loss expects log-probabilities (<= 0), but --input has positive values: "
                         "apply log_softmax first, or use cross_entropy, which does both")
        return notes

    def torch_forward(self, args, params):
        import torch.nn.functional as F

        return F.nll_loss(args["input"], args["target"], weight=args.get("class_weight"),
                          ignore_index=params["ignore_index"], reduction=params["reduction"].value)
