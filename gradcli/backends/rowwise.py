"""Shared by the NumPy backends (analytic, fd): they produce per-row blocks,
and every quantity follows from the blocks through :mod:`gradcli.blockmath`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import blockmath
from ..functions import RowKernel
from ..problem import Problem
from ..results import Layout
from .base import Backend, Computed


@dataclass(frozen=True)
class Blocks:
    """Blocks ``(*rows, *out_block, C)`` at one point, with an optional
    per-entry error estimate of the same shape."""

    kernel: RowKernel
    blocks: np.ndarray
    error: np.ndarray | None = None
    evaluations: int | None = None
    notes: tuple[str, ...] = ()


# A linear map of the blocks: (blocks, coef, vector) -> value.
LinearMap = Callable[[np.ndarray, "np.ndarray | None", "np.ndarray | None"], np.ndarray]


class RowBackend(Backend):
    """A backend that computes per-row blocks; subclasses implement :meth:`blocks`."""

    @abc.abstractmethod
    def blocks(self, problem: Problem) -> Blocks:
        """The Jacobian blocks of ``problem``."""

    def jacobian(self, problem: Problem, layout: Layout) -> Computed:
        full = layout is Layout.FULL
        return self._finish(problem, lambda b, coef, _: blockmath.jacobian(b, problem.rows, coef, full), None)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        return self._finish(problem, lambda b, coef, v: blockmath.vjp(b, problem.rows, coef, v), cotangent)

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        return self._finish(problem, lambda b, coef, t: blockmath.jvp(b, problem.rows, coef, t), tangent)

    def _finish(self, problem: Problem, apply: LinearMap, vector: np.ndarray | None) -> Computed:
        """Apply the linear map to the blocks; an error estimate goes through the
        same map with absolute values (a bound on how the entries' errors add)."""
        got = self.blocks(problem)
        coef = got.kernel.coef
        value = apply(got.blocks, coef, vector)
        error = None
        if got.error is not None:
            error = apply(got.error, None if coef is None else np.abs(coef), None if vector is None else np.abs(vector))
        return Computed(
            value=value.astype(problem.dtype, copy=False),
            output=evaluate(got.kernel, problem).astype(problem.dtype, copy=False),
            error=None if error is None else error.astype(problem.dtype, copy=False),
            evaluations=got.evaluations,
            notes=got.notes,
        )


def evaluate(kernel: RowKernel, problem: Problem) -> np.ndarray:
    """The function's value from its NumPy row-form forward."""
    per_row = kernel.forward(kernel.x0)
    if kernel.empty_mean:
        return np.asarray(np.nan, dtype=per_row.dtype)
    if kernel.coef is not None:
        return np.asarray((kernel.coef * per_row).sum())
    return problem.rows.out_from_rows(per_row)
