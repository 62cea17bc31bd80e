"""Everything that follows from per-row Jacobian blocks, in NumPy.

Given the blocks ``B`` of a row-independent function in row form,
``(*rows, *out_block, C)`` (see :class:`~.layout.RowLayout`), and the
reduction weights ``coef`` (``(*rows)`` or None):

- full Jacobian: ``J[out..., in...]`` is zero except where the output row and
  the input row are the same row ``r``, where it is ``B[r]``; it is scattered
  into one preallocated array, never built by one backward pass per entry;
- vjp: ``(v^T J)_r = v_r^T B_r``; for a reduced output ``v coef_r B_r``
  (the gradient is the vjp with ``v = 1``);
- jvp: ``(J t)_r = B_r t_r``, summed with ``coef`` for a reduced output.

The ``*_blocks`` functions contract given blocks (fd's, or an error
estimate's); :func:`vjp` and :func:`jvp` use a kernel's own row operators
when it has them, so no C×C block is formed. Vectors may carry extra
leading (stack) axes, so a chain can push a whole basis through at once.
"""

from __future__ import annotations

import math

import numpy as np

from .kernels import GeneralKernel, RowKernel
from .layout import RowLayout


def full_shape(layout: RowLayout) -> tuple[int, ...]:
    return layout.output_shape + layout.in_shape


def diagonal_blocks(d: np.ndarray, off: np.ndarray | None = None) -> np.ndarray:
    """``(*rows, C)`` derivatives -> ``(*rows, C, C)`` diagonal blocks.

    Off the diagonal, column j holds what torch's reverse mode computes there:
    the vjp of a zero cotangent, ``off`` ``(*rows, C)`` as the function's own
    backward formula gives it (log's ``0 / x``: nan at 0, 0 at a subnormal x
    where ``1/x`` overflows), or ``0 * d_j`` when not given."""
    c = d.shape[-1]
    out = np.zeros(d.shape + (c,), dtype=d.dtype)
    if d.dtype.kind == "f":  # (a boolean mask of kinks stays boolean)
        with np.errstate(invalid="ignore"):
            out += (0 * d if off is None else off)[..., None, :]
    out.reshape(-1, c * c)[:, :: c + 1] = d.reshape(-1, c)
    return out


def _block_view(full: np.ndarray, layout: RowLayout) -> tuple[np.ndarray, tuple]:
    """A view of a full Jacobian with axes ``(*rows, *out_block, *rows, C)`` and
    the selector of its block diagonal: ``view[selector]`` is ``(n_rows, *out_block, C)``."""
    out_ndim = len(layout.unreduced_shape)
    view = full
    if layout.out_axis is not None:
        view = np.moveaxis(view, layout.out_axis, len(layout.rows))
    view = np.moveaxis(view, out_ndim + layout.in_axis, -1)
    index = np.indices(layout.rows).reshape(len(layout.rows), -1) if layout.rows else np.empty((0, 1), dtype=int)
    rows = tuple(index)
    return view, rows + ((slice(None),) if layout.out_axis is not None else ()) + rows + (slice(None),)


def blocks_to_full(blocks: np.ndarray, layout: RowLayout, allocate=np.zeros, off: np.ndarray | None = None) -> np.ndarray:
    """Scatter ``(*rows, *out_block, C)`` blocks into the full Jacobian
    ``output_shape + input_shape`` (output axes first, as torch and JAX).
    ``allocate(shape, dtype=)`` gives the zero-filled array to fill: a
    memory-mapped ``.npy`` file for results larger than memory. ``off``: the
    entries off the blocks, see :func:`fill_off_blocks`."""
    if layout.reduced:
        raise ValueError("a reduced output has no blocks; its Jacobian is the gradient")
    full = allocate(full_shape(layout), dtype=blocks.dtype)
    fill_off_blocks(full, blocks, layout, off)
    if layout.in_axis is None:  # elementwise: J[i..., i...] = B[i..., 0]
        if not layout.rows:
            full[...] = blocks.reshape(())
            return full
        index = tuple(np.indices(layout.rows).reshape(len(layout.rows), -1))
        full[index + index] = blocks.reshape(-1)
        return full
    view, selector = _block_view(full, layout)  # writes land in `full`
    view[selector] = blocks.reshape((-1,) + layout.out_block + (layout.features,)) if layout.rows else blocks
    return full


def fill_off_blocks(full: np.ndarray, blocks: np.ndarray, layout: RowLayout, off: np.ndarray | None = None) -> None:
    """The entries off the blocks as torch.func.jacrev computes them: the
    backward pass of another row's output sends a zero cotangent through this
    row, which is nan where the row's backward formula makes it ``0 * inf``
    or ``0 / 0`` (log at 0) and 0 elsewhere. That is the vjp of a zero
    cotangent, column by column: ``off`` (shaped like the argument) as the
    backend computes it with the function's own formulas (log's ``0 / x`` is 0
    at a subnormal x, where the derivative ``1/x`` overflows), or when not
    given ``0 * blocks``. Columns where it is not finite are filled (the blocks
    are scattered over them afterwards); every other entry stays a structural 0."""
    if off is not None:
        zero = np.asarray(off)
    else:
        with np.errstate(invalid="ignore"):
            zero = vjp_blocks(blocks, layout, None, np.zeros(layout.unreduced_shape, dtype=blocks.dtype))
    bad = ~np.isfinite(zero)
    if bad.any():
        full.reshape(-1, zero.size)[:, bad.reshape(-1)] = zero[bad]


def full_to_blocks(full: np.ndarray, layout: RowLayout) -> np.ndarray:
    """Gather the per-row blocks out of a full Jacobian (the inverse of
    :func:`blocks_to_full` on block-diagonal input)."""
    if layout.in_axis is None:
        n = layout.n_rows
        return full.reshape(n, n).diagonal().reshape(layout.rows + (1,))
    view, selector = _block_view(full, layout)
    if not layout.rows:
        return np.array(view)
    return view[selector].reshape(layout.blocks_shape)


def off_block_max(full: np.ndarray, layout: RowLayout) -> float:
    """The largest ``|J|`` entry between two different rows of a full Jacobian:
    per (output row, input row) pair the max and min over the block's entries,
    the diagonal pairs left out. Two passes, no temporary of ``full``'s size."""
    n = layout.n_rows
    if n <= 1:
        return 0.0
    if layout.in_axis is None:
        pairs_max = pairs_min = full.reshape(n, n)
    else:
        view = full
        if layout.out_axis is not None:
            view = np.moveaxis(view, layout.out_axis, len(layout.rows))
        view = np.moveaxis(view, len(layout.unreduced_shape) + layout.in_axis, -1)
        k = len(layout.rows)  # view: (*rows, *out_block, *rows, C)
        inner = (tuple(range(k, k + len(layout.out_block))), (view.ndim - 1,))
        axes = inner[0] + inner[1]
        pairs_max = view.max(axis=axes).reshape(n, n)
        pairs_min = view.min(axis=axes).reshape(n, n)
    off = ~np.eye(n, dtype=bool)
    return max(abs(float(pairs_max[off].max())), abs(float(pairs_min[off].min())))


# --- vjp and jvp -------------------------------------------------------------------


def _contract_vjp(blocks: np.ndarray, u: np.ndarray, layout: RowLayout) -> np.ndarray:
    """``u_r^T B_r`` per row: ``(..., *rows, *out_block)`` -> ``(..., *rows, C)``."""
    if layout.out_axis is None:
        return u[..., None] * blocks
    return np.einsum("...k,...kc->...c", u, blocks)


def _contract_jvp(blocks: np.ndarray, t: np.ndarray, layout: RowLayout) -> np.ndarray:
    """``B_r t_r`` per row: ``(..., *rows, C)`` -> ``(..., *rows, *out_block)``."""
    if layout.out_axis is None:
        return np.einsum("...c,...c->...", blocks, t)
    return np.einsum("...kc,...c->...k", blocks, t)


def _cotangent_rows(layout: RowLayout, coef, v) -> np.ndarray:
    """The per-row cotangent ``(..., *rows, *out_block)`` of an output cotangent ``v``."""
    if layout.reduced:
        return np.asarray(v)[(...,) + (None,) * len(layout.rows)] * coef
    return layout.out_to_rows(v)


def _output_of_rows(layout: RowLayout, coef, per_row: np.ndarray) -> np.ndarray:
    """Per-row values ``(..., *rows, *out_block)`` -> the output (reduced with ``coef``)."""
    if layout.reduced:
        return (coef * per_row).sum(axis=tuple(range(-len(layout.rows), 0)))
    return layout.out_from_rows(per_row)


def vjp_blocks(blocks: np.ndarray, layout: RowLayout, coef, v: np.ndarray) -> np.ndarray:
    """``v^T J`` from blocks, for ``v`` shaped like the output; shaped like the argument."""
    return layout.from_rows(_contract_vjp(blocks, _cotangent_rows(layout, coef, v), layout))


def jvp_blocks(blocks: np.ndarray, layout: RowLayout, coef, t: np.ndarray) -> np.ndarray:
    """``J t`` from blocks, for ``t`` shaped like the argument; shaped like the output."""
    return _output_of_rows(layout, coef, _contract_jvp(blocks, layout.to_rows(t), layout))


def row_vjp(kernel: RowKernel, layout: RowLayout, u: np.ndarray) -> np.ndarray:
    """Per-row ``u_r^T B_r`` with the kernel's own operator when it has one (no block formed)."""
    return kernel.vjp(u) if kernel.vjp is not None else _contract_vjp(kernel.blocks(), u, layout)


def row_jvp(kernel: RowKernel, layout: RowLayout, t: np.ndarray) -> np.ndarray:
    """Per-row ``B_r t_r`` with the kernel's own operator when it has one (no block formed)."""
    return kernel.jvp(t) if kernel.jvp is not None else _contract_jvp(kernel.blocks(), t, layout)


def vjp(kernel: RowKernel, layout: RowLayout, v: np.ndarray) -> np.ndarray:
    """``v^T J`` for ``v`` shaped like the output; shaped like the argument."""
    return layout.from_rows(row_vjp(kernel, layout, _cotangent_rows(layout, kernel.coef, v)))


def jvp(kernel: RowKernel, layout: RowLayout, t: np.ndarray) -> np.ndarray:
    """``J t`` for ``t`` shaped like the argument; shaped like the output."""
    return _output_of_rows(layout, kernel.coef, row_jvp(kernel, layout, layout.to_rows(t)))


def output(kernel: RowKernel, layout: RowLayout) -> np.ndarray:
    """The function's value at the kernel's point (with its ``forward0`` where
    the kernel shares that work with its derivative)."""
    if kernel.forward0 is None:
        return forward(kernel, layout, layout.from_rows(kernel.x0))
    return _reduce_rows(kernel, layout, kernel.forward0())


def forward(kernel: RowKernel, layout: RowLayout, x: np.ndarray) -> np.ndarray:
    """The function's value at ``x`` (shaped like the argument, after any stack
    axes) from the kernel's row-form forward, reduced when the layout says so."""
    return _reduce_rows(kernel, layout, kernel.forward(layout.to_rows(x)))


def _reduce_rows(kernel: RowKernel, layout: RowLayout, per_row: np.ndarray) -> np.ndarray:
    if layout.reduced and kernel.empty_mean:  # torch: a mean over no rows is nan
        return np.full(per_row.shape[: per_row.ndim - len(layout.rows)], np.nan, dtype=per_row.dtype)
    return _output_of_rows(layout, kernel.coef, per_row)


def general_full(kernel: GeneralKernel) -> np.ndarray:
    """The full Jacobian ``output_shape + wrt_shape`` of a general kernel, from
    a whole basis pushed through its vjp (one per output entry) or its jvp
    (one per input entry), whichever basis is smaller."""
    n_out, n_in = math.prod(kernel.output_shape), kernel.x0.size
    dtype = kernel.x0.dtype
    if n_out <= n_in:
        rows = kernel.vjp(np.eye(n_out, dtype=dtype).reshape((n_out,) + kernel.output_shape))
        return rows.reshape(kernel.output_shape + kernel.x0.shape)
    cols = kernel.jvp(np.eye(n_in, dtype=dtype).reshape((n_in,) + kernel.x0.shape))
    return np.moveaxis(cols.reshape((n_in,) + kernel.output_shape), 0, -1).reshape(kernel.output_shape + kernel.x0.shape)
