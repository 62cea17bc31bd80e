"""Standard output and the files published after it: the one place that writes a
result to standard output (:func:`emit`), the Console (made here, never at import),
publishing output files only after standard output succeeded, and the progress bar
on standard error."""

from __future__ import annotations

import sys
import time

from ..core.errors import UsageError


class ReaderGone(Exception):
    """Standard output's reader went away (``| head``). Raised in place of
    BrokenPipeError, which typer would turn into a silent exit 1 (``check``'s
    "mismatch")."""


def stdout_then_files(write_stdout, pending) -> None:
    """Run ``write_stdout``, then publish the ``pending`` output files; on any
    failure remove them. Standard output closed or full is a short error. A
    reader that went away (``| head``) only cut the display of a whole result:
    the files are published and the run ends silently (exit 141, in ``main``)."""
    try:
        if sys.stdout is None:  # started with standard output closed (>&-)
            raise UsageError("standard output is closed; give gradcli somewhere to write (e.g. > result.txt)")
        write_stdout()
        sys.stdout.flush()
    except BrokenPipeError:
        drop_stdout()
        for file in pending:
            file.publish()
        raise
    except BaseException as err:
        for file in pending:
            file.abort()
        if isinstance(err, OSError):  # a full device, a closed pipe: nothing more can reach standard output
            drop_stdout()
            raise UsageError(f"standard output: cannot write ({err.strerror or err}); no output file was written") from err
        raise
    for file in pending:
        file.publish()


def drop_stdout() -> None:
    """Point standard output at /dev/null so that the text still buffered is not
    written again (and fails again) at exit."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class DelayedProgress:
    """A progress bar on standard error, shown only once a computation has run
    for a second and only when standard error is a terminal."""

    DELAY = 1.0

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.start < self.DELAY or not sys.stderr.isatty():
                return
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("computing", total=total)
        self.bar.update(self.task, completed=done, total=total)
        if done >= total:
            self.bar.stop()
            self.bar = None
            self.start = time.perf_counter()


def emit(output, soft_wrap: bool = False) -> None:
    """The one place that writes a result to standard output (``soft_wrap``: long text lines
    are not broken, so a command printed in them can be copied whole)."""
    if isinstance(output, str):
        sys.stdout.write(output)
    else:
        make_console().print(output, soft_wrap=soft_wrap)


def make_console():
    import errno

    from rich.console import Console

    class StdoutConsole(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 here; GradcliGroup.main decides (silent, 141)
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    # A pipe has no width; 140 columns keeps tables whole in files and logs.
    return StdoutConsole(width=None if sys.stdout.isatty() else 140, highlight=False, soft_wrap=False)
