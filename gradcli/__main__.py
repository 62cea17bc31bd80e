"""The ``gradcli`` command and ``python -m gradcli``.

The signal handlers are installed first, when this module is imported and
before typer, rich or any of gradcli's modules load, so a Ctrl-C or SIGTERM
at any moment is the same clean stop: "gradcli: interrupted", exit 130, no
partial output file. Standard output carries one document: characters its
encoding lacks are written in ASCII (``render.table.degrade_streams``), and
once it is written nothing more reaches it (:func:`_close_stdout_document`).
"""

import os
import signal
import sys

signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C


def main(argv: list[str] | None = None) -> None:
    try:
        import typer

        from gradcli.cli import app
        from gradcli.render.table import degrade_streams

        degrade_streams(sys.stdout, sys.stderr)  # an encoding that lacks a character never crashes the output

        command = _click_command(typer, app, sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:
        sys.stderr.write("gradcli: interrupted\n")
        sys.exit(130)
    try:
        command.main(args=argv, prog_name="gradcli")
    except SystemExit as done:
        _exit_despite_user_threads(done.code)
        _close_stdout_document()
        raise


def _click_command(typer, app, args: list[str]):
    """The click group for this run, holding only the command named first in ``args``
    (typer converts the parameters of every command it is given, about 20 ms for all
    ten, of which a run uses one); every command for anything else (help, --version,
    a name that is not a command, which click's error then lists the commands for)."""
    import copy

    first = args[0] if args else ""
    named = [c for c in app.registered_commands if c.name == first]
    if len(named) == 1:
        app = copy.copy(app)  # (the app's callback keeps it a group: `gradcli NAME ...` parses as before)
        app.registered_commands = named
    return typer.main.get_command(app)


def _close_stdout_document() -> None:
    """Standard output holds one document, gradcli's: once it is flushed, descriptor 1
    (and ``sys.stdout``) point at standard error, so what runs at interpreter shutdown
    — an ``atexit`` handler your code registered that prints — cannot add to it."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        pass
    try:
        os.dup2(2, 1)
    except OSError:  # standard error closed too: nothing reaches descriptor 1 then
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        except OSError:
            pass
    sys.stdout = sys.stderr


def _exit_despite_user_threads(code) -> None:
    """A thread your code started and left running would keep the process alive after
    gradcli is done (Python waits for every non-daemon thread): the result is flushed
    and the process ends, as it would with daemon threads. Only then: other exits run
    Python's own shutdown."""
    user = sys.modules.get("gradcli.usercode.function")
    if user is None or not user.threads_left_running():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    main()
