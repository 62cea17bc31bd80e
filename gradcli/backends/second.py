"""Second derivatives behind one small interface: ``hessian(problem, layout)``
and ``hvp(problem, tangent)``, each returning a :class:`~.base.Computed`.

- analytic (here): the catalogue's closed forms through :mod:`gradcli.rowform.second`;
- fd (:mod:`.fd_second`): second differences of the function itself;
- autograd, forward (:mod:`.torch_second`): reverse over reverse, forward over reverse.

``hessian`` values: ``full`` is ``output_shape + wrt_shape + wrt_shape`` (as
``torch.func.hessian``); ``blocks`` is ``(*rows, *out_block, C, C)`` — for a
reduced output block r is ``coef_r d2 l_r``, else row r's own ``d2 f_r``;
``diag`` is an elementwise function's ``f''`` (times ``coef``) shaped like the argument.
"""

from __future__ import annotations

import importlib

import numpy as np

from ..core import rowform
from ..core.errors import BackendError
from ..core.options import BackendName, BackendOptions, Layout
from ..problem.problem import Problem
from ..core.rowform import GeneralKernel, second
from .base import Computed

_MODULES = {
    BackendName.AUTOGRAD: ("torch_second", "AutogradSecond"),
    BackendName.FORWARD: ("torch_second", "ForwardSecond"),
    BackendName.ANALYTIC: ("second", "AnalyticSecond"),
    BackendName.FD: ("fd_second", "FdSecond"),
}


def get_second_backend(name: BackendName, options: BackendOptions):
    if name not in _MODULES:  # a backend with first derivatives only
        raise BackendError(f"--backend {name.value}: no second derivatives; use autograd, forward, analytic or fd")
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)(options)


def hvp_operator(engine, problem: Problem):
    """``(apply, output)``: ``apply(t)`` is ``H t`` for many ``t`` (Lanczos), reusing
    what the backend can keep between calls (autograd: the first backward pass)."""
    own = getattr(engine, "hvp_operator", None)
    if own is not None:
        return own(problem)
    first = engine.hvp(problem, np.zeros(problem.wrt_shape, dtype=problem.dtype))
    return (lambda t: engine.hvp(problem, t).value), first.output


def shape_blocks(blocks: np.ndarray, problem: Problem, layout: Layout, allocate=np.zeros) -> np.ndarray:
    """Weighted row blocks ``(*rows, *out_block, C, C)`` -> the value in ``layout``."""
    rows = problem.rows
    if layout is Layout.BLOCKS:
        return blocks
    if layout is Layout.DIAG:  # elementwise: one entry per row
        return blocks.reshape(rows.in_shape)
    return second.hessian_full(blocks, rows, allocate)


def row_output(kernel, problem: Problem) -> np.ndarray:
    """The function's value from a NumPy kernel."""
    if isinstance(kernel, GeneralKernel):
        return kernel.forward(kernel.x0)
    return rowform.output(kernel, problem.rows)


class AnalyticSecond:
    """The catalogue's closed-form second derivatives (NumPy, never torch)."""

    name = BackendName.ANALYTIC

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    def _kernel(self, problem: Problem):
        if not problem.function.closed_form:
            raise BackendError(f"--backend analytic: {problem.function.name} has no closed form; use autograd, forward or fd")
        return problem.kernel()

    def hessian(self, problem: Problem, layout: Layout) -> Computed:
        kernel = self._kernel(problem)
        if isinstance(kernel, GeneralKernel):
            value = second.general_hessian_full(kernel)
        else:
            value = shape_blocks(second.weighted_blocks(kernel, problem.rows), problem, layout, self.options.allocate)
        return Computed(value=value, output=row_output(kernel, problem))

    def hvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        kernel = self._kernel(problem)
        if isinstance(kernel, GeneralKernel):
            value = kernel.hvp(np.ones((), dtype=tangent.dtype), tangent)
        else:
            value = second.reduced_hvp(kernel, problem.rows, tangent)
        return Computed(value=value, output=row_output(kernel, problem))
