"""The command line: typed options in, a library call, a renderer, an exit code out.

- ``main``: the typer app and :class:`GradcliGroup`, the one place errors become exit codes.
- ``params``: every option declared once (type, default, help, panel), the typer
  options and a suite entry's conversion made from it.
- ``options``: the typed option objects (Inputs, Output, RunOptions, CheckOptions)
  built once at the edge; nothing below the command functions sees a dict of options.
- ``inputs``: typed options -> a validated Problem; ``output``: standard output,
  output files published after it, the progress bar.
- one module per command family: ``compute`` (jacobian, grad, vjp, jvp, hessian, hvp),
  ``check`` (+ ``suite``), ``catalogue`` (functions), ``certify``, ``health``.

Only this package parses argv, owns the Console, prints and exits. Every layer may
be imported.
"""

from . import catalogue, certify, check, compute, health  # noqa: F401  (each registers its commands on the app)
from .main import app

__all__ = ["app"]
