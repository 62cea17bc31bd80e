"""Shared by the NumPy backends (analytic, fd). A backend supplies the
derivative at the point — per-row blocks for a row kernel, or for a general
kernel either nothing (use the kernel's closed-form vjp/jvp) or the full
Jacobian (fd) — and every quantity follows here.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import numpy as np

from .. import blockmath
from ..functions import GeneralKernel, RowKernel
from ..problem import Problem
from ..results import Layout, Quantity
from .base import Backend, Computed


@dataclass(frozen=True)
class Derivative:
    """The derivative at one point, as a backend produced it.

    Row kernel: ``blocks`` ``(*rows, *out_block, C)``. General kernel:
    ``blocks`` is None (closed-form operators) or the full Jacobian
    ``output_shape + wrt_shape``. ``error`` is a per-entry estimate shaped like
    ``blocks`` (fd only), ``nonsmooth`` a mask shaped like ``blocks`` (fd:
    the differences did not converge).
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
        return self._finish(problem, Quantity.JACOBIAN, layout.value)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        return self._finish(problem, Quantity.VJP, cotangent)

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        return self._finish(problem, Quantity.JVP, tangent)

    def _finish(self, problem: Problem, quantity: Quantity, arg) -> Computed:
        """Apply the quantity's linear map to the derivative; an error estimate
        goes through the same map with absolute values (how entries' errors add),
        and so does a non-smooth mask (a result entry is non-smooth when a
        non-smooth entry enters it with a non-zero weight)."""
        got = self.derivative(problem)
        kernel = got.kernel
        if isinstance(kernel, GeneralKernel):
            value = general_map(kernel, got.blocks, quantity, arg)

            def absolute_map(entries):
                return general_map(kernel, entries, quantity, _abs(arg))
            output = kernel.forward(kernel.x0)
        else:
            value = row_map(problem, got.blocks, kernel.coef, quantity, arg, self.options.allocate)
            coef = None if kernel.coef is None else np.abs(kernel.coef)

            def absolute_map(entries):
                return row_map(problem, entries, coef, quantity, _abs(arg))
            output = blockmath.forward(kernel, problem.rows, problem.rows.from_rows(kernel.x0))
        error = None if got.error is None else absolute_map(got.error)
        nonsmooth = None
        if got.nonsmooth is not None:
            nonsmooth = absolute_map(got.nonsmooth.astype(value.dtype)) > 0 if got.nonsmooth.any() else \
                np.zeros(np.shape(value), dtype=bool)
        return Computed(value=value, output=output, error=error, evaluations=got.evaluations, notes=got.notes,
                        nonsmooth=nonsmooth)


def _abs(arg):
    return arg if isinstance(arg, str) else np.abs(arg)


def row_map(problem: Problem, blocks, coef, quantity: Quantity, arg, allocate=np.zeros):
    if quantity is Quantity.JACOBIAN:
        return blockmath.jacobian(blocks, problem.rows, coef, arg, allocate)
    if quantity is Quantity.JVP:
        return blockmath.jvp(blocks, problem.rows, coef, arg)
    return blockmath.vjp(blocks, problem.rows, coef, arg)


def general_map(kernel: GeneralKernel, full: np.ndarray | None, quantity: Quantity, arg):
    """A quantity of a general kernel: from its closed-form operators, or by
    contracting a full Jacobian ``output_shape + wrt_shape``."""
    out_ndim, wrt_ndim = len(kernel.output_shape), kernel.x0.ndim
    if quantity is Quantity.JACOBIAN:
        return general_full(kernel) if full is None else full
    if quantity is Quantity.JVP:
        return kernel.jvp(arg) if full is None else np.tensordot(full, arg, axes=wrt_ndim)
    return kernel.vjp(arg) if full is None else np.tensordot(arg, full, axes=out_ndim)


def general_full(kernel: GeneralKernel) -> np.ndarray:
    """The full Jacobian from whole bases pushed through the vjp (one per output
    entry) or the jvp (one per input entry), whichever basis is smaller."""
    n_out, n_in = math.prod(kernel.output_shape), kernel.x0.size
    dtype = kernel.x0.dtype
    if n_out <= n_in:
        rows = kernel.vjp(np.eye(n_out, dtype=dtype).reshape((n_out,) + kernel.output_shape))
        return rows.reshape(kernel.output_shape + kernel.x0.shape)
    cols = kernel.jvp(np.eye(n_in, dtype=dtype).reshape((n_in,) + kernel.x0.shape))
    return np.moveaxis(cols.reshape((n_in,) + kernel.output_shape), 0, -1).reshape(kernel.output_shape + kernel.x0.shape)
