"""Structure notes on a Jacobian, in words: block-diagonal (verified on a full
Jacobian), diagonal, block rows or columns summing to zero, symmetry, the
fraction of exact zeros. Pure NumPy."""

from __future__ import annotations

import numpy as np

from .options import Layout
from .rowform import RowLayout, full_to_blocks, off_block_max

MAX_ENTRIES = 50_000_000  # past this, the notes would cost more than they tell


def describe(value: np.ndarray, layout: Layout, rows: RowLayout | None, dtype, *, per_sample: bool = False) -> tuple[str, ...]:
    if value.size == 0 or value.size > MAX_ENTRIES or not np.isfinite(value).all():
        return ()
    tol = 100 * float(np.finfo(dtype).eps) * max(1.0, float(np.abs(value).max()))
    notes: list[str] = []
    blocks = None
    if layout is Layout.DIAG:
        notes.append("diagonal (elementwise): J[i, j] = 0 whenever i != j; the value shown is the diagonal")
    elif layout is Layout.BLOCKS and per_sample:  # user code
        notes.append(f"per-sample blocks: one Jacobian of shape {list(value.shape[1:])} per sample, "
                     "d out[i] / d x[j] = 0 for samples i != j (--verify-blocks checks it on two samples first)")
        rows = None
    elif layout is Layout.BLOCKS:
        blocks = value
        notes.append(f"block-diagonal across batch rows: {int(np.prod(rows.rows, dtype=int))} blocks of shape "
                     f"{list(rows.out_block + (rows.features,))}; every entry between different rows is 0")
    elif rows is not None and not rows.reduced and rows.rows:
        blocks = full_to_blocks(value, rows)
        # The entries between different rows themselves, not a difference of two sums
        # of squares (which rounding can push either way).
        if off_block_max(value, rows) <= tol:
            notes.append("block-diagonal across batch rows (verified: every entry between different rows is 0); "
                         "--layout blocks shows only the blocks")
        else:
            notes.append("NOT block-diagonal: entries between different rows are non-zero")
    if blocks is not None and rows is not None and rows.out_axis is not None and not rows.elementwise:
        if np.abs(blocks.sum(axis=-1)).max() <= tol * blocks.shape[-1]:
            notes.append("each block's rows sum to 0: the output does not change when every input of a row moves together")
        if np.abs(blocks.sum(axis=-2)).max() <= tol * blocks.shape[-2]:
            notes.append("each block's columns sum to 0: the vjp with ones (out.backward(ones)) is zero")
        if blocks.shape[-1] == blocks.shape[-2] and np.abs(blocks - np.swapaxes(blocks, -1, -2)).max() <= tol:
            notes.append("each block is symmetric")
    elif value.ndim == 2 and value.shape[0] == value.shape[1] and layout is Layout.FULL:
        if np.abs(value - value.T).max() <= tol:
            notes.append("symmetric")
    zeros = float(np.mean(value == 0))
    if zeros:
        notes.append(f"{zeros:.1%} of the entries shown are exactly 0")
    return tuple(notes)
