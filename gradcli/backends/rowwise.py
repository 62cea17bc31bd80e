"""Shared by the NumPy backends (analytic, fd). A backend supplies the
derivative at the point — per-row blocks (fd), or nothing and the kernel's
own operators (analytic) — and every quantity follows here, through
:mod:`gradcli.rowform`.

An fd error estimate goes through the same linear map as the value, with
absolute values (how entries' errors add).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from .. import rowform
from ..options import Layout
from ..problem import Problem
from ..rowform import GeneralKernel, RowKernel
from .base import Backend, Computed


@dataclass(frozen=True)
class Derivative:
    """The derivative at one point, as a backend produced it.

    Row kernel: ``blocks`` ``(*rows, *out_block, C)``, or None to use the
    kernel's closed forms. General kernel: ``blocks`` is None (closed-form
    operators) or the full Jacobian ``output_shape + wrt_shape``. ``error`` is
    a per-entry estimate shaped like ``blocks`` (fd only).
    """

    kernel: RowKernel | GeneralKernel
    blocks: np.ndarray | None
    error: np.ndarray | None = None
    evaluations: int | None = None
    notes: tuple[str, ...] = ()


class RowBackend(Backend):
    """A NumPy backend; subclasses implement :meth:`derivative`."""

    @abc.abstractmethod
    def derivative(self, problem: Problem) -> Derivative:
        """The derivative of ``problem`` at its point."""

    def jacobian(self, problem: Problem, layout: Layout) -> Computed:
        got = self.derivative(problem)
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            value = rowform.general_full(kernel) if got.blocks is None else got.blocks
            return self._computed(problem, got, value, got.error)
        rows = problem.rows
        blocks = kernel.blocks() if got.blocks is None else got.blocks
        if rows.reduced:  # the Jacobian of one number is its gradient
            one = np.ones((), dtype=blocks.dtype)
            error = None if got.error is None else rowform.vjp_blocks(got.error, rows, np.abs(kernel.coef), one)
            return self._computed(problem, got, rowform.vjp_blocks(blocks, rows, kernel.coef, one), error)
        if layout is Layout.DIAG:
            shape = rows.from_rows
        elif layout is Layout.FULL:
            def shape(b):
                return rowform.blocks_to_full(b, rows, self.options.allocate)
        else:
            def shape(b):
                return b
        # fd's error is small next to the value: it is shaped in memory, never streamed.
        error = None if got.error is None else (rowform.blocks_to_full(got.error, rows) if layout is Layout.FULL
                                                 else shape(got.error))
        return self._computed(problem, got, shape(blocks), error)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        got = self.derivative(problem)
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            if got.blocks is None:
                return self._computed(problem, got, kernel.vjp(cotangent), None)
            axes = len(kernel.output_shape)
            return self._computed(problem, got, np.tensordot(cotangent, got.blocks, axes=axes),
                                  _maybe(got.error, lambda e: np.tensordot(np.abs(cotangent), e, axes=axes)))
        rows = problem.rows
        if got.blocks is None:
            return self._computed(problem, got, rowform.vjp(kernel, rows, cotangent), None)
        coef = None if kernel.coef is None else np.abs(kernel.coef)
        return self._computed(problem, got, rowform.vjp_blocks(got.blocks, rows, kernel.coef, cotangent),
                              _maybe(got.error, lambda e: rowform.vjp_blocks(e, rows, coef, np.abs(cotangent))))

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        got = self.derivative(problem)
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            if got.blocks is None:
                return self._computed(problem, got, kernel.jvp(tangent), None)
            axes = kernel.x0.ndim
            return self._computed(problem, got, np.tensordot(got.blocks, tangent, axes=axes),
                                  _maybe(got.error, lambda e: np.tensordot(e, np.abs(tangent), axes=axes)))
        rows = problem.rows
        if got.blocks is None:
            return self._computed(problem, got, rowform.jvp(kernel, rows, tangent), None)
        coef = None if kernel.coef is None else np.abs(kernel.coef)
        return self._computed(problem, got, rowform.jvp_blocks(got.blocks, rows, kernel.coef, tangent),
                              _maybe(got.error, lambda e: rowform.jvp_blocks(e, rows, coef, np.abs(tangent))))

    @staticmethod
    def _computed(problem: Problem, got: Derivative, value: np.ndarray, error: np.ndarray | None) -> Computed:
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            output = kernel.forward(kernel.x0)
        else:
            output = rowform.forward(kernel, problem.rows, problem.rows.from_rows(kernel.x0))
        return Computed(value=value, output=output, error=error, evaluations=got.evaluations, notes=got.notes)


def _maybe(error, apply):
    return None if error is None else apply(error)
