"""What ``gradcli health`` found: frozen values, no torch.

One :class:`ModuleHealth` per call of a module (a module called twice has two
rows, ``call`` 1 and 2 of ``calls``), one :class:`ParameterHealth` per
parameter, at most one :class:`Origin` of a non-finite value, and the
:class:`Flag` values raised. Norms are Euclidean (``‖g‖₂`` over every entry);
``None`` means "not observed" (no gradient reached it, or it has no input
gradient because its input is data), never zero.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping


class Flag(str, enum.Enum):
    """In the order the table shows them: the worst first."""

    NONFINITE = "nonfinite"
    EXPLODING = "exploding"
    VANISHING = "vanishing"
    DEAD = "dead"


FLAG_ORDER = tuple(Flag)


class Phase(str, enum.Enum):
    """Where a non-finite value first appeared."""

    INPUT = "input"  # the data given (--allow-nonfinite)
    PARAMETERS = "parameters"  # a weight held it before anything ran
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True)
class Thresholds:
    """``explode``: a gain above it, or a gradient norm above ``explode × ‖cotangent‖``;
    ``vanish``: a module's gradient norm below ``vanish × ‖cotangent‖``;
    ``peer``: a Linear's or convolution's gain above ``peer ×`` the others' median gain
    (at least 1/√3, see :mod:`.flags`), ``explode^(1/3)`` (10 at the default)."""

    explode: float = 1e3
    vanish: float = 1e-7

    @property
    def peer(self) -> float:
        return self.explode ** (1 / 3)


@dataclass(frozen=True)
class ModuleHealth:
    """One call of one module, in the order calls finished (children before their parent).

    ``out_grad``: ``‖∂L/∂output‖``; ``in_grad``: ``‖∂L/∂input‖`` of this call's own
    inputs (its share of their gradient: a residual connection's other branch is
    not counted); ``gain = in_grad / out_grad``. ``dead``: the fraction of output
    units (every entry but the batch axis) that are 0 for every sample;
    ``saturated``: for tanh and sigmoid, the fraction of outputs within the
    dtype's eps of ±1 (tanh) or of 0 or 1 (sigmoid). ``reasons``: one line per flag.
    ``order``: when the call returned in the forward (from 1); ``backward_order``: when its
    output gradient arrived in the backward (from 1; None when none did)."""

    name: str
    cls: str
    call: int
    calls: int
    forward_at: str | None
    output_shape: tuple[int, ...] | None
    out_grad: float | None
    in_grad: float | None
    gain: float | None
    dead: float | None
    saturated: float | None
    finite_output: bool
    flags: tuple[Flag, ...]
    reasons: tuple[str, ...] = ()
    order: int = 0
    backward_order: int | None = None

    @property
    def label(self) -> str:
        """``name`` (``(model)`` for the model itself), with ``[call i/n]`` for a module that ran
        more than once."""
        return (self.name or "(model)") + (f" [call {self.call}/{self.calls}]" if self.calls > 1 else "")


@dataclass(frozen=True)
class ParameterHealth:
    """One parameter. ``norm``: ``‖grad‖`` (None: no gradient reached it, or it is
    frozen); ``ratio``: ``‖grad‖ / ‖weight‖``; ``update``: ``lr × ratio`` with ``--lr``;
    ``zeros`` and ``nonfinite``: entries of the gradient exactly 0, and NaN or
    infinite. ``aliases``: the other names of a shared (tied) parameter."""

    name: str
    shape: tuple[int, ...]
    norm: float | None
    weight_norm: float
    ratio: float | None
    update: float | None
    zeros: int | None
    nonfinite: int | None
    frozen: bool
    flags: tuple[Flag, ...]
    reasons: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Origin:
    """Where the first non-finite value appeared, and how it was found.

    ``module``/``cls``/``call``/``forward_at``: the module call it appeared in
    ("" for the model's own forward, outside any submodule); ``op``: the
    operation (an autograd node such as ``SqrtBackward0`` in the backward, an
    aten op such as ``aten.sqrt.default`` in the forward); ``op_at``/``code``:
    the line of your code that ran it and its text; ``backward_at``: for a
    custom ``autograd.Function``, the line of its ``backward`` that made the
    value. ``detail``: one sentence on what was seen."""

    phase: Phase
    module: str | None
    cls: str | None
    call: int | None
    forward_at: str | None
    op: str | None
    op_at: str | None
    code: str | None
    backward_at: str | None
    detail: str


@dataclass(frozen=True)
class HealthReport:
    """One forward and one backward of a batch, watched.

    ``cotangent_norm``: ``‖v‖`` of the output's gradient seed (1 for a scalar
    loss): the reference of the exploding and vanishing thresholds. ``output``:
    the loss (a scalar output), else None."""

    function: str
    dtype: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    output: float | None
    cotangent_norm: float
    wrt: tuple[str, ...]
    thresholds: Thresholds
    lr: float | None
    modules: tuple[ModuleHealth, ...]
    parameters: tuple[ParameterHealth, ...]
    origin: Origin | None
    flags: tuple[Flag, ...]
    fail_on: tuple[Flag, ...]
    notes: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """No flag of ``fail_on`` raised (exit 0); else exit 1."""
        return not set(self.flags) & set(self.fail_on)

    def flagged(self, flag: Flag) -> Mapping[str, tuple[str, ...]]:
        """``{"modules": labels, "parameters": names}`` raising ``flag``, in the report's order."""
        return {"modules": tuple(m.label for m in self.modules if flag in m.flags),
                "parameters": tuple(p.name for p in self.parameters if flag in p.flags)}
