"""forward: torch forward mode (torch.func.jvp / jacfwd)."""

from __future__ import annotations

import numpy as np

from .. import rowform
from ..options import BackendName, Layout
from ..problem import Problem
from .base import Computed
from .torchbase import TorchBackend, expand_along, to_numpy, torch_errors, user_model, value_of


class ForwardBackend(TorchBackend):
    name = BackendName.FORWARD

    def blocks(self, torch, F, x0, rows):
        """Per-row blocks from one batched forward pass per input feature: the
        tangent "1 at feature c of every row" gives column c of every block."""
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
        made only when it runs (jacfwd would hold the whole n x n identity)."""
        n = x0.numel()
        chunk = self.chunk(torch, F, x0, n, output.numel() * output.element_size(), forward=True)

        def column(t):
            return torch.func.jvp(F, (x0,), (t,))[1]

        columns = []
        for start in range(0, n, chunk):
            size = min(chunk, n - start)
            basis = torch.zeros(size, n, dtype=x0.dtype, device=x0.device)
            basis[torch.arange(size), start + torch.arange(size)] = 1
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
        with torch_errors(self.name.value, user_model(problem)):
            t = torch.as_tensor(tangent, device=x0.device, dtype=x0.dtype)
            output, value = torch.func.jvp(F, (x0,), (t,))
        return Computed(value=to_numpy(value), output=to_numpy(output))
