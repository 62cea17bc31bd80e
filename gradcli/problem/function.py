"""FUNCTION on the command line -> a Function: a built-in, ``expr:EXPRESSION``, a
chain of built-ins joined by commas (``linear,cross_entropy``), or user code
(``PATH.py:NAME``, ``PATH.pt``, ``PATH.pt2``)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from ..catalogue import REGISTRY, Function, builtin
from ..core.errors import UsageError

USER_RE = re.compile(r"^(?P<path>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
MODEL_RE = re.compile(r"^(?P<path>.+\.pt2?)$")


def function_file(name: str | None) -> str | None:
    """The file FUNCTION reads (``model.py:loss`` -> ``model.py``, ``net.pt2``), or
    None for a built-in, a chain or ``expr:``: what no output may replace."""
    if not name:
        return None
    name = name.strip()
    user, model = USER_RE.match(name), MODEL_RE.match(name)
    return user["path"] if user else model["path"] if model else None


def lookup(name: str) -> Function:
    """The function called ``name``: a built-in, ``expr:...``, or a comma chain of those."""
    name = name.strip()
    user, model = USER_RE.match(name), MODEL_RE.match(name)
    path = user["path"] if user else model["path"] if model else None
    # A comma joins stages, unless it is part of a file name that exists.
    if path is not None and ("," not in name or Path(path).is_file()):
        from ..usercode.function import UserFunction

        return UserFunction(path, user["name"]) if user else UserFunction(path)
    if "," in name:  # (an expression never holds a comma: its functions take one argument)
        from ..catalogue.chain import Chain

        parts = [part.strip() for part in name.split(",")]
        if any(not part for part in parts):
            raise UsageError(f"FUNCTION: empty stage in chain {name!r}; join names with single commas, e.g. linear,cross_entropy")
        return Chain([lookup(part) for part in parts])
    if name.startswith("expr:"):
        from ..catalogue.elementwise import Expr

        return Expr(name[len("expr:"):])
    if name in REGISTRY:
        return builtin(name)
    code = re.match(r"^(?P<path>.+\.py)(?::(?P<name>.*))?$", name)
    if code:  # your code without a NAME, or with one that is not a Python name
        raise UsageError(f"FUNCTION: {name!r}: name the function or module in the file after a colon, "
                         f"PATH.py:NAME (e.g. {code['path']}:loss); NAME is a Python name (letters, digits, _)")
    close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(f"FUNCTION: unknown function {name!r}; {hint}`gradcli functions` lists them all")


def resolve(name) -> Function:
    """``name`` looked up, or a Function as it is. A module or function object is refused:
    gradcli loads your code itself (fresh, in the working dtype, seeded)."""
    if isinstance(name, str):
        return lookup(name)
    if isinstance(name, Function):
        return name
    raise UsageError(f"function: {type(name).__name__} object given; name it instead: a built-in "
                     "('cross_entropy'), 'expr:...', or your code as 'PATH.py:NAME' (the file that defines it)")


def user_function(name: str, seed: int = 0, arg_names: tuple[str, ...] = (), *, select: str | None = None,
                  weights: str | None = None, weights_prefix: str | None = None, strict_weights: bool = True,
                  max_memory: int = 2**31):
    """``name`` looked up; user code learns the run's ``--seed``, ``--arg`` names and
    ``--select``, and gets ``--weights`` loaded (bounded by ``max_memory``). These
    options on a built-in are refused."""
    function = resolve(name)
    if not hasattr(function, "configure"):
        user_only = {f"--arg {arg_names[0]}" if arg_names else "--arg": bool(arg_names), "--select": select,
                     "--weights": weights, "--weights-prefix": weights_prefix}
        for option in (o for o, value in user_only.items() if value is not None and value is not False):
            raise UsageError(f"{option}: only user code (PATH.py:NAME, .pt, .pt2) takes it; {function.name} is a "
                             f"built-in, which takes {', '.join(a.option for a in function.arrays)}")
        return function
    signature = function.signature
    for arg in arg_names:
        if signature.filled_by(arg) == "input":  # forward(self, x, ...): -x fills x, whatever its name
            raise UsageError(f"--arg {arg}: {arg} is the first positional parameter of {function.name}"
                             f"{signature.text}, which -x/--input fills whatever its name; give it with -x ARRAY")
        if not signature.accepts(arg):
            raise UsageError(f"--arg {arg}: {function.name}{signature.text} has no parameter {arg!r}; "
                             f"it takes {', '.join(o for o, _ in signature.mapping())}")
    if weights_prefix is not None and weights is None:
        raise UsageError("--weights-prefix: strips a prefix of the keys of --weights; give --weights PATH too")
    function.configure(seed=seed, names=arg_names, select=select)
    if weights is not None:
        function.load_weights(weights, prefix=weights_prefix, strict=strict_weights, max_bytes=max_memory)
    return function
