"""gradient-metadata: each gradient the backward returns has its input's shape, dtype and device.

Autograd's engine casts a gradient of the wrong dtype to the input's and sums a
broadcast-shaped one down (``validate_outputs``), so ``x.grad`` always looks
right: a float64 input whose backward computes in float32 silently loses half
its digits. The backward's own return values are read by calling the
Function's node directly (``y.grad_fn.apply(*grad_outputs)``), at float64 and
float32 inputs.
"""

from __future__ import annotations

from .context import first_line
from .repro import HEAD
from .report import Verdict, fail, ok, skip
from .subject import Kind

DTYPES = ("float64", "float32")


def check(ctx) -> Verdict:
    torch = ctx.torch
    if ctx.subject.kind is Kind.CALLABLE:
        return skip("a plain callable has no backward of its own: autograd's engine gives each gradient its "
                    "input's metadata")
    checked = []
    for dtype in DTYPES:
        inputs = ctx.inputs(getattr(torch, dtype))
        try:
            outs = ctx.call(inputs)
        except Exception:
            if dtype == DTYPES[0]:
                raise
            continue  # the subject does not take float32 arguments (the dtypes row says so)
        checked.append(dtype)
        node = next((y.grad_fn for y in outs if isinstance(y, torch.Tensor) and y.grad_fn is not None), None)
        if node is None:
            return skip("no output requires grad: there is no backward to call")
        cot = iter(ctx.cotangents(outs))
        grads = [next(cot) if k in ctx.float_outputs(outs) else None for k in range(len(outs))]
        try:
            raw = node.apply(*grads)
        except Exception as err:
            return skip(f"the backward node cannot be called on its own here ({first_line(err)}): the engine's "
                        "checks apply")
        raw = raw if isinstance(raw, tuple) else (raw,)
        positional = [n for n in ctx.positional]
        if len(raw) < len(positional):
            return fail(f"backward returned {len(raw)} gradients for {len(positional)} inputs",
                        where="the number of gradients")
        for position, name in enumerate(positional):
            g, x = raw[position], inputs[name]
            if name not in ctx.diff or g is None:
                continue
            wrong = [f"{what} {got} (its input's: {want})" for what, got, want in
                     (("shape", tuple(g.shape), tuple(x.shape)), ("dtype", g.dtype, x.dtype),
                      ("device", g.device, x.device)) if got != want]
            if wrong:
                cast = "X=[x.float() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; " \
                    if dtype == "float32" else ""
                body = (f"{cast}{HEAD}; g=Y[0].grad_fn.apply(*[torch.randn_like(y) for y in Y]); "
                        "g=g if isinstance(g,tuple) else (g,); bad=[(i,t.dtype,tuple(t.shape)) for i,t in enumerate(g) "
                        "if t is not None and torch.is_tensor(X[i]) and (t.dtype,t.shape,t.device)!=(X[i].dtype,"
                        "X[i].shape,X[i].device)]; assert not bad, bad")
                return fail(f"backward returns {name}'s gradient with {', '.join(wrong)} at {dtype} inputs; autograd "
                            "casts or sums it back silently (losing precision or hiding a missing reduction)",
                            where=f"{name}'s gradient, {dtype} inputs", reproducer=ctx.repro.command(body))
    return ok(f"each gradient has its input's shape, dtype and device ({', '.join(checked)} inputs)")
