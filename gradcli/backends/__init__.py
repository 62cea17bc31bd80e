"""Backends behind one interface (``base.Backend``), imported only when chosen:
the analytic and fd modules never import torch."""

from __future__ import annotations

import importlib
import math

from ..problem.problem import Problem
from ..core.options import BackendName, BackendOptions
from .base import Backend, Computed

_MODULES = {
    BackendName.AUTOGRAD: ("autograd", "AutogradBackend"),
    BackendName.FORWARD: ("forward", "ForwardBackend"),
    BackendName.ANALYTIC: ("analytic", "AnalyticBackend"),
    BackendName.FD: ("fd", "FdBackend"),
    BackendName.COMPILE: ("compiled", "CompiledBackend"),
}


def resolve(name: BackendName, problem: Problem, jacobian: bool = False) -> BackendName:
    """``auto``: analytic where the function has a closed form; else, for a
    Jacobian, the mode with fewer passes — reverse takes one per output entry
    (per sample: K), forward one per input entry (F) — and autograd otherwise."""
    if name is not BackendName.AUTO:
        return name
    if problem.function.closed_form:
        return BackendName.ANALYTIC
    fewer_inputs = math.prod(problem.wrt_shape) < math.prod(problem.output_shape)
    return BackendName.FORWARD if jacobian and fewer_inputs else BackendName.AUTOGRAD


def get_backend(name: BackendName, options: BackendOptions) -> Backend:
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(options)


__all__ = ["Backend", "BackendOptions", "Computed", "get_backend", "resolve"]
