"""fd for second derivatives: second differences of the function itself
(its NumPy forward, or user code's under no_grad), never of a gradient, so
it is independent of every formula it checks.

For two displacements ``a`` and ``b`` (``a = h_i e_i``, ``b = h_j e_j`` for
the entry ``(i, j)`` of a Hessian block; ``b = k t`` for an hvp) and a level
``m``, the mixed difference

    D(m) = [f(x + m a + m b) - f(x + m a - m b) - f(x - m a + m b) + f(x - m a - m b)] / (4 m^2 |a| |b|)

is ``d2 f / da db + O(h^2)`` (with ``a = b`` it is the central second
difference at step 2h). Rows are independent, so one displacement moves the
same feature of every row at once. ``richardson`` (default) extrapolates
``R(m) = (4 D(m) - D(2m)) / 3``, error O(h^4), base step ``eps^(1/6)``;
``central`` keeps ``D(m)``, base step ``eps^(1/4)``; both scaled per entry by
``max(1, |x|)`` and rounded to a whole number of the dtype's spacings at x
(so that every level's point is exact). The step is adaptive: D is evaluated
along a geometric sequence of levels ``m = 2^j``, from ``2^-DOWN / max(1, max
|x|)`` (below the absolute base step: logits offset by 1e4 vary on the scale
of 1, not of 1e4, and sin(1000 x) on 1e-3) up to 8; per entry the level with
the smallest estimate is kept among those in the asymptotic range, in the
run of them that starts at the smallest step (``_truncation``). The error
estimate is the truncation (``2 |R(m) - R(2m)| / 15``, or ``2 |D(m) - D(2m)|
/ 3``, where asymptotic; the whole difference elsewhere) plus the rounding
``eps (|f| + F_row) / (m^2 |a| |b|)`` (``F_row`` the row's largest output: the
intermediates' size) and the result dtype's ``eps_out |value|``, with the
floors first-order fd has: the noise the smaller levels sample
(``_sampled``: a saturated row's values are small differences of large
intermediates), the rounding of the result's largest value at the largest
step, and ``RESOLVED eps`` times its largest entry. Entries no level
converges for are non-smooth; an entry with no value (every level left the
domain) has an infinite estimate, never a nan one.
"""

from __future__ import annotations

import numpy as np

from ..core.options import BackendName, BackendOptions, FdDType, FdMethod, Layout
from ..problem.problem import Problem
from ..core.rowform import GeneralKernel
from ..core.rowform.kernels import as_one_row
from . import fd
from .base import Computed
from .second import row_output, shape_blocks

_BUDGET_BYTES = 8 * 2**20  # perturbed points and values per chunk of pairs
DOWN = 6  # levels below the absolute base step (64 times smaller)
SAFETY = 2.0  # an asymptotic tableau's own difference, doubled (as first-order fd's)
SIGNS = ((1, 1), (1, -1), (-1, 1), (-1, -1))


class FdSecond:
    name = BackendName.FD

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    def _setup(self, problem: Problem):
        """``(kernel, x0, forward, h, eps, notes)`` in row form; a general kernel is one row."""
        fd_dtype = problem.dtype if self.options.fd_dtype is FdDType.SAME else np.dtype(np.float64)
        notes = ()
        if fd_dtype != problem.dtype:
            notes += (f"fd: {problem.dtype} problem differenced in {fd_dtype} (--fd-dtype same to keep {problem.dtype})",)
        if self.options.fd_method is FdMethod.FORWARD:
            notes += ("fd: second derivatives use central differences (--fd-method forward applies to first derivatives)",)
        kernel = problem.astype(fd_dtype).kernel(budget=self.options.max_memory)
        x0, forward = as_one_row(kernel) if isinstance(kernel, GeneralKernel) else (kernel.x0, kernel.forward)
        eps = float(np.finfo(fd_dtype).eps)
        richardson = self.options.fd_method is FdMethod.RICHARDSON
        if self.options.fd_step is None:
            h = eps ** (1 / 6 if richardson else 1 / 4) * np.maximum(1.0, np.abs(x0))
        else:
            h = np.full(x0.shape, self.options.fd_step, dtype=x0.dtype)
        # Levels 2^j from DOWN levels below the absolute scale (j = -log2 max|x|: a function that varies
        # faster than on the scale of 1, sin(1000 x) or 1/x at 1e-3, needs them) to 8 times the relative one.
        largest = float(np.max(np.abs(x0), where=np.isfinite(x0), initial=1.0))  # (inf and nan entries: --allow-nonfinite)
        low = 0 if self.options.fd_step is not None else int(np.ceil(np.log2(largest))) + DOWN
        levels = tuple(2.0 ** j for j in range(-low, 4))
        # Steps whose every level lands exactly on the dtype's grid around x (and x + 8h): a whole multiple of
        # 2^low spacings. A rounded point moves by up to half a spacing, which the second difference divides
        # by m^2 h^2 (at x = 1e4 that was most of the error).
        grid = np.spacing(np.abs(x0) + 16 * np.abs(h)) * 2.0 ** (low + 1)
        h = np.maximum(grid, np.round(h / grid) * grid) if self.options.fd_step is None else (x0 + h) - x0
        return kernel, x0, forward, h, eps, richardson, levels, notes

    def hessian(self, problem: Problem, layout: Layout) -> Computed:
        kernel, x0, forward, h, eps, richardson, levels, notes = self._setup(problem)
        c = x0.shape[-1]
        pairs = [(i, j) for i in range(c) for j in range(i, c)]
        values, errors, rough, evaluations = _pair_differences(forward, x0, h, pairs, eps, richardson, levels,
                                                               self.options.progress)
        out_block = values.shape[1 + len(x0.shape[:-1]):]
        blocks = np.empty(x0.shape[:-1] + out_block + (c, c), dtype=x0.dtype)
        error = np.empty_like(blocks)
        flags = np.empty_like(blocks)  # 1.0 where no level converged (as numbers: shape_blocks scatters them)
        for p, (i, j) in enumerate(pairs):
            blocks[..., i, j] = blocks[..., j, i] = values[p]
            error[..., i, j] = error[..., j, i] = errors[p]
            flags[..., i, j] = flags[..., j, i] = rough[p]
        if isinstance(kernel, GeneralKernel):
            shape = kernel.output_shape + kernel.x0.shape * 2
            value, error, flags = blocks.reshape(shape), error.reshape(shape), flags.reshape(shape)
        else:
            if problem.rows.reduced:
                weight = kernel.coef[..., None, None]
                blocks, error = blocks * weight, error * np.abs(weight)
            value, error, flags = (shape_blocks(a, problem, layout) for a in (blocks, error, flags))
        return _computed(problem, kernel, value, error, flags > 0.5, evaluations, notes)

    def hvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        kernel, x0, forward, h, eps, richardson, levels, notes = self._setup(problem)
        if isinstance(kernel, GeneralKernel):
            t = tangent.reshape(1, -1).astype(x0.dtype)
        else:
            t = problem.rows.to_rows(tangent).astype(x0.dtype)
        # The tangent's step: the same relative size as the entries' steps, along t per row.
        norm = np.sqrt((t * t).sum(-1, keepdims=True))
        k = h.max(-1, keepdims=True) / np.where(norm > 0, norm, 1)
        c = x0.shape[-1]
        pairs = [(i, None) for i in range(c)]
        values, errors, rough, evaluations = _pair_differences(forward, x0, h, pairs, eps, richardson, levels,
                                                               self.options.progress, tangent=(t * k, k[..., 0]))
        # values[i]: d2 f_r / dx_ri dt_r per row, i.e. (H_r t_r)_i (per unit of t: divided by k above)
        value, error, rough = (np.moveaxis(a, 0, -1) for a in (values, errors, rough))
        if isinstance(kernel, GeneralKernel):
            value, error, rough = (a.reshape(kernel.x0.shape) for a in (value, error, rough))
        else:
            # One number: reduced (coef), or an unbatched row whose own value is the output.
            weight = 1.0 if kernel.coef is None else kernel.coef[..., None]
            value, error = problem.rows.from_rows(value * weight), problem.rows.from_rows(error * np.abs(weight))
            rough = problem.rows.from_rows(rough)
        return _computed(problem, kernel, value, error, rough, evaluations, notes)


def _computed(problem: Problem, kernel, value, error, rough, evaluations, notes) -> Computed:
    """The result with the rounding to the problem's dtype in its estimate (a float32 problem differenced
    in float64 still ends as float32 values) and the entries no level converged for marked non-smooth."""
    error = error + np.finfo(problem.dtype).eps * np.abs(np.nan_to_num(value))
    if rough.any():
        notes += (f"fd: {int(rough.sum())} entr{'y' if rough.sum() == 1 else 'ies'} non-smooth: the second differences "
                  "do not converge as the step shrinks (a kink, a jump or a domain edge within reach); reported, not "
                  "trusted (check does not count them as mismatches)",)
    return Computed(value=value, output=row_output(kernel, problem), error=error, evaluations=evaluations,
                    notes=notes + _rough(value, error), nonsmooth=rough if rough.any() else None)


def _rough(value: np.ndarray, error: np.ndarray) -> tuple[str, ...]:
    worst = float(np.max(error)) if error.size else 0.0
    if worst > 1e-5 * max(1.0, float(np.abs(value).max())):
        return (f"fd: the error estimate of the second differences reaches {worst:.1e}: the function may not be "
                "smooth here (a kink), or the step is too coarse or fine; try --fd-step",)
    return ()


def _truncation(est: np.ndarray, factor: float, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per level m but the last: the truncation error of ``est[m]``, whose error
    grows ``factor`` times per doubling of the step. Where truncation
    dominates (the next difference ``factor / 4`` to ``4 factor`` times this
    one) it is ``|est[m] - est[2m]| / (factor - 1)``, doubled. Elsewhere it is
    the whole difference ``|est[m] - est[2m]|``: at the rounding level (both
    within a few times the rounding ``noise`` of ``est[m]``) a sample of the
    noise itself; with no next level, or steps too coarse for the function,
    a bound only where the two bracket or approach the value (such levels
    are not taken where a smaller step converged). Returns the estimates and
    the asymptotic mask (truncation dominating, or at the rounding level)."""
    step = np.abs(est[:-1] - est[1:])
    asymptotic, truncating = np.zeros(step.shape, dtype=bool), np.zeros(step.shape, dtype=bool)
    with np.errstate(all="ignore"):
        ratio = step[1:] / step[:-1]
        quiet = (step[:-1] <= 4 * noise[:len(step) - 1]) & (step[1:] <= 16 * factor * noise[:len(step) - 1])
        shrinking = (ratio >= factor / 4) & (ratio <= 4 * factor)
        asymptotic[:-1] = shrinking | quiet
        truncating[:-1] = shrinking & ~quiet
    # At the rounding level the difference between levels is a sample of the noise itself, which the model
    # eps |f| misses where the function rounds inside (log(1 + x^2) rounds 1 + x^2): counted whole there.
    return np.where(truncating, SAFETY * step / (factor - 1), step), asymptotic


def _pair_differences(forward, x0, h, pairs, eps, richardson, levels, progress=None, tangent=None):
    """For each pair ``(i, j)``: the mixed second difference of the per-row
    outputs along feature i and feature j (or, with ``tangent = (b, |b|)``,
    along the per-row displacement b), estimate and error ``(P, *rows, *out_block)``.
    Returns ``(values, errors, rough, evaluations)``; ``rough``: no level converged."""
    n_pairs = len(pairs)
    y0 = forward(np.array(x0[None]))[0]  # a writable copy: user code turns it into a tensor
    out_block = y0.shape[x0.ndim - 1:]
    # One evaluation's rounding scales with |f| and with the intermediates' size, at least the row's largest
    # output (as first-order fd's, module fd_steps; log_softmax: x - max - log(sum)).
    spread = np.abs(np.nan_to_num(y0)).max(axis=tuple(range(x0.ndim - 1, y0.ndim)), keepdims=True, initial=0.0)
    largest = float(np.max(np.abs(y0), where=np.isfinite(y0), initial=0.0))  # the result's largest value
    n_points = len(levels) * len(SIGNS)
    per_pair = n_points * (x0.size + y0.size) * x0.itemsize
    chunk = max(1, min(n_pairs, _BUDGET_BYTES // max(per_pair, 1)))
    values = np.empty((n_pairs,) + y0.shape, dtype=x0.dtype)
    errors = np.empty_like(values)
    rough = np.empty(values.shape, dtype=bool)  # no level in the asymptotic range: reported, not a bound
    n_levels = len(levels)
    levels = np.asarray(levels, dtype=x0.dtype)
    signs = np.asarray(SIGNS, dtype=x0.dtype)
    expand = (1,) * len(out_block)
    for start in range(0, n_pairs, chunk):
        part = pairs[start:start + chunk]
        k = len(part)
        a = np.zeros((k,) + x0.shape, dtype=x0.dtype)
        a[np.arange(k), ..., [i for i, _ in part]] = np.moveaxis(h[..., [i for i, _ in part]], -1, 0)
        step_a = np.moveaxis(h[..., [i for i, _ in part]], -1, 0)  # (k, *rows)
        if tangent is None:
            b = np.zeros_like(a)
            b[np.arange(k), ..., [j for _, j in part]] = np.moveaxis(h[..., [j for _, j in part]], -1, 0)
            step_b = np.moveaxis(h[..., [j for _, j in part]], -1, 0)
        else:
            b = np.broadcast_to(tangent[0], a.shape)
            step_b = np.broadcast_to(tangent[1], step_a.shape)
        # points (L, S, k, *rows, C) = x0 + m (s_a a + s_b b)
        disp = signs[:, 0, None, None] * a.reshape(1, k, -1) + signs[:, 1, None, None] * b.reshape(1, k, -1)
        points = x0.reshape(1, 1, 1, -1) + levels[:, None, None, None] * disp[None]
        f = forward(points.reshape((n_levels, len(SIGNS), k) + x0.shape))  # (L, S, k, *rows, *out_block)
        combo = f[:, 0] - f[:, 1] - f[:, 2] + f[:, 3]  # (L, k, *rows, *out_block)
        denominator = 4 * (levels ** 2).reshape((-1, 1) + (1,) * (x0.ndim - 1) + expand) \
            * (step_a * step_b).reshape((1, k) + x0.shape[:-1] + expand)
        d = combo / denominator  # D(m) for every level m
        # |f| near x (at the points inside the domain) and the intermediates': the rounding scale
        scale = np.max(np.abs(f), axis=(0, 1), where=np.isfinite(f), initial=0.0) + spread
        rounding = eps * scale / denominator * 4  # 4 terms of size |f|, each rounded
        if richardson:
            est = (4 * d[:-1] - d[1:]) / 3  # R(m) for every level but the last, error O(h^4)
            noise = 2 * rounding[:len(est) - 1]
            err, converged = _truncation(est, 16.0, noise)
        else:
            est = d
            noise = rounding[:len(est) - 1]
            err, converged = _truncation(est, 4.0, noise)
        err += noise
        # Nor below the rounding of the largest value anywhere in the result at the largest step: a row whose
        # values all round to the same number (a saturated cross_entropy row whose loss is 0) shows no noise
        # of its own, while its second derivatives (1e-44) are not 0.
        err += eps * largest / denominator[-1] * 4
        est = est[:-1]
        # The smallest estimate among the levels in the asymptotic range (where any is), in the run of them
        # that starts at the smallest step: coarse levels can agree by chance (sin(1000 x) aliased, 1e2 off
        # with an estimate of 1e-3), and their agreement is no bound.
        level = np.arange(len(converged)).reshape((-1,) + (1,) * (converged.ndim - 1))
        first = np.argmax(converged, axis=0)
        above = (level >= first) & ~converged
        end = np.where(above.any(axis=0), np.argmax(above, axis=0), len(converged))
        run = (level >= first) & (level < end) & converged
        # (a level whose points left the domain has a nan estimate: never the smallest)
        best = np.argmin(np.where((run | ~converged.any(axis=0)) & ~np.isnan(err), err, np.inf), axis=0)[None]
        chosen = np.take_along_axis(est, best, 0)[0]
        values[start:start + k] = chosen
        errors[start:start + k] = np.maximum(np.take_along_axis(err, best, 0)[0], _sampled(est, chosen, level, best))
        rough[start:start + k] = ~converged.any(axis=0)
        if progress is not None:
            progress(min(n_pairs, start + k), n_pairs)
    # Nothing below a few hundred eps times the largest entry is resolved (first-order fd's floor, RESOLVED):
    # a saturated softmax row's values round to 0 or 1 at every level, while its second derivatives are not 0.
    errors += fd.RESOLVED * eps * float(np.max(np.abs(values), where=np.isfinite(values), initial=0.0))
    no_value = ~np.isfinite(values)
    errors[no_value], rough[no_value] = np.inf, True  # no value, no bound (and never a nan estimate)
    return values, errors, rough, n_pairs * n_points


def _sampled(est, chosen, level, best):
    """The rounding of ``chosen`` (the estimate at level ``best``) as the smaller
    levels sample it: their estimates depart from it by their noise
    (truncation shrinks below ``best``), which is ``(m_best / m_j)^2`` times
    the noise of ``best``'s own. The largest such departure is a floor on the
    estimate that sees what the model ``eps |f|`` cannot: a value that is
    the small difference of large intermediates (a saturated cross_entropy
    row: ``lse(x) - x_t``, both near max x) rounds at their size, not at ``|f|``'s."""
    ratio = 4.0 ** (level - best)  # (m_j / m_best)^2, levels 2^j apart
    with np.errstate(invalid="ignore"):
        departure = np.abs(est[:len(level)] - chosen) * ratio
    return np.where((level < best) & np.isfinite(departure), departure, 0.0).max(axis=0)


__all__ = ["FdSecond"]
