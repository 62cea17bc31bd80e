"""Structure notes on a Jacobian, in words: block-diagonal (verified on a full
Jacobian), diagonal, block rows or columns summing to zero, symmetry, the
fraction of exact zeros. Pure NumPy."""

from __future__ import annotations

import numpy as np

from . import blockmath
from .functions import RowLayout
from .results import Layout, chunks, count_nonfinite

MAX_ENTRIES = 50_000_000  # past this, the notes would cost more than they tell
CHUNK = 1 << 18  # entries compared at a time: no temporary the size of the value


def describe(value: np.ndarray, layout: Layout, rows: RowLayout | None, dtype) -> tuple[str, ...]:
    if value.size == 0 or value.size > MAX_ENTRIES or count_nonfinite(value):
        return ()
    tol = 100 * float(np.finfo(dtype).eps) * max(1.0, float(value.max()), -float(value.min()))
    notes: list[str] = []
    blocks = None
    if layout is Layout.DIAG:
        notes.append("diagonal (elementwise): J[i, j] = 0 whenever i != j; the value shown is the diagonal")
    elif layout is Layout.BLOCKS and rows is None:  # user code, per sample
        notes.append(f"per-sample blocks: one Jacobian of shape {list(value.shape[1:])} per sample, "
                     f"the samples assumed independent (`gradcli jacobian --layout blocks --verify-blocks` checks it)")
    elif layout is Layout.BLOCKS:
        blocks = value
        notes.append(f"block-diagonal across batch rows: {int(np.prod(rows.rows, dtype=int))} blocks of shape "
                     f"{list(rows.out_block + (rows.features,))}; every entry between different rows is 0")
    elif rows is not None and not rows.reduced and rows.rows:
        blocks = blockmath.full_to_blocks(value, rows)
        # every entry above tol lies in a block: none between different rows
        if _count_above(value, tol) == _count_above(blocks, tol):
            notes.append("block-diagonal across batch rows (verified: every entry between different rows is 0); "
                         "--layout blocks shows only the blocks")
        else:
            notes.append("NOT block-diagonal: entries between different rows are non-zero")
    if blocks is not None and rows is not None and rows.out_axis is not None and not rows.elementwise:
        if np.abs(blocks.sum(axis=-1)).max() <= tol * blocks.shape[-1]:
            notes.append("each block's rows sum to 0: the output does not change when every input of a row moves together")
        if np.abs(blocks.sum(axis=-2)).max() <= tol * blocks.shape[-2]:
            notes.append("each block's columns sum to 0: the vjp with ones (out.backward(ones)) is zero")
        if blocks.shape[-1] == blocks.shape[-2] and _asymmetry(blocks) <= tol:
            notes.append("each block is symmetric")
    elif value.ndim == 2 and value.shape[0] == value.shape[1] and layout is Layout.FULL:
        if _asymmetry(value) <= tol:
            notes.append("symmetric")
    zeros = sum(int(np.count_nonzero(part == 0)) for part in chunks(value, CHUNK)) / value.size
    if zeros:
        notes.append(f"{zeros:.1%} of the entries shown are exactly 0")
    return tuple(notes)


def _count_above(a: np.ndarray, tol: float) -> int:
    return sum(int(np.count_nonzero(np.abs(part) > tol)) for part in chunks(a, CHUNK))


def _asymmetry(m: np.ndarray) -> float:
    """max |m - m^T| over the last two axes, a band of rows at a time."""
    n = m.shape[-1]
    step = max(1, CHUNK // max(1, m.size // max(1, m.shape[-2])))
    worst = 0.0
    for i in range(0, m.shape[-2], step):
        band = m[..., i:i + step, :]
        worst = max(worst, float(np.abs(band - np.swapaxes(m[..., :, i:i + step], -1, -2)).max()))
    return worst if n else 0.0
