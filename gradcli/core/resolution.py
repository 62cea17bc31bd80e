"""How finely a function resolves a change of its input: its working precision.

Code that rounds inside (a ``.float()`` cast in a float64 problem, as Hugging
Face losses upcast logits to float32; a bfloat16 layer) computes to a coarser
grid than its dtype's ``eps``, which no model of ``eps |f|`` sees. fd measures
it to size its steps and error bars (:func:`gradcli.backends.fd.working_eps`,
:func:`gradcli.checking.probe.working_eps`); user code's per-sample
interaction checks scale their tolerances with it
(:mod:`gradcli.usercode.precision`). Pure NumPy.
"""

from __future__ import annotations

import numpy as np

# Relative input changes, 8x apart, at which ``resolution`` asks whether the function resolves them.
RESOLUTION_LADDER = tuple(2.0 ** -k for k in range(46, 3, -3))  # 1.4e-14 (64 eps of float64) .. 6e-2
RESOLVED_SLOPES = 0.25  # a difference quotient within 25% of the reference one: its change is resolved
EXACT_SLOPES = 0.05  # the first rung's quotient within 5% of the reference: the code computes to eps
LINEAR = 0.1  # the reference rung: the even part of the change at most 10% of the odd part
# bfloat16's unit roundoff, the coarsest grid torch computes in (float8 aside): a measure above it is a few units'
# grid steps not yet averaged out, and would widen a tolerance past what that code resolves
COARSEST = 2.0 ** -8


def resolution(change, eps: float, size: float, ladder=RESOLUTION_LADDER) -> float:
    """The relative precision the function actually computes in: ``eps``, or
    larger where the code rounds inside (a ``.float()`` cast, a bfloat16
    layer), which no model of ``eps |f|`` sees.

    ``change(s)`` gives ``(f(x + s d) - f(x), f(x - s d) - f(x))`` along one
    direction ``d`` scaled to the entries, for the relative changes ``s`` of
    ``ladder`` (8x apart, smallest first). The central quotients
    ``g(s) = (f(x + s d) - f(x - s d)) / 2s`` of a function computed to ``eps``
    agree from the first rung up; where the code rounds to a coarser grid
    ``E``, a change below ``E`` is lost in part or whole, and only the
    quotients from ``s ~ E`` up agree. The reference is the largest rung
    where the change is still linear (its even part at most LINEAR of its odd
    part), as is the rung below, with a quotient within RESOLVED_SLOPES of
    it; the answer is ``eps`` when the first rung's quotient is within
    EXACT_SLOPES of the reference's (code of which a part rounds inside lacks
    that part's share there), else ``s / 4`` for the smallest rung from which
    every quotient up to the reference is within RESOLVED_SLOPES (a change of
    ``s`` resolved to 25%: the grid is at most ``s / 4``; ``eps`` when that is
    the first rung: a value far larger than its slope times ``x``, a loss
    near its minimum, rounds the first rung's change more). Where no rung is linear
    (a function flat along ``d``, a kink, a grid coarse at every rung), code
    that the first rung does not change at all while a larger one does
    rounds to at least that larger ``s`` — and where a larger rung is linear
    (a few bfloat16 units, each moving by whole grid steps or not at all, agree
    at no two rungs), the same search runs from the largest linear rung; the
    answer is never coarser than bfloat16's 2^-8 (``COARSEST``). Otherwise
    nothing is learned. This
    is the idea of estimating computational noise from function values along
    a direction (More and Wild, "Estimating computational noise", SIAM J.
    Sci. Comput. 33 (2011)), reduced to the one question fd needs. A function
    computed to ``eps`` costs about three rungs (two evaluations each).

    ``size``: ``|f(x)|`` (the norm over the outputs). A change the rounding
    of ``f`` itself in ``eps`` hides (``2 s |g| < 16 eps (|f| + |g|)``: a
    value far larger than its slope, a saturated unit) is not evidence: the
    rung below the answer must lie above that for the answer to stand."""
    rungs = [s for s in ladder if s >= 16 * eps]
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def at(k):  # (odd, even) parts of the change at rung k, flattened; non-finite -> None
        if k not in seen:
            with np.errstate(all="ignore"):
                plus, minus = (np.asarray(c, dtype=np.float64).reshape(-1) for c in change(rungs[k]))
                seen[k] = (plus - minus, plus + minus)
        odd, even = seen[k]
        return (odd, even) if np.isfinite(odd).all() and np.isfinite(even).all() else None

    def linear(k):
        parts = at(k)
        if parts is None:
            return False
        odd = np.linalg.norm(parts[0])
        return odd > 0 and np.linalg.norm(parts[1]) <= LINEAR * odd

    def quotient(k):
        return at(k)[0] / (2 * rungs[k])

    def consistent(k):  # linear, and so is the rung below, with a quotient within RESOLVED_SLOPES of its own
        return linear(k) and linear(k - 1) and np.linalg.norm(quotient(k - 1) - quotient(k)) <= \
            RESOLVED_SLOPES * np.linalg.norm(quotient(k))

    # (a rung alone can look linear by chance: sin(1000 x) at 32 aliased at a change of 1e-3)
    top, floor = next((k for k in reversed(range(1, len(rungs))) if consistent(k)), None), eps
    if top is None:
        moved = [k for k in range(len(rungs)) if at(k) is not None and np.linalg.norm(at(k)[0]) > 0]
        if not moved or moved[0] == 0 or at(0) is None:
            return eps
        # Changes below rungs[moved[0]] are lost whole (the code rounds inside) and no two rungs agree: a grid
        # coarse at nearly every rung (bfloat16 inside, each entry on its own 2^-8 grid). The largest linear
        # rung is then the reference, and the answer at least the rung that first moved.
        floor = max(eps, rungs[moved[0]])
        top = next((k for k in reversed(range(moved[0], len(rungs))) if linear(k)), None)
        if top is None:
            return floor
    reference = quotient(top)
    size_g = np.linalg.norm(reference)

    def agrees(k, within=RESOLVED_SLOPES):
        parts = at(k)
        return parts is not None and np.linalg.norm(parts[0] / (2 * rungs[k]) - reference) <= within * size_g

    if agrees(0, EXACT_SLOPES):  # (a part of the code that rounds inside is missing from it)
        return eps
    first = top
    while first > 0 and agrees(first - 1):
        first -= 1
    if first == 0 or rungs[first - 1] * size_g < 16 * eps * (size + size_g):  # explained by rounding in eps
        return floor
    return min(max(floor, rungs[first] / 4), COARSEST)


def relative_direction(a: np.ndarray) -> np.ndarray:
    """The direction ``resolution`` is probed along at ``a``: seeded signs (seed 0), each
    entry moved relative to itself (``|a|``; a zero entry by the entries' root mean square,
    or 1 when every entry is 0), in ``a``'s dtype. An entry of 1e-8 beside one of 1e8 is
    probed at its own scale."""
    signs = np.random.default_rng(0).integers(0, 2, a.shape) * 2 - 1
    rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))) if a.size else 0.0
    return (np.where(a != 0, np.abs(a), rms if rms > 0 else 1.0) * signs).astype(a.dtype)
