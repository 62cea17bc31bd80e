"""determinism: ``--runs`` backward passes give the same gradient.

Every run reseeds torch's generator with ``--seed`` before forward (a dropout
mask repeats), then with ``--seed + 1 + run`` before backward: randomness in
backward alone (noise, a random summation order standing in for atomic adds)
shows as a difference. Identical to the bit unless ``--nondet-tol`` allows more.
"""

from __future__ import annotations

from .context import where
from .repro import HEAD
from .report import Verdict, fail, ok, skip


def check(ctx) -> Verdict:
    torch = ctx.torch
    runs, tol, seed = ctx.options.runs, ctx.options.nondet_tol, ctx.options.seed
    if runs < 2:
        return skip(f"--runs {runs}: one backward pass has nothing to be compared with")
    grads = []
    with torch.random.fork_rng(devices=[]):  # the caller's generator state is left as it was
        for run in range(runs):
            torch.manual_seed(seed)
            inputs = ctx.inputs()
            outs = ctx.call(inputs)
            torch.manual_seed(seed + 1 + run)
            grads.append(ctx.backward(inputs, outs))
    for run in range(1, runs):
        for name in ctx.diff:
            a, b = grads[0][name], grads[run][name]
            if a is None and b is None:
                continue
            gap = ctx.gap(b, a)
            if gap.error > tol:
                body = (f"{HEAD}; G=[torch.randn_like(y) for y in Y]; L=lambda y:[t for t in (y if isinstance(y,"
                        "(tuple,list)) else [y]) if t.is_floating_point()]; "
                        f"R=[(torch.manual_seed({seed}),Z:=L(f(*X)),torch.manual_seed(r),torch.autograd.grad(Z,D,G))[3] "
                        f"for r in range(1,{runs + 1})]; e=max((p-q).abs().max().item() for g in R[1:] "
                        f"for p,q in zip(g,R[0])); assert e<={tol!r}, e")
                return fail(f"backward pass {run + 1} of {runs} differs from the first by {gap.error:.3g} at "
                            f"{where(name, gap.index)} (--nondet-tol {tol:g})", max_error=gap.error,
                            where=f"run {run + 1}, {where(name, gap.index)}", reproducer=ctx.repro.command(body))
    return ok(f"{runs} backward passes give " + ("identical gradients" if tol == 0 else f"gradients within {tol:g}"))
