"""Joint probes (probe mode): every backend's ``vₖᵀ J uₖ`` over a set of arguments, and the verdict.

``Prober`` draws the K probes over every ``--wrt`` argument at once and runs
each backend along them (``probe.py``: K vjps, K directional differences);
``judge(names)`` compares the backends with the reference over a subset of
the arguments — all of them for the verdict, fewer for localisation
(``locate.tensors``), where autograd's and analytic's per-argument parts are
reused and only fd (or forward mode) runs again along the restricted probes.

The tolerance (``Tolerance``) is the dtype's, widened once fd has measured that
the code computes to a coarser precision than its dtype (a ``.float()`` cast, a
loss upcast to float32) by the rounding that precision leaves
(``compare.working_tolerance``); fd's own error bar, at that precision, is added.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from . import probe
from ..compute.solve import solve
from ..core.compare import Comparison, working_tolerance
from ..core.errors import BackendError
from ..core.options import BackendName, BackendOptions, Quantity
from ..problem.problem import Problem
from .full import skipped, verdict


@dataclass(frozen=True)
class Tolerance:
    """A probe agrees when ``|value - reference| <= atol + rtol max(|reference|, scale)
    + 3 × fd's error estimate``. ``given``: from ``--atol``/``--rtol``, kept whatever
    the working precision; ``eps``: the precision the defaults are for."""

    atol: float
    rtol: float
    source: str
    given: bool
    eps: float

    def at(self, eps: float | None) -> "Tolerance":
        """For code that computes only to ``eps`` (coarser than the dtype's): ``rtol`` at least
        the rounding that precision leaves (``compare.working_tolerance``; the ``rtol`` term
        is relative to the probes' own size, so ``atol`` stays)."""
        if self.given or eps is None or eps <= self.eps:
            return self
        atol, rtol = working_tolerance(self.atol, self.rtol, eps)
        return Tolerance(atol, rtol, f"{self.source}, widened for the working precision {eps:.1e}", False, eps)

    def bound(self, reference, scale, error=0.0):
        return self.atol + self.rtol * np.maximum(np.abs(reference), scale) + 3 * np.asarray(error)


@dataclass(frozen=True)
class Judgement:
    """The probes over ``names``: one comparison per backend, the Taylor test, the
    verdict (``ok`` None when nothing but the reference ran) and why."""

    names: tuple[str, ...]
    ok: bool | None
    comparisons: tuple[Comparison, ...]
    taylor: Any
    notes: tuple[str, ...]
    reference_seconds: float


class Prober:
    """The probes, the torch functions and every backend's run over all the arguments."""

    def __init__(self, problems: list[Problem], whole: Problem, *, backends: Sequence[BackendName],
                 reference: BackendName, tolerance: Tolerance, count: int, seed: int, taylor: bool, top: int,
                 options: BackendOptions) -> None:
        self.problems = {p.wrt: p for p in problems}
        self.names = tuple(p.wrt for p in problems)
        self.backends, self.reference, self.tolerance = tuple(backends), reference, tolerance
        self.taylor, self.top, self.options = taylor, top, options
        scales = {n: probe.step_scale(whole.args[n]) for n in self.names}
        self.probes = probe.make_probes({n: whole.args[n].shape for n in self.names}, whole.output_shape, count,
                                        seed, whole.dtype, scales)
        self.fd_dtype = whole.dtype if options.fd_dtype == "same" else np.dtype(np.float64)
        self.fn = probe.TorchFunction(whole, self.names, options.device)
        self.fd_fn = self.fn if self.fd_dtype == whole.dtype else \
            probe.TorchFunction(whole, self.names, options.device, dtype=self.fd_dtype)
        self.eps: float | None = None  # the working precision, once fd has measured it
        self.runs: dict[BackendName, probe.ProbeValues | Exception] = {}
        for name in dict.fromkeys([reference, *backends]):
            try:
                self.runs[name] = self._values(name, self.names, self.runs.get(reference))
            except BackendError as err:
                if name is reference:
                    raise
                self.runs[name] = err

    def judge(self, names: Sequence[str] | None = None, first: int | None = None) -> Judgement:
        """Every backend against the reference along the probes restricted to ``names``
        (default all: the runs already made). ``first``: try that probe alone first, and
        stop there when it already fails (localisation needs only a group's verdict)."""
        names = self.names if names is None else tuple(names)
        if first is not None and self.probes.count > 1:
            quick = self._judge(names, (first,))
            if quick.ok is False:
                return quick
        return self._judge(names, tuple(range(self.probes.count)))

    def _judge(self, names: tuple[str, ...], ks: tuple[int, ...]) -> Judgement:
        every = ks == tuple(range(self.probes.count))
        runs = self.runs if names == self.names and every else self._runs(names, ks)
        ref = runs[self.reference]
        tol = self.tolerance
        comparisons = []
        for name in self.backends:
            if name is self.reference:
                continue
            got = runs[name]
            if isinstance(got, Exception):
                comparisons.append(skipped(name, got))
                continue
            c = probe.compare_probes(name.value, got.values, ref.values, tol.atol, tol.rtol, ref.scale,
                                     seconds=got.seconds, top=self.top, error=_error(got, ref),
                                     jump=got.jump if got.jump is not None else ref.jump)
            if not every:  # the probes' own numbers
                c = replace(c, worst_index=(ks[c.worst_index[0]],),
                            worst=tuple(replace(e, index=(ks[e.index[0]],)) for e in c.worst))
            comparisons.append(c)
        probes = self.probes if every else self.probes.take(ks)
        test = probe.taylor(self.fn, probes, ref.values, names) if self.taylor else None
        ok = verdict(comparisons)
        if test is not None and test.ok is False:
            ok = False
        elif ok is None and test is not None and test.ok:
            ok = True  # the Taylor test compared the reference with the function itself
        label = names[0] if len(names) == 1 else "the joint probes" if names == self.names else \
            f"{len(names)} arguments ({names[0]} … {names[-1]})"
        return Judgement(names, ok, tuple(comparisons), test, tuple(explain(label, comparisons, self.reference, test,
                                                                            self.fd_dtype)), ref.seconds)

    def _runs(self, names: tuple[str, ...], ks: tuple[int, ...]) -> dict[BackendName, probe.ProbeValues | Exception]:
        runs: dict[BackendName, probe.ProbeValues | Exception] = {}
        probes = self.probes.take(ks)
        for name in dict.fromkeys([self.reference, *self.backends]):
            whole = self.runs[name]
            if isinstance(whole, Exception):
                runs[name] = whole
            elif whole.parts is not None:
                runs[name] = whole.on(names, ks)  # autograd, analytic: their shares, no new work
            else:
                try:
                    runs[name] = self._values(name, names, runs.get(self.reference), probes)
                except BackendError as err:
                    if name is self.reference:
                        raise
                    runs[name] = err
        return runs

    def _values(self, name: BackendName, names: tuple[str, ...], ref, probes=None) -> probe.ProbeValues:
        probes = self.probes if probes is None else probes
        if name is BackendName.AUTOGRAD:
            return probe.autograd_values(self.fn, probes)
        if name is BackendName.FORWARD:
            return probe.forward_values(self.fn, probes, names)
        if name is BackendName.FD:
            got = probe.fd_values(self.fd_fn, probes, self.options.fd_step, self._agrees(ref), names=names,
                                  eps=self.eps)
            if got.eps is not None and self.eps is None:
                self.eps = got.eps
                self.tolerance = self.tolerance.at(got.eps)
            return got
        return analytic_values([self.problems[n] for n in names], probes, self.options)

    def _agrees(self, ref):
        return agrees_with(ref, lambda: self.tolerance)

    def reference_grad(self, name: str, k: int) -> np.ndarray | None:
        """The reference's ``vₖᵀ J_a`` for one argument (entries localisation), when it has one."""
        if self.reference is BackendName.AUTOGRAD:
            return probe.reference_grad(self.fn, self.probes, k, name)
        if self.reference is BackendName.ANALYTIC:
            return _analytic_grad(self.problems[name], self.probes, k, self.options)
        return None


def agrees_with(ref, tolerance):
    """fd's early acceptance (``probe.fd_values``): a difference within the probe tolerance
    (at the working precision it was taken in) of the reference's value, counting its
    rounding error. ``tolerance``: a ``Tolerance``, or a callable giving the current one."""
    if not isinstance(ref, probe.ProbeValues):
        return None
    scale = ref.scale
    current = tolerance if callable(tolerance) else (lambda: tolerance)

    def agrees(k: int, value: float, rounding: float, eps: float) -> bool:
        return abs(value - ref.values[k]) <= current().at(eps).bound(ref.values[k], scale[k], rounding)

    return agrees


def _error(got: probe.ProbeValues, ref: probe.ProbeValues) -> np.ndarray | None:
    """fd's error bar, on whichever side fd is."""
    errors = [e for e in (got.error, ref.error) if e is not None]
    return None if not errors else sum(errors)


def _analytic_grad(problem: Problem, probes: probe.Probes, k: int, options: BackendOptions) -> np.ndarray:
    v = probes.cotangent(k)
    v = np.ones(problem.output_shape, dtype=problem.dtype) if v is None else v
    return solve(problem, Quantity.VJP, backend=BackendName.ANALYTIC, cotangent=v, options=options).value


def analytic_values(problems: list[Problem], probes: probe.Probes, options: BackendOptions) -> probe.ProbeValues:
    """The closed-form vjp of each argument (built-ins) per probe's cotangent, dotted with the probes."""
    start = time.perf_counter()
    passes = 1 if probes.v is None else probes.count
    grads = [{p.wrt: _analytic_grad(p, probes, k, options) for p in problems} for k in range(passes)]
    return probe.grads_values(grads, probes, time.perf_counter() - start)


def explain(name: str, comparisons: list[Comparison], reference: BackendName, test, fd_dtype) -> list[str]:
    """Which side of a mismatch is believed, and why."""
    notes = []
    by_name = {c.name: c for c in comparisons if c.skipped is None}
    fd = by_name.get(BackendName.FD.value)
    if fd is not None and not fd.ok and fd.worst:
        e = fd.worst[0]
        notes.append(f"{name}: fd differs from {reference.value} by {e.abs_error:.2e} along probe {e.index[0]}, while "
                     f"its own error bar is {3 * (e.error_estimate or 0):.1e} (3× its estimate, in {fd_dtype}): "
                     f"fd is believed, so suspect {reference.value}'s derivative (a hand-written backward)")
    forward = by_name.get(BackendName.FORWARD.value)
    if forward is not None and not forward.ok:
        if fd is not None and fd.ok:
            notes.append(f"{name}: forward mode differs from {reference.value} but fd agrees with {reference.value}: "
                         "suspect a forward-mode formula (a hand-written jvp)")
        elif fd is not None:
            notes.append(f"{name}: forward mode and fd both differ from {reference.value}: the reverse pass is wrong")
    if fd is not None and fd.kink_entries:
        notes.append(f"{name}: {fd.kink_entries} probe(s) non-smooth: a kink at the point (relu at 0: the one-sided "
                     "slopes differ, torch's convention picks one) or within every step (fd's steps do not converge); "
                     "reported, not counted as mismatches")
    if test is not None:
        order = test.order
        if test.ok is False:
            notes.append(f"{name}: Taylor test: r(h) falls like h^{order:.2f}, not h²: {reference.value}'s "
                         "derivative is wrong along at least one probe")
        elif test.ok is None:
            notes.append(f"{name}: Taylor test inconclusive (observed order "
                         f"{'unknown: r(h) stays within rounding' if order is None else f'{order:.2f}'})")
    return notes
