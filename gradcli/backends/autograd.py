"""autograd: torch reverse mode.

Blocks and full Jacobians batch their backward passes with torch.func
(``vmap`` over cotangents, ``jacrev``). Code that torch.func cannot
transform — an old-style ``torch.autograd.Function`` with ``forward(ctx, ...)``
— falls back to classic autograd, one backward pass per output row. vjp and
jvp always use classic autograd, which runs any code.
"""

from __future__ import annotations

import numpy as np

from ..errors import UserCodeError
from ..options import BackendName
from ..problem import Problem
from .base import Computed
from .torchbase import TorchBackend, expand_along, functorch_refused, to_numpy, torch_errors, user_model


class AutogradBackend(TorchBackend):
    name = BackendName.AUTOGRAD

    def blocks(self, torch, F, x0, rows, output):
        """Per-row blocks from one batched reverse pass per output feature: the
        cotangent "1 at feature k of every row" gives row k of every block, since
        rows do not interact (the functorch sum-over-the-batch trick)."""
        try:
            return self._batched_blocks(torch, F, x0, rows, output)
        except (RuntimeError, UserCodeError) as err:
            if not functorch_refused(err):
                raise
        # Classic autograd, one backward pass per output feature (code torch.func
        # cannot transform: an old-style autograd.Function, in-place updates).
        x = x0.detach().requires_grad_(True)
        out = F(x)
        if rows.out_axis is None:
            (grad,) = torch.autograd.grad(out.sum(), x)
            return grad.unsqueeze(-1) if rows.in_axis is None else grad.movedim(rows.in_axis, -1)
        out = out.movedim(rows.out_axis, -1)
        per_feature = [torch.autograd.grad(out[..., k].sum(), x, retain_graph=True)[0].movedim(rows.in_axis, -1)
                       for k in range(rows.out_features)]
        return torch.stack(per_feature, dim=-2)

    def _batched_blocks(self, torch, F, x0, rows, output):
        if rows.out_axis is None:
            grad = torch.func.vjp(F, x0)[1](torch.ones_like(output))[0]
            return grad.unsqueeze(-1) if rows.in_axis is None else grad.movedim(rows.in_axis, -1)
        # One cotangent per output feature, each a gradient shaped like x0; the result holds them all.
        chunk = self.chunk(torch, F, x0, rows.out_features, x0.numel() * x0.element_size(), forward=False)
        _, vjp_fn = torch.func.vjp(F, x0)
        eye = torch.eye(rows.out_features, dtype=output.dtype, device=output.device)
        grads = torch.func.vmap(lambda e: vjp_fn(expand_along(torch, e, rows.out_axis, output.shape))[0],
                                chunk_size=chunk)(eye)
        return grads.movedim(1 + rows.in_axis, -1).movedim(0, -2)  # (*rows, C_out, C_in)

    def full(self, torch, F, x0, output):
        try:
            chunk = self.chunk(torch, F, x0, output.numel(), x0.numel() * x0.element_size(), forward=False)
            return torch.func.jacrev(F, chunk_size=chunk)(x0)
        except (RuntimeError, UserCodeError) as err:
            if not functorch_refused(err):
                raise
            return torch.autograd.functional.jacobian(F, x0, vectorize=False)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value, user_model(problem)):
            x = x0.detach().requires_grad_(True)
            output = F(x)
            v = torch.as_tensor(cotangent, device=output.device, dtype=output.dtype)
            (value,) = torch.autograd.grad(output, x, v, allow_unused=True)
            value = torch.zeros_like(x) if value is None else value
        return Computed(value=to_numpy(value), output=to_numpy(output))

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        """``J t`` in reverse mode, by differentiating the (linear) vjp map
        ``u -> u^T J`` once more: torch.autograd.functional.jvp."""
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value, user_model(problem)):
            t = torch.as_tensor(tangent, device=x0.device, dtype=x0.dtype)
            output, value = torch.autograd.functional.jvp(F, x0, t)
        return Computed(value=to_numpy(value), output=to_numpy(output))
