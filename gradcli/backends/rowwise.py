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

from ..core import rowform
from ..core.options import Layout
from ..problem.problem import Problem
from ..core.rowform import GeneralKernel, RowKernel
from .base import Backend, Computed


@dataclass(frozen=True)
class Derivative:
    """The derivative at one point, as a backend produced it.

    Row kernel: ``blocks`` ``(*rows, *out_block, C)``, or None to use the
    kernel's closed forms. General kernel: ``blocks`` is None (closed-form
    operators) or the full Jacobian ``output_shape + wrt_shape``. ``error`` is
    a per-entry estimate shaped like ``blocks`` (fd only), ``nonsmooth`` a mask
    shaped like ``blocks`` (fd: the differences did not converge).
    """

    kernel: RowKernel | GeneralKernel
    blocks: np.ndarray | None
    error: np.ndarray | None = None
    evaluations: int | None = None
    notes: tuple[str, ...] = ()
    nonsmooth: np.ndarray | None = None


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
            return self._computed(problem, got, value, lambda entries: entries)
        rows = problem.rows
        blocks = kernel.blocks() if got.blocks is None else got.blocks
        if rows.reduced:  # the Jacobian of one number is its gradient
            one = np.ones((), dtype=blocks.dtype)
            return self._computed(problem, got, rowform.vjp_blocks(blocks, rows, kernel.coef, one),
                                  lambda entries: rowform.vjp_blocks(entries, rows, np.abs(kernel.coef), one))
        if layout is Layout.DIAG:
            return self._computed(problem, got, rows.from_rows(blocks), rows.from_rows)
        if layout is Layout.FULL:
            # fd's error and mask are small next to the value: shaped in memory, never streamed.
            full = rowform.blocks_to_full(blocks, rows, self.options.allocate, _off_blocks(problem, got, blocks))
            return self._computed(problem, got, full, lambda entries: rowform.blocks_to_full(entries, rows))
        return self._computed(problem, got, blocks, lambda entries: entries)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        return self._linear_map(problem, cotangent, transpose=True)

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        return self._linear_map(problem, tangent, transpose=False)

    def _linear_map(self, problem: Problem, vector: np.ndarray, transpose: bool) -> Computed:
        """``v^T J`` (``transpose``) or ``J t``: from the kernel's own operators, or by
        contracting the backend's blocks (and, with absolute values, its error and mask)."""
        got = self.derivative(problem)
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            if got.blocks is None:
                return self._computed(problem, got, (kernel.vjp if transpose else kernel.jvp)(vector), None)
            if transpose:
                def contract(m, v):
                    return np.tensordot(v, m, axes=len(kernel.output_shape))
            else:
                def contract(m, v):
                    return np.tensordot(m, v, axes=kernel.x0.ndim)
            return self._computed(problem, got, contract(got.blocks, vector),
                                  lambda entries: contract(entries, np.abs(vector)))
        rows = problem.rows
        if got.blocks is None:
            return self._computed(problem, got, (rowform.vjp if transpose else rowform.jvp)(kernel, rows, vector), None)
        apply = rowform.vjp_blocks if transpose else rowform.jvp_blocks
        coef = None if kernel.coef is None else np.abs(kernel.coef)
        return self._computed(problem, got, apply(got.blocks, rows, kernel.coef, vector),
                              lambda entries: apply(entries, rows, coef, np.abs(vector)))

    @staticmethod
    def _computed(problem: Problem, got: Derivative, value: np.ndarray, absolute) -> Computed:
        """The result, with fd's error estimate and non-smooth mask taken through
        ``absolute`` — the value's linear map on absolute values: errors add, and a
        result entry is non-smooth when a non-smooth entry enters it."""
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            output = kernel.forward(kernel.x0)
        else:
            output = rowform.output(kernel, problem.rows)
        error = nonsmooth = None
        if absolute is not None and got.error is not None:
            error = absolute(got.error)
        if absolute is not None and got.nonsmooth is not None:
            nonsmooth = (absolute(got.nonsmooth.astype(np.asarray(value).dtype)) > 0 if got.nonsmooth.any()
                         else np.zeros(np.shape(value), dtype=bool))
        return Computed(value=value, output=output, error=error, evaluations=got.evaluations, notes=got.notes,
                        nonsmooth=nonsmooth)


def _off_blocks(problem: Problem, got: Derivative, blocks: np.ndarray) -> np.ndarray | None:
    """The entries off the blocks of a full Jacobian, as torch's reverse mode
    gives them: the vjp of a zero cotangent, shaped like the argument (see
    ``rowform.fill_off_blocks``); None where every block entry is finite (then
    they are all 0). A built-in's comes from its own backward formulas (log's
    ``0 / x``: 0 at a subnormal x where ``1/x`` overflows, nan at 0), for fd
    too: an entry fd could not difference (nan) is that entry's failure and
    never another's. User code's fd blocks spread a non-finite entry only from
    rows whose output is itself not finite (outside the domain, where torch's
    backward makes ``0 * inf`` too)."""
    if np.isfinite(blocks).all():
        return None
    kernel, rows = got.kernel, problem.rows
    zero = np.zeros(rows.unreduced_shape, dtype=blocks.dtype)
    with np.errstate(all="ignore"):
        if problem.function.closed_form:
            return rowform.vjp(kernel, rows, zero)
        off = rowform.vjp_blocks(blocks, rows, None, zero)
        out_rows = rows.out_to_rows(rowform.output(kernel, rows))  # (*rows, *out_block)
    finite = np.isfinite(out_rows.reshape(rows.rows + (-1,))).all(axis=-1)
    spread = rows.from_rows(np.broadcast_to(~finite[..., None], rows.rows + (rows.features,)))
    return np.where(spread, off, 0.0)
