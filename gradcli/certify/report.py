"""What ``certify`` returns: one frozen :class:`Row` per property, and the :class:`CertifyReport`. Pure data, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..core.errors import ExitCode


class Status(str, Enum):
    OK = "ok"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Row:
    """One property's verdict. ``fail``: ``max_error`` is the largest error found
    (None where the failure is an exception or a refusal, not a number), ``where``
    names the argument, output, entry or setting, ``reproducer`` is a one-line
    command that shows the failure as printed. ``skip``: ``detail`` is the reason."""

    property: str
    status: Status
    detail: str
    max_error: float | None = None
    where: str | None = None
    reproducer: str | None = None
    seconds: float = 0.0

    @property
    def family(self) -> str:
        """The property as ``--properties``/``--skip`` name it (``dtypes:float32`` -> ``dtypes``)."""
        return self.property.partition(":")[0]


@dataclass(frozen=True)
class CertifyReport:
    """Every row of one certification. ``ok``: False when a row fails, True when
    at least one is ok and none fails, None when every row was skipped (nothing
    could run)."""

    function: str
    kind: str  # "autograd.Function", "custom op" or "callable"
    shapes: tuple[tuple[str, tuple[int, ...]], ...]  # each argument and its shape, in call order
    rows: tuple[Row, ...]
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool | None:
        if any(r.status is Status.FAIL for r in self.rows):
            return False
        return True if any(r.status is Status.OK for r in self.rows) else None

    @property
    def failing(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.status is Status.FAIL)

    @property
    def exit_code(self) -> ExitCode:
        """0 every property ok or skipped, 1 one failed, 3 nothing could run (SPEC §7)."""
        return {True: ExitCode.OK, False: ExitCode.MISMATCH, None: ExitCode.BACKEND}[self.ok]

    def row(self, name: str) -> Row:
        """The row called ``name`` (``gradient``, ``dtypes:float32``)."""
        found = [r for r in self.rows if r.property == name]
        if not found:
            raise KeyError(f"no row {name!r}; the rows are {', '.join(r.property for r in self.rows)}")
        return found[0]


@dataclass(frozen=True)
class Verdict:
    """A property's finding before the runner names and times it; ``part`` names a
    sub-row (``float32`` -> the row ``dtypes:float32``)."""

    status: Status
    detail: str
    max_error: float | None = None
    where: str | None = None
    reproducer: str | None = None
    part: str | None = None


def ok(detail: str, part: str | None = None) -> Verdict:
    return Verdict(Status.OK, detail, part=part)


def skip(reason: str, part: str | None = None) -> Verdict:
    return Verdict(Status.SKIP, reason, part=part)


def fail(detail: str, *, max_error: float | None = None, where: str | None = None, reproducer: str | None = None,
         part: str | None = None) -> Verdict:
    return Verdict(Status.FAIL, detail, max_error, where, reproducer, part)
