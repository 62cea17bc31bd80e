"""Everything that follows from per-row Jacobian blocks, in NumPy.

Given the blocks ``B`` of a row-independent function in row form,
``(*rows, *out_block, C)`` (see ``functions.base.RowLayout``), and the
reduction weights ``coef`` (``(*rows)`` or None):

- full Jacobian: ``J[out..., in...]`` is zero except where the output row and
  the input row are the same row ``r``, where it is ``B[r]``; it is scattered
  into one preallocated array, never built by one backward pass per entry;
- reduced gradient: ``dL/dx_r = coef_r B_r``;
- vjp: ``(v^T J)_r = v_r^T B_r`` (or ``v coef_r B_r`` for a reduced output);
- jvp: ``(J t)_r = B_r t_r`` (summed with ``coef`` for a reduced output).
"""

from __future__ import annotations

import numpy as np

from .functions import RowLayout


def full_shape(layout: RowLayout) -> tuple[int, ...]:
    out_shape = () if layout.reduced else layout.unreduced_shape
    return out_shape + layout.in_shape


def blocks_to_full(blocks: np.ndarray, layout: RowLayout) -> np.ndarray:
    """Scatter ``(*rows, *out_block, C)`` blocks into the full Jacobian
    ``output_shape + input_shape`` (output axes first, as torch and JAX)."""
    if layout.reduced:
        raise ValueError("a reduced output has no blocks; use reduced_grad")
    out_ndim = len(layout.unreduced_shape)
    full = np.zeros(full_shape(layout), dtype=blocks.dtype)
    # A view whose axes are (*rows, *out_block, *rows, C): no copy, writes land in `full`.
    view = full
    if layout.out_axis is not None:
        view = np.moveaxis(view, layout.out_axis, len(layout.rows))
    view = np.moveaxis(view, out_ndim + layout.in_axis, -1)
    index = np.indices(layout.rows).reshape(len(layout.rows), -1) if layout.rows else np.empty((0, 1), dtype=int)
    rows = tuple(index)
    selector = rows + ((slice(None),) if layout.out_axis is not None else ()) + rows + (slice(None),)
    flat = blocks.reshape((-1,) + layout.out_block + (layout.features,)) if layout.rows else blocks
    view[selector] = flat
    return full


def reduced_grad(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray) -> np.ndarray:
    """Gradient of ``sum(coef * per_row)``, shaped like the differentiated argument."""
    return layout.from_rows(coef[..., None] * blocks)


def vjp(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray | None, v: np.ndarray) -> np.ndarray:
    """``v^T J`` for ``v`` shaped like the output; result shaped like the argument."""
    if layout.reduced:
        return reduced_grad(blocks, layout, coef * v)
    v_rows = layout.out_to_rows(v)
    if layout.out_axis is None:
        return layout.from_rows(v_rows[..., None] * blocks)
    return layout.from_rows(np.einsum("...k,...kc->...c", v_rows, blocks))


def jvp(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray | None, t: np.ndarray) -> np.ndarray:
    """``J t`` for ``t`` shaped like the argument; result shaped like the output."""
    t_rows = layout.to_rows(t)
    if layout.out_axis is None:
        per_row = np.einsum("...c,...c->...", blocks, t_rows)
        return np.asarray((coef * per_row).sum()) if layout.reduced else per_row
    return layout.out_from_rows(np.einsum("...kc,...c->...k", blocks, t_rows))


def jacobian(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray | None, full: bool) -> np.ndarray:
    """The Jacobian in the requested form: blocks, or full (reduced outputs: the gradient)."""
    if layout.reduced:
        return reduced_grad(blocks, layout, coef)
    return blocks_to_full(blocks, layout) if full else blocks
