"""torch-func and batched: the subject under ``torch.func``'s transforms.

torch-func: ``grad`` (of φ), ``vjp`` (with the cotangents), ``jacrev`` (rows of
up to ``JACREV_ROWS`` seeded output entries) and ``vmap(grad)`` (over a batch
of ``BATCH`` inputs) must run and agree with the subject's own backward, one
pass at a time. They need ``setup_context``: an old-style Function
(``forward(ctx, ...)``) makes every transform raise, so its users'
``vmap(grad(...))`` fails — a fail. ``vmap`` also needs the Function to declare
a vmap rule (``generate_vmap_rule = True`` or a ``vmap`` staticmethod); one
that declares none is not refused here: that part is skipped, with the reason.

batched: ``vmap(f)`` over the batch equals ``f`` on each input.

What torch itself cannot transform is a skip with torch's reason: a custom
op's registered autograd (torch 2.13 asks for a ``setup_context`` on the
Function it generates), or a plain callable torch.func cannot trace.
"""

from __future__ import annotations

import numpy as np

from .context import where
from .report import Verdict, fail, ok, skip
from .subject import Kind

BATCH = 3  # inputs x + 0.25 j, j = 0..2
JACREV_ROWS = 16  # jacrev's rows: at most this many output entries, seeded
RANDOM = "random operation while in randomness error mode"  # vmap's refusal of code that draws random numbers
RANDOM_NOTE = "draws random numbers, which vmap refuses (the determinism row judges randomness in backward)"

# The reproducers' functional form: F of the float arguments D, returning the float outputs.
FUNCTIONAL = ("P=[i for i,x in enumerate(X) if torch.is_tensor(x) and x.is_floating_point()]; D=[X[i] for i in P]; "
              "F=lambda *d:(lambda y:tuple(t for t in (y if isinstance(y,(tuple,list)) else [y]) "
              "if t.is_floating_point()))(f(*[d[P.index(i)] if i in P else x for i,x in enumerate(X)]))")
VJP_BODY = (f"{FUNCTIONAL}; Y,pb=torch.func.vjp(F,*D); G=tuple(torch.randn_like(y) for y in Y); a=pb(G); "
            "Z=[d.detach().requires_grad_() for d in D]; b=torch.autograd.grad(F(*Z),Z,G); "
            "e=max((p-q).abs().max().item() for p,q in zip(a,b)); assert e<=1e-8+1e-6*max(q.abs().max().item() "
            "for q in b), e")
VMAP_GRAD_BODY = (f"{FUNCTIONAL}; B=[torch.stack([d+0.25*j for j in range(3)]) for d in D]; "
                  "G=tuple(torch.randn_like(y) for y in F(*D)); a=torch.func.vmap(lambda *d:torch.func.vjp(F,*d)[1](G))(*B); "
                  "b=[torch.autograd.grad(F(*Z),Z,G) for j in range(3) for Z in [[t[j].detach().requires_grad_() "
                  "for t in B]]]; e=max((a[i][j]-b[j][i]).abs().max().item() for j in range(3) for i in range(len(D))); "
                  "assert e<=1e-8+1e-6*max(q.abs().max().item() for r in b for q in r), e")


def _refusal(ctx, err: BaseException, what: str) -> Verdict:
    """A transform raised: a skip with torch's reason where torch cannot transform this kind of
    code, else a fail (a Function whose author can fix it)."""
    kind = ctx.subject.kind
    text = ctx.raised(err)
    if kind is Kind.CUSTOM_OP:
        return skip(f"torch.func cannot transform a custom op's registered autograd here: {text}")
    if kind is Kind.CALLABLE:
        return skip(f"torch.func cannot transform this code: {text}")
    body = VMAP_GRAD_BODY if what.startswith("vmap") else VJP_BODY
    return fail(f"torch.func.{what} raised: {text}", where=what, reproducer=ctx.repro.command(body))


def torch_func(ctx) -> Verdict:
    subject = ctx.subject
    if subject.kind is Kind.FUNCTION and not subject.new_style:
        return fail("the Function has no setup_context (an old-style forward(ctx, ...)): torch.func.grad, vjp, "
                    "jacrev and vmap(grad) all raise; split it into forward(*inputs) and setup_context(ctx, inputs, "
                    "output)", where="setup_context",
                    reproducer=ctx.repro.command(VJP_BODY))
    outs, want = ctx.base
    xs = [ctx.args[n] for n in ctx.diff]
    v = ctx.cotangents(outs)
    runs = {"grad": lambda: _grad(ctx, xs, v, want), "vjp": lambda: _vjp(ctx, xs, v, want),
            "jacrev": lambda: _jacrev(ctx, xs), "vmap(grad)": lambda: _vmap_grad(ctx, v)}
    done, notes = [], []
    for name, run in runs.items():
        if name == "vmap(grad)" and subject.kind is Kind.FUNCTION and not subject.vmap_rule:
            notes.append("vmap(grad) not run: the Function declares no vmap rule (generate_vmap_rule = True or a "
                         "vmap staticmethod)")
            continue
        verdict = run()  # None: it agrees; a string: why it could not run, not the subject's failure
        if isinstance(verdict, Verdict):
            return verdict
        if isinstance(verdict, str):
            notes.append(f"{name} not run: the subject {verdict}")
        else:
            done.append(name)
    return ok(f"{', '.join(done)} agree with the subject's own backward" + "".join(f"; {n}" for n in notes))


def _grad(ctx, xs, v, want) -> Verdict | None:
    try:
        got = ctx.torch.func.grad(_phi(ctx, v), argnums=tuple(range(len(xs))))(*xs)
    except Exception as err:
        return _refusal(ctx, err, "grad")
    return _against(ctx, dict(zip(ctx.diff, got)), want, "grad")


def _vjp(ctx, xs, v, want) -> Verdict | None:
    try:
        _, pullback = ctx.torch.func.vjp(lambda *d: _float_outputs(ctx, d), *xs)
        got = pullback(tuple(v))
    except Exception as err:
        return _refusal(ctx, err, "vjp")
    return _against(ctx, dict(zip(ctx.diff, got)), want, "vjp")


def _float_outputs(ctx, d) -> tuple:
    outs = ctx.call({**ctx.args, **dict(zip(ctx.diff, d))})
    return tuple(outs[k] for k in ctx.float_outputs(outs))


def _phi(ctx, v):
    def phi(*d):
        return sum((vk * y).sum() for vk, y in zip(v, _float_outputs(ctx, d)))

    return phi


def _against(ctx, got: dict, want: dict, what: str) -> Verdict | None:
    name, gap = ctx.worst(got, want)
    if gap.ok:
        return None
    body = VMAP_GRAD_BODY if what.startswith("vmap") else VJP_BODY
    return fail(f"torch.func.{what} gives another gradient than backward: off by {gap.error:.3g} at "
                f"{where(name, gap.index)}", max_error=gap.error, where=f"{what}, {where(name, gap.index)}",
                reproducer=ctx.repro.command(body))


def _jacrev(ctx, xs) -> Verdict | str | None:
    """``jacrev`` of up to JACREV_ROWS seeded output entries against one backward pass per entry
    (None: they agree; a string: why it could not run, not the subject's failure)."""
    torch = ctx.torch
    outs = ctx.base[0]
    sizes = [outs[k].numel() for k in ctx.float_outputs(outs)]
    total = sum(sizes)
    rows = np.sort(np.random.default_rng([ctx.options.seed, 17]).choice(total, min(total, JACREV_ROWS), replace=False))
    index = torch.from_numpy(rows)

    def picked(*d):
        return torch.cat([y.reshape(-1) for y in _float_outputs(ctx, d)])[index.to(d[0].device)]

    try:
        jac = torch.func.jacrev(picked, argnums=tuple(range(len(xs))))(*xs)
    except Exception as err:
        return RANDOM_NOTE if RANDOM in str(err) else _refusal(ctx, err, "jacrev")
    for r, row in enumerate(rows):
        inputs = ctx.inputs()
        outs = ctx.call(inputs)
        ks = ctx.float_outputs(outs)
        basis = torch.zeros(total, dtype=torch.float64)
        basis[row] = 1
        cot = [part.reshape(outs[k].shape).to(outs[k]) for part, k in zip(torch.split(basis, sizes), ks)]
        loop = ctx.backward(inputs, outs, cot)
        got = {n: jac[i][r] for i, n in enumerate(ctx.diff)}
        want = {n: torch.zeros_like(ctx.args[n]) if loop[n] is None else loop[n] for n in ctx.diff}
        bad = _against(ctx, got, want, f"jacrev (row {row})")
        if bad:
            return bad
    return None


def batch_of(ctx) -> dict:
    """The differentiated arguments stacked ``BATCH`` times, entry j moved by ``0.25 j``."""
    torch = ctx.torch
    return {n: torch.stack([ctx.args[n] + 0.25 * j for j in range(BATCH)]) for n in ctx.diff}


def _vmap_grad(ctx, v) -> Verdict | str | None:
    torch = ctx.torch
    stacked = batch_of(ctx)
    phi = _phi(ctx, v)
    try:
        got = torch.func.vmap(torch.func.grad(phi, argnums=tuple(range(len(ctx.diff)))))(*stacked.values())
    except Exception as err:
        return RANDOM_NOTE if RANDOM in str(err) else _refusal(ctx, err, "vmap(grad)")
    for j in range(BATCH):
        inputs = {**ctx.inputs(), **{n: stacked[n][j].clone().requires_grad_() for n in ctx.diff}}
        outs = ctx.call(inputs)
        loop = ctx.backward(inputs, outs, [t.clone() for t in v])
        want = {n: torch.zeros_like(ctx.args[n]) if loop[n] is None else loop[n] for n in ctx.diff}
        bad = _against(ctx, {n: got[i][j] for i, n in enumerate(ctx.diff)}, want, f"vmap(grad) (batch entry {j})")
        if bad:
            return bad
    return None


BATCHED_BODY = (
    "I=[0 if torch.is_tensor(x) and x.is_floating_point() else None for x in X]; "
    "B=[torch.stack([x+0.25*j for j in range(3)]) if i==0 else x for x,i in zip(X,I)]; "
    "L=lambda y:list(y) if isinstance(y,(tuple,list)) else [y]; V=L(torch.func.vmap(f,in_dims=tuple(I))(*B)); "
    "W=[L(f(*[b[j] if i==0 else b for b,i in zip(B,I)])) for j in range(3)]; "
    "e=max((V[k][j]-W[j][k]).abs().max().item() for j in range(3) for k in range(len(V)) if V[k].is_floating_point()); "
    "assert e<=1e-8, e")


def batched(ctx) -> Verdict:
    torch = ctx.torch
    subject = ctx.subject
    if subject.kind is Kind.FUNCTION and not subject.new_style:
        return skip("vmap needs setup_context, which the Function lacks (the torch-func row reports it)")
    if subject.kind is Kind.FUNCTION and not subject.vmap_rule:
        return skip("the Function declares no vmap rule (generate_vmap_rule = True or a vmap staticmethod): "
                    "torch.func.vmap refuses it")
    stacked = batch_of(ctx)
    in_dims = tuple(0 if n in ctx.diff else None for n in ctx.positional)

    def call(*positional):
        return ctx.call({**ctx.args, **dict(zip(ctx.positional, positional))})

    try:
        with torch.no_grad():
            got = torch.func.vmap(call, in_dims=in_dims)(*[stacked.get(n, ctx.args[n]) for n in ctx.positional])
    except Exception as err:
        if RANDOM in str(err):
            return skip(f"the subject {RANDOM_NOTE}")
        if subject.kind is Kind.CALLABLE:
            return skip(f"torch.func.vmap cannot batch this code: {ctx.raised(err)}")
        return fail(f"vmap over a batch of {BATCH} raised: {ctx.raised(err)}", where="vmap",
                    reproducer=ctx.repro.command(BATCHED_BODY))
    got = got if isinstance(got, tuple) else (got,)
    for j in range(BATCH):
        with torch.no_grad():
            loop = ctx.call({**ctx.args, **{n: stacked[n][j] for n in ctx.diff}})
        for k in ctx.float_outputs(loop):
            gap = ctx.gap(got[k][j], loop[k])
            if not gap.ok:
                return fail(f"vmap's output {k} for batch entry {j} differs from f on that entry alone by "
                            f"{gap.error:.3g} at {where(f'output {k}', gap.index)}", max_error=gap.error,
                            where=f"batch entry {j}, {where(f'output {k}', gap.index)}",
                            reproducer=ctx.repro.command(BATCHED_BODY))
    return ok(f"vmap over a batch of {BATCH} equals the loop over it")
