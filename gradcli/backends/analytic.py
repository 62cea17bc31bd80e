"""analytic: the catalogue's closed forms, in NumPy (never imports torch)."""

from __future__ import annotations

from ..core.errors import BackendError
from ..problem.problem import Problem
from ..core.options import BackendName
from .rowwise import Derivative, RowBackend


class AnalyticBackend(RowBackend):
    name = BackendName.ANALYTIC

    def derivative(self, problem: Problem) -> Derivative:
        if not problem.function.closed_form:
            raise BackendError(f"--backend analytic: {problem.function.name} has no closed form; "
                               "use autograd, forward or fd")
        # Blocks are formed only when a Jacobian asks for them: vjp, jvp and
        # gradients use the kernel's own row operators (O(rows C), never C x C).
        return Derivative(kernel=problem.kernel(), blocks=None)
