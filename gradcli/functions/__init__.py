"""The catalogue of built-in functions, looked up by name.

``lookup`` also builds the composite names: ``expr:EXPRESSION`` and chains
of built-ins joined by commas (``linear,cross_entropy``).
"""

from __future__ import annotations

import difflib

from ..errors import UsageError
from .base import ArrayArg, ArrayKind, Function, GeneralKernel, Param, Reduction, RowKernel, RowLayout, Structure
from .elementwise import Exp, Log, Relu, Sigmoid, Tanh
from .linear import Linear
from .losses import CrossEntropy, NllLoss
from .pointwise_losses import (
    BinaryCrossEntropy,
    BinaryCrossEntropyWithLogits,
    HuberLoss,
    KlDiv,
    L1Loss,
    MseLoss,
    SmoothL1Loss,
)
from .softmax import LogSoftmax, Softmax
from .user import MODEL_RE, USER_RE, UserFunction

CATALOGUE: dict[str, Function] = {
    f.name: f
    for f in (
        Softmax(), LogSoftmax(), Sigmoid(), Tanh(), Relu(), Exp(), Log(),
        CrossEntropy(), NllLoss(), BinaryCrossEntropyWithLogits(), BinaryCrossEntropy(),
        MseLoss(), L1Loss(), SmoothL1Loss(), HuberLoss(), KlDiv(), Linear(),
    )
}


def lookup(name: str) -> Function:
    """The function called ``name``: a built-in, ``expr:...``, or a comma chain of those."""
    name = name.strip()
    user = USER_RE.match(name)
    if user:
        return UserFunction(user["path"], user["name"])
    if MODEL_RE.match(name):
        return UserFunction(name)
    if "," in name:  # (an expression never holds a comma: its functions take one argument)
        from .chain import Chain

        parts = [part.strip() for part in name.split(",")]
        if any(not part for part in parts):
            raise UsageError(f"FUNCTION: empty stage in chain {name!r}; join names with single commas, e.g. linear,cross_entropy")
        return Chain([lookup(part) for part in parts])
    if name.startswith("expr:"):
        from .elementwise import Expr

        return Expr(name[len("expr:"):])
    try:
        return CATALOGUE[name]
    except KeyError:
        close = difflib.get_close_matches(name, CATALOGUE, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise UsageError(f"FUNCTION: unknown function {name!r}; {hint}`gradcli functions` lists them all") from None


__all__ = [
    "ArrayArg", "ArrayKind", "CATALOGUE", "Function", "GeneralKernel", "Param", "Reduction", "RowKernel", "RowLayout",
    "Structure", "lookup",
]
