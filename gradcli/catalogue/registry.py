"""The built-ins by name: where each lives, and the catalogue-wide lists
(array arguments, scalar options) the CLI and user code read.

Modules are imported by name on first use, so a run imports only the
function it needs (and ``--help`` none of torch).
"""

from __future__ import annotations

import functools
import importlib

from .base import ArrayArg, Function, Param

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
    "multi_margin_loss": ("margin", "MultiMarginLoss"),
    "binary_cross_entropy_with_logits": ("pointwise_losses", "BinaryCrossEntropyWithLogits"),
    "binary_cross_entropy": ("pointwise_losses", "BinaryCrossEntropy"),
    "mse_loss": ("pointwise_losses", "MseLoss"),
    "l1_loss": ("pointwise_losses", "L1Loss"),
    "smooth_l1_loss": ("pointwise_losses", "SmoothL1Loss"),
    "huber_loss": ("pointwise_losses", "HuberLoss"),
    "kl_div": ("pointwise_losses", "KlDiv"),
    "linear": ("linear", "Linear"),
}


@functools.cache
def builtin(name: str) -> Function:
    module, attribute = REGISTRY[name]
    entry = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
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


