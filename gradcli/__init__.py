"""gradcli: a command-line gradient inspector, and the library behind it."""

__version__ = "0.1.0"

from .api import grad, jacobian, jvp, vjp  # noqa: E402
from .errors import BackendError, GradcliError, UsageError  # noqa: E402

__all__ = ["BackendError", "GradcliError", "UsageError", "__version__", "grad", "jacobian", "jvp", "vjp"]
