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
    bad = indices[(indices < 0) | (indices >= n)]
    if bad.size:
        raise UsageError(f"--rows: row {int(bad[0])} is out of range for {n} rows; use 0..{n - 1}")
    return indices


def batch_rows(args, index) -> dict[str, np.ndarray]:
    """The input and the target at batch rows ``index`` (dim 0); every other
    argument (weights, parameters) is shared by all rows and kept whole."""
    n = args["input"].shape[0]
    return {name: (a[index] if name in ("input", "target") and a.ndim and a.shape[0] == n else a)
            for name, a in args.items()}
