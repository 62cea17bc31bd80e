"""fd: finite differences of the catalogue's NumPy forward, vectorised.

Rows are independent, so column ``c`` of every row is perturbed at once: the
whole Jacobian takes a few perturbed copies of the input per column, stacked
on leading axes and evaluated in batched calls sized to a memory budget,
never one call per entry. Every entry (row, column) has its own step.

``--fd-step auto`` with ``richardson`` (the default) is adaptive: each entry
starts from a window of steps ``h, 2h, 4h`` with ``h = eps^(1/5)`` (the
optimum for a function that varies on a scale of 1: the step does not grow
with ``|x|``, so logits offset by 1e4 are as easy as logits near 0), and
where the Richardson tableau there is not in its asymptotic range, or its
error is dominated by truncation or rounding above a target, the window moves
one halving down or one doubling up, for the columns that need it, until the
entry converges or no step works. The entry keeps the window with the
smallest error estimate; an entry no window converged for is *non-smooth* (a
kink, a jump, a domain edge within reach). Where the points on one side are
not finite (log or sqrt near 0), one-sided differences on the other side are
used. ``fd_steps`` holds the formulas and the rule; this module the batching.

``central`` (``D(h)``, base ``eps^(1/3)``), ``forward`` (base ``eps^(1/2)``) and
any absolute ``--fd-step`` use one fixed step per entry; their estimate has
the same parts, and only non-finite differences are flagged.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..core.errors import UsageError
from ..core.resolution import relative_direction, resolution
from ..core.parallel import run_chunks
from ..problem.problem import Problem
from ..core.options import BackendName, FdDType
from ..core.rowform import GeneralKernel
from ..core.sizes import format_bytes
from . import fd_steps
from .rowwise import Derivative, RowBackend

_BUDGET_BYTES = 4 * 2**20  # perturbed inputs and outputs per chunk (one chunk per core at a time): near cache size


@dataclass(frozen=True)
class Method:
    multiples: tuple[float, ...]  # points x + m h evaluated per column (f(x) itself is evaluated once)
    base_power: float  # automatic base step = eps ** base_power


METHODS = {
    "central": Method((1, -1, 2, -2), 1 / 3),
    "forward": Method((1, 2), 1 / 2),
    "richardson": Method((1, -1, 2, -2, 4, -4), 1 / 5),
}
RESOLVED = 256  # the estimate's floor, in eps times the Jacobian's largest entry
TARGET_POWER = 2 / 3  # the adaptive search stops once an entry's estimate is below 10 eps^(2/3) of its row's scale


class FdBackend(RowBackend):
    name = BackendName.FD

    def derivative(self, problem: Problem) -> Derivative:
        method = self.options.fd_method.value
        fd_dtype = problem.dtype if self.options.fd_dtype is FdDType.SAME else np.dtype(np.float64)
        notes = ()
        if fd_dtype != problem.dtype:
            notes = (f"fd: {problem.dtype} problem differenced in {fd_dtype} (--fd-dtype same to keep {problem.dtype})",)
        kernel = problem.astype(fd_dtype).kernel(budget=self.options.max_memory)
        if self.options.max_memory is not None:
            held = _held(problem, kernel, fd_dtype, self.options.max_memory)
            if not problem.function.closed_form:
                # User code's evaluations are sized to --max-memory (their activations, measured): what fd
                # holds itself for the whole run comes off that first.
                kernel = problem.astype(fd_dtype).kernel(budget=self.options.max_memory - held)
        if isinstance(kernel, GeneralKernel):
            # No rows: every entry of the argument is its own column of one big row.
            shape, out_shape = kernel.x0.shape, kernel.output_shape
            x0 = kernel.x0.reshape(1, -1)

            def forward(x):
                y = kernel.forward(x.reshape(x.shape[:-2] + shape))
                return y.reshape(y.shape[: y.ndim - len(out_shape)] + (1, -1))
        else:
            x0, forward = kernel.x0, kernel.forward
        eps = float(np.finfo(fd_dtype).eps)
        if _may_round_inside(problem.function):  # a .float() cast, a cancellation as written: measure it
            eps, more = working_eps(forward, x0, eps)
            notes += more
        adaptive = self.options.fd_step is None and method == "richardson"
        step = eps ** METHODS[method].base_power if self.options.fd_step is None else self.options.fd_step
        # Built-ins are pure NumPy: their columns run on every core. User code stays on this thread.
        # The value ends in the problem's dtype: its rounding is part of the error (float32 differenced in float64).
        got = difference_blocks(forward, x0, step, method, eps, self.options.progress,
                                parallel=problem.function.closed_form, adaptive=adaptive,
                                eps_out=float(np.finfo(problem.dtype).eps))
        notes += _notes(got, problem, kernel, adaptive)
        blocks, error, nonsmooth = got.value, got.error, got.nonsmooth
        if isinstance(kernel, GeneralKernel):  # (1, n_out, n_in) -> output_shape + wrt_shape
            blocks, error, nonsmooth = (a.reshape(kernel.output_shape + kernel.x0.shape) for a in (blocks, error, nonsmooth))
        return Derivative(kernel=kernel, blocks=blocks, error=error, evaluations=got.evaluations, notes=notes,
                          nonsmooth=nonsmooth)


def _held(problem: Problem, kernel, fd_dtype, limit: int) -> int:
    """The bytes fd holds through the run besides its evaluations: per entry of
    its blocks, the value and the error estimate in ``fd_dtype``, two flags
    (converged, non-smooth) and the result in the problem's dtype. Exit 2 when
    they alone exceed ``limit`` (``--max-memory``)."""
    if isinstance(kernel, GeneralKernel):
        entries = math.prod(kernel.output_shape) * kernel.x0.size
    elif problem.function.closed_form:  # rows, each an output block per feature
        entries = math.prod(problem.rows.rows + problem.rows.out_block) * kernel.x0.shape[-1]
    else:  # user code's per-sample rows: the output (B, ...) per feature
        entries = math.prod(problem.output_shape) * kernel.x0.shape[-1]
    held = entries * (2 * np.dtype(fd_dtype).itemsize + 2 + problem.dtype.itemsize)
    if held >= limit:
        raise UsageError(f"--max-memory: fd's own arrays for this result (values, error estimates, flags: "
                         f"{entries} entries) need {format_bytes(held)}, over the limit of {format_bytes(limit)}; "
                         "use --rows or a smaller batch, -b autograd, or raise --max-memory")
    return held


def _may_round_inside(function) -> bool:
    """User code, and ``expr:`` (computed as written: ``(1 + x) - 1``), or a chain holding one."""
    from ..catalogue.elementwise import Expr

    stages = getattr(function, "stages", (function,))
    return any(not f.closed_form or isinstance(f, Expr) for f in stages)


def working_eps(forward, x0: np.ndarray, eps: float) -> tuple[float, tuple[str, ...]]:
    """The precision user code computes in (``core.resolution.resolution``), probed
    along one seeded sign direction scaled to each entry, and a note when it
    is coarser than ``eps``: fd then differences as in that precision (its
    steps, targets and error bars), as ``--fd-dtype same`` does for a float32
    problem. ``forward`` takes points stacked on a leading axis."""
    direction = relative_direction(x0)
    with np.errstate(all="ignore"):
        f0 = forward(x0[None])[0]

        def change(s: float):
            values = forward(np.stack([x0 + s * direction, x0 - s * direction]))
            return values[0] - f0, values[1] - f0

        found = resolution(change, eps, float(np.linalg.norm(np.nan_to_num(f0))))
    if found <= eps:
        return eps, ()
    return found, (f"fd: your code resolves relative changes of its input only down to about {found:.1e} (it "
                   f"rounds inside, e.g. a float32 or bfloat16 cast; {np.finfo(x0.dtype).dtype} resolves {eps:.1e}): "
                   "differenced with steps and error bars for that precision",)


@dataclass
class Differences:
    """Blocks ``(*rows, *out_block, C)`` with a per-entry error estimate and
    non-smooth mask (same shape), the smallest and largest step used, and the
    number of points evaluated."""

    value: np.ndarray
    error: np.ndarray
    nonsmooth: np.ndarray
    steps: tuple[float, float]
    evaluations: int
    flagged: int = 0  # entries of ``nonsmooth``
    scale: float = 0.0  # the largest |value|


def difference_blocks(forward, x0: np.ndarray, step: float, method: str, eps: float, progress=None,
                      parallel: bool = False, adaptive: bool = False, eps_out: float = 0.0) -> Differences:
    """Blocks of a row-form ``forward`` at ``x0`` ``(*rows, C)``, starting every
    entry at the absolute step ``step``; ``adaptive``: the Richardson window
    moves per entry (see the module docstring). ``eps_out``: the value is
    rounded to a dtype with this eps afterwards; the estimate includes it."""
    rows, n_cols = x0.shape[:-1], x0.shape[-1]
    with np.errstate(all="ignore"):
        f0 = forward(x0[None])[0]  # (*rows, *out_block)
    out_block = f0.shape[len(rows):]
    tail = (1,) * len(out_block)  # steps (k, *rows) broadcast over the output axes
    out_axes = tuple(range(1 + len(rows), 1 + f0.ndim))
    multiples = np.asarray(METHODS[method].multiples, dtype=x0.dtype).reshape((-1,) + (1,) * x0.ndim)
    x0_t = np.ascontiguousarray(np.moveaxis(x0, -1, 0))  # (C, *rows)
    per_col = 2 * len(multiples) * (x0.size + f0.size) * x0.itemsize
    chunk = max(1, min(n_cols, _BUDGET_BYTES // max(per_col, 1)))
    buffers = threading.local()  # one stack of points per thread, reused: no fresh pages per chunk
    counted = [1]  # evaluations (f(x0) first)
    # sum_j |df/dx_j| |x_j| per (row, output); each row's largest |entry| (over the chunks, under the lock).
    lock, cond, scale = threading.Lock(), np.zeros(f0.shape), np.zeros(rows)
    # Per column: the smallest and largest step used.
    col_steps = np.zeros((2, n_cols))

    def evaluate(cols: np.ndarray, disp: np.ndarray):
        """``f`` at ``x0`` with column ``cols[j]`` of every row moved by
        ``disp[:, j]`` ``(m, k, *rows)``: values ``(m, k, *rows, *out_block)``
        and the steps as the dtype took them."""
        m, k = disp.shape[:2]
        moved = x0_t[cols] + disp
        shape = (m, k) + x0.shape
        points = getattr(buffers, "points", None)
        if points is None or points.shape != shape:
            points = buffers.points = np.empty(shape, dtype=x0.dtype)
        points[...] = x0
        flat = points.reshape(m, k, -1, n_cols)  # a view: rows flattened to one axis
        flat[:, np.arange(k), :, cols] = np.moveaxis(moved.reshape(m, k, -1), 0, 1)
        counted.append(m * k)
        with np.errstate(all="ignore"):  # points outside the domain give nan or inf, read as such (no warning)
            values = forward(points)
        return values, (moved - x0_t[cols]).reshape(disp.shape + tail)

    def window(values, taken, cond=0.0) -> fd_steps.Candidate:
        if method == "richardson":
            return fd_steps.richardson(values[0::2], values[1::2], taken[0::2], -taken[1::2], f0, eps, cond)
        return fd_steps.simple(values, np.abs(taken), f0, eps, method)

    # Column-major buffers: each chunk of columns lands in one contiguous slab. Per entry: the value, the
    # estimate (first without the cond term, known once every column is done) and whether it converged.
    value_t = np.empty((n_cols,) + f0.shape, dtype=x0.dtype)
    error_t = np.empty_like(value_t)
    ok_t = np.empty(value_t.shape, dtype=bool)
    # The first step: ``step``, or where |x| is so large that x + step rounds to x or near it (|x| >~ 2e11 for
    # float64's richardson), the smallest step the search accepts, 16 ulps: the dtype resolves it at x, and the
    # search grows it from there. Taken as the dtype takes it, (x + h) - x: exact, and so (nearly always) are
    # its multiples.
    h0 = np.maximum(step, _smallest_step(x0_t, eps))
    with np.errstate(over="ignore", invalid="ignore"):
        h0 = (x0_t + h0) - x0_t
    h0[~np.isfinite(h0) | (h0 <= 0)] = step  # (x itself not finite, or at the dtype's largest)
    q0 = np.empty_like(h0)  # rounding per unit of one evaluation's error, for the cond term (after the first pass)

    def first(start: int, stop: int) -> None:
        cols = slice(start, stop)
        h = h0[cols].reshape(h0[cols].shape + tail)
        values, taken = evaluate(np.arange(start, stop), multiples * h0[cols])
        if method == "richardson":
            ok_t[cols] = fd_steps.screen(values, h, f0, eps, value_t[cols], error_t[cols])
            q0[cols] = (2 * fd_steps.ULPS * eps) / h0[cols]
        else:
            cand = window(values, taken)
            value_t[cols], error_t[cols], ok_t[cols] = cand.V, cand.estimate(eps), cand.ok
            q0[cols] = fd_steps.ULPS * eps * cand.q.max(axis=out_axes)
        magnitude = np.abs(value_t[cols])
        largest = np.fmax(magnitude, 0.0).max(axis=(0,) + out_axes, initial=0.0)  # nan ignored
        with lock:
            np.maximum(scale, largest, out=scale)
        if eps_out:  # the value is rounded to the result's dtype afterwards
            magnitude *= eps_out
            error_t[cols] += magnitude
        col_steps[:, cols] = _per_column(h, np.min), _per_column(h, np.max)
        if progress is not None:
            progress(stop, n_cols)

    run_chunks(n_cols, first, chunk=chunk, parallel=parallel)
    # Rounding grows with sum_j |df/dx_j| |x_j| (module fd_steps): summed in column order, so that the
    # result does not depend on which thread finished first.
    for start in range(0, n_cols, chunk):
        magnitude = np.abs(value_t[start:start + chunk])
        magnitude[~np.isfinite(magnitude)] = 0.0
        cond += np.einsum("c...,c...->...", magnitude, np.abs(x0_t[start:start + chunk]).reshape(magnitude.shape[:1 + len(rows)] + tail))
    # An output is computed from intermediates as large as its row's largest output (log_softmax: x - max
    # - log(sum)), so its rounding is at least eps times that; plus sum_j |df/dx_j| |x_j| (module fd_steps).
    f0_axes = tuple(range(len(rows), f0.ndim))
    intermediate = np.abs(np.nan_to_num(f0)).max(axis=f0_axes, keepdims=True, initial=0.0)
    cond += intermediate
    scale = scale.reshape(rows + tail)
    target = 10 * eps ** TARGET_POWER
    goal = target * scale
    # Nothing below a few hundred eps times the largest entry is resolved: a function rounded inside (log(1 + e)
    # of a saturated cross_entropy row) can be flat at every point while its derivative is not 0. Nor below
    # the result dtype's smallest number.
    floor = RESOLVED * eps * float(scale.max(initial=0.0)) + (
        np.finfo(np.float32 if eps_out > 1e-10 else np.float64).smallest_subnormal if eps_out else 0.0)
    todo = np.zeros(n_cols, dtype=bool)
    floored = _smallest_step(x0_t, eps) > step  # entries whose steps start at the dtype's floor, not at ``step``

    def finish(start: int, stop: int) -> None:
        cols = slice(start, stop)
        error = error_t[cols]
        error += q0[cols].reshape(q0[cols].shape + tail) * cond
        error += floor
        done = error <= goal
        done &= ok_t[cols]
        todo[cols] = ~done.reshape(stop - start, -1).all(axis=1)
        if adaptive:  # a window at the dtype's smallest step is checked for what it cannot resolve (_search)
            todo[cols] |= _per_column(floored[cols], np.any)

    run_chunks(n_cols, finish, chunk=chunk, parallel=parallel)
    if adaptive and todo.any():
        columns = np.flatnonzero(todo)
        bounds = (_smallest_step(x0_t, eps), step * np.maximum(1.0, np.abs(x0_t)))  # the old rule's step: scaled by |x|

        def search(start: int, stop: int) -> None:
            cols = columns[start:stop]
            best, error, h = _search(evaluate, lambda v, w, c=cond: window(v, w, c), cols, h0[cols], multiples, eps,
                                     cond, scale, target, bounds[0][cols], bounds[1][cols], tail, floored[cols],
                                     intermediate)
            value_t[cols], error_t[cols], ok_t[cols] = best.V, error + eps_out * np.abs(best.V) + floor, best.ok
            col_steps[:, cols] = _per_column(h, np.min), _per_column(h, np.max)

        run_chunks(len(columns), search, chunk=chunk, parallel=parallel)
    nonsmooth_t = ~ok_t if adaptive else ~np.isfinite(value_t)
    error_t[~np.isfinite(value_t)] = np.inf  # no value (the function overflows at x: x**2 at 1e200), no bound
    return Differences(value=np.moveaxis(value_t, 0, -1), error=np.moveaxis(error_t, 0, -1),
                       nonsmooth=np.moveaxis(nonsmooth_t, 0, -1), steps=(float(col_steps[0].min()), float(col_steps[1].max())),
                       evaluations=int(sum(counted)), flagged=int(np.count_nonzero(nonsmooth_t)),
                       scale=float(scale.max(initial=0.0)))


def _smallest_step(x: np.ndarray, eps: float) -> np.ndarray:
    """The smallest step fd takes at ``x``: 16 ulps of ``|x|`` (``x + h`` resolves
    ``h`` to 1/16), and never below ``tiny / eps`` (at 0: a step whose own
    rounding is still relative)."""
    return np.maximum(16 * eps * np.abs(x), np.finfo(x.dtype).tiny / eps)


def _per_column(a: np.ndarray, reduce) -> np.ndarray:
    """``reduce`` over every axis but the first (the column) of ``a``."""
    return reduce(a.reshape(len(a), -1), axis=1)


def _search(evaluate, window, cols, h, multiples, eps, cond, scale, target, h_min, h_max, tail, floored,
            intermediate):
    """Move each entry's window of steps ``h, 2h, 4h`` (``h`` ``(k, *rows)``) one
    halving down or one doubling up, as ``fd_steps.assess`` asks, until every
    entry is done; keep per entry the window with the smallest estimate among
    those that converged (or among all, if none did). Returns the best
    ``Candidate``, its estimate and the steps it used.

    ``floored`` ``(k, *rows)``: entries whose steps cannot shrink below ``h``
    (x so large that 16 ulps exceed the usual first step). There the rounding
    model's ``cond`` term, ``sum_j |df/dx_j| |x_j|`` from fd's own values, is
    as large as the change over one step (``eps |x| ~ h / 16``), so any window
    would pass its tests at the "rounding level", and no smaller window can
    confirm it: the tableau must also pass with the rounding of the values and
    intermediates alone (``intermediate``, the row's largest output). Where it
    does not, the function varies below the smallest step the dtype allows
    (sin at 1e15, sampled 4 apart, is aliased, not noisy), and the entry is
    flagged rather than trusted. (No test on float64's grid can do more: where
    its spacing exceeds the function's period, sin(x + k h) is a smooth
    function of k whose slope is not sin's, and every step is a multiple of
    the spacing. docs/fd.md says so.)"""
    out_axes = tuple(range(h.ndim, h.ndim + len(tail)))
    floored = floored.reshape(floored.shape + tail)
    check_floor = bool(floored.any())

    def strict(values, taken):  # the window with the rounding of values and intermediates alone
        return window(values, taken, intermediate)

    values, taken = evaluate(cols, multiples * h)
    fp, fm, wp, wm = values[0::2], values[1::2], taken[0::2], -taken[1::2]
    cand = window(values, taken)
    if check_floor:
        cand.ok &= ~(floored & ~strict(values, taken).ok)
    flat_first = (cand.V == 0) & (cand.T == 0)  # no value changed: flat at this step already
    samples = [0.0, np.where(cand.ok, cand.sampled, 0.0)]  # the noise samples of the last two converged windows
    best_e, wanted = fd_steps.assess(cand, eps, cond, scale, target)
    best = cand
    best_h = np.broadcast_to(h.reshape(h.shape + tail), cand.V.shape)
    last = np.zeros(h.shape, dtype=np.int8)
    for _ in range(fd_steps.MAX_MOVES):
        previous, previous_ok = cand.V, cand.ok  # successive windows' values must agree where both converged
        move = np.where((wanted < 0).any(axis=out_axes), -1, np.where((wanted > 0).any(axis=out_axes), 1, 0))
        move[move == -last] = 0  # turned back: the balance of truncation and rounding lies in between
        move[(move < 0) & (h / 2 < h_min)] = 0
        # Nor below the step where rounding alone would exceed 1000 times the target: a kink at x never
        # converges, and at such steps its differences drown in the rounding of the row's values.
        rounding = ((fd_steps.ULPS * eps) * cand.q * (cand.F + cond)).max(axis=out_axes)
        size = np.maximum(scale.reshape(scale.shape[:h.ndim - 1]), np.fmax(np.abs(cand.V), 0.0).max(axis=out_axes))
        move[(move < 0) & (2 * rounding > 1000 * target * size)] = 0
        move[(move > 0) & (2 * h > h_max)] = 0
        if not move.any():
            break
        last = np.where(move != 0, move, last).astype(np.int8)
        active = np.flatnonzero(move.reshape(len(cols), -1).any(axis=1))  # columns with an entry still moving
        new_h = np.where(move < 0, h / 2, 8 * h)[active]  # one level below the window, or above it
        got, got_w = evaluate(cols[active], np.stack([new_h, -new_h]))
        new = [np.zeros_like(fp[0]), np.zeros_like(fm[0]), np.ones_like(wp[0]), np.ones_like(wm[0])]
        new[0][active], new[1][active], new[2][active], new[3][active] = got[0], got[1], got_w[0], -got_w[1]
        down, up = (move < 0).reshape(h.shape + tail), (move > 0).reshape(h.shape + tail)
        fp, fm, wp, wm = (_shift(old, n, down, up) for old, n in zip((fp, fm, wp, wm), new))
        h = np.where(move < 0, h / 2, np.where(move > 0, 2 * h, h))
        values, taken = (np.stack([fp[0], fm[0], fp[1], fm[1], fp[2], fm[2]]),
                         np.stack([wp[0], -wm[0], wp[1], -wm[1], wp[2], -wm[2]]))
        cand = window(values, taken)
        # The difference between successive windows' values joins the truncation: where rounding the
        # evaluation cannot reveal (log(1 + x^2) at tiny x) makes the tableau noisy, the windows disagree.
        moved = down | up
        cand.T = np.maximum(cand.T, np.where(moved & previous_ok, np.abs(cand.V - previous), 0.0) / fd_steps.SAFETY)
        # The noise does not shrink with the step: the last windows' samples hold here too (one sample
        # of rounded values can be 0 by chance).
        raw = cand.sampled
        cand.sampled = np.maximum(raw, np.maximum(*samples))
        # A step so small that no value changes, where a larger one changed them, resolves nothing: the
        # function may round inside (log(1 + x^2) at tiny x). Values that are all exactly 0 are a flat
        # region (relu below 0) reached once the steps no longer cross its edge.
        quantized = (cand.V == 0) & (cand.T == 0) & ~flat_first & (cand.F != 0)
        cand.ok &= ~quantized
        if check_floor:
            cand.ok &= ~(floored & ~strict(values, taken).ok)
        e, wanted = fd_steps.assess(cand, eps, cond, scale, target)
        e[quantized] = np.inf
        samples = [samples[1], np.where(cand.ok, raw, 0.0)]
        better = moved & ((cand.ok & ~best.ok) | ((cand.ok == best.ok) & (e < best_e)))
        best, best_e = cand.where(better, best), np.where(better, e, best_e)
        best_h = np.where(better, h.reshape(h.shape + tail), best_h)
    return best, best_e, best_h


def _shift(old: np.ndarray, new: np.ndarray, down: np.ndarray, up: np.ndarray) -> np.ndarray:
    """A window of three levels (smallest step first) after a move: down drops
    the largest level and puts ``new`` first; up drops the smallest, ``new`` last."""
    lowered = np.concatenate([new[None], old[:2]])
    raised = np.concatenate([old[1:], new[None]])
    return np.where(down, lowered, np.where(up, raised, old))


def _notes(got: Differences, problem: Problem, kernel, adaptive: bool) -> tuple[str, ...]:
    """The steps used, the non-smooth entries (named by the input entry
    perturbed), and a warning where the estimate is large."""
    smallest, largest = got.steps
    how = "adaptive per entry" if adaptive else "fixed"
    span = f"{smallest:.2g}" if f"{smallest:.2g}" == f"{largest:.2g}" else f"{smallest:.2g} to {largest:.2g}"
    notes = [f"fd: step{'s' if ' ' in span else ''} {span} ({how})"]
    if got.flagged:
        n_rows = 1 if isinstance(kernel, GeneralKernel) else kernel.x0.ndim - 1
        flagged = got.nonsmooth
        per_input = flagged.any(axis=tuple(range(n_rows, flagged.ndim - 1)))  # (*rows, C): the entry perturbed
        where = _input_indices(per_input, problem, kernel)
        shown = ", ".join(str(list(i)) for i in where[:5]) + (", ..." if len(where) > 5 else "")
        notes.append(f"fd: {got.flagged} entr{'y' if got.flagged == 1 else 'ies'} non-smooth: the differences do not "
                     f"converge as the step shrinks (a kink, a jump or a domain edge within reach), perturbing "
                     f"--{problem.wrt} at {shown}; reported, not trusted (check does not count them as mismatches)")
    worst = float(np.max(got.error, where=~got.nonsmooth, initial=0.0)) if got.flagged else float(np.max(got.error))
    if worst > 1e-6 * max(1.0, got.scale):
        notes.append(f"fd: the error estimate reaches {worst:.1e} (steps {span})"
                     + ("" if adaptive else "; try --fd-step auto with --fd-method richardson"))
    return tuple(notes)


def _input_indices(per_input: np.ndarray, problem: Problem, kernel) -> list[tuple[int, ...]]:
    """Indices into the differentiated argument of the flagged input entries."""
    if isinstance(kernel, GeneralKernel) or problem.rows is None:
        mask = per_input.reshape(kernel.x0.shape)
    else:
        mask = problem.rows.from_rows(per_input)
    return [tuple(int(v) for v in i) for i in np.argwhere(mask)[:6]]
