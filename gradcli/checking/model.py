"""``check`` over several arguments, in full or probe mode, with localisation.

- ``full``: every entry of each argument's quantity, compared by
  ``checking.run_check`` (one report per argument);
- ``probe``: ``vₖᵀ J uₖ`` along K seeded joint directions over every argument
  at once (``joint.py``, ``probe.py``), compared with tolerances from the dtype
  (or the working precision fd measured) and from fd's error estimate;
- ``auto``: full while the comparison costs fewer than ``FULL_BUDGET``
  function evaluations in all, else probe.

After a mismatch (``locate``): in full mode each argument has its own verdict
already; in probe mode ``locate.tensors`` gives each its own by group testing
over the arguments. The wrong module and the worst entries are found by
``locate.py``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compute.solve import DEFAULT_MAX_MEMORY, library_call
from .full import default_backends, default_quantity, run_check, tolerances, validate_backends
from ..core.compare import Comparison
from ..core.errors import BackendError, UsageError
from ..core.options import BackendName, BackendOptions, CheckMode, Quantity
from ..problem.problem import Problem
from ..problem.wrt import expand, is_list, names_input, retarget
from ..core.results import CheckReport
from . import probe
from .joint import Judgement, Prober, Tolerance
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
    joint: Any = None  # probe mode over several arguments: the joint probes' ``joint.Judgement``

    @property
    def ok(self) -> bool | None:
        """False when any argument mismatches (or the joint probes do, even where localisation
        pins no argument); None when nothing was compared; else True."""
        oks = [r.ok for r in self.results] + ([self.joint.ok] if self.joint is not None else [])
        if any(ok is False for ok in oks):
            return False
        return None if all(ok is None for ok in oks) else True

    @property
    def failing(self) -> tuple[str, ...]:
        return tuple(r.wrt for r in self.results if r.ok is False)

    @property
    def backends(self) -> tuple[Comparison, ...]:
        """The joint probes' comparisons, then every argument's own (one argument: its
        backends, as ``CheckReport.backends``)."""
        joint = self.joint.comparisons if self.joint is not None else ()
        return tuple(joint) + tuple(c for r in self.results for c in r.backends)

    @property
    def taylor(self):
        """The Taylor test along the probes over every argument (None when not asked for)."""
        return self.joint.taylor if self.joint is not None else self.results[0].taylor

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
    """The K sign directions of every argument (drawn as int8, kept in the working dtype)
    and the K cotangents are held at once: refused before they are drawn when they alone
    pass --max-memory."""
    from ..core.sizes import format_bytes

    itemsize = problems[0].dtype.itemsize
    need = probes * (sum(math.prod(p.wrt_shape) * (1 + itemsize) for p in problems)
                     + math.prod(problems[0].output_shape) * itemsize)
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
    joint = prober = None
    notes: list[str] = []
    if mode is CheckMode.FULL:
        directions = [{}] * len(problems)
        if quantity in (Quantity.JVP, Quantity.HVP) and tangent is None:
            # each entry its own direction, shaped like it and seeded by --seed (the same for every backend)
            directions = [{"tangent": np.random.default_rng([seed, i]).standard_normal(p.wrt_shape)}
                          for i, p in enumerate(problems)]
        vectors = {"cotangent": cotangent, "tangent": tangent}
        # user code may round inside (a float32 loss in a float64 model): its precision, once for every argument
        precision = None if base.function.closed_form or s.atol is not None or s.rtol is not None else \
            _precision(problems, options)
        results = [run_check(p, quantity=quantity, backends=backends, reference=reference, atol=s.atol, rtol=s.rtol,
                             top=top, layout=s.layout, options=options, max_memory=max_memory,
                             allow_nonfinite=allow_nonfinite, precision=precision, **{**vectors, **direction})
                   for p, direction in zip(problems, directions)]
        reference = results[0].reference
    else:
        # Probe mode compares autograd with fd (and analytic, for built-ins) by default, as gradcheck's fast
        # mode does: forward mode costs a second or more of torch start-up, so it runs when named.
        _refuse_probes_over_memory(problems, probes, max_memory)
        chosen = list(backends or [b for b in default_backends(base) if b is not BackendName.FORWARD])
        # The Taylor test compares the reference with the function itself: --backends may then name it alone.
        reference = validate_backends(chosen, reference, explicit=bool(backends) and not taylor)
        given = s.atol is not None or s.rtol is not None
        tolerance = Tolerance(atol, rtol, source, given, float(np.finfo(base.dtype).eps))
        prober = Prober(problems, merged(problems), backends=chosen, reference=reference, tolerance=tolerance,
                        count=probes, seed=seed, taylor=taylor, top=top, options=options)
        results, joint = probe_check(problems, prober)
        atol, rtol, source = prober.tolerance.atol, prober.tolerance.rtol, prober.tolerance.source
        notes += precision_notes(prober, base)
    modules = None
    if s.locate is not False and (any(r.ok is False for r in results) or joint is not None and joint.ok is False):
        from . import locate as where

        failing = [r for r in results if r.ok is False]
        if prober is not None and failing:  # the worst argument's entries (group testing: O(top log n) evaluations)
            worst = max(failing, key=lambda r: max([e.excess for e in r.top] or [0.0]))
            results = [where.with_entries(r, prober, top) if r is worst else r for r in results]
        modules, more = where.locate_modules(base, seed=seed, atol=atol, rtol=rtol, failing=[r.wrt for r in failing],
                                             eps=prober.eps if prober is not None else None)
        if modules is not None or s.locate:  # a plain function's "no modules" only when --locate was asked for
            notes += more
        notes += by_design(base)
    return ModelReport(function=base.function.name, quantity=quantity, reference=reference, dtype=str(base.dtype),
                       wrt=tuple(p.wrt for p in problems), mode=mode, probes=probes if mode is CheckMode.PROBE else None,
                       atol=atol, rtol=rtol, tolerance_source=source, results=tuple(results), modules=modules,
                       notes=tuple(notes), seconds=time.perf_counter() - start, joint=joint)


def _precision(problems: list[Problem], options: BackendOptions) -> float | None:
    """The working precision of user code for full mode (None where it cannot be measured: code
    that fails at the moved points shows its failure in the comparison itself)."""
    try:
        return probe.problem_precision(merged(problems), [p.wrt for p in problems], options.device)
    except (BackendError, RuntimeError, ValueError):
        return None


def precision_notes(prober: Prober, problem: Problem) -> list[str]:
    """A note when fd measured that the code computes to less than its dtype's precision."""
    eps = prober.eps
    dtype_eps = float(np.finfo(prober.fd_dtype).eps)
    if eps is None or eps <= dtype_eps:
        return []
    tol = prober.tolerance
    return [probe.precision_note(eps, prober.fd_dtype, "fd differenced with steps and error bars for that precision"
                                   + (f", and the verdict allows its rounding (rtol {tol.rtol:g})"
                                      if tol.eps == eps else ""))]


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


# --- probe mode --------------------------------------------------------------------


def merged(problems: list[Problem]) -> Problem:
    """One problem holding every argument (each ``param:NAME`` included)."""
    args: dict[str, np.ndarray] = {}
    for p in problems:
        args.update(p.args)
    first = problems[0]
    if len(args) == len(first.args):  # (wrtlist.retarget binds every argument once: they share it)
        return first
    return dataclasses.replace(first, bound=first.bound.rebind(args))


def probe_check(problems: list[Problem], prober: Prober) -> tuple[list[CheckReport], Judgement | None]:
    """One report per argument, and the joint probes' judgement (None for one argument,
    whose report is the judgement). Over several arguments, each is ok when the
    joint probes pass; after a joint mismatch, each gets its own verdict from
    ``locate.tensors`` (group testing over the arguments, the same probes restricted)."""
    joint = prober.judge()
    if len(problems) == 1:
        return [argument_report(problems[0], prober, joint)], None
    if joint.ok is not False:
        return [argument_report(p, prober, joint) for p in problems], joint
    from . import locate as where

    verdicts, notes = where.tensors(prober, joint)
    joint = dataclasses.replace(joint, notes=joint.notes + tuple(notes))
    return [argument_report(p, prober, verdicts[p.wrt]) for p in problems], joint


def argument_report(p: Problem, prober: Prober, judgement: Judgement) -> CheckReport:
    """An argument's report from its own ``judgement``, or from one over a group of
    arguments it belongs to (``jointly``: its verdict, no comparison of its own)."""
    tol = prober.tolerance
    own = judgement.names == (p.wrt,)
    top = sorted((e for c in judgement.comparisons for e in c.worst), key=lambda e: -e.excess)[:prober.top]
    return CheckReport(
        function=p.function.name, quantity=default_quantity(p), reference=prober.reference, dtype=str(p.dtype),
        params={k: v for k, v in p.params.items() if not k.startswith("_")}, wrt=p.wrt, shape=p.wrt_shape,
        atol=tol.atol, rtol=tol.rtol, tolerance_source=tol.source, ok=judgement.ok,
        backends=judgement.comparisons if own else (), top=tuple(top) if own else (),
        notes=judgement.notes if own else (), reference_seconds=judgement.reference_seconds if own else 0.0,
        mode=CheckMode.PROBE, taylor=judgement.taylor if own else None, jointly=not own)


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
