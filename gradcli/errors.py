"""The GradcliError family: every failure a user can cause, with its exit code.

Loaders, the problem builder and backends raise these; only ``cli.py`` turns
them into a message on standard error and an exit code (SPEC §2).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    MISMATCH = 1
    USAGE = 2
    BACKEND = 3
    INTERRUPTED = 130


class GradcliError(Exception):
    """Base class. ``str(err)`` is the one- or two-line message shown to the user."""

    exit_code: ExitCode = ExitCode.USAGE


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
