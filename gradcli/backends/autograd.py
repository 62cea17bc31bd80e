"""autograd: torch reverse mode.

Blocks run one forward pass and batches of backward passes over its graph
(``is_grads_batched``); full Jacobians use ``jacrev``. Code that torch.func
cannot transform — an old-style ``torch.autograd.Function`` with
``forward(ctx, ...)`` — falls back to one plain backward pass per output
feature (blocks) or row (full). vjp and
jvp always use classic autograd, which runs any code.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import BackendError, UserCodeError
from ..usercode.activations import remember, saved_bytes
from ..core.options import BackendName
from ..problem.problem import Problem
from .base import Computed
from .forward import in_composite_forms
from .torchbase import (TorchBackend, basis_rows, expand_along, functorch_refused, to_numpy, torch_errors,
                        user_model)


CACHE_BYTES = 32 * 2**20  # activations one batched backward pass may touch: about a last-level cache


def backward(torch, output, x, cotangent, *, batched: bool = False):
    """``cotangent^T d output / d x`` by one classic backward pass over the graph
    of ``output``, which is kept for more (``batched``: a stack of cotangents, one
    gradient each); zeros where ``output`` does not depend on ``x`` (also when
    nothing in it requires grad: a constant, a detached tensor)."""
    if not x.requires_grad:  # torch.autograd.grad would raise; zeros would be a silent wrong answer
        raise BackendError("your code turned off requires_grad on the argument differentiated "
                           "(x.requires_grad_(False) or x.detach_()), so torch cannot differentiate it; remove that call")
    grad = None
    if output.requires_grad:
        (grad,) = torch.autograd.grad(output, x, cotangent, retain_graph=True, allow_unused=True,
                                      is_grads_batched=batched)
    if grad is None:
        shape = (cotangent.shape[0],) + tuple(x.shape) if batched else x.shape
        return torch.zeros(shape, dtype=x.dtype, device=x.device)
    return grad


class AutogradBackend(TorchBackend):
    name = BackendName.AUTOGRAD

    def blocks(self, torch, F, x0, rows):
        """Per-row blocks from one forward pass and one backward pass per output
        feature over its graph: the cotangent "1 at feature k of every row" gives
        row k of every block, since rows do not interact (the "sum over the batch"
        trick). The forward pass is measured (:func:`saved_bytes`) and sizes the
        batches of cotangents, each a batched backward pass (``is_grads_batched``,
        a vmap over the cotangents) of at most :data:`CACHE_BYTES` of
        activations, or a plain backward pass when one cotangent's activations
        already fill that: a convolutional net's batch then stays in cache,
        which makes the loop about twice as fast as ``vmap(jacrev)``."""
        x = x0.detach().requires_grad_(True)
        output, activations = saved_bytes(torch, lambda: F(x))
        remember(self._function, x0, activations)  # for the other backends of a check
        if rows.out_axis is None:  # one output per row (or entry): one backward pass gives every block
            grad = backward(torch, output, x, torch.ones_like(output))
            grad = grad.unsqueeze(-1) if rows.in_axis is None else grad.movedim(rows.in_axis, -1)
            return output.detach(), grad
        features = rows.out_features
        per_direction = x0.numel() * x0.element_size()
        chunk = min(self.chunk(torch, F, x0, features, per_direction, forward=False, activations=activations),
                    max(1, CACHE_BYTES // max(1, activations)))
        eye = torch.eye(features, dtype=output.dtype, device=output.device)
        rows_shape = tuple(d for i, d in enumerate(x0.shape) if i != rows.in_axis)
        blocks = torch.empty(rows_shape + (features, x0.shape[rows.in_axis]), dtype=x0.dtype, device=x0.device)

        def put(start, grads):  # grads (n, *x0.shape) -> blocks[..., start:start + n, :], written in place
            blocks[..., start:start + grads.shape[0], :] = grads.movedim(1 + rows.in_axis, -1).movedim(0, -2)

        start = 0
        while start < features:  # not a range: a refused batch turns the chunk to 1 for the rest
            stop = min(start + chunk, features)
            cotangents = [expand_along(torch, eye[k], rows.out_axis, output.shape) for k in range(start, stop)]
            batched = False
            if len(cotangents) > 1:
                try:
                    put(start, backward(torch, output, x, torch.stack(cotangents), batched=True))
                    batched = True
                except (RuntimeError, UserCodeError):
                    # vmap cannot batch this backward (an op without a batching rule, `.item()` in a
                    # custom backward): plain passes, which raise the real error if there is one.
                    chunk = 1
            if not batched:
                for k, cotangent in zip(range(start, stop), cotangents):
                    put(k, backward(torch, output, x, cotangent).unsqueeze(0))
            start = stop
        return output.detach(), blocks  # (*rows, C_out, C_in)

    def full(self, torch, F, x0, output):
        """``(*out, *in)``: ``jacrev`` when one vmap call takes every output entry;
        else one ``torch.func.vjp`` whose pullback is vmapped over chunks of basis
        cotangents, each chunk's rows written into the one result
        (``jacrev(chunk_size=)`` concatenates its chunks at the end: the result twice)."""
        try:
            m, shape = output.numel(), tuple(output.shape) + tuple(x0.shape)
            chunk = self.chunk(torch, F, x0, m, x0.numel() * x0.element_size(), forward=False)
            if chunk >= m:
                return torch.func.jacrev(F)(x0)
            _, pullback = torch.func.vjp(F, x0)
            pull = torch.func.vmap(lambda u: pullback(u.reshape(output.shape))[0])
            jac = torch.empty((m, x0.numel()), dtype=x0.dtype, device=x0.device)
            for start in range(0, m, chunk):
                stop = min(start + chunk, m)
                basis = basis_rows(torch, start, stop, m, dtype=output.dtype, device=output.device)
                jac[start:stop] = pull(basis).reshape(stop - start, -1)
            return jac.reshape(shape)
        except (RuntimeError, UserCodeError) as err:
            if not functorch_refused(err):
                raise
            return torch.autograd.functional.jacobian(F, x0, vectorize=False)

    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value, user_model(problem)):
            x = x0.detach().requires_grad_(True)
            output = F(x)
            value = backward(torch, output, x, torch.as_tensor(cotangent, device=output.device, dtype=output.dtype))
        return Computed(value=to_numpy(value), output=to_numpy(output))

    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        """``J t`` in reverse mode. A scalar output: ``<grad, t>``, one backward pass.
        Otherwise by differentiating the (linear) vjp map ``u -> u^T J`` once more:
        torch.autograd.functional.jvp, a double backward, so fused kernels without one
        run in their composite forms; an op with no double backward at all
        (multi_margin_loss) falls back to the Jacobian, one backward pass per output
        entry, contracted with ``t``."""
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value, user_model(problem)):
            t = torch.as_tensor(tangent, device=x0.device, dtype=x0.dtype)
            if problem.output_shape == ():
                x = x0.detach().requires_grad_(True)
                output = F(x)
                value = (backward(torch, output, x, torch.ones_like(output)) * t).sum()
                return Computed(value=to_numpy(value), output=to_numpy(output))
            try:
                output, value = torch.autograd.functional.jvp(in_composite_forms(torch, F), x0, t)
            except RuntimeError as err:
                if "derivative for" not in str(err) or "not implemented" not in str(err):
                    raise
                output = F(x0)
                value = (self.full(torch, F, x0, output).reshape(output.numel(), -1) @ t.reshape(-1)).reshape(
                    output.shape)
        return Computed(value=to_numpy(value), output=to_numpy(output))
