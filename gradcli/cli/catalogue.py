"""``gradcli functions [NAME]``: the catalogue, or one function's formulas and options."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .main import app
from . import output as out


@app.command("functions")
def functions_command(
    name: Annotated[Optional[str], typer.Argument(help="show one function's formulas and options")] = None,
    json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """The catalogue: every built-in with its arguments, options and Jacobian structure.

    Example: gradcli functions softmax
    """
    from ..render.catalogue import catalogue_to_dict, render_catalogue

    if json:
        from ..render.json import dumps

        sys.stdout.write(dumps(catalogue_to_dict(name)))
    else:
        out.make_console().print(render_catalogue(name))
