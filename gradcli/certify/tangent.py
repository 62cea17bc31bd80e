"""forward-mode: the Function's ``jvp`` against finite differences.

Along each seeded probe ``u`` of each argument, forward mode's ``J u``
(``torch.autograd.forward_ad``: dual numbers, which old- and new-style
Functions both support) weighted by the cotangents, ``Σ_k ⟨v_k, J_k u⟩``, must
match fd's derivative of φ along ``u`` (:func:`.numeric.compare_values`).
A Function without ``jvp`` has no forward-mode formula: skip. So has a custom
op (``register_autograd`` registers reverse mode only; torch 2.13's forward
mode returns a zero tangent through one, silently).
"""

from __future__ import annotations

import numpy as np

from ..checking import probe
from .numeric import Phi, compare_values, make_probes
from .report import Verdict, fail, ok, skip
from .subject import Kind


def check(ctx) -> Verdict:
    torch = ctx.torch
    kind = ctx.subject.kind
    if kind is Kind.FUNCTION and not ctx.subject.defines_jvp:
        return skip("no forward-mode formula: the Function defines no jvp")
    if kind is Kind.CUSTOM_OP:
        return skip("no forward-mode formula: torch.library's register_autograd registers reverse mode only "
                    f"(torch {torch.__version__.split('+')[0]})")
    outs = ctx.base[0]
    fn = Phi(ctx, ctx.call, ctx.cotangents(outs))
    probes = make_probes(fn, ctx.options.probes, ctx.options.seed + 2)
    try:
        values = {n: np.array([_directional(ctx, fn, n, u) for u in probes.u[n]]) for n in ctx.diff}
    except (RuntimeError, NotImplementedError) as err:
        if kind is Kind.CALLABLE:
            return skip(f"torch's forward mode cannot run this code: {ctx.raised(err)}")
        return fail(f"forward mode raised: {ctx.raised(err)}", where="jvp", reproducer=_reproducer(ctx, ctx.diff[0], 0))
    found = compare_values(fn, probes, probe.ProbeValues(values=values, seconds=0.0), taylor=False)
    for name in ctx.diff:
        f = found[name]
        if not f.ok:
            k = f.comparison.worst_index[0]
            return fail(f"jvp along probe {k} of {name}: forward mode gives {f.reference[k]:.6g}, fd "
                        f"{f.fd[k]:.6g} (±{3 * f.error[k]:.1e})", max_error=f.comparison.max_abs,
                        where=f"{name}, probe {k}", reproducer=_reproducer(ctx, name, 0))
    worst = max(found[n].comparison.max_abs for n in ctx.diff)
    return ok(f"jvp agrees with fd along {ctx.options.probes} probes per argument (largest |difference| {worst:.1e})")


def _directional(ctx, fn: Phi, name: str, u: np.ndarray) -> float:
    """``Σ_k ⟨v_k, J_k u⟩`` by dual numbers, ``u`` moving argument ``name`` only."""
    import torch.autograd.forward_ad as fwad

    inputs = ctx.inputs(grad=False)
    with fwad.dual_level():
        inputs[name] = fwad.make_dual(inputs[name], fn.tensor(u))
        outs = ctx.call(inputs)
        ks = ctx.float_outputs(outs)
        total = 0.0
        for v, k in zip(fn.v, ks):
            tangent = fwad.unpack_dual(outs[k]).tangent
            total += 0.0 if tangent is None else float((v * tangent).sum())
    return total


def _reproducer(ctx, name: str, k: int) -> str:
    i = ctx.positional.index(name)
    return ctx.repro.command(
        f"import torch.autograd.forward_ad as fw; u=torch.randn_like(X[{i}]); "
        "F=lambda Z:(lambda y:list(y) if isinstance(y,(tuple,list)) else [y])(f(*Z)); "
        f"fw.enter_dual_level(); Z=list(X); Z[{i}]=fw.make_dual(X[{i}],u); t=fw.unpack_dual(F(Z)[{k}]).tangent; "
        f"fw.exit_dual_level(); P=list(X); P[{i}]=X[{i}]+1e-6*u; M=list(X); M[{i}]=X[{i}]-1e-6*u; "
        f"d=(F(P)[{k}]-F(M)[{k}])/2e-6; e=(t-d).abs().max().item(); assert e<=1e-6*(1+d.abs().max().item()), e")
