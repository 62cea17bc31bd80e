"""Tolerances and mismatch reports between two arrays, pure NumPy.

An entry matches when ``|value - reference| <= atol + rtol |reference|`` (as
``np.isclose``), plus three times fd's own error estimate for fd (as probe
mode does): a difference within fd's error bar is not evidence against the
reference; NaN matches NaN. Entries flagged as sitting on a kink are
reported but never counted as mismatches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np


def default_tolerance(dtype) -> tuple[float, float]:
    """``(atol, rtol)``: ``sqrt(eps)`` and ``eps**(3/8)`` rounded to a power of
    ten — float64: (1e-8, 1e-6); float32: (1e-3, 1e-3)."""
    eps = float(np.finfo(dtype).eps)
    return 10.0 ** round(math.log10(eps**0.5)), 10.0 ** round(math.log10(eps**0.375))


# A result computed (in part) to a working precision eps carries a few operations' rounding, each at most
# about 4 eps of the values it combines (fd_steps.ULPS): measured, autograd through a loss upcast to float32
# differs from float64 by 5 eps along probes, forward mode from autograd by 1.5e-7 (1.3 eps) on entries of 1.
ROUNDING_ULPS = 16


def working_tolerance(atol: float, rtol: float, eps: float, size: float = 0.0) -> tuple[float, float]:
    """``(atol, rtol)`` for code that computes only to ``eps`` inside (a float32 cast in a float64
    problem, measured): at least ``ROUNDING_ULPS eps`` relative, and that times ``size`` (the
    result's largest entry: rounding of large intermediates lands on small entries too) absolute."""
    slack = ROUNDING_ULPS * eps
    return max(atol, slack * size), max(rtol, slack)


@dataclass(frozen=True)
class Entry:
    """One offending entry: where, both values and by how much."""

    backend: str
    index: tuple[int, ...]
    value: float
    reference: float
    abs_error: float
    rel_error: float
    error_estimate: float | None = None
    excess: float = 0.0  # |diff| / (atol + rtol |reference| (+ 3 error)): above 1 is out of tolerance
    kind: str = "entry"  # "probe": ``index`` is (k,), the probe direction, in probe mode


@dataclass(frozen=True)
class Comparison:
    """One backend against the reference; ``ok`` None when it was skipped (``skipped`` says why)."""

    name: str
    ok: bool | None
    max_abs: float
    max_rel: float | None  # over the entries whose reference is above atol (None: none is; see meaningful_rel)
    worst_index: tuple[int, ...]
    mismatches: int
    seconds: float
    error_estimate: float | None = None
    kink_entries: int = 0
    skipped: str | None = None
    worst: tuple[Entry, ...] = field(default=())
    coarse: int = 0  # entries where 3 x fd's error estimate is larger than atol + rtol |reference|
    inconclusive: str | None = None  # it ran, but could not judge (ok None): why


# fd flags more than this share of the entries (or probes) non-smooth: what is left is no verdict on the rest
INCONCLUSIVE_SHARE = 0.5


def judged(comparison: Comparison, flagged: np.ndarray | None, what: str = "entries") -> Comparison:
    """fd's comparison as it stands, or inconclusive (``ok`` None, with the reason)
    where most ``what`` are entries fd flagged non-smooth *and* differs from the
    reference at (``kink_entries``: those it could not judge; a flagged entry where
    both agree, a zero gradient, is judged): a check where every fd entry is
    "non-smooth" compared nothing, and is no "ok" (SPEC: a backend that could not
    judge is ``ok: null`` with its reason). A mismatch elsewhere stands."""
    if flagged is None or not np.size(flagged) or comparison.ok is False:
        return comparison
    share = comparison.kink_entries / np.size(flagged)
    if share <= INCONCLUSIVE_SHARE:
        return comparison
    reason = (f"fd could not judge {share:.0%} of the {what}: non-smooth there (its steps do not converge: a kink or "
              "a jump within every step, or code whose value changes from call to call) and off the reference; "
              "add another backend (--backends autograd,forward), or check at a point away from the kinks")
    return replace(comparison, ok=None, inconclusive=reason)


def meaningful_rel(rel: np.ndarray, reference_size: np.ndarray, atol: float) -> float | None:
    """The largest relative error where the reference is above ``atol`` — elsewhere it is zero
    within tolerance and a rounding difference divided by it reads as an alarm; None
    when no entry is (a zero gradient)."""
    shown = rel[reference_size > atol]
    return float(shown.max()) if shown.size else None


def compare(name: str, value: np.ndarray, reference: np.ndarray, atol: float, rtol: float, *, seconds: float,
            top: int, error: np.ndarray | None = None, kinks: np.ndarray | None = None) -> Comparison:
    value, reference = np.asarray(value, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    kinks = np.zeros(value.shape, dtype=bool) if kinks is None else np.broadcast_to(kinks, value.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = np.abs(value - reference)
        both_nan = np.isnan(value) & np.isnan(reference)
        diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
        scale = np.where(np.isnan(reference), 0.0, np.abs(reference))
        rel = np.where(scale != 0, diff / scale, np.where(diff == 0, 0.0, np.inf))
        tol = atol + rtol * scale
        # fd's bar, where it is one: not on kinks or non-smooth entries (there it is the best window's, not a bound).
        bar = 0.0 if error is None else np.where(
            kinks, 0.0, 3 * np.nan_to_num(np.asarray(error, dtype=np.float64), nan=0.0, posinf=0.0))
        excess = np.where(diff == 0, 0.0, diff / (tol + bar))
    out = (excess > 1) & ~kinks
    counted = np.where(kinks, 0.0, excess)
    worst_flat = int(np.argmax(counted)) if counted.size else 0
    worst_index = tuple(int(i) for i in np.unravel_index(worst_flat, value.shape)) if value.ndim else ()
    order = np.argsort(-counted, axis=None, kind="stable")[: max(0, top)]
    entries = tuple(
        Entry(name, idx, float(value[idx]), float(reference[idx]), float(diff[idx]), float(rel[idx]),
              None if error is None else float(np.asarray(error)[idx]), float(counted[idx]))
        for idx in (tuple(int(i) for i in np.unravel_index(k, value.shape)) for k in order)
        if out[idx]
    )
    return Comparison(
        name=name,
        ok=not out.any(),
        max_abs=float(np.where(kinks, 0.0, diff).max()) if diff.size else 0.0,
        max_rel=meaningful_rel(rel[~kinks], scale[~kinks], atol),
        worst_index=worst_index,
        mismatches=int(out.sum()),
        seconds=seconds,
        error_estimate=None if error is None else float(np.max(error)) if np.size(error) else 0.0,
        kink_entries=int((kinks & (excess > 1)).sum()),
        worst=entries,
        coarse=int(np.count_nonzero((bar > tol) & ~kinks)),
    )
