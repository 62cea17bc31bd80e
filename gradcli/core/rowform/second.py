"""Second derivatives in row form: Hessian blocks, full Hessians and
Hessian-vector products of row-independent functions, and their chain rule.

A row kernel (see :class:`~.kernels.RowKernel`) gives its second order as
``hessian()``, each row's ``d2 f_k / dx dx``, ``(*rows, *out_block, C, C)``,
or as ``hvp(u, t)``, per row ``sum_k u_k (d2 f_k) t`` for a cotangent ``u``
``(..., *rows, *out_block)`` and a tangent ``t`` ``(..., *rows, C)``.
Each derives from the other here (:func:`row_hvp`, :func:`row_hessian`).

For a reduced output ``L = sum_r coef_r l_r`` the Hessian w.r.t. the argument
is block-diagonal across rows with blocks ``coef_r d2 l_r``: it is the
Jacobian of the gradient, a row function whose blocks are ``(*rows, C, C)``.

Chain rule (forward over reverse), for ``F = f_n o ... o f_1`` and a
cotangent ``u_n`` of the last output:

    t_0 = t,  t_j = J_j t_{j-1}                          (tangents, forwards)
    u_{j-1} = J_j^T u_j                                   (gradients, backwards)
    w_n = 0,  w_{j-1} = J_j^T w_j + sum_k (u_j)_k (d2 f_j,k) t_{j-1}

and ``w_0 = d2 <u_n, F> t``. Unrolled for two stages this is the
Gauss-Newton term ``J_1^T (d2 f_2) J_1 t`` plus ``sum_k (J_2^T u)_k (d2 f_1,k) t``:
the gradient of the outer stage weighting the second derivative of the inner.
"""

from __future__ import annotations

import math

import numpy as np

from .algebra import _cotangent_rows, row_jvp, row_vjp
from .kernels import GeneralKernel, RowKernel
from .layout import RowLayout


def row_hvp(kernel: RowKernel, layout: RowLayout, u: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per row ``sum_k u_k (d2 f_k) t``: the kernel's own operator, or its blocks contracted."""
    if kernel.hvp is not None:
        return kernel.hvp(u, t)
    if kernel.hessian is None:
        raise NotImplementedError("this function has no closed-form second derivative")
    h = kernel.hessian(None)
    if layout.out_axis is None:
        return u[..., None] * np.einsum("...ij,...j->...i", h, t)
    return np.einsum("...k,...kij,...j->...i", u, h, t)


def row_hessian(kernel: RowKernel, layout: RowLayout, scale: np.ndarray | None = None) -> np.ndarray:
    """Each row's second derivative ``(*rows, *out_block, C, C)``, times ``scale``
    ``(*rows)`` when given (one number per row only): the kernel's own blocks,
    or its ``hvp`` applied to the basis (every row at once)."""
    if kernel.hessian is not None:
        return kernel.hessian(scale)
    x0 = kernel.x0
    c = x0.shape[-1]
    rows = x0.shape[:-1]
    eye = np.eye(c, dtype=x0.dtype)
    if layout.out_axis is None:
        t = np.broadcast_to(eye.reshape((c,) + (1,) * len(rows) + (c,)), (c,) + x0.shape)
        u = np.ones(rows, dtype=x0.dtype) if scale is None else scale
        cols = kernel.hvp(u, t)  # (C_j, *rows, C_i)
        return np.moveaxis(cols, 0, -1)
    k = layout.out_features
    u = np.broadcast_to(np.eye(k, dtype=x0.dtype).reshape((k, 1) + (1,) * len(rows) + (k,)), (k, 1) + rows + (k,))
    t = np.broadcast_to(eye.reshape((1, c) + (1,) * len(rows) + (c,)), (1, c) + x0.shape)
    cols = kernel.hvp(u, t)  # (K, C_j, *rows, C_i)
    return np.moveaxis(np.moveaxis(cols, 1, -1), 0, -3)  # (*rows, K, C_i, C_j)


def weighted_blocks(kernel: RowKernel, layout: RowLayout) -> np.ndarray:
    """The value of ``hessian --layout blocks``: ``coef_r d2 l_r`` for a reduced
    output (the Hessian of the one number), else each row's own ``d2 f``."""
    return row_hessian(kernel, layout, kernel.coef if layout.reduced else None)


def hessian_full(blocks: np.ndarray, layout: RowLayout, allocate=np.zeros) -> np.ndarray:
    """Scatter Hessian blocks into ``output_shape + in_shape + in_shape`` (the shape
    of ``torch.func.hessian``). ``blocks``: :func:`weighted_blocks`'s value; the
    entries between different rows are zero."""
    n_rows = layout.n_rows
    out_shape = layout.output_shape
    full = allocate(out_shape + layout.in_shape + layout.in_shape, dtype=blocks.dtype)
    view = full
    out_ndim = len(out_shape)
    if layout.in_axis is not None:  # feature axes last in each input part
        view = np.moveaxis(view, out_ndim + layout.in_axis, out_ndim + len(layout.in_shape) - 1)
        view = np.moveaxis(view, out_ndim + len(layout.in_shape) + layout.in_axis, -1)
    if not layout.reduced and layout.out_axis is not None:
        view = np.moveaxis(view, layout.out_axis, out_ndim - 1)
    feature = (slice(None),) if layout.in_axis is not None else ()
    index = tuple(np.indices(layout.rows).reshape(len(layout.rows), -1)) if layout.rows else ()
    out_part = () if layout.reduced else index + ((slice(None),) if layout.out_axis is not None else ())
    selector = out_part + index + feature + index + feature
    flat_blocks = blocks.reshape((n_rows,) + blocks.shape[len(layout.rows):]) if layout.rows else blocks
    if layout.in_axis is None:  # elementwise: blocks (*rows, 1, 1), or (*rows, 1, 1) along no axis
        flat_blocks = flat_blocks.reshape((n_rows,) if layout.rows else ())
    if not layout.rows:
        view[...] = flat_blocks
    else:
        view[selector] = flat_blocks
    return full


def reduced_hvp(kernel: RowKernel, layout: RowLayout, t: np.ndarray) -> np.ndarray:
    """``H t`` for a reduced (one-number) row function, ``t`` shaped like the argument."""
    u = _cotangent_rows(layout, kernel.coef, np.ones((), dtype=kernel.x0.dtype))
    return layout.from_rows(row_hvp(kernel, layout, u, layout.to_rows(t)))


def chain_row_hvp(kernels: list[RowKernel], layouts: list[RowLayout]):
    """The ``hvp(u, t)`` of row kernels composed left to right (see the module
    docstring); a stage giving one number per row feeds the next as one feature."""
    last = len(kernels) - 1

    def hvp(u, t):
        tangents = [t]
        for j in range(last):
            tj = row_jvp(kernels[j], layouts[j], tangents[-1])
            tangents.append(tj[..., None] if layouts[j].out_axis is None else tj)
        w = None
        for j in reversed(range(last + 1)):
            kernel, layout = kernels[j], layouts[j]
            if j < last and layout.out_axis is None:
                u, w = u[..., 0], w[..., 0]
            term = row_hvp(kernel, layout, u, tangents[j])
            w = term if w is None else row_vjp(kernel, layout, w) + term
            u = row_vjp(kernel, layout, u)
        return w

    return hvp


def natural_hvp(kernel: RowKernel, layout: RowLayout):
    """A row kernel's ``hvp`` in natural shapes: ``v`` like the output, ``t`` like the argument."""
    def hvp(v, t):
        u = _cotangent_rows(layout, kernel.coef, v)
        return layout.from_rows(row_hvp(kernel, layout, u, layout.to_rows(t)))

    return hvp


def chain_general_hvp(ops: list[GeneralKernel]):
    """The ``hvp(v, t)`` of natural-shape operators composed left to right."""
    def hvp(v, t):
        tangents = [t]
        for op in ops[:-1]:
            tangents.append(op.jvp(tangents[-1]))
        w = None
        for op, tj in zip(reversed(ops), reversed(tangents)):
            if op.hvp is None:
                raise NotImplementedError("a stage has no closed-form second derivative")
            term = op.hvp(v, tj)
            w = term if w is None else op.vjp(w) + term
            v = op.vjp(v)
        return w

    return hvp


def general_hessian_full(kernel: GeneralKernel, budget: int = 64 * 2**20) -> np.ndarray:
    """``output_shape + wrt_shape + wrt_shape`` from ``hvp`` on the basis, in
    slices of the basis sized to ``budget`` bytes of stacked tangents."""
    x0 = kernel.x0
    n = x0.size
    n_out = math.prod(kernel.output_shape)
    out = np.empty((n_out, n, n), dtype=x0.dtype)
    per = max(1, n * max(1, n_out) * x0.itemsize)
    chunk = max(1, min(n, budget // per))
    for o in range(n_out):
        v = np.zeros(n_out, dtype=x0.dtype)
        v[o] = 1
        v = v.reshape(kernel.output_shape)
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            t = np.zeros((stop - start, n), dtype=x0.dtype)
            t[np.arange(stop - start), np.arange(start, stop)] = 1
            cols = kernel.hvp(v, t.reshape((stop - start,) + x0.shape))  # (k, *wrt): H e_j
            out[o, :, start:stop] = cols.reshape(stop - start, n).T
    return out.reshape(kernel.output_shape + x0.shape + x0.shape)
