"""``--rows SEL``: compute only some batch rows (dim 0 of the input).

Only where rows are independent and the output keeps them (softmax, a loss
with ``--reduction none``, user code's per-sample outputs): there the rows'
derivatives do not depend on the other rows, so the problem is rebuilt on the
selected rows alone. A reduced loss is refused: its mean couples every row
through the normaliser.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .errors import UsageError
from .problem import Problem, build_problem


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


def batch_rows(args, index) -> dict[str, np.ndarray]:
    """The input and the target at batch rows ``index`` (dim 0); every other
    argument (weights, parameters) is shared by all rows and kept whole."""
    n = args["input"].shape[0]
    return {name: (a[index] if name in ("input", "target") and a.ndim and a.shape[0] == n else a)
            for name, a in args.items()}


def select_rows(problem: Problem, text: str) -> Problem:
    x = problem.args["input"]
    user = hasattr(problem.function, "per_sample")
    keeps_rows = user or (problem.rows is not None and not problem.rows.reduced and problem.rows.rows
                          and problem.rows.in_axis != 0)
    if x.ndim < 2 or not keeps_rows or problem.output_shape[:1] != x.shape[:1]:
        raise UsageError("--rows: needs a batch of independent rows along dim 0 that the output keeps "
                         "(softmax, a loss with --reduction none, a per-sample model); drop --rows")
    if problem.wrt != "input":
        raise UsageError("--rows: selects rows of the input; it cannot be combined with --wrt " + problem.wrt)
    indices = parse_rows(text, x.shape[0])
    n = x.shape[0]
    args = batch_rows({k: a for k, a in problem.args.items() if not k.startswith("param:")}, indices)
    params = {k: v for k, v in problem.params.items() if not k.startswith("_")}
    sub = build_problem(problem.function, args, params, wrt=problem.wrt, dtype=str(problem.dtype), allow_nonfinite=True)
    note = f"--rows {text}: rows {indices.tolist() if indices.size <= 8 else f'{indices[0]}..{indices[-1]}'} of {n}"
    return dataclasses.replace(sub, notes=sub.notes + (note,))
