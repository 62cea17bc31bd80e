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
# Activations of one slice of the batch whose backward passes run back to back, one cotangent each: a few MiB
# stay in the caches nearest a core (here 2 MiB of L2 each, 32 MiB of L3 shared). Measured on the per-sample
# CNN of bench row 13 (one thread, CPU time against vmap(jacrev)): the whole batch at once 0.60 (float64) and
# 0.43 (float32); slices of 4 MiB 0.50-0.55 and 0.36; of 2 MiB or 8 MiB no better; slices of 4 MiB with all
# ten cotangents batched (is_grads_batched) 0.61: the batched pass touches ten times the activations. With
# T threads a slice holds T times that (each thread's share of its rows); issue 14's closing note measured
# slices of 16 samples (6 MiB) at 0.40 with two threads on a quiet machine.
SLICE_BYTES = 4 * 2**20  # per torch thread
FIRST_SLICE = 4  # rows of the first slice, whose activations size the others


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
        already fill that.

        User code's per-sample blocks (``slices_batch``) run slice by slice of the
        batch, each slice's forward pass and backward passes back to back on
        about :data:`SLICE_BYTES` of activations per torch thread, which stay in the
        caches near the cores: a convolutional net's blocks then take about 0.45 (float64) and
        0.35 (float32) of ``vmap(jacrev)``'s time. ``F`` of a slice is that slice
        of ``F``: the rows do not interact, and no other array has a batch axis."""
        if rows.out_axis is not None and self._problem is not None and slices_batch(self._problem):
            sliced = self._sliced_blocks(torch, F, x0, rows)
            if sliced is not None:
                return sliced
        x = x0.detach().requires_grad_(True)
        output, activations = saved_bytes(torch, lambda: F(x))
        remember(self._function, x0, activations)  # for the other backends of a check
        if rows.out_axis is None:  # one output per row (or entry): one backward pass gives every block
            grad = backward(torch, output, x, torch.ones_like(output))
            grad = grad.unsqueeze(-1) if rows.in_axis is None else grad.movedim(rows.in_axis, -1)
            return output.detach(), grad
        rows_shape = tuple(d for i, d in enumerate(x0.shape) if i != rows.in_axis)
        blocks = torch.empty(rows_shape + (rows.out_features, x0.shape[rows.in_axis]), dtype=x0.dtype,
                             device=x0.device)
        self._fill(torch, F, x0, x, output, activations, rows, blocks, CACHE_BYTES)
        return output.detach(), blocks  # (*rows, C_out, C_in)

    def _sliced_blocks(self, torch, F, x0, rows):
        """Per-sample blocks ``(B, C_out, C_in)`` slice by slice of the batch (see ``blocks``), or
        None where the code does not give the whole batch's output on slices of it (a model
        exported for one batch size, code that divides by the batch size): then the whole batch."""
        from ..core.rows import output_gap

        batch = x0.shape[0]
        blocks = torch.empty((batch, rows.out_features, x0.shape[-1]), dtype=x0.dtype, device=x0.device)
        output = None
        start, size, per_row = 0, min(batch, FIRST_SLICE), None
        try:
            while start < batch:
                stop = min(batch, start + size)
                x = x0[start:stop].detach().requires_grad_(True)
                out, activations = saved_bytes(torch, lambda: F(x))
                if per_row is None:  # the first slice measures a row's activations, which size the rest
                    per_row = max(1, activations // (stop - start))
                    # torch's kernels split a slice's rows among its threads: each thread's share about SLICE_BYTES
                    size = max(1, SLICE_BYTES * torch.get_num_threads() // per_row)
                if output is None:
                    output = torch.empty((batch,) + tuple(out.shape[1:]), dtype=out.dtype, device=out.device)
                output[start:stop] = out.detach()
                self._fill(torch, F, x0[start:stop], x, out, activations, rows, blocks[start:stop], SLICE_BYTES)
                start = stop
        except (UserCodeError, RuntimeError, ValueError):  # the code refuses a slice: the whole batch says why
            return None
        whole = self._problem.bound.value  # the whole batch's output, from binding the problem
        if whole is None or output_gap(whole, to_numpy(output)) is not None:
            return None
        remember(self._function, x0, per_row * batch)  # for the other backends of a check
        return output, blocks

    def _fill(self, torch, F, x0, x, output, activations, rows, blocks, cache: int):
        """``blocks`` ``(*rows, C_out, C_in)`` from backward passes over ``output``'s graph, in batches of
        cotangents touching at most ``cache`` bytes of activations (and within ``--max-memory``)."""
        features = rows.out_features
        per_direction = x0.numel() * x0.element_size()
        chunk = min(self.chunk(torch, F, x0, features, per_direction, forward=False, activations=activations),
                    max(1, cache // max(1, activations)))
        eye = torch.eye(features, dtype=output.dtype, device=output.device)

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


def slices_batch(problem: Problem) -> bool:
    """Whether user code's per-sample view may run on slices of its batch: the
    blocks already rely on the rows not interacting; no other array may have the
    batch axis (it would need slicing too, and a shared array whose first dim
    equals B by coincidence must not be); no module may draw random masks (a
    slice would draw others); and the whole batch's output must be known, to
    confirm that the slices give it (``AutogradBackend._sliced_blocks``)."""
    if not problem.per_sample:
        return False
    batch = problem.args["input"].shape[0]
    if any(np.ndim(a) and np.shape(a)[0] == batch for name, a in problem.args.items() if name != "input"):
        return False
    modes = getattr(problem.function, "modes", None)
    return getattr(problem.bound, "value", None) is not None and not (modes and (modes.random or modes.coupling))
