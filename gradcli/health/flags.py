"""Measurements -> rows with their flags. Pure Python: numbers in, frozen rows out.

``ref = ‖v‖``, the norm of the output's gradient seed (1 for a scalar loss), is
the scale of every gradient norm here:

- ``nonfinite``: an output, an output or input gradient, or a parameter's
  gradient holds NaN or inf;
- ``exploding``: a gain above ``explode``; a gradient norm (a module's, a
  parameter's) above ``explode × ref``; or, for a Linear or a convolution, a gain
  above ``explode^(1/3)`` (10 at the default) times the larger of the median gain of
  the other Linear and convolution calls and ``1/√3``. torch initialises their
  weights with a variance of ``1/(3 fan_in)``, so each passes back
  ``‖Wᵀg‖/‖g‖ ≈ 1/√3`` of a gradient whatever its shape (0.56–0.58 measured on a
  784-512-512-10 MLP and a CNN), and a layer scaled ×40 passes back ~23. The floor
  at ``1/√3`` keeps a layer from being compared only with smaller ones: under
  Xavier's init a 4 -> 256 layer passes back ~0.1 and a 256 -> 3 one ~1.4. Other
  modules have no such reference (a batch norm's gain is ``γ/σ`` of its input, by
  design): only the absolute threshold applies to them;
- ``vanishing``: a module's input or output gradient norm above 0 and below
  ``vanish × ref``, or an input gradient of exactly 0 from a non-zero output
  gradient in a module that is not dead (the gradient died inside it). Not for
  parameters: a bias before a batch norm has a zero gradient by design, which
  rounding makes ~1e-9, and the modules around it show where the gradient goes;
- ``dead``: every output unit is 0 for every sample and no parameter inside the
  module receives a non-zero gradient (a zero-initialised layer still learns:
  it is not dead).
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable

from .report import Flag, ModuleHealth, ParameterHealth, Thresholds


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def gain_of(in_grad: float | None, out_grad: float | None) -> float | None:
    """``‖∂L/∂input‖ / ‖∂L/∂output‖``; None where either is unknown or both are 0."""
    if in_grad is None or out_grad is None or out_grad == 0 or not math.isfinite(out_grad):
        return None
    return in_grad / out_grad


INIT_GAIN = 1 / math.sqrt(3)  # ‖Wᵀg‖/‖g‖ of a Linear or convolution as torch initialises it, at any shape


def peer_references(linear_maps: list[bool], gains: list[float | None]) -> list[tuple[float, int] | None]:
    """For each Linear or convolution call, the gain its own is compared with: the larger of the
    median gain of the other such calls and :data:`INIT_GAIN`, and how many others there are;
    None for any other module."""
    known = [i for i, (linear, gain) in enumerate(zip(linear_maps, gains))
             if linear and gain is not None and math.isfinite(gain) and gain > 0]
    out: list[tuple[float, int] | None] = []
    for i, linear in enumerate(linear_maps):
        if not linear:
            out.append(None)
            continue
        others = [gains[j] for j in known if j != i]
        out.append((max(statistics.median(others) if others else 0.0, INIT_GAIN), len(others)))
    return out


def module_flags(seen, *, ref: float, limits: Thresholds, learns: list[bool], peers: list,
                 confirmed_nonfinite: bool) -> list[tuple[tuple[Flag, ...], tuple[str, ...]]]:
    """Flags and reasons for each :class:`.hooks.Seen`. ``learns[i]``: a parameter inside the
    module got a non-zero gradient; ``peers[i]``: :func:`peer_references`'s entry. An infinite
    gradient norm with no non-finite gradient confirmed by the diagnostic run
    (``confirmed_nonfinite`` False) is a norm past the dtype's range: exploding."""
    result = []
    for s, learning, peer in zip(seen, learns, peers):
        flags: dict[Flag, str] = {}
        gain = gain_of(s.in_grad, s.out_grad)
        if s.finite is False:
            flags[Flag.NONFINITE] = "its output holds NaN or inf"
        for what, norm in (("output", s.out_grad), ("input", s.in_grad)):
            if norm is None:
                continue
            if math.isnan(norm) or (math.isinf(norm) and confirmed_nonfinite):
                flags.setdefault(Flag.NONFINITE, f"the gradient of its {what} holds NaN or inf")
            elif norm > limits.explode * ref:
                flags.setdefault(Flag.EXPLODING, f"‖∂L/∂{what}‖ {_fmt(norm)} > {limits.explode:g} × ‖v‖"
                                 + (" (past the dtype's range)" if math.isinf(norm) else ""))
            elif 0 < norm < limits.vanish * ref:
                flags.setdefault(Flag.VANISHING, f"‖∂L/∂{what}‖ {_fmt(norm)} < {limits.vanish:g} × ‖v‖")
        dead = s.dead == 1.0 and not learning
        if dead:
            flags[Flag.DEAD] = "every output unit is 0 for every sample"
        if gain is not None and math.isfinite(gain):
            if gain > limits.explode:
                flags.setdefault(Flag.EXPLODING, f"gain {_fmt(gain)} > {limits.explode:g}")
            elif peer is not None and gain > limits.peer * peer[0]:
                flags.setdefault(Flag.EXPLODING, f"gain {_fmt(gain)} is {gain / peer[0]:.0f}× "
                                 + (f"the median {_fmt(peer[0])} of the {peer[1]} other Linear and convolution calls"
                                    if peer[0] > INIT_GAIN else f"1/√3, a Linear's or convolution's at torch's init"))
            if gain == 0 and s.out_grad > 0 and not dead:
                flags.setdefault(Flag.VANISHING, "no gradient passes it: ‖∂L/∂input‖ is 0")
        ordered = tuple(f for f in Flag if f in flags)
        result.append((ordered, tuple(flags[f] for f in ordered)))
    return result


def modules_health(seen, flags, locations: list[str | None]) -> tuple[ModuleHealth, ...]:
    return tuple(ModuleHealth(s.name, s.cls, s.call, s.calls, where, s.output_shape, s.out_grad, s.in_grad,
                              gain_of(s.in_grad, s.out_grad), s.dead, s.saturated, s.finite is not False, f, r,
                              s.order, s.out_seen)
                 for s, (f, r), where in zip(seen, flags, locations))


def parameter_health(name: str, shape, *, norm: float | None, weight_norm: float, zeros: int | None,
                     nonfinite: int | None, frozen: bool, ref: float, limits: Thresholds, lr: float | None,
                     aliases: Iterable[str] = ()) -> ParameterHealth:
    flags, reasons = (), ()
    if nonfinite:
        flags, reasons = (Flag.NONFINITE,), (f"{nonfinite} gradient entries are NaN or inf",)
    elif norm is not None and norm > limits.explode * ref:
        flags, reasons = (Flag.EXPLODING,), (f"‖grad‖ {_fmt(norm)} > {limits.explode:g} × ‖v‖",)
    ratio = None if norm is None or weight_norm == 0 else norm / weight_norm
    update = None if ratio is None or lr is None else lr * ratio
    return ParameterHealth(name, tuple(shape), norm, weight_norm, ratio, update, zeros, nonfinite, frozen, flags,
                           reasons, tuple(aliases))
