"""``check``: one quantity from several backends, each compared with a reference.

The reference runs first (its failure is the command's failure, exit 3);
another backend that cannot run is reported as skipped with the reason
(``ok`` None). The verdict (SPEC §2): ``ok`` True when every backend that ran
agrees, False on a mismatch, None when no backend but the reference ran to a
verdict (exit 3): each was skipped, or inconclusive (fd flagged most entries
non-smooth: ``ok`` None with the reason, ``compare.judged``); ``--backends``
naming only the reference is a usage error (exit 2).
Entries on a kink (relu at 0, l1 at x = t), and entries fd marks non-smooth, are
reported, not counted; fd's tolerance includes three times its own error
estimate (``compare.compare``) — also where fd is the reference.
"""

from __future__ import annotations

import math

import numpy as np

from ..compute.solve import solve
from ..core.compare import Comparison, compare, default_tolerance, judged, working_tolerance
from ..core.errors import BackendError, UsageError
from ..core.options import BackendName, BackendOptions, Layout, Quantity
from ..problem.problem import Problem
from ..core.results import CheckReport, Result, chunks
from ..core.rowform import diagonal_blocks

ORDER = (BackendName.AUTOGRAD, BackendName.FORWARD, BackendName.ANALYTIC, BackendName.FD)


def default_backends(problem: Problem) -> list[BackendName]:
    return [b for b in ORDER if b is not BackendName.ANALYTIC or problem.function.closed_form]


def default_quantity(problem: Problem) -> Quantity:
    return Quantity.GRAD if problem.output_shape == () else Quantity.JACOBIAN


def run_check(
    problem: Problem,
    *,
    quantity: Quantity | None = None,
    backends: list[BackendName] | None = None,
    reference: BackendName | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    top: int = 5,
    layout: Layout = Layout.AUTO,
    cotangent: np.ndarray | None = None,
    tangent: np.ndarray | None = None,
    options: BackendOptions = BackendOptions(),
    max_memory: int | None = None,
    allow_nonfinite: bool = False,
    precision: float | None = None,
) -> CheckReport:
    """``precision``: the working precision the code was measured to compute in
    (``probe.problem_precision``); where coarser than the dtype's, the default
    tolerance allows its rounding."""
    quantity = quantity or default_quantity(problem)
    backends_given = bool(backends)
    backends = list(backends or default_backends(problem))
    reference = validate_backends(backends, reference, explicit=backends_given)
    atol, rtol, source = tolerances(problem, atol, rtol)
    if quantity in (Quantity.JVP, Quantity.HVP) and tangent is None:
        tangent = np.random.default_rng(0).standard_normal(problem.wrt_shape)
    kw = dict(layout=layout, cotangent=cotangent, tangent=tangent, options=options,
              allow_nonfinite=allow_nonfinite, **({} if max_memory is None else {"max_memory": max_memory}))
    ref = solve(problem, quantity, backend=reference, **kw)
    notes = []
    if precision is not None and precision > float(np.finfo(problem.dtype).eps) and source != "given":
        atol, rtol, source, notes = _working_precision(problem, ref, atol, rtol, source, precision)
    kinks = _kink_mask(problem, ref)
    if ref.nonsmooth is not None and ref.nonsmooth.any():  # --reference fd: where it cannot judge, it does not
        kinks = ref.nonsmooth if kinks is None else ref.nonsmooth | np.broadcast_to(kinks, ref.nonsmooth.shape)
    comparisons: list[Comparison] = []
    for name in backends:
        if name is reference:
            continue
        try:
            got = solve(problem, quantity, backend=name, **kw)
        except BackendError as err:
            comparisons.append(skipped(name, err))
            continue
        # fd's non-smooth entries (its steps did not converge) are treated as kinks: reported, not counted.
        flagged = kinks if got.nonsmooth is None or not got.nonsmooth.any() else \
            got.nonsmooth | (False if kinks is None else np.broadcast_to(kinks, got.nonsmooth.shape))
        # fd's error bar, on whichever side fd is (--reference fd: the bar is the reference's); fd flagging most
        # entries non-smooth is inconclusive (compare.judged)
        comparisons.append(judged(compare(name.value, got.value, ref.value, atol, rtol, seconds=got.seconds, top=top,
                                          error=got.error if got.error is not None else ref.error, kinks=flagged),
                                  got.nonsmooth))
    top_entries = sorted((e for c in comparisons for e in c.worst), key=lambda e: -e.excess)[:top]
    notes = list(ref.notes) + notes + [note.replace(" (--verify-blocks checks it)", " (not verified by check)")
                               for note in ref.structure]
    if quantity in (Quantity.HESSIAN, Quantity.HVP) and reference is BackendName.AUTOGRAD and problem.wrt == "input":
        notes += problem.function.torch_second_order_notes(problem.args, problem.params)
    for c in comparisons:
        if c.name == BackendName.FD.value and c.worst and all(
                e.error_estimate is not None and e.abs_error > 100 * e.error_estimate for e in c.worst):
            notes.append(f"fd's own error estimate is far below its difference from {reference.value} at every listed "
                         f"entry: the finite differences are trustworthy there, so suspect {reference.value}'s result "
                         "(a hand-written backward, say)")
    coarse = sum(c.coarse for c in comparisons)
    if coarse:
        notes.append(f"fd's error bar (3x its estimate) is wider than atol + rtol |reference| at {coarse} "
                     f"entr{'y' if coarse == 1 else 'ies'}: there fd can only catch a difference larger than its bar "
                     "(fd's values are no more precise than that; --fd-step or a smaller --rtol will not help)")
    kinked = sum(c.kink_entries for c in comparisons)
    if kinked:
        notes.append(f"{kinked} entr{'y differs' if kinked == 1 else 'ies differ'} on a kink or a non-smooth point (fd's "
                     "steps do not converge), where torch's convention and finite differences legitimately disagree: "
                     "reported, not counted as mismatches")
    return CheckReport(
        function=problem.function.name, quantity=quantity, reference=reference, dtype=str(problem.dtype),
        params=ref.params, wrt=problem.wrt, shape=ref.shape, atol=atol, rtol=rtol, tolerance_source=source,
        ok=verdict(comparisons), backends=tuple(comparisons), top=tuple(top_entries), notes=tuple(notes),
        reference_seconds=ref.seconds, layout=ref.layout,
    )


def _working_precision(problem: Problem, ref: Result, atol: float, rtol: float, source: str, eps: float):
    """The tolerance widened for code computing to ``eps`` only, less than its dtype's precision
    (``compare.working_tolerance``: rounding relative to the reference's largest entry), with a note."""
    from .probe import precision_note

    size = max((float(np.nanmax(np.abs(part), initial=0.0)) for part in chunks(ref.value)), default=0.0)
    atol, rtol = working_tolerance(atol, rtol, eps, size)
    note = precision_note(eps, problem.dtype, f"the verdict allows its rounding (atol {atol:.1e}, rtol {rtol:.1e})")
    return atol, rtol, f"{source}, widened for the working precision {eps:.1e}", [note]


def default_reference() -> BackendName:
    """autograd, or analytic where torch is not installed."""
    return BackendName.AUTOGRAD if _torch_available() else BackendName.ANALYTIC


def tolerances(problem: Problem, atol: float | None, rtol: float | None) -> tuple[float, float, str]:
    """``(atol, rtol, source)``: the given ones, or the dtype's defaults (``compare.default_tolerance``)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value is not None and not 0 <= value < math.inf:  # (NaN fails both comparisons)
            raise UsageError(f"--{name}: {value} is not a finite number >= 0; give e.g. --{name} 1e-6")
    default_atol, default_rtol = default_tolerance(problem.dtype)
    source = "given" if atol is not None or rtol is not None else f"{problem.dtype} defaults"
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    return atol, rtol, source


def validate_backends(backends: list[BackendName], reference: BackendName | None, *, explicit: bool) -> BackendName:
    """The reference (default autograd, else analytic) after SPEC §2's rules on ``--backends``."""
    reference = reference or default_reference()
    if BackendName.AUTO in backends or reference is BackendName.AUTO:
        raise UsageError("--backends/--reference: name the backends (autograd, forward, analytic, fd), not auto")
    if explicit and all(b is reference for b in backends):
        raise UsageError(f"--backends: names only the reference {reference.value}, so nothing would be compared; "
                         f"add another backend, e.g. --backends {reference.value},"
                         f"{'autograd' if reference is BackendName.FD else 'fd'}")
    return reference


def skipped(name: BackendName, err: Exception) -> Comparison:
    """A backend that could not run: ``ok`` None, with the reason."""
    return Comparison(name.value, None, 0.0, 0.0, (), 0, 0.0, skipped=err.cli_message() if hasattr(err, "cli_message") else str(err))


def verdict(comparisons) -> bool | None:
    """False on any mismatch; None when no backend but the reference ran to a
    verdict (each skipped, or inconclusive: fd on a point it cannot difference);
    else True."""
    ran = [c for c in comparisons if c.ok is not None]
    if not ran:
        return None
    return all(c.ok for c in ran)


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _kink_mask(problem: Problem, ref: Result) -> np.ndarray | None:
    """Entries of the result that depend on an input entry sitting on a kink."""
    mask = problem.bound.kinks() if problem.wrt == "input" else None
    if mask is None or not mask.any():
        return None
    value_shape = ref.shape
    if value_shape == mask.shape:  # grad, vjp, diag, an elementwise jvp
        return mask
    if value_shape == ():  # a reduced jvp
        return np.asarray(mask.any())
    if value_shape == mask.shape + mask.shape:  # a full elementwise Jacobian: the diagonal
        full = np.zeros(value_shape, dtype=bool)
        n = mask.size
        full.reshape(n, n)[np.arange(n), np.arange(n)] = mask.reshape(-1)
        return full
    if ref.layout is Layout.BLOCKS and mask.ndim and value_shape == mask.shape + mask.shape[-1:]:
        return diagonal_blocks(mask)  # elementwise blocks along the last axis
    return np.broadcast_to(mask.any(), value_shape)  # no finer map: every entry may feel the kink
