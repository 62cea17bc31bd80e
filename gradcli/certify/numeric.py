"""Finite differences for certify, from ``check``'s own machinery: its probes
(``checking.probe``: ``vᵀJu`` by central differences with Richardson and an
error bar, the Taylor test) and fd's adaptive entry-by-entry differences with
error bars (``backends.fd.difference_blocks``), applied to any function of the
differentiated arguments: the subject itself (first order), its gradient
(double backward), its compiled form.

``Phi`` is that function as the probe machinery sees it: ``fn(xs)`` the outputs
at the arguments ``xs`` (the others fixed), ``fn.scalar()(xs)`` the scalar
``φ = Σ_k ⟨v_k, y_k⟩`` for fixed cotangents ``v_k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backends import fd as fd_backend
from ..checking import probe
from ..checking.model import agrees_with, compare_probes, probe_scale
from ..core.compare import Comparison, compare, default_tolerance

FULL_ENTRIES = 4096  # the full Jacobian (outputs x inputs) is differenced when it has at most this many entries


class Phi(probe.TorchFunction):
    """``outputs(inputs) -> tuple`` as a function of the differentiated arguments
    (``ctx.diff``) at float64 copies of ``ctx``'s arguments; ``cotangents`` weigh the
    float outputs into φ."""

    closed_form = False  # user code: fd measures the precision it rounds to

    def __init__(self, ctx, outputs: Callable, cotangents) -> None:
        self.torch = ctx.torch
        self.ctx = ctx
        self.tensors = ctx.inputs(grad=False)
        self.names = ctx.diff
        self.x0 = {n: self.tensors[n] for n in self.names}
        self._outputs = outputs
        self.v = list(cotangents)

    def __call__(self, xs):
        return self._outputs({**self.tensors, **xs})

    def scalar(self, v=None):
        """``φ(xs) = Σ_k ⟨v_k, y_k(xs)⟩`` over the float outputs (``v`` is fixed at construction)."""
        def phi(xs):
            outs = self(xs)
            return sum((vk * outs[k]).sum() for vk, k in zip(self.v, self.ctx.float_outputs(outs)))

        return phi


@dataclass(frozen=True)
class ProbeFinding:
    """Per argument: backward's ``vᵀJu`` against fd's along each probe, and the Taylor test."""

    comparison: Comparison
    taylor: probe.Taylor | None
    reference: np.ndarray  # (K,) the backward's values
    fd: np.ndarray  # (K,)
    error: np.ndarray  # (K,) fd's error estimates

    @property
    def ok(self) -> bool:
        return self.comparison.ok and (self.taylor is None or self.taylor.ok is not False)


def make_probes(fn: Phi, count: int, seed: int) -> probe.Probes:
    """``count`` seeded sign directions per differentiated argument (``u[name]``, ``(K, *shape)``)."""
    return probe.make_probes({n: tuple(fn.x0[n].shape) for n in fn.names}, (), count, seed, np.float64)


def probe_check(fn: Phi, grads: dict[str, np.ndarray], count: int, seed: int, taylor: bool = True
                ) -> dict[str, ProbeFinding]:
    """``grads[name]`` (the claimed ``∇φ``) against fd of ``φ`` along ``count`` seeded sign
    directions per argument (:func:`compare_values`), and the Taylor test along the same directions."""
    probes = make_probes(fn, count, seed)
    return compare_values(fn, probes, probe.grads_values(grads, probes, 0.0), taylor)


def compare_values(fn: Phi, probes: probe.Probes, ref: probe.ProbeValues, taylor: bool = True
                   ) -> dict[str, ProbeFinding]:
    """Claimed directional derivatives ``ref.values[name]`` ``(K,)`` of φ against fd's, within
    ``default_tolerance(float64)`` plus 3 × fd's error bar (as ``check``'s probe mode)."""
    atol, rtol = default_tolerance(np.float64)
    got = probe.fd_values(fn, probes, agrees=agrees_with(ref, atol, rtol))
    found = {}
    for n in fn.names:
        comparison = compare_probes(n, got.values[n], ref.values[n], atol, rtol, probe_scale(ref, n),
                                    seconds=got.seconds, top=1, error=got.error[n], jump=got.jump[n])
        test = probe.taylor(fn, probes, n, ref.values[n]) if taylor and fn.x0[n].numel() else None
        found[n] = ProbeFinding(comparison, test, ref.values[n], got.values[n], got.error[n])
    return found


@dataclass(frozen=True)
class EntryFinding:
    """fd's Jacobian of the float outputs w.r.t. one argument against the claimed one, as
    ``(outputs, inputs)`` flattened: the comparison and its worst entry, split."""

    comparison: Comparison
    output: int  # which float output the worst row belongs to
    output_index: int  # the entry of that output, flattened
    input_index: tuple[int, ...]
    value: float  # fd's
    claimed: float


def entry_check(fn: Phi, name: str, claimed: np.ndarray) -> EntryFinding:
    """fd entry by entry (``difference_blocks``: adaptive steps, an error bar per entry) of
    every float output w.r.t. argument ``name`` against ``claimed`` ``(n_out, n_in)``, with ``compare``."""
    torch = fn.torch
    x0 = fn.x0[name]
    shape = tuple(x0.shape)
    sizes = []

    def one(point: np.ndarray) -> np.ndarray:
        outs = fn({name: torch.from_numpy(point.reshape(shape)).to(x0.device)})
        parts = [outs[k].detach().reshape(-1).to(torch.float64).cpu().numpy() for k in fn.ctx.float_outputs(outs)]
        sizes[:] = [p.size for p in parts]
        return np.concatenate(parts)

    def forward(points: np.ndarray) -> np.ndarray:  # (..., 1, n_in) -> (..., 1, n_out)
        with torch.no_grad():
            values = [one(p) for p in points.reshape(-1, points.shape[-1])]
        return np.stack(values).reshape(points.shape[:-2] + (1, -1))

    start = x0.detach().cpu().numpy().astype(np.float64).reshape(1, -1)
    eps, _ = fd_backend.working_eps(forward, start, float(np.finfo(np.float64).eps))  # code rounding inside
    method = "richardson"
    got = fd_backend.difference_blocks(forward, start, eps ** fd_backend.METHODS[method].base_power, method, eps,
                                       adaptive=True)
    value, error, kinks = got.value[0], got.error[0], got.nonsmooth[0]  # (n_out, n_in)
    want = np.asarray(claimed, dtype=np.float64).reshape(value.shape)
    atol, rtol = default_tolerance(np.float64)
    comparison = compare(name, value, want, atol, rtol, seconds=0.0, top=1, error=error, kinks=kinks)
    row, col = comparison.worst_index if comparison.worst_index else (0, 0)
    bounds = np.cumsum([0, *sizes])
    output = int(np.searchsorted(bounds, row, side="right") - 1)
    input_index = tuple(int(i) for i in np.unravel_index(col, shape)) if shape else ()
    return EntryFinding(comparison, output, row - int(bounds[output]), input_index, float(value[row, col]),
                        float(want[row, col]))


def full_jacobian(ctx, fn: Phi, name: str):
    """The claimed Jacobian ``(n_out, n_in)`` of the float outputs w.r.t. ``name``: one
    backward pass per output entry (the subject's own backward, basis grad_outputs)."""
    torch = ctx.torch
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    ks = ctx.float_outputs(outs)
    rows = []
    for k in ks:
        for i in range(outs[k].numel()):
            cot = [torch.zeros_like(outs[j]) for j in ks]
            cot[ks.index(k)].view(-1)[i] = 1
            grads = ctx.backward(inputs, outs, cot, retain_graph=True)
            g = grads[name]
            rows.append(np.zeros(inputs[name].numel()) if g is None else
                        g.detach().to(torch.float64).cpu().numpy().reshape(-1))
    return np.stack(rows) if rows else np.zeros((0, inputs[name].numel()))


def output_entries(ctx) -> int:
    outs = ctx.base[0]
    return sum(outs[k].numel() for k in ctx.float_outputs(outs))
