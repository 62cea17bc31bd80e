"""linear: ``y = x W^T + b`` (torch.nn.functional.linear).

W.r.t. the input it is row-independent: every row's block is ``W``
``(out, in)``. W.r.t. the weight or bias every row uses the same parameters,
so there are no blocks; the closed forms are the vjp and jvp:

- ``dL/dW = sum_rows (dL/dy)^T x`` and ``dL/db = sum_rows dL/dy``;
- ``(J t_W) = x t_W^T`` and ``(J t_b) = t_b`` in every row.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UsageError
from ..core.rowform import GeneralKernel, RowKernel, RowLayout
from .base import ArrayArg, Function, Structure


class Linear(Function):
    name = "linear"
    summary = "a Linear layer, y = x W^T + b (torch.nn.functional.linear)"
    arrays = (
        ArrayArg("input", "x of shape (..., in)", required=True),
        ArrayArg("weight", "W of shape (out, in)", required=True),
        ArrayArg("bias", "b of shape (out,)"),
    )
    structure = Structure.BLOCKS
    family = "linear"
    formulas = (
        "y = x W^T + b, x (..., in), W (out, in), b (out)",
        "dy/dx = W for every row (blocks (..., out, in))",
        "dy[r, o]/dW[p, q] = delta_op x[r, q];  dy[r, o]/db[p] = delta_op",
        "so for a loss L: dL/dW = (dL/dy)^T x (summed over rows), dL/db = sum over rows of dL/dy",
    )
    second_formulas = (
        "d2 y / dx dx = d2 y / dW dW = d2 y / db db = 0: linear in each argument",
        "in a chain: linear,LOSS w.r.t. the weight has Hessian H[o, i, p, j] = sum_r x_ri (H_z,r)[o, p] x_rj, "
        "x^T H_z x with the loss's blocks H_z (Gauss-Newton; the second-derivative term is 0)",
    )

    def check(self, args, params):
        x, w = args["input"], args["weight"]
        if x.ndim == 0:
            raise UsageError("--input: linear needs an input of shape (..., in); got a scalar")
        if w.ndim != 2 or w.shape[1] != x.shape[-1]:
            raise UsageError(f"--weight: shape {list(w.shape)} does not fit --input {list(x.shape)}; "
                             f"give (out, {x.shape[-1]})")
        if "bias" in args and args["bias"].shape != (w.shape[0],):
            raise UsageError(f"--bias: shape {list(args['bias'].shape)} does not match the {w.shape[0]} outputs; "
                             f"give [{w.shape[0]}]")
        return []

    def differentiable(self, args):
        return tuple(name for name in ("input", "weight", "bias") if name in args)

    def output_shape(self, args, params):
        return args["input"].shape[:-1] + (args["weight"].shape[0],)

    def row_layout(self, args, params, wrt, axis=None):
        if wrt != "input":
            return None
        x = args["input"]
        return RowLayout(x.shape, x.ndim - 1, x.ndim - 1, args["weight"].shape[0], reduced=False)

    def kernel(self, args, params, wrt, axis=None):
        x, w = args["input"], args["weight"]
        b = args.get("bias", np.zeros(w.shape[0], dtype=w.dtype))
        out_shape = self.output_shape(args, params)
        if wrt == "input":
            # Every row's block is W: u^T J = u W, J t = t W^T, without copying W per row.
            return RowKernel(x0=x, forward=lambda v: v @ w.T + b,
                             blocks=lambda: np.broadcast_to(w, x.shape[:-1] + w.shape).copy(), coef=None,
                             vjp=lambda u: u @ w, jvp=lambda t: t @ w.T,
                             hvp=lambda u, t: np.zeros(np.broadcast_shapes(u.shape[:-1], t.shape[:-1]) + t.shape[-1:],
                                                       dtype=t.dtype))
        rows = x.reshape(-1, x.shape[-1])  # (R, in)

        def unflatten(y):  # (..., R, out) -> (..., *out_shape)
            return y.reshape(y.shape[:-2] + out_shape)

        def flat(v):  # (..., *out_shape) -> (..., R, out)
            return v.reshape(v.shape[: v.ndim - len(out_shape)] + (rows.shape[0], w.shape[0]))

        param = w if wrt == "weight" else b

        def no_curvature(v, t):  # linear in W and in b: zero, with the stack axes of v and t
            stacks = np.broadcast_shapes(v.shape[: v.ndim - len(out_shape)], t.shape[: t.ndim - param.ndim])
            return np.zeros(stacks + param.shape, dtype=t.dtype)

        if wrt == "weight":
            return GeneralKernel(
                x0=w, output_shape=out_shape, hvp=no_curvature,
                forward=lambda wv: unflatten(np.einsum("ri,...oi->...ro", rows, wv) + b),
                vjp=lambda v: np.einsum("...ro,ri->...oi", flat(v), rows),
                jvp=lambda t: unflatten(np.einsum("ri,...oi->...ro", rows, t)),
            )
        y0 = rows @ w.T  # (R, out): the output without bias

        def expand(bias):  # (..., out) -> (..., *out_shape): the same bias in every row
            return unflatten(np.broadcast_to(bias[..., None, :], bias.shape[:-1] + y0.shape))

        return GeneralKernel(
            x0=b, output_shape=out_shape, hvp=no_curvature,
            forward=lambda bv: unflatten(y0 + bv[..., None, :]),
            vjp=lambda v: flat(v).sum(axis=-2),
            jvp=expand,
        )

    def torch_forward(self, args, params):
        import torch.nn.functional as F

        return F.linear(args["input"], args["weight"], args.get("bias"))
