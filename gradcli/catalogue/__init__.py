"""The catalogue: every built-in function as a static, typed description
(its arguments, options, formulas, first and second derivatives) and ``bind``.

Nothing here runs user code or imports torch at import time; a built-in's torch
call is looked up only by the torch backends. Imports only from :mod:`gradcli.core`.
Composite names (``expr:...``, chains, user code) are resolved by
:mod:`gradcli.problem.function`.
"""

from __future__ import annotations

from .base import ArrayArg, ArrayKind, Bound, Function, Param, Structure
from .registry import REGISTRY, array_arguments, builtin, catalogue, parameters

__all__ = ["ArrayArg", "ArrayKind", "Bound", "REGISTRY", "Function", "Param", "Structure", "array_arguments",
           "builtin", "catalogue", "parameters"]
