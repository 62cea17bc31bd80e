"""forward: torch forward mode (torch.func.jvp / jacfwd)."""

from __future__ import annotations

import importlib
from contextlib import contextmanager

import numpy as np

from ..core import rowform
from ..core.options import BackendName, Layout
from ..problem.problem import Problem
from .base import Computed
from .torchbase import TorchBackend, basis_rows, expand_along, to_numpy, torch_errors, user_model, value_of


@contextmanager
def composite_forms(torch):
    """Fused CPU kernels of torch 2.13 swapped for their composite forms, the same
    numbers, while the user's function runs: ``scaled_dot_product_attention``'s flash
    kernel (``nn.MultiheadAttention`` without weights, ``nn.TransformerEncoderLayer``) by
    the math kernel; those layers' fast paths (taken in eval mode without grad, as forward
    mode runs) switched off; ``torch._weight_norm`` (``nn.utils.weight_norm`` and
    ``parametrizations.weight_norm``) by ``v * (g / norm_except_dim(v, 2, dim))``, which
    torch itself runs for other dims. None of the fused kernels has a forward-mode formula;
    the flash kernel has no double backward, and weight norm's is wrong (an asymmetric Hessian)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    legacy = importlib.import_module("torch.nn.utils.weight_norm")  # holds torch._weight_norm by its own name

    def weight_norm(v, g, dim=0):
        return v * (g / torch.norm_except_dim(v, 2, dim))

    saved = torch._weight_norm, legacy._weight_norm, torch.backends.mha.get_fastpath_enabled()
    torch._weight_norm = legacy._weight_norm = weight_norm
    torch.backends.mha.set_fastpath_enabled(False)  # its fused kernels (eval mode, no grad) have none either
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch._weight_norm, legacy._weight_norm, fastpath = saved
        torch.backends.mha.set_fastpath_enabled(fastpath)


def in_composite_forms(torch, F):
    """``F`` evaluated under :func:`composite_forms` (for forward mode and second derivatives)."""

    def composite(x):
        with composite_forms(torch):
            return F(x)

    return composite


class ForwardBackend(TorchBackend):
    name = BackendName.FORWARD

    def setup(self, problem: Problem):
        torch, F, x0 = super().setup(problem)
        return torch, in_composite_forms(torch, F), x0

    def blocks(self, torch, F, x0, rows):
        """Per-row blocks from one batched forward pass per input feature: the
        tangent "1 at feature c of every row" gives column c of every block."""
        with torch.no_grad():  # see full()
            return self._blocks(torch, F, x0, rows)

    def _blocks(self, torch, F, x0, rows):
        if rows.in_axis is None:  # elementwise: one tangent of ones gives every diagonal entry
            output, diagonal = torch.func.jvp(F, (x0,), (torch.ones_like(x0),))
            return output, diagonal.unsqueeze(-1)
        output = value_of(torch, F, x0)
        chunk = self.chunk(torch, F, x0, rows.features, output.numel() * output.element_size(), forward=True)
        eye = torch.eye(rows.features, dtype=x0.dtype, device=x0.device)

        def column(e):
            return torch.func.jvp(F, (x0,), (expand_along(torch, e, rows.in_axis, x0.shape),))[1]

        cols = torch.func.vmap(column, chunk_size=chunk, randomness="same")(eye)  # (C_in, *out_shape)
        if rows.out_axis is not None:
            cols = cols.movedim(1 + rows.out_axis, -1)  # (C_in, *rows, C_out)
        return output, cols.movedim(0, -1)

    def full(self, torch, F, x0, output):
        """Columns ``J e_i`` in chunks of the standard basis, each chunk's basis
        made only when it runs (jacfwd would hold the whole n x n identity).

        Under ``no_grad``: forward mode needs no autograd graph, and a module's
        parameters require grad, so each chunk's tangents would otherwise keep
        their chunk's activations alive until the end (3 GB for 600 columns of
        the README's CNN, whatever ``--max-memory`` said)."""
        with torch.no_grad():
            return self._full(torch, F, x0, output)

    def _full(self, torch, F, x0, output):
        n = x0.numel()
        chunk = self.chunk(torch, F, x0, n, output.numel() * output.element_size(), forward=True)

        def column(t):
            return torch.func.jvp(F, (x0,), (t,))[1]

        columns = []
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            basis = basis_rows(torch, start, start + size, n, dtype=x0.dtype, device=x0.device)
            columns.append(torch.func.vmap(column, randomness="same")(basis.reshape((size,) + x0.shape)))
        cols = torch.cat(columns).reshape((n,) + output.shape)  # (n_in, *out_shape)
        return cols.movedim(0, -1).reshape(output.shape + x0.shape)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        """``v^T J`` from the forward-mode Jacobian (blocks where rows are independent)."""
        if problem.rows is not None and not problem.rows.reduced:
            got = self.jacobian(problem, Layout.BLOCKS if not problem.rows.elementwise else Layout.DIAG)
            blocks = problem.rows.to_rows(got.value) if problem.rows.elementwise else got.value
            return Computed(value=rowform.vjp_blocks(blocks, problem.rows, None, cotangent), output=got.output)
        got = self.jacobian(problem, Layout.FULL)
        value = np.tensordot(cotangent, got.value, axes=cotangent.ndim)
        return Computed(value=value, output=got.output)

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value, user_model(problem)), torch.no_grad():  # see full()
            t = torch.as_tensor(tangent, device=x0.device, dtype=x0.dtype)
            output, value = torch.func.jvp(F, (x0,), (t,))
        return Computed(value=to_numpy(value), output=to_numpy(output))
