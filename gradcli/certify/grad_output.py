"""What backward does with its grad_output: any memory layout works
(``non-contiguous``), it is left as it came (``grad-output-untouched``), zero
gives zero and an undefined one does not crash (``zero-grad-output``).

A backward that reads grad_output's memory as if it were contiguous (a Triton
kernel given ``g.data_ptr()``, ``as_strided``, ``view`` after a transpose
elsewhere) gets the right answer from ``gradcheck``, whose grad_outputs are
always contiguous; here each float output's grad_output comes transposed,
expanded (stride 0), sliced (stride 2) and, for 4-D outputs, channels-last,
and the gradient must equal the one from a contiguous copy of the same values.
"""

from __future__ import annotations

from .context import where
from .repro import HEAD
from .report import Verdict, fail, ok, skip

# Each layout: how certify builds it from a contiguous v, and the same as Python for the reproducer.
LAYOUTS = {
    "transposed": (lambda torch, v: v.mT.contiguous().mT, "torch.randn_like(Y[{k}]).mT.contiguous().mT", 2),
    "expanded (stride 0)": (lambda torch, v: v[..., :1].expand(v.shape),
                            "torch.randn_like(Y[{k}])[...,:1].expand(Y[{k}].shape)", 1),
    "sliced (stride 2)": (lambda torch, v: _sliced(torch, v),
                          "torch.randn(*Y[{k}].shape[:-1],2*Y[{k}].shape[-1],dtype=Y[{k}].dtype)[...,::2]", 1),
    "channels-last": (lambda torch, v: v.contiguous(memory_format=torch.channels_last),
                      "torch.randn_like(Y[{k}]).contiguous(memory_format=torch.channels_last)", 4),
}


OVERLAP = "more than one element of the written-to tensor"  # torch's refusal to write into an expanded tensor


def _sliced(torch, v):
    wide = torch.zeros(v.shape[:-1] + (2 * v.shape[-1],), dtype=v.dtype, device=v.device)
    wide[..., ::2] = v
    return wide[..., ::2]


def _applies(label: str, ndim: int) -> bool:
    need = LAYOUTS[label][2]
    return ndim == 4 if label == "channels-last" else ndim >= need


def noncontiguous(ctx) -> Verdict:
    torch = ctx.torch
    outs = ctx.base[0]
    ks = ctx.float_outputs(outs)
    tried = []
    for position, k in enumerate(ks):
        for label, (make, text, _) in LAYOUTS.items():
            if not _applies(label, outs[k].ndim) or outs[k].numel() == 0:
                continue
            tried.append(label)
            strided = make(torch, ctx.cotangents(outs)[position])
            plain = strided.contiguous().clone()  # the same values, kept apart (backward may write into strided)
            version = strided._version
            got = _gradient_with(ctx, position, strided)
            if strided._version != version or isinstance(got, BaseException) and OVERLAP in str(got):
                return skip("backward writes into its grad_output (grad-output-untouched reports it), so its "
                            "layouts cannot be compared")
            if isinstance(got, BaseException):
                return fail(f"backward raised with a {label} grad_output for output {k}: {ctx.raised(got)}",
                            where=f"output {k}, {label} grad_output",
                            reproducer=_reproducer(ctx, position, text, ctx.diff[0]))
            want = _gradient_with(ctx, position, plain)
            name, gap = ctx.worst(got, want)
            if not gap.ok:
                return fail(f"a {label} grad_output for output {k} (strides {tuple(strided.stride())}) gives another "
                            f"gradient than a contiguous copy of it: off by {gap.error:.3g} at {where(name, gap.index)}",
                            max_error=gap.error, where=f"output {k}, {label} grad_output, {where(name, gap.index)}",
                            reproducer=_reproducer(ctx, position, text, name))
    if not tried:
        return skip("every output is a scalar or empty: a grad_output has no layout to vary")
    return ok(f"the same gradient with {', '.join(dict.fromkeys(tried))} grad_outputs as with contiguous ones")


def _gradient_with(ctx, position: int, v):
    """The gradient with ``v`` as float output ``position``'s grad_output (the others contiguous), or the exception."""
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    cot = ctx.cotangents(outs)
    cot[position] = v
    try:
        return ctx.backward(inputs, outs, cot)
    except Exception as err:  # the backward's own failure with this layout: the finding
        return err


def _reproducer(ctx, k: int, layout: str, name: str) -> str:
    i = ctx.diff.index(name)
    return ctx.repro.command(
        f"{HEAD}; N={layout.format(k=k)}; a=torch.autograd.grad(Y[{k}],D[{i}],N,retain_graph=True)[0]; "
        f"b=torch.autograd.grad(Y[{k}],D[{i}],N.contiguous())[0]; e=(a-b).abs().max().item(); "
        f"assert e<=1e-8+1e-6*b.abs().max().item(), e")


def untouched(ctx) -> Verdict:
    """Each grad_output keeps its values and its version counter through backward."""
    torch = ctx.torch
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    cot = ctx.cotangents(outs)
    kept = [v.clone() for v in cot]
    versions = [v._version for v in cot]
    ctx.backward(inputs, outs, cot)
    ks = ctx.float_outputs(outs)
    body = (f"{HEAD}; G=[torch.randn_like(y) for y in Y]; C=[g.clone() for g in G]; "
            "torch.autograd.grad(Y,D,G,allow_unused=True); e=max((g-c).abs().max().item() for g,c in zip(G,C)); "
            "assert e==0, e")
    for position, (v, before, version) in enumerate(zip(cot, kept, versions)):
        k = ks[position]
        if not torch.equal(v.nan_to_num(), before.nan_to_num()):
            gap = ctx.gap(v, before)
            return fail(f"backward wrote into its grad_output for output {k} (in place): changed by {gap.error:.3g} "
                        f"at {where(f'grad_output {k}', gap.index)}; compute a new tensor instead (g * ..., not "
                        "g.mul_(...))", max_error=gap.error, where=where(f"output {k} grad_output", gap.index),
                        reproducer=ctx.repro.command(body))
        if v._version != version:
            return fail(f"backward wrote into its grad_output for output {k} in place (its version counter moved "
                        f"from {version} to {v._version}), though the values came out the same", max_error=0.0,
                        where=f"output {k} grad_output", reproducer=ctx.repro.command(body))
    return ok("backward leaves every grad_output as it came (values and version counter)")


def zero_and_undefined(ctx) -> Verdict:
    torch = ctx.torch
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    zeros = [torch.zeros_like(outs[k]) for k in ctx.float_outputs(outs)]
    grads = ctx.backward(inputs, outs, zeros)
    for name in ctx.diff:
        g = grads[name]
        if g is not None and not bool((g == 0).all()):
            gap = ctx.gap(g, torch.zeros_like(g))
            body = (f"{HEAD}; g=torch.autograd.grad(Y,D,[torch.zeros_like(y) for y in Y],allow_unused=True); "
                    "e=max(0 if t is None else t.abs().max().item() for t in g); assert e==0, e")
            return fail(f"a zero grad_output gives a nonzero gradient: |{name}.grad| up to {gap.error:.3g}, at "
                        f"{where(name, gap.index)}",
                        max_error=gap.error, where=where(name, gap.index), reproducer=ctx.repro.command(body))
    ks = ctx.float_outputs(outs)
    if len(ks) < 2:
        return ok("a zero grad_output gives a zero gradient (one output: none is left undefined)")
    for position, k in enumerate(ks):
        inputs = ctx.inputs()
        outs = ctx.call(inputs)
        cot = ctx.cotangents(outs)
        wrt = [inputs[n] for n in ctx.diff]
        body = (f"{HEAD}; torch.autograd.grad([Y[{position}]],D,[torch.randn_like(Y[{position}])],allow_unused=True)")
        try:  # only output k gets a gradient: the others' grad_outputs are undefined (None in backward)
            alone = torch.autograd.grad([outs[k]], wrt, [cot[position]], allow_unused=True)
        except Exception as err:
            return fail(f"backward raised when only output {k} has a gradient (the other grad_outputs undefined, "
                        f"None): {ctx.raised(err)}", where=f"output {k} alone", reproducer=ctx.repro.command(body))
        padded = [v if j == position else torch.zeros_like(v) for j, v in enumerate(cot)]
        want = _gradient_zero_padded(ctx, padded)
        name, gap = ctx.worst(dict(zip(ctx.diff, alone)), want)
        if not gap.ok:
            return fail(f"with only output {k}'s gradient defined, the gradient differs from the one with zero "
                        f"grad_outputs for the others by {gap.error:.3g} at {where(name, gap.index)}",
                        max_error=gap.error, where=f"output {k} alone, {where(name, gap.index)}",
                        reproducer=ctx.repro.command(body))
    return ok(f"a zero grad_output gives a zero gradient; each of the {len(ks)} outputs alone (the others' "
              "grad_outputs undefined) gives the gradient zeros would")


def _gradient_zero_padded(ctx, cot):
    torch = ctx.torch
    inputs = ctx.inputs()
    outs = ctx.call(inputs)
    grads = ctx.backward(inputs, outs, cot)
    return {n: torch.zeros_like(inputs[n]) if g is None else g for n, g in grads.items()}
