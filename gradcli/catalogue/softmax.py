"""softmax and log_softmax along one dim: a Jacobian block per row."""

from __future__ import annotations

import functools

import numpy as np

from ..core.errors import UsageError
from ..core.parallel import run_chunks, workers
from ..core.rowform import RowKernel, RowLayout
from .base import ArrayArg, Function, Param, Structure, check_axis


# The temporaries of every chunk of rows in flight together (a row operation makes up to TEMPORARIES arrays of
# its chunk's size): bounded, so that a vocabulary of 1e6 classes costs the result, not several copies of it.
WORKING_BYTES = 32 * 2**20
TEMPORARIES = 4


def log_softmax_rows(x: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis: ``x - max - log(sum(exp(x - max)))``.

    Subtracting the row maximum keeps every exponent <= 0, so logits of +-1e4
    neither overflow nor lose the largest term. A row of -inf gives nan, as
    torch (quietly: no NumPy warning).
    """
    with np.errstate(invalid="ignore"):
        shifted = x - x.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def log_softmax_rows_parallel(x: np.ndarray) -> np.ndarray:
    """:func:`log_softmax_rows` of a ``(*rows, C)`` array, its rows split across
    the cores (NumPy releases the GIL): a language model's vocabulary is one
    large exp per row."""
    return by_rows(log_softmax_rows, x)


def softmax_rows(x: np.ndarray) -> np.ndarray:
    """Stable softmax over the last axis (in place on one temporary: the fd
    backend calls this on large stacks). A row of -inf gives nan, as torch."""
    with np.errstate(invalid="ignore"):
        e = x - x.max(axis=-1, keepdims=True)
    np.exp(e, out=e)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def by_rows(op, x: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """``op(x, *others)``, a row operation on ``(*rows, C)`` arrays of one shape,
    computed for chunks of rows into one result on every core: ``op``'s
    temporaries are then a chunk's (all chunks in flight within
    ``WORKING_BYTES``), not the whole array's. Where the rows do not flatten
    into a view (a transposed input) or ``others`` carry stack axes (a chain
    pushing a basis), ``op`` runs on the whole arrays."""
    c = x.shape[-1] if x.ndim else 1
    flats = [_flat_rows(a, c) for a in (x, *others)] if all(a.shape == x.shape for a in others) else [None]
    if x.size * x.itemsize * TEMPORARIES <= WORKING_BYTES or any(f is None for f in flats):
        return op(x, *others)
    out = np.empty(x.shape, dtype=np.result_type(x, *others))
    flat_out = out.reshape(-1, c)
    per_entry = TEMPORARIES * out.itemsize
    rows = max(1, WORKING_BYTES // (per_entry * c * workers()))
    parallel = c * per_entry * workers() <= WORKING_BYTES  # rows so long that one per core would not fit: one at a time

    def work(start, stop):
        flat_out[start:stop] = op(*(f[start:stop] for f in flats))

    run_chunks(len(flat_out), work, chunk=rows, parallel=parallel)
    return out


def _flat_rows(a: np.ndarray, c: int) -> np.ndarray | None:
    """``a`` as ``(n_rows, C)`` without a copy, or None where that would copy."""
    view = a.view()
    try:
        view.shape = (-1, c)
    except AttributeError:  # (NumPy refuses a shape that would need a copy)
        return None
    return view


def _softmax_apply(s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(diag(s) - s s^T) v`` per row, without the C×C block: ``s * (v - <v, s>)``."""
    return s * (v - (v * s).sum(-1, keepdims=True))


def softmax_blocks(s: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """``(*rows, C)`` softmax rows -> ``(*rows, C, C)`` blocks ``diag(s) - s s^T``
    (times ``scale`` ``(*rows)`` per row when given: cross_entropy's Hessian)."""
    c = s.shape[-1]
    if scale is not None:
        s_scaled = s * scale[..., None]
    # One pass over the result: -s_i s_j everywhere, then + s_i on the diagonal,
    # rows split across the cores. `out` is C-contiguous so the reshapes are views;
    # einsum's outer product writes faster than a broadcasting multiply.
    out = np.empty(s.shape + (c,), dtype=s.dtype)
    flat_out, flat_s = out.reshape(-1, c, c), s.reshape(-1, c)
    flat_left = flat_s if scale is None else s_scaled.reshape(-1, c)

    def rows(start, stop):
        np.einsum("ri,rj->rij", -flat_left[start:stop], flat_s[start:stop], out=flat_out[start:stop])
        flat_out[start:stop].reshape(-1, c * c)[:, :: c + 1] += flat_left[start:stop]

    run_chunks(len(flat_s), rows, chunk=max(1, (1 << 18) // (c * c)))
    return out


def softmax_second_blocks(s: np.ndarray) -> np.ndarray:
    """``d2 s_i / dx_j dx_k = s_i (D_ij D_ik - s_j D_jk)`` with ``D = I - 1 s^T``
    (``D_ij = delta_ij - s_j``): ``(*rows, C, C, C)``, indices ``i, j, k``."""
    c = s.shape[-1]
    d = np.eye(c, dtype=s.dtype) - s[..., None, :]
    return s[..., :, None, None] * (d[..., :, :, None] * d[..., :, None, :] - s[..., None, :, None] * d[..., None, :, :])


def softmax_hvp(s: np.ndarray, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``sum_i u_i (d2 s_i) t`` per row in O(C): with ``a = t - <s, t>``,
    ``s_j (u_j a_j - <u s, a> - a_j <u, s>)``."""
    a = t - (s * t).sum(-1, keepdims=True)
    return s * (u * a - (u * s * a).sum(-1, keepdims=True) - a * (u * s).sum(-1, keepdims=True))


class _AlongDim(Function):
    """Shared by softmax and log_softmax: one block per row along ``dim``."""

    arrays = (ArrayArg("input", "the logits, any shape with at least one dim", required=True),)
    params = (Param("dim", -1, "softmax, log_softmax: the dim they normalise over (torch's dim)"),)
    structure = Structure.BLOCKS
    family = "softmax, log_softmax"

    def check(self, args, params):
        if args["input"].ndim == 0:
            raise UsageError(f"--input: {self.name} needs at least a 1-D input; wrap a scalar in a list, e.g. '[2.5]'")
        check_axis(params["dim"], args["input"].ndim)
        return []

    def output_shape(self, args, params):
        return args["input"].shape

    def row_layout(self, args, params, wrt, axis=None):
        shape = args["input"].shape
        axis = check_axis(params["dim"], len(shape))
        return RowLayout(shape, axis, axis, shape[axis], reduced=False)


class Softmax(_AlongDim):
    name = "softmax"
    summary = "softmax(x)_i = exp(x_i) / sum_j exp(x_j) along --dim"
    formulas = (
        "s = softmax(x) along dim (per row)",
        "J[i, j] = ds_i/dx_j = s_i (delta_ij - s_j), i.e. J = diag(s) - s s^T per row",
        "each block is symmetric and its rows and columns sum to 0 (sum_i s_i = 1), "
        "so the vjp with ones is 0",
    )
    second_formulas = (
        "d2 s_i / dx_j dx_k = s_i [(delta_ij - s_j)(delta_ik - s_k) - s_j (delta_jk - s_k)]: "
        "a C x C x C tensor per row (blocks (*rows, C, C, C))",
    )

    def kernel(self, args, params, wrt, axis=None):
        x = np.moveaxis(args["input"], params["dim"], -1)  # row form: (*rows, C)

        s = functools.cache(lambda: softmax_rows(x))
        # J = diag(s) - s s^T is symmetric: vjp and jvp are both s * (v - <v, s>), O(C) per row, by chunks of rows
        # (s recomputed per chunk, never held whole: over a vocabulary of 1e6 classes it is as large as the input).
        apply = functools.partial(by_rows, lambda xr, v: _softmax_apply(softmax_rows(xr), v), x)
        return RowKernel(x0=x, forward=softmax_rows, forward0=lambda: by_rows(softmax_rows, x),
                         blocks=lambda: softmax_blocks(s()), coef=None, vjp=apply, jvp=apply,
                         hessian=lambda scale: softmax_second_blocks(s()), hvp=lambda u, t: softmax_hvp(s(), u, t))

    def notes(self, args, params, wrt):
        return ["each block's rows and columns sum to 0 because every softmax row sums to 1: "
                "out.backward(torch.ones_like(out)) gives a zero gradient"]

    def torch_forward(self, args, params):
        import torch

        return torch.softmax(args["input"], dim=params["dim"])


class LogSoftmax(_AlongDim):
    name = "log_softmax"
    summary = "log_softmax(x)_i = x_i - log sum_j exp(x_j) along --dim"
    formulas = (
        "s = softmax(x) along dim (per row)",
        "J[i, j] = d log_softmax(x)_i / dx_j = delta_ij - s_j, i.e. J = I - 1 s^T per row",
        "each block's rows sum to 0 (sum_j s_j = 1); its columns sum to 1 - C s_j",
    )
    second_formulas = (
        "d2 log_softmax_i / dx_j dx_k = -(s_j delta_jk - s_j s_k): minus the softmax Jacobian, the same for every i",
    )

    def kernel(self, args, params, wrt, axis=None):
        x = np.moveaxis(args["input"], params["dim"], -1)  # row form: (*rows, C)

        def blocks():
            s = softmax_rows(x)
            c = s.shape[-1]
            out = np.empty(s.shape + (c,), dtype=s.dtype)  # C-contiguous: the reshape is a view
            out[...] = -s[..., None, :]
            out.reshape(-1, c * c)[:, :: c + 1] += 1.0
            return out

        s = functools.cache(lambda: softmax_rows(x))
        # J = I - 1 s^T: u^T J = u - s sum(u);  J t = t - <s, t>, O(C) per row, by chunks of rows (see softmax).
        # d2 log_softmax_i = -(diag(s) - s s^T) for every i: sum_i u_i d2_i t = -(sum_i u_i) s * (t - <s, t>).
        return RowKernel(x0=x, forward=log_softmax_rows, forward0=lambda: by_rows(log_softmax_rows, x),
                         blocks=blocks, coef=None,
                         vjp=functools.partial(by_rows, lambda xr, u: u - softmax_rows(xr) * u.sum(-1, keepdims=True), x),
                         jvp=functools.partial(by_rows, lambda xr, t: t - (softmax_rows(xr) * t).sum(-1, keepdims=True), x),
                         hvp=lambda u, t: -u.sum(-1, keepdims=True) * _softmax_apply(s(), t))

    def torch_forward(self, args, params):
        import torch

        return torch.log_softmax(args["input"], dim=params["dim"])
