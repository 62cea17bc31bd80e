"""Structure notes on a Jacobian, in words: block-diagonal (verified on a full
Jacobian), diagonal, block rows or columns summing to zero, symmetry, the
fraction of exact zeros. Pure NumPy."""

from __future__ import annotations

import numpy as np

from ..core.options import Layout
from ..core.rowform import RowLayout, full_to_blocks, off_block_max

MAX_ENTRIES = 50_000_000  # past this, the notes would cost more than they tell
SAMPLE_ENTRIES = 1 << 16  # per-block properties are checked on the first blocks that fit this
VERIFY_ENTRIES = 1 << 20  # a full Jacobian up to this size has its off-block entries verified one by one


def _scattered(full: np.ndarray, rows: RowLayout, dtype) -> tuple[str, ...]:
    """Notes on a full Jacobian scattered from its blocks, read off the blocks."""
    blocks = full_to_blocks(full, rows)
    notes = describe(blocks, Layout.BLOCKS, rows, dtype)
    if not notes:  # non-finite blocks: their off-block entries may be nan too (jacrev's 0 * inf)
        return ()
    zeros = 1.0 - np.count_nonzero(blocks) / full.size  # every entry off the blocks is 0
    kept = [n for n in notes[1:] if "exactly 0" not in n]
    return ("block-diagonal across batch rows (scattered from the per-row blocks: every entry between different "
            "rows is 0); --layout blocks shows only the blocks", *kept,
            f"{zeros:.1%} of the entries shown are exactly 0")


def _largest(value: np.ndarray) -> float:
    """max |value| without a temporary the size of ``value`` (NaN propagates)."""
    return max(abs(float(value.max())), abs(float(value.min())))


def describe(value: np.ndarray, layout: Layout, rows: RowLayout | None, dtype, *, per_sample: bool = False,
             from_blocks: bool = False) -> tuple[str, ...]:
    """Notes on ``value``'s structure, checked on the value itself. Whole-array
    checks are single passes without temporaries; per-block properties (sums,
    symmetry) are checked on the first blocks that fit ``SAMPLE_ENTRIES`` and
    say so when that is not all of them. ``from_blocks``: a full Jacobian that
    was scattered from per-row blocks (every backend does, where rows exist):
    its block structure holds by construction: up to ``VERIFY_ENTRIES`` the
    entries between rows are still verified one by one, past it the notes are
    read off the blocks, a ``1 / n_rows`` part of it, and say so."""
    if value.size == 0 or value.size > MAX_ENTRIES:
        return ()
    if from_blocks and value.size > VERIFY_ENTRIES and layout is Layout.FULL and rows is not None \
            and not rows.reduced and rows.rows and not rows.elementwise:
        return _scattered(value, rows, dtype)
    whole = value
    if layout is Layout.BLOCKS and rows is not None and not per_sample and value.size > SAMPLE_ENTRIES:
        # Blocks are independent rows: their properties are read off the first ones,
        # so the notes cost O(1) next to the result, not a pass over all of it.
        flat = value.reshape((-1,) + rows.out_block + (rows.features,))
        value = flat[: max(1, SAMPLE_ENTRIES // max(1, flat[0].size))]
    largest = _largest(value)
    if not np.isfinite(largest):
        return ()
    tol = 100 * float(np.finfo(dtype).eps) * max(1.0, largest)
    notes: list[str] = []
    blocks = None
    if layout is Layout.DIAG:
        notes.append("diagonal (elementwise): J[i, j] = 0 whenever i != j; the value shown is the diagonal")
    elif layout is Layout.BLOCKS and per_sample:  # user code
        notes.append(f"per-sample blocks: one Jacobian of shape {list(value.shape[1:])} per sample, "
                     "d out[i] / d x[j] = 0 for samples i != j (`gradcli jacobian --layout blocks --verify-blocks` "
                     "checks it on three samples first)")
        rows = None
    elif layout is Layout.BLOCKS:
        blocks = value
        notes.append(f"block-diagonal across batch rows: {rows.n_rows} blocks of shape "
                     f"{list(rows.out_block + (rows.features,))}; every entry between different rows is 0")
    elif rows is not None and not rows.reduced and rows.rows:
        # The entries between different rows themselves, not a difference of two sums
        # of squares (which rounding can push either way).
        if off_block_max(value, rows) <= tol:
            notes.append("block-diagonal across batch rows (verified: every entry between different rows is 0); "
                         "--layout blocks shows only the blocks")
            blocks = full_to_blocks(value, rows) if not rows.elementwise else None
        else:
            notes.append("NOT block-diagonal: entries between different rows are non-zero")
    if blocks is not None and rows is not None and rows.out_axis is not None and not rows.elementwise:
        flat = blocks.reshape((-1,) + blocks.shape[-2:])
        sample = flat[: max(1, SAMPLE_ENTRIES // max(1, flat[0].size))]
        total = rows.n_rows
        checked = "" if len(sample) == total else f" (checked on the first {len(sample)} of {total} blocks)"
        if np.abs(sample.sum(axis=-1)).max() <= tol * sample.shape[-1]:
            notes.append("each block's rows sum to 0: the output does not change when every input of a row moves "
                         f"together{checked}")
        if np.abs(sample.sum(axis=-2)).max() <= tol * sample.shape[-2]:
            notes.append(f"each block's columns sum to 0: the vjp with ones (out.backward(ones)) is zero{checked}")
        if sample.shape[-1] == sample.shape[-2] and np.abs(sample - np.swapaxes(sample, -1, -2)).max() <= tol:
            notes.append(f"each block is symmetric{checked}")
    elif value.ndim == 2 and value.shape[0] == value.shape[1] and layout is Layout.FULL:
        if np.abs(value - value.T).max() <= tol:
            notes.append("symmetric")
    zeros = 1.0 - np.count_nonzero(value) / value.size
    if zeros:
        of = "shown" if value is whole else "of the blocks checked"
        notes.append(f"{zeros:.1%} of the entries {of} are exactly 0")
    return tuple(notes)
