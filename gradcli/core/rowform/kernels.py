"""The NumPy side of a function at one point: what the analytic and fd
backends compute from, and what chains compose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class RowKernel:
    """A row-independent function at one point.

    ``x0``: the differentiated argument in row form, ``(*rows, C)``.
    ``forward(x)``: ``(..., *rows, C) -> (..., *rows, *out_block)``; extra
    leading axes are a stack of evaluation points (fd uses them).
    ``blocks()``: the closed-form per-row Jacobian ``(*rows, *out_block, C)``.
    ``vjp(u)``: ``(..., *rows, *out_block) -> (..., *rows, C)``, per row
    ``u_r^T B_r``; ``jvp(t)``: ``(..., *rows, C) -> (..., *rows, *out_block)``,
    ``B_r t_r``. Given where a block is larger than its row (softmax: C×C),
    so that vjp, jvp and gradients cost O(rows·C) and never form a block;
    None means "contract ``blocks()``".
    ``coef``: ``(*rows)`` weights of the reduction, or None when unreduced.
    ``empty_mean``: a mean over no rows (every target ignored): torch returns
    nan for the value but zero derivatives, and so do we.

    Second order (optional; see :mod:`.second`): ``hessian(scale)`` gives each
    row's second derivative ``(*rows, *out_block, C, C)`` (of the unreduced
    per-row output), times ``scale`` ``(*rows)`` when given (a reduction's
    weights, folded into the one pass that writes the blocks); ``hvp(u, t)``: ``(..., *rows, *out_block)``,
    ``(..., *rows, C) -> (..., *rows, C)``, per row ``sum_k u_k (d2 f_k) t``
    without forming it. Either may be None; the other is derived from the one given.
    """

    x0: np.ndarray
    forward: Callable[[np.ndarray], np.ndarray]
    blocks: Callable[[], np.ndarray]
    coef: np.ndarray | None
    empty_mean: bool = False
    forward0: Callable[[], np.ndarray] | None = None  # forward at x0, sharing work with blocks (optional)
    vjp: Callable[[np.ndarray], np.ndarray] | None = None
    jvp: Callable[[np.ndarray], np.ndarray] | None = None
    hessian: Callable[[np.ndarray | None], np.ndarray] | None = None
    hvp: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class GeneralKernel:
    """A function with no row structure w.r.t. its argument (a Linear layer's
    weight: every row uses all of it).

    Shapes are natural: ``forward(w)``: ``(..., *wrt_shape) -> (..., *output_shape)``;
    ``vjp(v)``: ``(..., *output_shape) -> (..., *wrt_shape)``; ``jvp(t)``:
    ``(..., *wrt_shape) -> (..., *output_shape)``. Leading axes are a stack.
    ``hvp(v, t)`` (optional): ``(..., *output_shape)``, ``(..., *wrt_shape) ->
    (..., *wrt_shape)``, the second derivative of ``<v, f>`` applied to ``t``.
    """

    x0: np.ndarray
    output_shape: tuple[int, ...]
    forward: Callable[[np.ndarray], np.ndarray]
    vjp: Callable[[np.ndarray], np.ndarray]
    jvp: Callable[[np.ndarray], np.ndarray]
    hvp: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def as_one_row(kernel: GeneralKernel) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """A general kernel seen as one row: ``x0`` ``(1, n)`` and a row-form forward
    ``(..., 1, n) -> (..., 1, n_out)``, so every entry of the argument is a column
    (what finite differences perturb)."""
    shape, out_shape = kernel.x0.shape, kernel.output_shape

    def forward(x):
        y = kernel.forward(x.reshape(x.shape[:-2] + shape))
        return y.reshape(y.shape[: y.ndim - len(out_shape)] + (1, -1))

    return kernel.x0.reshape(1, -1), forward
