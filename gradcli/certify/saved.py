"""inputs-untouched: forward and backward leave the arguments alone, and the
tensors backward needs are saved honestly.

An argument (or an output) modified in place between forward and backward must
either make backward raise — what ``ctx.save_for_backward`` gives, through the
tensors' version counters — or leave the gradient right (a Function that needs
no such tensor, or keeps its own copy). A Function that keeps an input as
``ctx.x = x`` passes gradcheck and gives a silently wrong gradient after
``x.add_(...)``: that is this property's failure.
"""

from __future__ import annotations

import numpy as np

from .context import where
from .repro import HEAD
from .report import Verdict, fail, ok

EDITED = ("inplace", "in-place")  # torch's refusals after an edit: the version counter, a view of a custom Function's output


def check(ctx) -> Verdict:
    changed = _inputs_changed(ctx)
    if changed is not None:
        return changed
    outs, want = ctx.base
    for name in ctx.diff:
        got = _after_edit(ctx, "argument", name)
        if got is not None:
            return got
    for k in ctx.float_outputs(outs):
        if outs[k].numel() and not any(_aliases(outs[k], ctx.args[n]) for n in ctx.diff):
            got = _after_edit(ctx, "output", k)
            if got is not None:
                return got
    return ok("arguments left alone; an argument or output edited in place after forward makes backward raise "
              "or leaves the gradient right")


def _aliases(a, b) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _inputs_changed(ctx) -> Verdict | None:
    """Forward, then backward: does either write into an argument?"""
    torch = ctx.torch
    inputs = ctx.inputs()
    kept = {n: inputs[n].detach().clone() for n in ctx.diff}
    body = ("C=[x.clone() for x in X if torch.is_tensor(x) and x.is_floating_point()]; "
            f"{HEAD}; torch.autograd.grad(Y,D,[torch.randn_like(y) for y in Y],allow_unused=True); "
            "e=max((x-c).abs().max().item() for x,c in zip(D,C)); assert e==0, e")
    outs = ctx.call(inputs)
    for stage in ("forward", "backward"):
        if stage == "backward":
            ctx.backward(inputs, outs)
        for name in ctx.diff:
            now = inputs[name].detach()
            if not torch.equal(now.nan_to_num(), kept[name].nan_to_num()):
                gap = ctx.gap(now, kept[name])
                return fail(f"{stage} modified the argument {name} in place (by up to {gap.error:.3g}); work on a copy",
                            max_error=gap.error, where=f"{stage}, {where(name, gap.index)}",
                            reproducer=ctx.repro.command(body))
    return None


def _edit(torch, t, seed: int):
    """Add a seeded normal perturbation half the size of ``t``'s entries, without autograd seeing it."""
    rng = np.random.default_rng([seed, 7])
    scale = float(t.detach().abs().pow(2).mean().sqrt()) if t.numel() else 0.0
    delta = torch.from_numpy(rng.standard_normal(tuple(t.shape))).to(t) * 0.5 * (scale or 1.0)
    with torch.no_grad():
        t.add_(delta)


def _after_edit(ctx, what: str, which) -> Verdict | None:
    """Forward, edit argument ``which`` (or float output number ``which``) in place, backward."""
    torch = ctx.torch
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    cot = ctx.cotangents(outs)
    _edit(torch, inputs[which] if what == "argument" else outs[which], ctx.options.seed)
    try:
        got = ctx.backward(inputs, outs, cot)
    except RuntimeError as err:
        if any(word in str(err) for word in EDITED):
            return None  # torch caught the edit (the version counter): honest
        return fail(f"after an in-place edit of {what} {which} following forward, backward raised: {ctx.raised(err)}",
                    where=f"{what} {which} edited after forward")
    name, gap = ctx.worst(got, ctx.base[1])
    if gap.ok:
        return None
    target = f"D[{ctx.diff.index(which)}]" if what == "argument" else f"Y[{ctx.float_outputs(outs).index(which)}]"
    body = (f"{HEAD}; G=[torch.randn_like(y) for y in Y]; a=torch.autograd.grad(Y,D,G,retain_graph=True); "
            f"torch.set_grad_enabled(False); {target}.add_(0.5*{target}.abs().mean()+0.5); "
            "torch.set_grad_enabled(True); "
            "exec(\"try: b=torch.autograd.grad(Y,D,G)\\nexcept RuntimeError: b=a\"); "
            "e=max((p-q).abs().max().item() for p,q in zip(a,b)); assert e<=1e-8, e")
    kind = "input" if what == "argument" else "output"
    return fail(f"the {what} {which} edited in place after forward changed the gradient by {gap.error:.3g} at "
                f"{where(name, gap.index)}, without an error: backward reads the {kind} from outside "
                f"save_for_backward (kept as ctx.{which if what == 'argument' else 'y'} = ...?); save it with "
                "ctx.save_for_backward so the version counter catches such an edit",
                max_error=gap.error, where=f"{what} {which} edited after forward, {where(name, gap.index)}",
                reproducer=ctx.repro.command(body))
