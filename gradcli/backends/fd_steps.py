"""The numerics of the fd backend: difference tableaux on a window of steps,
the per-entry error estimate, and the rule that moves the window.

Everything here is elementwise over arrays shaped ``(k, *rows, *out)`` (the
entries of ``k`` columns); steps are shaped ``(k, *rows)`` plus ones for the
output axes, so every entry has its own step.

Central differences at steps ``h, 2h, 4h`` (``D(h) = (f(x+h) - f(x-h)) / 2h``,
error ``a2 h^2 + a4 h^4 + ...``) give the Richardson tableau

    R1(h) = (4 D(h) - D(2h)) / 3            error O(h^4)
    R2(h) = (16 R1(h) - R1(2h)) / 15        error O(h^6)

The result is ``R2(h)``; its truncation error is bounded by that of ``R1(h)``,
``|R2(h) - R1(h)|`` in the asymptotic range, times ``SAFETY``. The tableau is
trusted only where it *is* in the asymptotic range: successive differences
``D(h) - D(2h)``, ``D(2h) - D(4h)`` must shrink by a factor 2.5..80 per halving
(4 for an ``h^2`` error, 16 or 64 when ``f'''`` vanishes), and so must the
even part ``S(h) = f(x+h) + f(x-h) - 2 f(x)`` (``f'' h^2``; a kink at ``x``
makes it ``~h``, ratio 2) — unless both are at the rounding level.

Rounding: one evaluation of ``f`` errs by ``sigma = ULPS * eps * (|f| + cond)``,
where ``cond = sum_j |df/dx_j| |x_j|`` (a backward-stable evaluation is exact
for inputs perturbed by ``eps |x|``: this is how an offset of 1e3 on every
logit of a cross_entropy row shows in its value) plus the row's largest output
(the size of the intermediates); a tableau multiplies it by ``amp / h``. Where
larger, the noise *sampled* by ``N = 64 S(h) - 20 S(2h) + S(4h)`` replaces
it in the estimate (never in the tests: at a step too large for the function
N measures its shape). The working dtype's ``eps`` is used; the caller adds
the result dtype's rounding ``eps_out |value|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAFETY = 2.0  # truncation: the tableau's own difference, doubled
ULPS = 4.0  # rounding of one evaluation, in units of eps * (|f| + cond)
NOISE = 4.0  # differences below NOISE times their rounding are noise, not shape
RATIO = (2.5, 80.0)  # an asymptotic central tableau: differences shrink 4x (h^2) .. 64x (h^6) per halving
ONE_SIDED_RATIO = (1.5, 80.0)  # a one-sided tableau: 2x (h) .. 64x per halving
MAX_MOVES = 40  # window moves per column: steps from 2^-40 to 2^+40 times the first
# N = 64 S(h) - 20 S(2h) + S(4h) = 8 f^(6) h^6 + noise: it cancels every polynomial of degree < 6, so at a
# step where the function is smooth it measures the evaluations' own noise (std 130.7 sigma). Where the
# model eps |f| misses it (log(1 + x^2) at tiny x rounds 1 + x^2), this sample raises sigma.
NOISE_SAMPLE = 3.0 / 130.7



@dataclass
class Candidate:
    """One window's answer per entry: the value ``V``, its truncation ``T``
    (before SAFETY), the function magnitude ``F`` the rounding scales with,
    ``q = amp / h`` (rounding of V per unit of one evaluation's error), and
    ``ok``: finite and in the asymptotic range (or at the rounding level)."""

    V: np.ndarray
    T: np.ndarray
    F: np.ndarray
    q: np.ndarray
    ok: np.ndarray
    sampled: np.ndarray | float = 0.0  # the noise sample, in the units of F: raises the estimate only

    def estimate(self, eps: float, cond=0.0) -> np.ndarray:
        """Truncation with its safety factor plus rounding (without the result dtype)."""
        return SAFETY * self.T + ULPS * eps * self.q * np.maximum(self.F + cond, self.sampled)

    def where(self, take: np.ndarray, other: "Candidate") -> "Candidate":
        """This candidate where ``take``, else ``other``."""
        return Candidate(*(np.where(take, a, b) for a, b in zip(
            (self.V, self.T, self.F, self.q, self.ok, self.sampled),
            (other.V, other.T, other.F, other.q, other.ok, other.sampled))))


def _ratio_ok(small, large, noise, bounds=RATIO):
    """Differences at a step and at twice it: both at the rounding level, or
    shrinking (same sign) by a factor within ``bounds`` as the step halves."""
    lo, hi = bounds
    a, b = np.abs(small), np.abs(large)
    quiet = (a <= noise) & (b <= hi * noise)
    same_sign = (np.signbit(small) == np.signbit(large)) & (a > 0)  # not small * large > 0: it underflows at 1e-170
    return quiet | (same_sign & (b >= lo * a) & (b <= hi * a))


def central(fp, fm, wp, wm, f0, eps, cond=0.0) -> Candidate:
    """Richardson from ``fp[i] = f(x + w_i)``, ``fm[i] = f(x - w_i)`` at the
    three levels ``i`` (steps ``h, 2h, 4h``; ``wp``/``wm`` the steps as taken).
    The noise sample raises the estimate only: what counts as noise in the
    ratio tests is the model (at a step too large for the function, or across
    a kink, the sample measures the function's shape, not noise)."""
    D = [(fp[i] - fm[i]) / (wp[i] + wm[i]) for i in range(3)]
    S = [fp[i] + fm[i] - 2 * f0 for i in range(3)]
    F = np.maximum(np.abs(f0), np.maximum(np.abs(fp).max(axis=0), np.abs(fm).max(axis=0)))
    r1a, r1b = (4 * D[0] - D[1]) / 3, (4 * D[1] - D[2]) / 3
    V = (16 * r1a - r1b) / 15
    h = (wp[0] + wm[0]) / 2
    sigma = ULPS * eps * (F + cond)  # one evaluation's rounding, as modelled
    sampled = NOISE_SAMPLE * np.abs(64 * S[0] - 20 * S[1] + S[2]) / (ULPS * eps)
    odd = _ratio_ok(D[0] - D[1], D[1] - D[2], NOISE * 1.5 * sigma / h)
    even = _ratio_ok(S[0], S[1], NOISE * 4 * sigma) & _ratio_ok(S[1], S[2], NOISE * 4 * sigma)
    ok = odd & even & np.isfinite(V) & np.isfinite(F)
    # R2 = (64 D(h) - 20 D(2h) + D(4h)) / 45: |64| + |20|/2 + |1|/4 over 45, rounding 1.65 sigma/h; 2 for margin.
    return Candidate(V, np.abs(V - r1a), F, np.broadcast_to(2.0 / h, V.shape), ok, sampled)


def one_sided(fs, w, f0, eps, sign: float, cond=0.0) -> Candidate:
    """Richardson from one side: ``fs[i] = f(x + sign * w_i)`` at steps ``h, 2h, 4h``
    (``Q(h) = sign (f(x + sign h) - f(x)) / h``, error ``a1 h + a2 h^2 + ...``)."""
    Q = [sign * (fs[i] - f0) / w[i] for i in range(3)]
    F = np.maximum(np.abs(f0), np.abs(fs).max(axis=0))
    r1a, r1b = 2 * Q[0] - Q[1], 2 * Q[1] - Q[2]
    V = (4 * r1a - r1b) / 3
    h = w[0]
    sigma = ULPS * eps * (F + cond)
    ok = _ratio_ok(Q[0] - Q[1], Q[1] - Q[2], NOISE * 3 * sigma / h, ONE_SIDED_RATIO) & np.isfinite(V) & np.isfinite(F)
    # V = (8 Q(h) - 6 Q(2h) + Q(4h)) / 3: rounding (16 + 6 + 1/2) / 3 = 7.5 sigma/h; 8 for margin.
    return Candidate(V, np.abs(V - r1a), F, np.broadcast_to(8.0 / h, V.shape), ok)


def richardson(fp, fm, wp, wm, f0, eps, cond=0.0) -> Candidate:
    """Central where all seven points are finite; else one-sided on a finite side
    (a domain edge: log, sqrt near 0); else nothing (``V`` nan, not ok)."""
    with np.errstate(all="ignore"):
        best = central(fp, fm, wp, wm, f0, eps, cond)
        finite_p, finite_m = np.isfinite(fp).all(axis=0), np.isfinite(fm).all(axis=0)
        taken = finite_p & finite_m
        if taken.all():
            return best
        for fs, w, sign, finite in ((fp, wp, 1.0, finite_p), (fm, wm, -1.0, finite_m)):
            side = one_sided(fs, w, f0, eps, sign, cond)
            take = ~taken & finite
            best = side.where(take, best)
            taken |= take
        return best


# Rows applied to the six values (f(x+h), f(x-h), f(x+2h), f(x-2h), f(x+4h), f(x-4h)) in one pass:
# h R2(h); SAFETY h |R2(h) - R1(h)| (before the absolute value); S(2h) - 4 S(h) - 6 f(x) (the even
# part's departure from h^2 scaling, f(x) added afterwards); S(2h) + 2 f(x); f(x+4h) - f(x-4h);
# N + 90 f(x) (the noise sample).
_SCREEN = np.array([[32 / 45, -32 / 45, -5 / 45, 5 / 45, 1 / 360, -1 / 360],
                    np.array([2, -2, -1.25, 1.25, 1 / 8, -1 / 8]) * SAFETY / 45,
                    [-4, -4, 1, 1, 0, 0],
                    [0, 0, 1, 1, 0, 0],
                    [0, 0, 0, 0, 1, -1],
                    [64, 64, -20, -20, 1, 1]])


def screen(values, h, f0, eps, value_out, estimate_out):
    """The first window of every column, cheaply: ``R2(h)`` into ``value_out``,
    the estimate without the ``cond`` term (``SAFETY T + ULPS eps (2/h) |f|``)
    into ``estimate_out``, and whether the entry may be accepted as it is: an
    even part that scales like ``h^2`` or faster (``|S(2h) - 4 S(h)| <= 0.8 |S(2h)|``;
    a kink at x gives ``S(2h) = 2 S(h)``) or sits at the rounding level. The odd
    part's ratio test is implied once ``T`` is below the target, and a
    non-finite value gives a non-finite estimate, never accepted.
    ``values``: ``(6, ...)`` at the steps ``h`` (exact multiples, see fd)."""
    with np.errstate(all="ignore"):
        # einsum, not BLAS: a 6-long contraction, where OpenBLAS's threads cost more than they give.
        rows = np.einsum("ij,j...->i...", _SCREEN.astype(values.dtype), values)
        np.divide(rows[0], h, out=value_out)
        magnitude = np.abs(rows[4], out=rows[4])
        magnitude += np.abs(f0)  # bounds |f| at the points, up to the even part
        magnitude *= ULPS * eps  # sigma, as modelled ...
        rows[5] -= 90 * f0
        np.abs(rows[5], out=rows[5])
        rows[5] *= NOISE_SAMPLE
        np.maximum(magnitude, rows[5], out=magnitude)  # ... or as sampled
        magnitude *= 2  # a central R2's rounding, times h
        np.abs(rows[1], out=estimate_out)
        estimate_out += magnitude
        estimate_out /= h
        rows[2] += 6 * f0
        rows[3] -= 2 * f0
        np.abs(rows[2:4], out=rows[2:4])
        magnitude *= 4 * NOISE  # the noise of S(2h) - 4 S(h): 8 NOISE sigma
        magnitude += 0.8 * rows[3]
        return rows[2] <= magnitude


def simple(values, w, f0, eps, method: str) -> Candidate:
    """The fixed formulas of ``--fd-method central|forward`` at one step:
    central ``D(h)`` (``values`` at ``+h, -h, +2h, -2h``; truncation
    ``|D(h) - D(2h)| / 3``) or forward ``(f(x+h) - f(x)) / h`` (at ``+h, +2h``;
    truncation ``|Q(h) - Q(2h)|``)."""
    with np.errstate(all="ignore"):
        if method == "central":
            d1 = (values[0] - values[1]) / (w[0] + w[1])
            d2 = (values[2] - values[3]) / (w[2] + w[3])
            F = np.maximum(np.abs(f0), np.abs(values).max(axis=0))
            h = (w[0] + w[1]) / 2
            V, T, amp = d1, np.abs(d1 - d2) / 3, 1.5
        else:
            q1, q2 = (values[0] - f0) / w[0], (values[1] - f0) / w[1]
            F = np.maximum(np.abs(f0), np.abs(values).max(axis=0))
            h = w[0]
            V, T, amp = q1, np.abs(q1 - q2), 2.0
        ok = np.isfinite(V) & np.isfinite(T)
        return Candidate(V, T, F, np.broadcast_to(amp / h, V.shape), ok)


def assess(cand: Candidate, eps: float, cond, scale, target: float):
    """The estimate per entry (truncation with SAFETY plus rounding) and where
    the window should go: 0 stay (done), -1 smaller steps (not converged, or
    truncation dominates above the target), +1 larger steps (rounding
    dominates above the target while the derivative stands above it).
    ``scale``: the magnitude of the derivative's row, what the target is relative to."""
    trunc = SAFETY * cand.T
    rounding = cand.F + cond  # as modelled: the direction follows it (a noise sample may be truncation)
    rounding *= cand.q
    rounding *= ULPS * eps
    estimate = cand.estimate(eps, cond)
    goal = target * scale
    with np.errstate(invalid="ignore"):
        done = estimate <= goal
        down = ~cand.ok | (~done & (trunc >= rounding))
        up = ~down & ~done & (scale > rounding)
    return estimate, up.view(np.int8) - down.view(np.int8)
