"""``--plot PATH.png``: the value as a heatmap image (matplotlib, the optional
extra ``gradcli[plot]``), on a diverging scale centred at zero, with axes
labelled by output and input index. Only draws: ``outfile`` writes the file."""

from __future__ import annotations

import math

import numpy as np

from ..core.options import Layout
from ..core.results import Result

MAX_PANELS = 16  # blocks drawn at most, one panel each
# A panel is a few hundred pixels wide: a matrix larger than this per axis is drawn pooled (see
# _shrink), so that matplotlib's image (8 floats a cell) never grows with the value (--max-memory).
MAX_CELLS = 400


def _panels(result: Result) -> list[tuple[str, np.ndarray, str, str]]:
    """(title, 2-D matrix, y label, x label) for each panel."""
    value = np.asarray(result.value, dtype=np.float64)
    if result.layout is Layout.BLOCKS:
        n_rows = result.batch_axes
        rows = value.shape[:n_rows]
        flat = value.reshape((-1,) + value.shape[n_rows:])
        panels = []
        for k in range(min(len(flat), MAX_PANELS)):
            block = flat[k]
            block = block.reshape(1, -1) if block.ndim == 1 else block.reshape(block.shape[0], -1)
            index = np.unravel_index(k, rows)
            panels.append((f"row {', '.join(str(int(i)) for i in index)}", block, "output feature", "input feature"))
        return panels
    if value.ndim == 0:
        value = value.reshape(1, 1)
    if result.layout is Layout.FULL and result.quantity.value == "jacobian" and result.output_shape:
        n_out = int(np.prod(result.output_shape, dtype=int))
        return [("J", value.reshape(n_out, -1), "output index (flattened)", f"{result.wrt} index (flattened)")]
    matrix = value.reshape(1, -1) if value.ndim == 1 else value.reshape(value.shape[0], -1)
    return [(result.quantity.value, matrix, "index 0", "other indices (flattened)")]


def _shrink(matrix: np.ndarray, cells: int = MAX_CELLS) -> np.ndarray:
    """``matrix`` pooled to at most ``cells`` × ``cells``: each cell of the image is the entry of
    largest magnitude (its sign kept) in its block of the matrix, so a lone spike still shows;
    computed a band of rows at a time (no temporary the size of the matrix)."""
    rows, cols = matrix.shape
    if rows <= cells and cols <= cells:
        return matrix
    row_starts = np.linspace(0, rows, min(rows, cells) + 1).astype(int)[:-1]
    col_starts = np.linspace(0, cols, min(cols, cells) + 1).astype(int)[:-1]
    out = np.empty((len(row_starts), len(col_starts)))
    bounds = [*row_starts[1:], rows]
    with np.errstate(invalid="ignore"):
        for i, (start, stop) in enumerate(zip(row_starts, bounds)):
            band = matrix[start:stop]
            high = np.fmax.reduce(np.fmax.reduceat(band, col_starts, axis=1), axis=0)
            low = np.fmin.reduce(np.fmin.reduceat(band, col_starts, axis=1), axis=0)
            out[i] = np.where(np.abs(low) > np.abs(high), low, high)
    return out


def draw_plot(result: Result, handle) -> None:
    """Draw ``result`` as PNG into the binary file ``handle`` (the caller writes the file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if result.spectrum is not None:
        return draw_spectrum(result, handle, plt)

    panels = [(title, _shrink(matrix), y, x) for title, matrix, y, x in _panels(result)]
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.5 * rows), squeeze=False, constrained_layout=True)
    limit = max((float(np.nanmax(np.abs(m))) for _, m, _, _ in panels if np.isfinite(m).any()), default=1.0) or 1.0
    for ax, (title, matrix, ylabel, xlabel) in zip(axes.flat, panels):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="value (0 is white)")
    fig.suptitle(f"{result.quantity.value} of {result.function} w.r.t. {result.wrt} ({result.backend.value})")
    try:
        fig.savefig(handle, format="png", dpi=80)
    finally:
        plt.close(fig)


def draw_spectrum(result: Result, handle, plt) -> None:
    """``hessian --eig K --plot``: a histogram of every eigenvalue when they are
    exact (from the blocks), else the 2K found, as a stem plot."""
    spectrum = result.spectrum
    fig, ax = plt.subplots(figsize=(7, 3.5), constrained_layout=True)
    if spectrum.values is not None:
        ax.hist(np.asarray(spectrum.values, dtype=np.float64), bins=min(100, max(10, spectrum.values.size // 4)),
                color="#4a76b8")
        ax.set_ylabel("count")
    else:
        found = np.concatenate([spectrum.smallest, spectrum.largest]).astype(np.float64)
        ax.stem(found, np.ones_like(found))
        ax.set_yticks([])
    for v in (spectrum.smallest[0], spectrum.largest[-1]):
        ax.axvline(float(v), color="#c0392b", linestyle="--", linewidth=1)
    ax.set_xlabel("eigenvalue")
    ax.set_title(f"Hessian spectrum of {result.function} w.r.t. {result.wrt} ({result.backend.value}): "
                 f"max {float(spectrum.largest[-1]):.4g}, min {float(spectrum.smallest[0]):.4g}", fontsize=9)
    try:
        fig.savefig(handle, format="png", dpi=80)
    finally:
        plt.close(fig)
