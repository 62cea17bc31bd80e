"""double-backward: the backward is itself differentiable, correctly.

With ``g(x, v) = vᵀJ(x)`` the subject's backward (``create_graph=True``) and a
seeded ``w`` shaped like the arguments, ``ψ = ⟨w, g⟩`` has two derivatives:

- ``∂ψ/∂x``, checked against fd of ``ψ`` (a backward pass per evaluation)
  along seeded probes, with the Taylor test (:mod:`.numeric`);
- ``∂ψ/∂v = J w``, checked against the first-order backward itself (which the
  gradient property checks against fd): ``⟨r, J w⟩ = ⟨Jᵀ r, w⟩`` for a seeded ``r``.

A backward that detaches (``x.detach()``, ``torch.no_grad()``, NumPy) gets the
first order right and this wrong. ``@once_differentiable`` declares it: skip.
"""

from __future__ import annotations

import numpy as np

from .numeric import Phi, probe_check
from .report import Verdict, fail, ok, skip

ONCE = "trying to differentiate twice"  # torch's DelayedError for @once_differentiable
BODY = ("X=[x.requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; "
        "torch.autograd.gradgradcheck(f,X,atol=1e-8,rtol=1e-6,fast_mode=True)")


def check(ctx) -> Verdict:
    torch = ctx.torch
    once = "backward is declared @once_differentiable: torch refuses its second derivative by design"
    if ctx.subject.once_differentiable:
        return skip(once)
    w = _weights(ctx)
    reproducer = ctx.repro.command(BODY)
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    v = [t.requires_grad_() for t in ctx.cotangents(outs)]
    # backward gets copies (not the leaves): one that writes into its grad_output is another property's finding
    g = ctx.backward(inputs, outs, [t.clone() for t in v], create_graph=True)
    psi = sum((w[n] * g[n]).sum() for n in ctx.diff if g[n] is not None)
    if not isinstance(psi, torch.Tensor) or not psi.requires_grad:
        return fail("backward's result is not differentiable: it runs under no_grad, detaches or leaves torch "
                    "(declare @once_differentiable if that is by design)", where="backward", reproducer=reproducer)
    try:
        second = torch.autograd.grad(psi, [inputs[n] for n in ctx.diff] + v, allow_unused=True)
    except RuntimeError as err:
        if ONCE in str(err):
            return skip(once.replace("backward is", "a backward inside is"))
        return fail(f"the double backward raised: {ctx.raised(err)}", where="double backward", reproducer=reproducer)
    hx = {n: torch.zeros_like(inputs[n]) if h is None else h for n, h in zip(ctx.diff, second)}
    hv = [torch.zeros_like(t) if h is None else h for t, h in zip(v, second[len(ctx.diff):])]

    # ∂ψ/∂v = J w against the first-order backward: ⟨r, J w⟩ = ⟨Jᵀ r, w⟩
    r = [torch.from_numpy(np.random.default_rng([ctx.options.seed, 11, k]).standard_normal(tuple(t.shape))).to(t)
         for k, t in enumerate(hv)]
    claimed = float(sum((a * b).sum() for a, b in zip(r, hv)))
    grads = ctx.backward(*_fresh(ctx), [t.clone() for t in r])
    want = float(sum((w[n] * grads[n]).sum() for n in ctx.diff if grads[n] is not None))
    scale = float(sum(a.abs().sum() for a in hv)) + abs(want)
    if abs(claimed - want) > 1e-8 + 1e-6 * scale:
        return fail(f"the double backward's derivative w.r.t. grad_output is wrong: ⟨r, ∂ψ/∂v⟩ = {claimed:.6g} where "
                    f"the first-order backward gives ⟨Jᵀr, w⟩ = {want:.6g} (backward detaches its grad_output?)",
                    max_error=abs(claimed - want), where="∂/∂grad_output", reproducer=reproducer)

    # ∂ψ/∂x against fd of ψ, a backward pass per evaluation
    fn = Phi(ctx, lambda xs: _gradient_at(ctx, xs), [w[n] for n in ctx.diff])
    found = probe_check(fn, {n: hx[n].detach().cpu().numpy() for n in ctx.diff}, ctx.options.probes,
                        ctx.options.seed + 1)
    for name in ctx.diff:
        f = found[name]
        if not f.ok:
            k = f.comparison.worst_index[0]
            taylor = f" (Taylor order {f.taylor.order:.2f})" if f.taylor is not None and f.taylor.order else ""
            return fail(f"the second derivative w.r.t. {name} is wrong: along probe {k}, double backward gives "
                        f"{f.reference[k]:.6g}, fd of the gradient {f.fd[k]:.6g} (±{3 * f.error[k]:.1e}){taylor}; "
                        "backward detaches something it depends on", max_error=f.comparison.max_abs,
                        where=f"∂/∂{name}, probe {k}", reproducer=reproducer)
    worst = max(found[n].comparison.max_abs for n in ctx.diff)
    return ok(f"∂(vᵀJ)/∂x = fd of the gradient (largest |difference| {worst:.1e}); ∂(vᵀJ)/∂v = the first-order "
              "backward")


def _weights(ctx) -> dict:
    torch = ctx.torch
    return {n: torch.from_numpy(np.random.default_rng([ctx.options.seed, 13, i])
                                .standard_normal(tuple(ctx.args[n].shape))).to(ctx.args[n])
            for i, n in enumerate(ctx.diff)}


def _fresh(ctx):
    inputs = ctx.inputs()
    return inputs, ctx.call(inputs)


def _gradient_at(ctx, xs) -> tuple:
    """The first-order gradient at the arguments ``xs``, as a tuple over ``ctx.diff`` (zeros for None)."""
    torch = ctx.torch
    with torch.enable_grad():  # (fd evaluates under no_grad)
        inputs = {n: (t.detach().clone().requires_grad_() if n in ctx.diff else t) for n, t in xs.items()}
        outs = ctx.call(inputs)
        grads = ctx.backward(inputs, outs)
    return tuple(torch.zeros_like(inputs[n]) if grads[n] is None else grads[n].detach() for n in ctx.diff)

