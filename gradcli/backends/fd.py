"""fd: finite differences of the catalogue's NumPy forward, vectorised.

Rows are independent, so column ``c`` of every row is perturbed at once: the
whole Jacobian takes ``C`` perturbed copies of the input (times the number of
step multiples), stacked on leading axes and evaluated in a few batched
calls sized to a memory budget, never one call per entry.

Per entry, with step ``h = base * max(1, |x|)`` (or the absolute ``--fd-step``)
and ``D(h)`` the difference quotient:

- ``central``: ``D(h) = (f(x+h) - f(x-h)) / 2h``, error O(h^2); base eps^(1/3);
- ``forward``: ``D(h) = (f(x+h) - f(x)) / h``, error O(h); base eps^(1/2);
- ``richardson`` (default): ``R(h) = D(h) + (D(h) - D(2h)) / 3`` from central
  differences, error O(h^4); base eps^(1/5).

The error estimate compares the result with the same formula at twice the
step (scaled by how the error grows with the step) and adds the rounding
error ``eps * |f| / h``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..parallel import run_chunks
from ..problem import Problem
from ..options import BackendName, FdDType
from ..rowform import GeneralKernel
from .rowwise import Derivative, RowBackend

_BUDGET_BYTES = 4 * 2**20  # perturbed inputs and outputs per chunk (one chunk per core at a time): near cache size


@dataclass(frozen=True)
class Method:
    multiples: tuple[float, ...]  # points x + m h evaluated per column
    base_power: float  # automatic base step = eps ** base_power
    error_scale: float  # |est(h) - est(2h)| / error_scale estimates the error of est(h)


METHODS = {
    "central": Method((1, -1, 2, -2), 1 / 3, 3.0),
    "forward": Method((0, 1, 2), 1 / 2, 1.0),
    "richardson": Method((1, -1, 2, -2, 4, -4), 1 / 5, 15.0),
}


class FdBackend(RowBackend):
    name = BackendName.FD

    def derivative(self, problem: Problem) -> Derivative:
        method = METHODS[self.options.fd_method.value]
        fd_dtype = problem.dtype if self.options.fd_dtype is FdDType.SAME else np.dtype(np.float64)
        notes = ()
        if fd_dtype != problem.dtype:
            notes = (f"fd: {problem.dtype} problem differenced in {fd_dtype} (--fd-dtype same to keep {problem.dtype})",)
        kernel = problem.astype(fd_dtype).kernel()
        if isinstance(kernel, GeneralKernel):
            # No rows: every entry of the argument is its own column of one big row.
            shape, out_shape = kernel.x0.shape, kernel.output_shape
            x0 = kernel.x0.reshape(1, -1)

            def forward(x):
                y = kernel.forward(x.reshape(x.shape[:-2] + shape))
                return y.reshape(y.shape[: y.ndim - len(out_shape)] + (1, -1))
        else:
            x0, forward = kernel.x0, kernel.forward
        eps = np.finfo(fd_dtype).eps
        if self.options.fd_step is None:
            h = eps**method.base_power * np.maximum(1.0, np.abs(x0))
        else:
            h = np.full(x0.shape, self.options.fd_step, dtype=x0.dtype)
        # Built-ins are pure NumPy: their columns run on every core. User code stays on this thread.
        blocks, error, evaluations = difference_blocks(forward, x0, h, method, eps, self.options.progress,
                                                       parallel=problem.function.closed_form)
        worst = float(error.max()) if error.size else 0.0
        if worst > 1e-6 * max(1.0, float(np.abs(blocks).max())):
            notes += (f"fd: the error estimate reaches {worst:.1e}: the step is too coarse or too fine here "
                      f"(automatic steps grow with |x|, up to {float(np.abs(x0).max()):.3g}); try --fd-step 1e-4",)
        if isinstance(kernel, GeneralKernel):  # (1, n_out, n_in) -> output_shape + wrt_shape
            blocks, error = (a.reshape(kernel.output_shape + kernel.x0.shape) for a in (blocks, error))
        return Derivative(kernel=kernel, blocks=blocks, error=error, evaluations=evaluations, notes=notes)


def difference_blocks(forward, x0: np.ndarray, h: np.ndarray, method: Method, eps: float, progress=None,
                      parallel: bool = False):
    """Blocks ``(*rows, *out_block, C)`` of a row-form ``forward`` at ``x0`` ``(*rows, C)``,
    with steps ``h`` shaped like ``x0``.

    Returns the blocks, a per-entry error estimate, and the number of points
    evaluated.
    """
    n_cols = x0.shape[-1]
    h = (x0 + h) - x0  # a step the dtype represents exactly
    multiples = np.asarray(method.multiples, dtype=x0.dtype)
    m = len(multiples)
    out_block = forward(x0[None]).shape[x0.ndim :]  # (1, *rows, *out_block) -> out_block
    per_col = m * (x0.size + int(np.prod(x0.shape[:-1] + out_block))) * x0.itemsize
    chunk = max(1, min(n_cols, _BUDGET_BYTES // max(per_col, 1)))
    # Column-major buffers: each chunk of columns lands in one contiguous slab;
    # a single transpose at the end gives the (*rows, *out_block, C) layout.
    blocks_t = np.empty((n_cols,) + x0.shape[:-1] + out_block, dtype=x0.dtype)
    error_t = np.empty_like(blocks_t)
    h_t = np.moveaxis(h, -1, 0)  # (C, *rows)
    done = [0]
    buffers = threading.local()  # one stack of points per thread, reused: no fresh pages per chunk

    def columns(start: int, stop: int) -> None:
        k = stop - start
        # (m, k, *rows, C): copy j of the stack moves column start + j of every row.
        if k == chunk:
            if getattr(buffers, "points", None) is None:
                buffers.points = np.empty((m, chunk) + x0.shape, dtype=x0.dtype)
            points = buffers.points
        else:
            points = np.empty((m, k) + x0.shape, dtype=x0.dtype)
        points[...] = x0
        flat = points.reshape(m, k, -1, n_cols)  # a view: rows flattened to one axis
        steps = multiples[:, None, None] * h_t[start:stop].reshape(1, k, -1)  # (m, k, R)
        flat[:, np.arange(k), :, np.arange(start, stop)] += np.moveaxis(steps, 0, 1)
        values = forward(points)  # (m, k, *rows, *out_block)
        h_out = h_t[start:stop].reshape((k,) + x0.shape[:-1] + (1,) * len(out_block))
        blocks_t[start:stop], error_t[start:stop] = _combine(values, h_out, method, eps)
        done[0] += k
        if progress is not None:
            progress(done[0], n_cols)

    run_chunks(n_cols, columns, chunk=chunk, parallel=parallel)
    return np.moveaxis(blocks_t, 0, -1).copy(), np.moveaxis(error_t, 0, -1).copy(), m * n_cols


def _combine(values: np.ndarray, h: np.ndarray, method: Method, eps: float):
    """Difference quotients at steps h and 2h (and 4h), the estimate and its error."""
    rounding = np.abs(values[1])
    rounding *= eps
    rounding /= h  # eps |f| / h: the rounding error of a difference quotient at step h
    if method.multiples[0] == 0:  # forward
        f0, f1, f2 = values
        d1, d2 = (f1 - f0) / h, (f2 - f0) / (2 * h)
        return d1, np.abs(d1 - d2) / method.error_scale + rounding
    d = [(values[i] - values[i + 1]) / (2 * method.multiples[i] * h) for i in range(0, len(values), 2)]
    if len(d) == 2:  # central
        return d[0], np.abs(d[0] - d[1]) / method.error_scale + rounding
    r1, r2 = d[0] + (d[0] - d[1]) / 3, d[1] + (d[1] - d[2]) / 3
    r2 -= r1
    np.abs(r2, out=r2)
    r2 /= method.error_scale
    r2 += rounding
    return r1, r2
