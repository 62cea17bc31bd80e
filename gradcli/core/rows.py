"""``--rows SEL``: compute only some batch rows (dim 0 of the input).

Only where rows are independent and the output keeps them (softmax, a loss
with ``--reduction none``, user code's per-sample outputs): there the rows'
derivatives do not depend on the other rows, so the problem is rebuilt on the
selected rows alone. A reduced loss is refused: its mean couples every row
through the normaliser.
"""

from __future__ import annotations

import numpy as np

from .errors import UsageError


def parse_rows(text: str, n: int) -> np.ndarray:
    """``0`` | ``0,3`` | ``2:10`` (Python slice, end excluded) -> row indices in ``[0, n)``."""
    try:
        if ":" in text:
            parts = [int(p) if p.strip() else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            indices = np.arange(n)[slice(*parts)]
        else:
            indices = np.array([int(p) for p in text.split(",")])
    except ValueError:
        raise UsageError(f"--rows: cannot read {text!r}; write a row (0), a list (0,3) or a range (2:10)") from None
    if indices.size == 0:
        raise UsageError(f"--rows: {text!r} selects no row of the {n} rows")
    if np.unique(indices).size != indices.size:  # a repeated row would be copied and computed again
        raise UsageError(f"--rows: {text[:40]!r} names a row more than once; name each row once")
    bad = indices[(indices < 0) | (indices >= n)]
    if bad.size:
        raise UsageError(f"--rows: row {int(bad[0])} is out of range for {n} rows; use 0..{n - 1}")
    return indices


SHARED = ("class_weight", "weight", "bias")  # one value for every row: a class weight (C,), a Linear layer's W and b


def has_batch_axis(name: str, array: np.ndarray, input_shape: tuple[int, ...]) -> bool:
    """Whether argument ``name`` carries the batch axis (dim 0 of the input, size B).

    Class weights, a Linear layer's weight and bias, and module parameters are
    shared by every row. ``pos_weight`` broadcasts against the input from the
    right, so it reaches the batch axis only with the input's ndim, and carries
    it only with size B there (size 1 is broadcast to every row). Any other
    argument (the target, user code's extra arrays) is per-row when its dim 0
    has size B.
    """
    if name in SHARED or name.startswith("param:") or array.ndim == 0:
        return False
    if name == "pos_weight" and array.ndim != len(input_shape):
        return False
    return array.shape[0] == input_shape[0]


def batch_rows(args, index) -> dict[str, np.ndarray]:
    """Every argument at batch rows ``index``: those with the batch axis sliced
    along it (:func:`has_batch_axis`), the others kept whole."""
    shape = args["input"].shape
    return {name: (a[index] if has_batch_axis(name, a, shape) else a) for name, a in args.items()}


def output_gap(whole: np.ndarray, got: np.ndarray) -> float | None:
    """None when ``got`` (the code run on some rows alone) equals ``whole`` (the same
    rows of the whole batch's output) to rounding, ``sqrt(eps)`` relative to the
    largest ``|whole|`` (a smaller batch may sum in another order); else the
    largest difference (nan when the shapes differ): the rows alone are another function."""
    if got.shape != whole.shape:
        return float("nan")
    tol = float(np.finfo(got.dtype).eps) ** 0.5
    scale = float(np.nanmax(np.abs(whole), initial=0.0))
    if np.allclose(got, whole, rtol=tol, atol=tol * scale, equal_nan=True):
        return None
    return float(np.nanmax(np.abs(got - whole)))
