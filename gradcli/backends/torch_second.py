"""Second derivatives with torch: autograd (reverse over reverse) and forward
(forward over reverse).

Both differentiate the gradient map ``g(x) = d <v, F(x)> / dx`` once more:
autograd with a second reverse pass per basis cotangent (classic autograd with
``create_graph``, so a custom ``autograd.Function``'s own double backward is
what runs — a wrong one shows up), forward with ``torch.func.jvp`` of
``torch.func.vjp``. Row-independent functions get their blocks from ``C``
passes whose basis vector sits at the same feature of every row (rows do not
interact), and ``K`` such sweeps for a ``K``-vector per row (softmax).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UserCodeError
from ..core.options import BackendName, Layout
from ..problem.problem import Problem
from .base import Computed
from .second import shape_blocks
from .torchbase import expand_along, to_numpy, torch_errors, vmap_chunk
from .autograd import AutogradBackend
from .forward import ForwardBackend, in_composite_forms


class _TorchSecond:
    """Shared by both modes; ``_second(torch, F, x0, v, basis)`` is the
    mode's primitive: ``(output, D)`` with ``D[k] = d2 <v, F> applied to basis[k]``."""

    def hessian(self, problem: Problem, layout: Layout) -> Computed:
        torch, F, x0 = self.setup(problem)
        rows = problem.rows
        with torch_errors(self.name.value):
            if rows is None:
                output, value = self._general(torch, F, x0)
            else:
                output, blocks = self._blocks(torch, F, x0, rows)
                value = shape_blocks(blocks, problem, layout, self.options.allocate)
        return Computed(value=value, output=to_numpy(output))

    def hvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        torch, F, x0 = self.setup(problem)
        with torch_errors(self.name.value):
            t = torch.as_tensor(tangent, device=x0.device, dtype=x0.dtype)
            output, value = self._second(torch, F, x0, None, t[None])
        return Computed(value=to_numpy(value[0]), output=to_numpy(output))

    def _general(self, torch, F, x0):
        """``output_shape + wrt_shape + wrt_shape``: one sweep of the basis per output entry."""
        output = F(x0)
        n, n_out = x0.numel(), output.numel()
        eye = torch.eye(n, dtype=x0.dtype, device=x0.device).reshape((n,) + tuple(x0.shape))
        out = []
        for o in range(n_out):
            v = torch.zeros(n_out, dtype=output.dtype, device=output.device)
            v[o] = 1
            _, d = self._second(torch, F, x0, v.reshape(output.shape), eye)
            out.append(self._orient(d.reshape(n, n)))
        value = torch.stack(out).reshape(tuple(output.shape) + tuple(x0.shape) * 2)
        return output, to_numpy(value)

    def _blocks(self, torch, F, x0, rows):
        """Weighted row blocks ``(*rows, *out_block, C, C)`` from ``K x C`` sweeps."""
        output = F(x0).detach()
        if rows.in_axis is None:  # elementwise: a tangent of ones gives every second derivative
            basis = torch.ones_like(x0)[None]
        else:
            eye = torch.eye(rows.features, dtype=x0.dtype, device=x0.device)
            basis = torch.stack([expand_along(torch, e, rows.in_axis, x0.shape) for e in eye])
        if rows.out_axis is None:
            cotangents = [None]  # ones of the output (or the one number): every row's own l_r
        else:
            eye_out = torch.eye(rows.out_features, dtype=output.dtype, device=output.device)
            cotangents = [expand_along(torch, e, rows.out_axis, output.shape) for e in eye_out]
        per_output = []
        for v in cotangents:
            _, d = self._second(torch, F, x0, v, basis)  # (C_basis, *x.shape)
            d = to_numpy(d)
            if rows.in_axis is None:
                per_output.append(d[0][..., None, None])
                continue
            d = np.moveaxis(d, 1 + rows.in_axis, -1)  # (C_basis, *rows, C)
            per_output.append(np.moveaxis(d, 0, self._basis_axis))  # (*rows, C, C)
        blocks = per_output[0] if rows.out_axis is None else np.stack(per_output, axis=-3)
        return output, blocks


class AutogradSecond(_TorchSecond, AutogradBackend):
    """Reverse over reverse: ``g = grad(<v, F>, create_graph)``, then ``grad(g, x, e_k)``:
    ``D[k] = e_k^T dg/dx``, row k of the Hessian."""

    name = BackendName.AUTOGRAD
    _basis_axis = -2  # D[k] is row k of each block

    def setup(self, problem: Problem):
        torch, F, x0 = super().setup(problem)
        return torch, in_composite_forms(torch, F), x0  # fused kernels without a (right) double backward

    @staticmethod
    def _orient(d):
        return d

    def hvp_operator(self, problem: Problem):
        """``t -> H t`` with the gradient's graph built once and kept: each call is one
        backward pass through it (Lanczos calls this a hundred times)."""
        torch, F, x0 = self.setup(problem)
        x = x0.detach().requires_grad_(True)
        with torch_errors(self.name.value), torch.enable_grad():
            output = F(x)
            (g,) = torch.autograd.grad(output, x, create_graph=True, allow_unused=True)

        def apply(t):
            if g is None or not g.requires_grad:
                return np.zeros(problem.wrt_shape, dtype=problem.dtype)
            with torch_errors(self.name.value):
                v = torch.as_tensor(t, device=x.device, dtype=x.dtype)
                (d,) = torch.autograd.grad(g, x, v, retain_graph=True, allow_unused=True)
            return np.zeros(problem.wrt_shape, dtype=problem.dtype) if d is None else to_numpy(_dense(torch, d))

        return apply, to_numpy(output.detach())

    def _second(self, torch, F, x0, v, basis):
        x = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            output = F(x)
            v = torch.ones_like(output) if v is None else v
            (g,) = torch.autograd.grad(output, x, v, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:  # linear in x: no second derivative
            return output.detach(), torch.zeros((basis.shape[0],) + tuple(x.shape), dtype=x.dtype, device=x.device)
        try:
            if basis.shape[0] == 1:  # one vector (hvp): a plain second backward pass
                (d,) = torch.autograd.grad(g, x, basis[0], allow_unused=True)
                d = None if d is None else d[None]
            else:
                (d,) = torch.autograd.grad(g, x, basis, retain_graph=True, is_grads_batched=True, allow_unused=True)
        except RuntimeError:  # code vmap cannot batch (an old-style autograd.Function): one pass per vector
            d = torch.stack([_zero_if_none(torch, torch.autograd.grad(g, x, b, retain_graph=True, allow_unused=True)[0], x)
                             for b in basis])
        d = _zero_if_none(torch, d, basis)
        return output.detach(), _dense(torch, d.detach())


class ForwardSecond(_TorchSecond, ForwardBackend):
    """Forward over reverse: ``D[k] = jvp(grad <v, F>, e_k)``, column k of the Hessian."""

    name = BackendName.FORWARD
    _basis_axis = -1  # D[k] is column k of each block

    @staticmethod
    def _orient(d):
        return d.T

    def _second(self, torch, F, x0, v, basis):
        output = F(x0)
        v = torch.ones_like(output) if v is None else v

        def unbatched(x):
            return torch.func.vjp(F, x)[1](v)[0]

        def batched(x):
            # The vjp batched over one cotangent, as jacrev (and torch.func.hessian) does.
            return torch.func.vmap(torch.func.vjp(F, x)[1])(v[None])[0][0]

        def columns(gradient):
            return torch.func.vmap(lambda b: torch.func.jvp(gradient, (x0,), (b,))[1], chunk_size=vmap_chunk(x0))(basis)

        # The unbatched vjp first: torch 2.13's forward-mode derivative of a *batched* layer_norm,
        # batch_norm (training) or instance_norm backward drops the cross terms between the
        # normalised input and the weight, so torch.func.hessian itself is wrong there (the
        # Hessian of a LayerNorm network w.r.t. 'param:*'). The batched one runs where the
        # unbatched cannot (a ZeroTensor of mse_loss on a 0-d input; huber_loss_backward has no
        # forward-mode formula); code that fails both ways raises the batched one's error.
        try:
            d = columns(unbatched)
        except (RuntimeError, NotImplementedError, UserCodeError):
            d = columns(batched)
        return output.detach(), _dense(torch, d)


def _dense(torch, d):
    """torch's efficient zero tensor (a second derivative known to be 0) as real zeros: it has no NumPy view."""
    return torch.zeros(d.shape, dtype=d.dtype, device=d.device) if d._is_zerotensor() else d


def _zero_if_none(torch, d, like):
    return torch.zeros_like(like) if d is None else d
