"""Backends behind one interface (``base.Backend``), imported only when chosen:
the analytic and fd modules never import torch."""

from __future__ import annotations

import importlib

from ..problem import Problem
from ..options import BackendName, BackendOptions
from .base import Backend, Computed

_MODULES = {
    BackendName.AUTOGRAD: ("autograd", "AutogradBackend"),
    BackendName.FORWARD: ("forward", "ForwardBackend"),
    BackendName.ANALYTIC: ("analytic", "AnalyticBackend"),
    BackendName.FD: ("fd", "FdBackend"),
    BackendName.COMPILE: ("compiled", "CompiledBackend"),
}


def resolve(name: BackendName, problem: Problem) -> BackendName:
    """``auto``: analytic where the function has a closed form, else autograd."""
    if name is not BackendName.AUTO:
        return name
    return BackendName.ANALYTIC if problem.function.closed_form else BackendName.AUTOGRAD


def get_backend(name: BackendName, options: BackendOptions) -> Backend:
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)(options)


__all__ = ["Backend", "BackendOptions", "Computed", "get_backend", "resolve"]
