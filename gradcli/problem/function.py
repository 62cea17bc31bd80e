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


def user_function(name: str, seed: int, arg_names: tuple[str, ...]):
    """``name`` looked up; user code learns the run's ``--seed`` and ``--arg``
    names. ``--arg`` on a built-in is refused."""
    function = lookup(name)
    if hasattr(function, "configure"):
        for name in arg_names:
            signature = function.signature
            if name in signature.positional[:2]:  # forward(self, x, mask=None): -t fills the mask, by position
                position = signature.positional.index(name)
                option = ("-x/--input", "-t/--target")[position]
                raise UsageError(f"--arg {name}: {name} is the {('first', 'second')[position]} positional parameter "
                                 f"of {function.name}{signature.text}, which {option} fills whatever its name; "
                                 f"give it with {option.split('/')[0]} ARRAY")
            if not signature.accepts(name):
                raise UsageError(f"--arg {name}: {function.name}{function.signature.text} has no parameter {name!r}; "
                                 f"it takes {', '.join(o for o, _ in function.signature.mapping())}")
        function.configure(seed=seed, names=arg_names)
    elif arg_names:
        raise UsageError(f"--arg {arg_names[0]}: only user code (PATH.py:NAME, .pt, .pt2) takes --arg; "
                         f"{function.name} takes {', '.join(a.option for a in function.arrays)}")
    return function
