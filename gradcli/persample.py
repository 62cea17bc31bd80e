"""User code's per-sample view, decided once by the plan: ``--layout blocks``
(refused, exit 2, where samples interact) or ``--layout auto`` (blocks when
the output keeps the batch and the samples do not interact, else full with a
note saying why). The checks themselves: :mod:`gradcli.functions.independence`.
"""

from __future__ import annotations

from .options import Layout
from .problem import Problem


def user_view(problem: Problem, layout: Layout, verify: bool) -> tuple[Problem, Layout]:
    """The view a user-code Jacobian is computed on, and its layout."""
    from .functions.independence import auto_blocks, verify_blocks

    if layout is Layout.BLOCKS:
        view = problem.as_per_sample()  # refuses outputs without the batch, and batch norm in training mode
        return (view.with_notes(verify_blocks(problem.bound)) if verify else view), layout
    if layout is Layout.AUTO and problem.wrt == "input":
        use, note = auto_blocks(problem.bound, verify)
        if use:
            return problem.as_per_sample().with_notes(note), Layout.BLOCKS
        return problem.with_notes(note), Layout.FULL
    return problem, layout
