"""The catalogue of built-in functions, looked up by name."""

from __future__ import annotations

import difflib

from ..errors import UsageError
from .base import ArrayArg, ArrayKind, Function, Param, Reduction, RowKernel, RowLayout, Structure
from .losses import CrossEntropy, NllLoss
from .softmax import LogSoftmax, Softmax

CATALOGUE: dict[str, Function] = {f.name: f for f in (Softmax(), LogSoftmax(), CrossEntropy(), NllLoss())}


def lookup(name: str) -> Function:
    """The catalogue entry called ``name``; unknown names get the closest suggestions."""
    try:
        return CATALOGUE[name]
    except KeyError:
        close = difflib.get_close_matches(name, CATALOGUE, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UsageError(f"FUNCTION: unknown function {name!r}; {hint}`gradcli functions` lists them all") from None


__all__ = [
    "ArrayArg", "ArrayKind", "CATALOGUE", "Function", "Param", "Reduction", "RowKernel", "RowLayout", "Structure", "lookup",
]
