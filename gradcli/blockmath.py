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

``vjp``, ``jvp`` and ``forward`` accept extra leading (stack) axes on their
vector argument, so a chain can push a whole basis through at once.
"""

from __future__ import annotations

import numpy as np

from .functions import RowKernel, RowLayout


def full_shape(layout: RowLayout) -> tuple[int, ...]:
    out_shape = () if layout.reduced else layout.unreduced_shape
    return out_shape + layout.in_shape


def blocks_to_full(blocks: np.ndarray, layout: RowLayout, allocate=np.zeros) -> np.ndarray:
    """Scatter ``(*rows, *out_block, C)`` blocks into the full Jacobian
    ``output_shape + input_shape`` (output axes first, as torch and JAX).
    ``allocate(shape, dtype)`` gives the zero-filled array to fill: a
    memory-mapped ``.npy`` file for results larger than memory."""
    if layout.reduced:
        raise ValueError("a reduced output has no blocks; use reduced_grad")
    out_ndim = len(layout.unreduced_shape)
    full = allocate(full_shape(layout), dtype=blocks.dtype)
    fill_off_blocks(full, blocks, layout)
    if layout.in_axis is None:  # elementwise: J[i..., i...] = B[i..., 0]
        if not layout.rows:
            return blocks.reshape(()).copy()
        index = tuple(np.indices(layout.rows).reshape(len(layout.rows), -1))
        full[index + index] = blocks.reshape(-1)
        return full
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


def fill_off_blocks(full: np.ndarray, blocks: np.ndarray, layout: RowLayout) -> None:
    """The entries off the blocks as torch.func.jacrev computes them: the
    backward pass of another row's output sends a zero cotangent through this
    row, ``0 * derivative``, which is nan where a derivative is inf or nan (log
    at 0). That is the vjp of a zero cotangent, column by column; columns where
    it is nan are filled (the blocks are scattered over them afterwards)."""
    with np.errstate(invalid="ignore"):
        zero = vjp(blocks, layout, None, np.zeros(layout.unreduced_shape, dtype=blocks.dtype))
    bad = ~np.isfinite(zero)
    if bad.any():
        full.reshape(-1, zero.size)[:, bad.reshape(-1)] = zero[bad]


def vjp(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray | None, v: np.ndarray) -> np.ndarray:
    """``v^T J`` for ``v`` shaped like the output (after any stack axes);
    shaped like the argument."""
    if layout.reduced:
        v = np.asarray(v)[(...,) + (None,) * (len(layout.rows) + 1)]
        return layout.from_rows(v * coef[..., None] * blocks)
    v_rows = layout.out_to_rows(v)
    if layout.out_axis is None:
        return layout.from_rows(v_rows[..., None] * blocks)
    return layout.from_rows(np.einsum("...k,...kc->...c", v_rows, blocks))


def jvp(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray | None, t: np.ndarray) -> np.ndarray:
    """``J t`` for ``t`` shaped like the argument (after any stack axes);
    shaped like the output."""
    t_rows = layout.to_rows(t)
    if layout.out_axis is None:
        per_row = np.einsum("...c,...c->...", blocks, t_rows)
        if not layout.reduced:
            return per_row
        return (coef * per_row).sum(axis=tuple(range(-len(layout.rows), 0)))
    return layout.out_from_rows(np.einsum("...kc,...c->...k", blocks, t_rows))


def forward(kernel: RowKernel, layout: RowLayout, x: np.ndarray) -> np.ndarray:
    """The function's value at ``x`` (shaped like the argument, after any stack
    axes) from the kernel's row-form forward, reduced when the layout says so."""
    per_row = kernel.forward(layout.to_rows(x))
    if layout.reduced:
        if kernel.empty_mean:  # torch: a mean over no rows is nan
            return np.full(per_row.shape[: per_row.ndim - len(layout.rows)], np.nan, dtype=per_row.dtype)
        return (kernel.coef * per_row).sum(axis=tuple(range(-len(layout.rows), 0)))
    return layout.out_from_rows(per_row)


def jacobian(blocks: np.ndarray, layout: RowLayout, coef: np.ndarray | None, form: str, allocate=np.zeros) -> np.ndarray:
    """The Jacobian as ``form``: "blocks", "diag" (elementwise: the derivative
    shaped like the input) or "full" (for a reduced output: the gradient)."""
    if layout.reduced:
        return vjp(blocks, layout, coef, np.ones((), dtype=blocks.dtype))
    if form == "diag":
        return layout.from_rows(blocks)
    return blocks_to_full(blocks, layout, allocate) if form == "full" else blocks


def full_to_blocks(full: np.ndarray, layout: RowLayout) -> np.ndarray:
    """Gather the per-row blocks out of a full Jacobian (the inverse of
    :func:`blocks_to_full` on block-diagonal input)."""
    if layout.in_axis is None:
        n = int(np.prod(layout.rows, dtype=int))
        return full.reshape(n, n).diagonal().reshape(layout.rows + (1,))
    out_ndim = len(layout.unreduced_shape)
    view = full
    if layout.out_axis is not None:
        view = np.moveaxis(view, layout.out_axis, len(layout.rows))
    view = np.moveaxis(view, out_ndim + layout.in_axis, -1)
    if not layout.rows:
        return np.array(view)
    rows = tuple(np.indices(layout.rows).reshape(len(layout.rows), -1))
    selector = rows + ((slice(None),) if layout.out_axis is not None else ()) + rows + (slice(None),)
    return view[selector].reshape(layout.blocks_shape)
