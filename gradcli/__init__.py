"""gradcli: a command-line gradient inspector, and the library behind it.

``gradcli.jacobian``, ``grad``, ``vjp``, ``jvp`` and ``check`` are imported on
first use, so ``import gradcli`` (and ``gradcli --help``) stays fast.
"""

from ._version import __version__  # noqa: E402

from .errors import BackendError, GradcliError, UsageError  # noqa: E402

_API = {"jacobian": "api", "grad": "api", "vjp": "api", "jvp": "api", "check": "modelcheck", "hessian": "api",
        "hvp": "api", "per_sample_grad": "samples"}


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'gradcli' has no attribute {name!r}")


__all__ = ["BackendError", "GradcliError", "UsageError", "__version__", "check", "grad", "hessian", "hvp", "jacobian", "jvp",
           "per_sample_grad", "vjp"]
