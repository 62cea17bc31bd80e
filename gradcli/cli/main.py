"""The typer app, and the one place that turns click's errors, GradcliError,
interrupts and a command's returned code into the exit status
(:meth:`GradcliGroup.main`). The commands register themselves on :data:`app` from
their own modules (``compute``, ``check``, ``catalogue``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__
from ..core.errors import ExitCode, GradcliError
from .output import ReaderGone, drop_stdout


class GradcliGroup(TyperGroup):
    """The one place errors become exit codes (SPEC §2): one or two lines on
    stderr, never a traceback unless ``--traceback``, nothing on stdout.
    A broken pipe on standard output ends the run silently with 141, as the
    shell reports a tool killed by SIGPIPE (``yes | head``)."""

    def make_context(self, *args, **kwargs):  # where --help and --version print
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as err:
            raise ReaderGone() from err

    def invoke(self, ctx):  # where the commands (and their --help) print
        try:
            return super().invoke(ctx)
        except BrokenPipeError as err:
            raise ReaderGone() from err

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        show_traceback = "--traceback" in argv
        if not argv or "--help" in argv or "-h" in argv:  # (a bare `gradcli` shows the help too)
            _use_help_console()
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # click's own errors (typer vendors click)
            if type(err).__name__ == "NoArgsIsHelpError":  # bare `gradcli`: the help is the answer
                typer.echo(err.format_message())
                sys.exit(0)
            ctx = getattr(err, "ctx", None)
            hint = f"; see `{ctx.command_path} --help`" if err.exit_code == ExitCode.USAGE and ctx is not None else ""
            _error(f"{err.format_message().rstrip('.')}{hint}")
            code = err.exit_code
        except typer.Exit as err:
            code = err.exit_code
        except (typer.Abort, KeyboardInterrupt):
            code = ExitCode.INTERRUPTED
        except GradcliError as err:
            if show_traceback:
                raise
            _error(err.cli_message())
            code = err.exit_code
        except (ReaderGone, BrokenPipeError):  # the reader went away (`| head`): nothing more to say
            drop_stdout()
            code = ExitCode.BROKEN_PIPE
        except Exception as err:
            if show_traceback:
                raise
            _error(f"internal error: {type(err).__name__}: {err}; rerun with --traceback and report it", prefix="gradcli: ")
            code = ExitCode.BACKEND
        if code == ExitCode.INTERRUPTED:  # typer turns a Ctrl-C inside a command into a silent 130
            _error("interrupted", prefix="gradcli: ")
        try:
            if sys.stdout is not None:
                sys.stdout.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
        sys.exit(int(code or 0))


def _error(message: str, prefix: str = "gradcli: error: ") -> None:
    if sys.stderr is not None:
        sys.stderr.write(f"{prefix}{message}\n")
        sys.stderr.flush()


def _use_help_console() -> None:
    """Make typer render help on :func:`_help_console`. Done only when help is shown:
    importing ``typer.rich_utils`` brings in rich's markdown, syntax and traceback
    modules and pygments, a third of gradcli's start-up."""
    import typer.rich_utils

    if typer.rich_utils._get_rich_console is not _help_console:
        global _typer_console
        _typer_console = typer.rich_utils._get_rich_console
        typer.rich_utils._get_rich_console = _help_console


def _help_console(stderr: bool = False):
    """typer's help console, whose broken pipe (``gradcli --help | head`` with head gone)
    reaches :meth:`GradcliGroup.main` as a silent 141 (rich itself would exit 1, which is
    check's "mismatch")."""
    import errno

    import typer.rich_utils

    console = _typer_console(stderr=stderr)
    if typer.rich_utils.MAX_WIDTH is None and not console.is_terminal:
        console.width = 100  # a pipe or a file has no width: 100 columns, as click's max_content_width

    def on_broken_pipe() -> None:
        console.quiet = True
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    console.on_broken_pipe = on_broken_pipe
    return console


_typer_console = None  # typer's own, kept by _use_help_console


app = typer.Typer(
    cls=GradcliGroup,
    name="gradcli",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Inspect derivatives of PyTorch losses and functions from the shell: Jacobians, per-row blocks, "
    "gradients, vector-Jacobian and Jacobian-vector products, with torch autograd, forward mode, "
    "closed forms or finite differences.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")] = False,
) -> None:
    """gradcli: derivatives of PyTorch losses and functions, from the shell."""
