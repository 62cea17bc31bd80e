"""The GradcliError family: every failure a user can cause, with its exit code.

Loaders, the problem builder and backends raise these; only ``cli.py`` turns
them into a message on standard error and an exit code (SPEC §2).
"""

from __future__ import annotations

import re
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    MISMATCH = 1
    USAGE = 2
    BACKEND = 3
    INTERRUPTED = 130
    BROKEN_PIPE = 141  # standard output's reader went away (`| head`): silent, 128 + SIGPIPE as the shell reports `yes | head`


_OPTION = re.compile(r"^--(?P<name>[a-z][a-z0-9-]*)(?P<rest>[: ].*)$", re.S)


class GradcliError(Exception):
    """Base class: a one- or two-line message, and the parameter it concerns.

    ``param`` is the library's name (``tangent``, ``class_weight``), or None;
    ``str(err)`` speaks the library (``tangent: jvp needs ...``) and
    :meth:`cli_message` the command line (``--tangent: jvp needs ...``). A
    message written as ``"--name: ..."`` is read that way: its option becomes
    ``param``, so every raise site names its argument once.
    """

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, param: str | None = None) -> None:
        match = _OPTION.match(message) if param is None else None
        if match:
            param, message = match["name"].replace("-", "_"), match["rest"]
        elif param is not None:
            message = f": {message}"
        super().__init__(message)
        self.param = param
        self.detail = message  # what follows the parameter's name: ": ..." or " value: ..."

    def __str__(self) -> str:
        return self.detail if self.param is None else f"{self.param}{self.detail}"

    def cli_message(self) -> str:
        """The message as the command line says it: the parameter as its option."""
        return self.detail if self.param is None else f"--{self.param.replace('_', '-')}{self.detail}"


class UsageError(GradcliError):
    """Bad option, file, shape or dtype: the user can fix the command (exit 2)."""

    exit_code = ExitCode.USAGE


class BackendError(GradcliError):
    """A backend could not run: torch missing, an op without forward mode,
    the user's own code raised (exit 3)."""

    exit_code = ExitCode.BACKEND


class UserCodeError(BackendError):
    """The user's code raised. ``original`` is its exception: the torch
    backends classify it (a torch.func refusal means "fall back", not "fail")."""

    def __init__(self, message: str, original: BaseException) -> None:
        super().__init__(message)
        self.original = original
