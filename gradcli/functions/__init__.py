"""The catalogue of built-in functions, looked up by name.

``lookup`` also builds the composite names: ``expr:EXPRESSION`` and chains
of built-ins joined by commas (``linear,cross_entropy``).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import re

from ..errors import UsageError
from .base import ArrayArg, ArrayKind, Bound, Function, Param, Structure

# name -> (module, attribute): a class, or a dict of ready entries keyed by name (the
# elementwise table). A run imports only the module of the function it needs.
REGISTRY: dict[str, tuple[str, str]] = {
    "softmax": ("softmax", "Softmax"),
    "log_softmax": ("softmax", "LogSoftmax"),
    "sigmoid": ("elementwise", "ELEMENTWISE"),
    "tanh": ("elementwise", "ELEMENTWISE"),
    "relu": ("elementwise", "ELEMENTWISE"),
    "exp": ("elementwise", "ELEMENTWISE"),
    "log": ("elementwise", "ELEMENTWISE"),
    "gelu": ("elementwise", "ELEMENTWISE"),
    "softplus": ("elementwise", "ELEMENTWISE"),
    "cross_entropy": ("losses", "CrossEntropy"),
    "nll_loss": ("losses", "NllLoss"),
    "binary_cross_entropy_with_logits": ("pointwise_losses", "BinaryCrossEntropyWithLogits"),
    "binary_cross_entropy": ("pointwise_losses", "BinaryCrossEntropy"),
    "mse_loss": ("pointwise_losses", "MseLoss"),
    "l1_loss": ("pointwise_losses", "L1Loss"),
    "smooth_l1_loss": ("pointwise_losses", "SmoothL1Loss"),
    "huber_loss": ("pointwise_losses", "HuberLoss"),
    "kl_div": ("pointwise_losses", "KlDiv"),
    "linear": ("linear", "Linear"),
}
USER_RE = re.compile(r"^(?P<path>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
MODEL_RE = re.compile(r"^(?P<path>.+\.pt2?)$")


@functools.cache
def builtin(name: str) -> Function:
    module, attribute = REGISTRY[name]
    entry = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    return entry[name] if isinstance(entry, dict) else entry()


def catalogue() -> dict[str, Function]:
    """Every built-in, in catalogue order."""
    return {name: builtin(name) for name in REGISTRY}


def array_arguments() -> dict[str, ArrayArg]:
    """Every built-in's array arguments by name, first declaration first: the
    one list the CLI's array options and user code's extra arrays come from."""
    found: dict[str, ArrayArg] = {}
    for function in catalogue().values():
        for arg in function.arrays:
            found.setdefault(arg.name, arg)
    return found


def parameters() -> dict[str, list[tuple[str, Param]]]:
    """Every built-in's scalar options by name, with the functions that take them."""
    found: dict[str, list[tuple[str, Param]]] = {}
    for function in catalogue().values():
        for p in function.params:
            found.setdefault(p.name, []).append((function.name, p))
    return found


def lookup(name: str) -> Function:
    """The function called ``name``: a built-in, ``expr:...``, or a comma chain of those."""
    name = name.strip()
    user = USER_RE.match(name)
    if user or MODEL_RE.match(name):
        from .user import UserFunction

        return UserFunction(user["path"], user["name"]) if user else UserFunction(name)
    if "," in name:  # (an expression never holds a comma: its functions take one argument)
        from .chain import Chain

        parts = [part.strip() for part in name.split(",")]
        if any(not part for part in parts):
            raise UsageError(f"FUNCTION: empty stage in chain {name!r}; join names with single commas, e.g. linear,cross_entropy")
        return Chain([lookup(part) for part in parts])
    if name.startswith("expr:"):
        from .elementwise import Expr

        return Expr(name[len("expr:"):])
    if name in REGISTRY:
        return builtin(name)
    close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(f"FUNCTION: unknown function {name!r}; {hint}`gradcli functions` lists them all")


__all__ = [
    "ArrayArg", "ArrayKind", "Bound", "REGISTRY", "Function", "Param", "Structure", "array_arguments", "builtin",
    "catalogue", "lookup", "parameters",
]
