"""autograd: torch reverse mode (torch.func.vjp / jacrev)."""

from __future__ import annotations

import numpy as np

from ..problem import Problem
from ..results import BackendName
from .base import Computed
from .torchbase import TorchBackend, expand_along, to_numpy, torch_errors


class AutogradBackend(TorchBackend):
    name = BackendName.AUTOGRAD

    def blocks(self, torch, F, x0, rows, output):
        """Per-row blocks from one batched reverse pass per output feature: the
        cotangent "1 at feature k of every row" gives row k of every block, since
        rows do not interact (the functorch sum-over-the-batch trick)."""
        _, vjp_fn = torch.func.vjp(F, x0)
        if rows.out_axis is None:
            grad = vjp_fn(torch.ones_like(output))[0]
            return grad.unsqueeze(-1) if rows.in_axis is None else grad.movedim(rows.in_axis, -1)
        eye = torch.eye(rows.out_features, dtype=output.dtype, device=output.device)
        grads = torch.func.vmap(lambda e: vjp_fn(expand_along(torch, e, rows.out_axis, output.shape))[0])(eye)
        return grads.movedim(1 + rows.in_axis, -1).movedim(0, -2)  # (*rows, C_out, C_in)

    def full(self, torch, F, x0):
        return torch.func.jacrev(F)(x0)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value):
            output, vjp_fn = torch.func.vjp(F, x0)
            (value,) = vjp_fn(torch.as_tensor(cotangent, device=output.device, dtype=output.dtype))
        return Computed(value=to_numpy(value), output=to_numpy(output))

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        """``J t`` in reverse mode, by differentiating the (linear) vjp map
        ``u -> u^T J`` once more: what torch.autograd.functional.jvp does."""
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value):
            output = F(x0)
            t = torch.as_tensor(tangent, device=output.device, dtype=output.dtype)

            def vjp_map(u):
                return torch.func.vjp(F, x0)[1](u)[0]

            _, back = torch.func.vjp(vjp_map, torch.zeros_like(output))
            (value,) = back(t)
        return Computed(value=to_numpy(value), output=to_numpy(output))
