"""shapes: 0-element, 1-element and scalar arguments, where the op accepts them.

Each variant shrinks every float argument alike (an empty batch ``x[:0]``, one
entry ``x[:1, :1, ...]``, a 0-d scalar ``x[0, 0, ...]``). A variant whose
forward raises is one the op rejects: not a failure, and said. One whose
forward runs must run its backward too and give the right gradient (the
gradient property at the variant); an empty one must give empty gradients.
"""

from __future__ import annotations

from . import gradient
from .repro import HEAD
from .report import Status, Verdict, fail, ok, skip

VARIANTS = {  # name: (how certify shrinks a float argument, the same in the reproducer)
    "0-element": (lambda x: x[:0] if x.ndim else None, "x[:0].clone() if x.ndim else x"),
    "1-element": (lambda x: x[tuple(slice(0, 1) for _ in x.shape)], "x[tuple(slice(0,1) for _ in x.shape)].clone()"),
    "scalar": (lambda x: x.reshape(-1)[0] if x.numel() else None, "x.reshape(-1)[0].clone()"),
}


def check(ctx) -> Verdict:
    accepted, rejected = [], []
    # A gradient wrong at the given shape is the gradient row's finding: here, only whether the small ones run.
    judge_values = gradient.check(ctx).status is not Status.FAIL
    for label, (shrink, code) in VARIANTS.items():
        shrunk = {n: shrink(ctx.args[n]) for n in ctx.diff}
        if any(v is None for v in shrunk.values()) or all(tuple(v.shape) == tuple(ctx.args[n].shape)
                                                          for n, v in shrunk.items()):
            continue  # the arguments already have that shape (or cannot take it): nothing new to try
        sub = ctx.with_args({n: v.clone() for n, v in shrunk.items()})
        shrink_code = (f"X=[{code} if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; ")
        inputs = sub.inputs()
        try:
            outs = sub.call(inputs)
        except Exception as err:
            rejected.append(f"{label} ({ctx.raised(err)[:120]})")
            continue
        try:
            grads = sub.backward(inputs, outs)
        except Exception as err:
            body = f"{shrink_code}{HEAD}; torch.autograd.grad(Y,D,[torch.randn_like(y) for y in Y],allow_unused=True)"
            return fail(f"{label} arguments: forward accepts them, backward raises: {ctx.raised(err)}",
                        where=f"{label} arguments", reproducer=ctx.repro.command(body))
        if label == "0-element":
            wrong = [n for n in ctx.diff if grads[n] is not None and tuple(grads[n].shape) != tuple(inputs[n].shape)]
            if wrong:
                return fail(f"{label} arguments: the gradient of {wrong[0]} has shape {tuple(grads[wrong[0]].shape)}, "
                            f"not {tuple(inputs[wrong[0]].shape)}", where=f"{label} {wrong[0]}")
        elif judge_values:
            verdict = gradient.check(sub)
            if verdict.status is Status.FAIL:
                body = shrink_code + gradient.BODY
                return fail(f"{label} arguments: {verdict.detail}", max_error=verdict.max_error,
                            where=f"{label} arguments, {verdict.where}", reproducer=ctx.repro.command(body))
        accepted.append(label)
    if not accepted:
        if not rejected:
            return skip("the arguments are already scalars: no smaller shape to try")
        return skip(f"the op rejects every smaller shape: {'; '.join(rejected)}")
    text = f"{', '.join(accepted)} arguments: forward, backward" + (" and the gradient right" if judge_values else
                                                                     " run (the gradient row fails: values not judged)")
    return ok(text + (f"; rejected by the op: {'; '.join(rejected)}" if rejected else ""))
