"""gradcli: a command-line gradient inspector, and the library behind it.

``gradcli.jacobian``, ``grad``, ``vjp``, ``jvp``, ``check``, ``certify`` and ``health`` are imported on
first use, so ``import gradcli`` (and ``gradcli --help``) stays fast.
"""

from ._version import __version__  # noqa: E402

from .core.errors import BackendError, GradcliError, UsageError  # noqa: E402

_API = {"jacobian": "compute.solve", "grad": "compute.solve", "vjp": "compute.solve", "jvp": "compute.solve",
        "hessian": "compute.solve", "hvp": "compute.solve", "check": "checking.model",
        "per_sample_grad": "compute.per_sample", "certify": "certify", "health": "health.run"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'gradcli' has no attribute {name!r}")


__all__ = ["BackendError", "GradcliError", "UsageError", "__version__", "certify", "check", "grad", "health",
           "hessian", "hvp", "jacobian", "jvp", "per_sample_grad", "vjp"]
