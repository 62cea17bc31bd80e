"""analytic: the catalogue's closed forms, in NumPy (never imports torch)."""

from __future__ import annotations

from ..errors import BackendError
from ..functions import GeneralKernel
from ..problem import Problem
from ..results import BackendName
from .rowwise import Derivative, RowBackend


class AnalyticBackend(RowBackend):
    name = BackendName.ANALYTIC

    def derivative(self, problem: Problem) -> Derivative:
        if not problem.function.closed_form:
            raise BackendError(f"--backend analytic: {problem.function.name} has no closed form; "
                               "use autograd, forward or fd")
        kernel = problem.function.kernel(problem.args, problem.params, problem.wrt, axis=problem.axis)
        blocks = None if isinstance(kernel, GeneralKernel) else kernel.blocks()
        return Derivative(kernel=kernel, blocks=blocks)
