"""``gradcli functions [NAME]``: the catalogue, or one function's formulas and options;
for your code (``PATH.py:NAME``) also its parameters and submodules, with their output
shapes from one forward pass when given ``-x`` (and ``--arg``, ``--weights``)."""

from __future__ import annotations

import inspect
import sys
from typing import Annotated, Any, Optional

from rich.markup import escape
import typer

from .main import app
from . import output as out
from . import params

FUNCTIONS = [
    params.opt("input", str, None, "--input", "-x", metavar="ARRAY", help="your code: run one forward pass on this "
               "input to show each submodule's output shape (--wrt act:MODULE)", panel=params.INPUTS,
               show_default=False),
    *[o for o in params.USER_CODE if o.name != "select"],
    params.opt("seed", int, 0, metavar="INT", help="seed of the generators (randn:3,5, ...)", panel=params.INPUTS, min=0),
    params.opt("max_memory", str, "2GiB", metavar="SIZE", help="bounds the arrays and --weights read", panel=params.LIMITS),
    params.opt("json", bool, False, "--json", help="print one JSON document", panel=params.OUTPUT),
]


def functions_command(name: str | None = None, **values: Any) -> None:
    """The catalogue: every built-in with its arguments, options and Jacobian structure.

    Example: gradcli functions softmax

    Your code: gradcli functions model.py:net -x randn:2,3,32,32  (its parameters, and each submodule's output shape)
    """
    from ..render.catalogue import catalogue_to_dict, render_catalogue

    function, rows = (None, None) if name is None else _function(name, values)
    if values["json"]:
        from ..render.json import dumps

        sys.stdout.write(dumps(catalogue_to_dict(name, function=function, submodules=rows)))
    else:
        out.make_console().print(render_catalogue(name, function=function, submodules=rows))


def _function(name: str, values: dict[str, Any]):
    """FUNCTION looked up (``--weights`` loaded) and, for your code, its submodules:
    ``(function, [(name, class, output shape or None)])``; the shapes from one forward
    pass on ``-x`` (and ``--arg``)."""
    from ..core.errors import UsageError
    from ..core.sizes import parse_size
    from ..io.arrays import load_array
    from ..problem.function import user_function
    from ..usercode.signature import parse_arg_options

    limit = parse_size(values["max_memory"])
    named = parse_arg_options(values.get("arg"), set())
    function = user_function(name, values["seed"], tuple(named), weights=values.get("weights"),
                             weights_prefix=values.get("weights_prefix"),
                             strict_weights=values.get("strict_weights", True), max_memory=limit)
    if values.get("input") is None:
        if named:
            raise UsageError("--arg: the other arguments of a forward pass; give -x/--input too")
        return function, function.submodules() if hasattr(function, "submodules") else None
    if not hasattr(function, "submodules"):
        raise UsageError("--input: a built-in has no submodules to run; -x shows the output shapes of your code's")
    arrays: dict[str, Any] = {}
    for key, spec in {"input": values["input"], **named}.items():
        option = "--input" if key == "input" else f"--arg {key}"
        arrays[key] = load_array(spec, option, seed=values["seed"], max_bytes=limit,
                                 held=sum(a.nbytes for a in arrays.values()))
    return function, function.submodules(arrays)


_NAME = inspect.Parameter("name", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation=Annotated[
    Optional[str], typer.Argument(help="a built-in (its formulas and options), or your code PATH.py:NAME (its "
                                       "signature, parameters and submodules)", show_default=False)])
functions_command.__signature__ = params.signature(_NAME, params.in_panel_order(FUNCTIONS))
functions_command.__doc__ = escape(functions_command.__doc__)
app.command("functions")(functions_command)
