"""The command line: typed options in, a library call, a renderer, an exit code out.

Only this package parses argv, owns the Console, prints, and turns errors into
exit codes (:class:`gradcli.cli.main.GradcliGroup`). Every layer may be imported.
"""

from .main import app

__all__ = ["app"]
