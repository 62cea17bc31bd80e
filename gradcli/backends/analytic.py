"""analytic: the catalogue's closed-form blocks, in NumPy (never imports torch)."""

from __future__ import annotations

from ..problem import Problem
from ..results import BackendName
from .rowwise import Blocks, RowBackend


class AnalyticBackend(RowBackend):
    name = BackendName.ANALYTIC

    def blocks(self, problem: Problem) -> Blocks:
        kernel = problem.function.kernel(problem.args, problem.params, problem.wrt)
        return Blocks(kernel=kernel, blocks=kernel.blocks())
