"""``check`` over several arguments, in full or probe mode, with localisation.

- ``full``: every entry of each argument's quantity, compared by
  ``checking.run_check`` (one report per argument);
- ``probe``: ``vᵀ J u`` along K seeded directions per argument (``probe.py``),
  compared with tolerances from the dtype and from fd's error estimate;
- ``auto``: full while the comparison costs fewer than ``FULL_BUDGET``
  function evaluations in all, else probe.

After a mismatch (``locate``): each argument has its own verdict already;
the wrong module and the worst entries are found by ``locate.py``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from . import probe
from ..compute.solve import DEFAULT_MAX_MEMORY, library_call, solve
from .full import (default_backends, default_quantity, run_check, skipped, tolerances, validate_backends,
                       verdict)
from ..core.compare import Comparison, Entry, judged, meaningful_rel
from ..core.errors import BackendError, UsageError
from ..core.options import BackendName, BackendOptions, CheckMode, Quantity
from ..problem.problem import Problem
from ..problem.wrt import expand, is_list, names_input, retarget
from ..core.results import CheckReport
from .settings import CheckSettings

FULL_BUDGET = 20_000  # function evaluations a full comparison may cost before auto turns to probes
FD_POINTS = 6  # the fd backend's Richardson points per column


@dataclass(frozen=True)
class ModelReport:
    """One ``CheckReport`` per argument, the mode that ran, and what localisation found.

    ``modules``: ``locate.ModuleFinding`` values for the submodules checked
    on their own (None when module localisation did not run); ``blamed`` ones
    are wrong themselves, not merely containers of a wrong module."""

    function: str
    quantity: Quantity
    reference: BackendName
    dtype: str
    wrt: tuple[str, ...]
    mode: CheckMode
    probes: int | None
    atol: float
    rtol: float
    tolerance_source: str
    results: tuple[CheckReport, ...]
    modules: tuple[Any, ...] | None
    notes: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool | None:
        """False when any argument mismatches; None when nothing was compared; else True."""
        oks = [r.ok for r in self.results]
        if any(ok is False for ok in oks):
            return False
        return None if all(ok is None for ok in oks) else True

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(r.wrt for r in self.results if r.ok is False)

    @property
    def backends(self) -> tuple[Comparison, ...]:
        """Every argument's comparisons (one argument: its backends, as ``CheckReport.backends``)."""
        return tuple(c for r in self.results for c in r.backends)

    @property
    def top(self) -> tuple[Entry, ...]:
        return tuple(e for r in self.results for e in r.top)

    @property
    def blamed(self) -> tuple[Any, ...]:
        """The submodules found wrong on their own (empty when none, or not localised)."""
        return tuple(m for m in self.modules or () if m.blamed)


def full_cost(problem: Problem, quantity: Quantity) -> int:
    """Function evaluations of a full comparison: fd's points per column (every
    entry, or the features of a row when rows are independent), plus one
    reverse pass per output entry for a Jacobian."""
    rows = problem.rows
    columns = rows.features if rows is not None and not rows.reduced and rows.features else math.prod(problem.wrt_shape)
    outputs = math.prod(problem.output_shape) if quantity is Quantity.JACOBIAN else 1
    return FD_POINTS * columns + outputs


def resolve_mode(mode: CheckMode, problems: list[Problem], quantity: Quantity, explicit_quantity: bool) -> CheckMode:
    if mode is CheckMode.PROBE and quantity not in (Quantity.GRAD, Quantity.JACOBIAN):
        raise UsageError(f"--mode probe compares vᵀ J u (gradients and Jacobians); --quantity {quantity.value} "
                         "needs --mode full")
    if mode is not CheckMode.AUTO:
        return mode
    if explicit_quantity and quantity not in (Quantity.GRAD, Quantity.JACOBIAN):
        return CheckMode.FULL
    return CheckMode.PROBE if sum(full_cost(p, quantity) for p in problems) > FULL_BUDGET else CheckMode.FULL


def _refuse_probes_over_memory(problems: list[Problem], probes: int, max_memory: int) -> None:
    """The K sign directions of every argument are held at once (drawn as int8, kept in the
    working dtype): refused before they are drawn when they alone pass --max-memory."""
    from ..core.sizes import format_bytes

    need = probes * sum(math.prod(p.wrt_shape) * (1 + p.dtype.itemsize) for p in problems)
    if need > max_memory:
        raise UsageError(f"--probes: {probes} directions per argument hold {format_bytes(need)}, over --max-memory "
                         f"{format_bytes(max_memory)}; give fewer --probes (default 4)")


def run_checks(
    problems: list[Problem],
    settings: CheckSettings = CheckSettings(),
    *,
    options: BackendOptions = BackendOptions(),
    max_memory: int = DEFAULT_MAX_MEMORY,
    allow_nonfinite: bool = False,
    cotangent: np.ndarray | None = None,
    tangent: np.ndarray | None = None,
) -> ModelReport:
    """Check each problem (the same function, one per ``--wrt`` argument), as
    ``settings`` say (:class:`CheckSettings`); ``cotangent``/``tangent``: vjp's and
    jvp's or hvp's vector (None: ones / a seeded direction per argument)."""
    start = time.perf_counter()
    base = problems[0]
    s = settings
    explicit_quantity = s.quantity is not None
    quantity = s.quantity or default_quantity(base)
    seed, top, probes, taylor = s.seed, s.top, s.probes, s.taylor
    if tangent is not None and len(problems) > 1:  # a tangent is shaped like its argument
        shapes = ", ".join(f"{p.wrt} {list(p.wrt_shape)}" for p in problems)
        raise UsageError(f"--tangent: one direction cannot serve {len(problems)} --wrt entries ({shapes}); "
                         "give one --wrt, or leave --tangent out (each entry gets its own seeded direction)")
    if taylor and s.mode is CheckMode.FULL:
        raise UsageError("--taylor: the Taylor test runs along probes; use --mode probe (or auto) with it")
    mode = CheckMode.PROBE if taylor else resolve_mode(s.mode, problems, quantity, explicit_quantity)
    atol, rtol, source = tolerances(base, s.atol, s.rtol)
    backends, reference = list(s.backends) if s.backends else None, s.reference
    if mode is CheckMode.FULL:
        directions = [{}] * len(problems)
        if quantity in (Quantity.JVP, Quantity.HVP) and tangent is None:
            # each entry its own direction, shaped like it and seeded by --seed (the same for every backend)
            directions = [{"tangent": np.random.default_rng([seed, i]).standard_normal(p.wrt_shape)}
                          for i, p in enumerate(problems)]
        vectors = {"cotangent": cotangent, "tangent": tangent}
        results = [run_check(p, quantity=quantity, backends=backends, reference=reference, atol=atol, rtol=rtol,
                             top=top, layout=s.layout, options=options, max_memory=max_memory,
                             allow_nonfinite=allow_nonfinite, **{**vectors, **direction})
                   for p, direction in zip(problems, directions)]
        results = [_with_source(r, source) for r in results]
        context = None
        reference = results[0].reference
    else:
        # Probe mode compares autograd with fd (and analytic, for built-ins) by default, as gradcheck's fast
        # mode does: forward mode costs a second or more of torch start-up, so it runs when named.
        _refuse_probes_over_memory(problems, probes, max_memory)
        chosen = list(backends or [b for b in default_backends(base) if b is not BackendName.FORWARD])
        # The Taylor test compares the reference with the function itself: --backends may then name it alone.
        reference = validate_backends(chosen, reference, explicit=bool(backends) and not taylor)
        results, context = probe_check(problems, backends=chosen, reference=reference, atol=atol, rtol=rtol,
                                       count=probes, seed=seed, taylor=taylor, top=top, options=options,
                                       source=source)
    notes: list[str] = []
    modules = None
    if s.locate is not False and any(r.ok is False for r in results):
        from . import locate as where

        if context is not None:  # the worst argument's entries (group testing costs O(top log n) evaluations)
            worst = max((r for r in results if r.ok is False),
                        key=lambda r: max([e.excess for e in r.top] or [0.0]))
            results = [where.with_entries(r, context, top) if r is worst else r for r in results]
        modules, more = where.locate_modules(base, seed=seed, atol=atol, rtol=rtol)
        if modules is not None or s.locate:  # a plain function's "no modules" only when --locate was asked for
            notes += more
        notes += by_design(base)
    return ModelReport(function=base.function.name, quantity=quantity, reference=reference, dtype=str(base.dtype),
                       wrt=tuple(p.wrt for p in problems), mode=mode, probes=probes if mode is CheckMode.PROBE else None,
                       atol=atol, rtol=rtol, tolerance_source=source, results=tuple(results), modules=modules,
                       notes=tuple(notes), seconds=time.perf_counter() - start)


def by_design(problem: Problem) -> list[str]:
    """Notes for modules whose torch gradient differs from the derivative on
    purpose, as they run here: ``nn.Embedding(padding_idx=k)`` leaves row k's
    gradient at zero (when the input holds k), and ``spectral_norm`` in training
    mode runs its power iteration without grad. A mismatch there is no bug."""
    module = getattr(problem.function, "module", None)
    if module is None:
        return []
    import torch

    ids = [np.asarray(a) for a in problem.args.values() if np.asarray(a).dtype.kind in "iu"]
    notes = []
    for name, sub in module.named_modules():
        k = getattr(sub, "padding_idx", None)
        if isinstance(sub, torch.nn.Embedding) and k is not None and any((a == k).any() for a in ids):
            notes.append(f"{name} is nn.Embedding(padding_idx={k}): torch's backward leaves row {k} of its weight at "
                         f"zero by design, and the input holds index {k}, so autograd and fd differ there without a "
                         "bug; keep that index out of the input, or set padding_idx=None to check the row")
        if type(sub).__name__ == "_SpectralNorm" and sub.training:  # torch.nn.utils.parametrizations.spectral_norm
            notes.append(f"{name} is spectral_norm in training mode: its power iteration runs without grad, so "
                         "torch's gradient treats the normalising sigma as constant where fd sees it move; call "
                         ".eval() in your file to check the rest")
    return notes


def _with_source(report: CheckReport, source: str) -> CheckReport:
    return dataclasses.replace(report, tolerance_source=source)


# --- probe mode --------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeContext:
    """What localisation reuses: the function in fd's dtype, the directions,
    the reference's ``vᵀ J`` per argument, and the tolerances."""

    fd_function: Any
    probes: probe.Probes
    grads: Mapping[str, np.ndarray] | None
    atol: float
    rtol: float
    fd_step: float | None


def merged(problems: list[Problem]) -> Problem:
    """One problem holding every argument (each ``param:NAME`` included)."""
    args: dict[str, np.ndarray] = {}
    for p in problems:
        args.update(p.args)
    first = problems[0]
    if len(args) == len(first.args):  # (wrtlist.retarget binds every argument once: they share it)
        return first
    return dataclasses.replace(first, bound=first.bound.rebind(args))


def probe_check(problems: list[Problem], *, backends, reference, atol, rtol, count, seed, taylor, top, options,
                source) -> tuple[list[CheckReport], ProbeContext]:
    whole = merged(problems)
    names = [p.wrt for p in problems]
    probes = probe.make_probes({n: whole.args[n].shape for n in names}, whole.output_shape, count, seed, whole.dtype)
    fd_dtype = whole.dtype if options.fd_dtype == "same" else np.dtype(np.float64)
    fn = probe.TorchFunction(whole, names, options.device)
    fd_fn = fn if fd_dtype == whole.dtype else probe.TorchFunction(whole, names, options.device, dtype=fd_dtype)
    runs: dict[BackendName, probe.ProbeValues | Exception] = {}
    for name in dict.fromkeys([reference, *backends]):
        try:
            if name is BackendName.AUTOGRAD:
                runs[name] = probe.autograd_values(fn, probes)
            elif name is BackendName.FORWARD:
                runs[name] = probe.forward_values(fn, probes)
            elif name is BackendName.FD:
                runs[name] = probe.fd_values(fd_fn, probes, options.fd_step, agrees=agrees_with(runs.get(reference),
                                                                                               atol, rtol))
            else:
                runs[name] = analytic_values(problems, probes, options)
        except BackendError as err:
            if name is reference:
                raise
            runs[name] = err
    ref = runs[reference]
    reports = []
    for p in problems:
        a = p.wrt
        scale = probe_scale(ref, a)
        comparisons = []
        for name in backends:
            if name is reference:
                continue
            got = runs[name]
            if isinstance(got, Exception):
                comparisons.append(skipped(name, got))
                continue
            # fd's error bar and kink test, on whichever side fd is (--reference fd: the reference's)
            error, jump = (got.error, got.jump) if got.error is not None else (ref.error, ref.jump)
            comparisons.append(compare_probes(name.value, got.values[a], ref.values[a], atol, rtol, scale,
                                              seconds=got.seconds, top=top,
                                              error=None if error is None else error[a],
                                              jump=None if jump is None else jump[a]))
        test = probe.taylor(fn, probes, a, ref.values[a]) if taylor else None
        ok = verdict(comparisons)
        if test is not None and test.ok is False:
            ok = False
        elif ok is None and test is not None and test.ok:
            ok = True  # the Taylor test compared the reference with the function itself
        notes = explain(a, comparisons, reference, test, fd_dtype)
        top_entries = sorted((e for c in comparisons for e in c.worst), key=lambda e: -e.excess)[:top]
        reports.append(CheckReport(
            function=p.function.name, quantity=default_quantity(p), reference=reference, dtype=str(p.dtype),
            params={k: v for k, v in p.params.items() if not k.startswith("_")}, wrt=a, shape=p.wrt_shape,
            atol=atol, rtol=rtol, tolerance_source=source, ok=ok, backends=tuple(comparisons),
            top=tuple(top_entries), notes=tuple(notes), reference_seconds=ref.seconds, mode=CheckMode.PROBE, taylor=test))
    context = ProbeContext(fd_fn, probes, ref.grads, atol, rtol, options.fd_step)
    return reports, context


def agrees_with(ref, atol: float, rtol: float):
    """fd's early acceptance: its first central difference is within the probe
    tolerance of the reference (see ``compare_probes``), counting its rounding error."""
    if not isinstance(ref, probe.ProbeValues):
        return None
    scales = {a: probe_scale(ref, a) for a in ref.values}

    def agrees(name: str, k: int, value: float, rounding: float) -> bool:
        reference = ref.values[name][k]
        return abs(value - reference) <= atol + rtol * max(abs(reference), scales[name]) + 3 * rounding

    return agrees


def probe_scale(ref: probe.ProbeValues, name: str) -> float:
    """``‖vᵀ J‖₂`` of the reference: the typical size of ``vᵀ J u`` for a random sign vector u."""
    if ref.grads is not None:
        return float(np.linalg.norm(ref.grads[name]))
    return float(np.max(np.abs(ref.values[name])))


def analytic_values(problems: list[Problem], probes: probe.Probes, options: BackendOptions) -> probe.ProbeValues:
    """The closed-form vjp of each argument (built-ins), dotted with the probes."""
    start = time.perf_counter()
    grads = {}
    for p in problems:
        v = np.ones(p.output_shape, dtype=p.dtype) if probes.v is None else probes.v
        got = solve(p, Quantity.VJP, backend=BackendName.ANALYTIC, cotangent=v, options=options)
        grads[p.wrt] = got.value
    return probe.grads_values(grads, probes, time.perf_counter() - start)


def compare_probes(name: str, value: np.ndarray, reference: np.ndarray, atol: float, rtol: float, scale: float, *,
                   seconds: float, top: int, error: np.ndarray | None = None,
                   jump: np.ndarray | None = None) -> Comparison:
    """Probe ``k`` agrees when ``|value - reference| <= atol + rtol max(|reference|, scale)
    (+ 3 × fd's error estimate)``, ``scale = ‖vᵀ J‖₂``: the typical size of
    ``vᵀ J u`` for a random sign vector u. A probe where fd cannot judge
    (``probe.non_smooth``) is reported as non-smooth, never as a mismatch."""
    diff = np.abs(value - reference)
    size = np.maximum(np.abs(reference), scale)
    tol = atol + rtol * size + (0.0 if error is None else 3 * error)
    nonsmooth = (np.zeros(diff.shape, bool) if error is None else
                 probe.non_smooth(error, np.zeros(diff.shape) if jump is None else jump, diff, size))
    with np.errstate(divide="ignore"):  # --atol 0 --rtol 0: any difference is out
        excess = np.where(diff == 0, 0.0, diff / tol)
    out = (excess > 1) & ~nonsmooth
    counted = np.where(nonsmooth, 0.0, excess)
    order = np.argsort(-counted, kind="stable")[: max(0, top)]
    entries = tuple(Entry(name, (int(k),), float(value[k]), float(reference[k]), float(diff[k]),
                          float(diff[k] / abs(reference[k])) if reference[k] else math.inf,
                          None if error is None else float(error[k]), float(counted[k]), kind="probe")
                    for k in order if out[k])
    worst = int(np.argmax(counted))
    rel = diff / np.where(np.abs(reference) > 0, np.abs(reference), np.inf)
    return judged(Comparison(name=name, ok=not out.any(), max_abs=float(diff.max()), max_rel=meaningful_rel(rel, np.abs(reference), atol),
                             worst_index=(worst,), mismatches=int(out.sum()), seconds=seconds,
                             error_estimate=None if error is None else float(error.max()),
                             kink_entries=int((nonsmooth & (excess > 1)).sum()), worst=entries),
                  None if error is None else nonsmooth, "probes")


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


def check(function: str, **kwargs):
    """The library's ``check``: the same keywords as ``gradcli.jacobian`` plus the
    fields of :class:`CheckSettings` (``quantity``, ``backends``, ``reference``, ``atol``,
    ``rtol``, ``top``, ``mode``, ``probes``, ``seed``, ``taylor``, ``locate``);
    ``wrt`` may be a comma list or a glob. Returns a :class:`ModelReport`::

        report = gradcli.check("cross_entropy", input=x, target=t)
        report.ok
        report = gradcli.check("model.py:loss", input=x, target=t, wrt="param:*")
        [r.wrt for r in report.results if not r.ok], report.modules
    """
    kwargs = dict(kwargs)
    settings = CheckSettings.take(kwargs)
    wrt = kwargs.pop("wrt", "input")
    many = is_list(wrt)
    problem, options, run = library_call(function, {**kwargs, "wrt": "input" if many else wrt},
                                         ("cotangent", "tangent", "max_memory", "allow_nonfinite"),
                                         differentiates_input=names_input(wrt) if many else None)
    problems = retarget(problem, expand(problem.function, wrt)) if many else [problem]
    return run_checks(problems, settings, options=options, **run)
