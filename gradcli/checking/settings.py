"""The options of ``check``, declared once: the library's keywords, the command
line's options and a suite entry's keys are these fields (the CLI builds them at
its edge; a suite entry is converted to them without going back through argv).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..core.errors import UsageError
from ..core.options import BackendName, CheckMode, Layout, Quantity


@dataclass(frozen=True)
class CheckSettings:
    """What ``check`` compares, and how.

    ``quantity``: None = grad for a scalar output, else jacobian. ``backends``: None =
    every backend that applies. ``reference``: None = autograd (analytic without torch).
    ``atol``/``rtol``: None = the dtype's defaults. ``mode``/``probes``/``taylor``: full
    comparison or K probe directions per argument (SPEC §2, check). ``locate``: None =
    localise quietly after a mismatch; True also notes a function with no modules.
    ``seed``: the probe directions' and the random tangents' seed.
    """

    quantity: Quantity | None = None
    backends: tuple[BackendName, ...] | None = None
    reference: BackendName | None = None
    atol: float | None = None
    rtol: float | None = None
    top: int = 5
    layout: Layout = Layout.AUTO
    mode: CheckMode = CheckMode.AUTO
    probes: int = 4
    seed: int = 0
    taylor: bool = False
    locate: bool | None = None

    def __post_init__(self) -> None:  # library callers may pass strings and lists
        def choice(kind, value, option):
            try:
                return kind(value)
            except ValueError:
                what, choices = (("backend", "autograd, forward, analytic, fd or (check only) compile")
                                 if kind is BackendName else (option, ", ".join(k.value for k in kind)))
                raise UsageError(f"--{option}: unknown {what} {value!r}; use {choices}") from None

        set_ = object.__setattr__
        if self.quantity is not None:
            set_(self, "quantity", choice(Quantity, self.quantity, "quantity"))
        if self.backends is not None:
            names = [self.backends] if isinstance(self.backends, str) else list(self.backends)
            names = [n.strip() if isinstance(n, str) else n for n in names]
            # each once: --backends fd,fd ran (and listed) fd twice
            set_(self, "backends", tuple(dict.fromkeys(choice(BackendName, n, "backends") for n in names if n)) or None)
        if self.reference is not None:
            set_(self, "reference", choice(BackendName, self.reference, "reference"))
        set_(self, "layout", choice(Layout, self.layout, "layout"))
        set_(self, "mode", choice(CheckMode, self.mode, "mode"))
        if self.probes < 1:
            raise UsageError("--probes: give at least 1 direction per argument")

    @classmethod
    def take(cls, kwargs: dict[str, Any]) -> "CheckSettings":
        """The settings among ``kwargs`` (removed from it); the rest is left for the problem."""
        return cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls) if f.name in kwargs})

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "CheckSettings":
        return dataclasses.replace(self, **changes)


def as_dict(settings: CheckSettings) -> Mapping[str, Any]:
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
