"""dtypes and autocast: the subject's error in low precision, measured against a
"measuring stick" — the error that a reference makes in the same dtype — never
against a fixed tolerance.

For a dtype ``d``: the arguments are rounded to ``d`` (``x_d``); the truth is
the subject itself in float64 at ``x_d`` (its float64 derivative is what the
gradient property checks against fd); the subject's error is ``e = max |op_d -
truth|`` per output and per gradient (grad_outputs rounded to ``d`` too). The
stick ``s`` is the same measure for the reference, ``max |ref_d - ref_64|``;
the reference is ``--reference`` (the same function in plain torch ops), else
torch's own composite form of the subject (``Subject.composite``: the Function's
forward, or the custom op's Python implementation, differentiated by
autograd), used only where it agrees with the subject in float64. A tensor
passes when ``e <= FACTOR · max(s, eps_d · max|truth|)`` (the second term: one
rounding of the largest value, what any computation in ``d`` makes). A value
that is NaN or infinite where the truth, rounded to ``d``, is finite fails
whatever the stick says (``exp(x)/(1+exp(x))`` at x = 100 in float32). Each
dtype runs at the arguments and again at the arguments scaled up so that the
largest entry is ``STRESS`` (100): where overflow shows even when the given
arguments are small (``exp`` overflows float32 past 88.7).

autocast: float32 arguments under ``torch.autocast(device, bfloat16)``
(backward outside it, as a training step runs), judged the same way with the
reference under the same autocast and bfloat16's eps. Where the subject
already fails in plain float32 (non-finite values) that is ``dtypes:float32``'s
finding, and autocast is skipped with that reason.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace

import numpy as np

from .context import first_line, where
from .report import Verdict, fail, ok, skip

# "A small factor": a correct kernel rounds in another order than the reference (bfloat16 outputs of
# several chained roundings against torch's fused ones, float32 sums in another order) and lands a few
# times the stick away; a precision bug (a cancellation, an internal cast down, an overflow) lands
# hundreds to millions of times away. Measured on the clean and planted cases of tests/certify_cases.
FACTOR = 16
STRESS = 100.0  # dtypes also run with the arguments scaled up to this largest |entry|: where overflow shows (exp(88.7))


class Rejected(Exception):
    """The forward raised at these arguments: the subject does not take that dtype."""

    def __init__(self, err: BaseException) -> None:
        super().__init__(first_line(err))


@dataclass(frozen=True)
class Measured:
    """Outputs and gradient of one function at one dtype: float tensors as float64 on the CPU."""

    outputs: dict  # float output k -> tensor
    grads: dict  # argument name -> tensor


def _measure(ctx, dtype, fn=None, cot64=None, autocast=None) -> Measured:
    """``fn`` (default the subject) at the arguments rounded to ``dtype`` (float64 truth: ``dtype``
    float64 at arguments already rounded, see callers), the grad_outputs ``cot64`` cast to each
    output's dtype, under ``autocast`` (a dtype) if given."""
    torch = ctx.torch
    inputs = ctx.inputs(dtype)
    guard = torch.autocast(device_type=torch.device(ctx.options.device).type, dtype=autocast) if autocast \
        else contextlib.nullcontext()
    try:
        with guard:
            outs = ctx.call(inputs, fn)
    except Exception as err:
        raise Rejected(err) from err
    ks = ctx.float_outputs(outs)
    cot = [c.to(dtype=outs[k].dtype, copy=True) for c, k in zip(cot64, ks)]
    grads = ctx.backward(inputs, outs, cot)
    return Measured({k: outs[k].detach().to(torch.float64).cpu() for k in ks},
                    {n: (torch.zeros_like(inputs[n]) if g is None else g).detach().to(torch.float64).cpu()
                     for n, g in grads.items()})


def _rounded(ctx, dtype, scale: float = 1.0):
    """The context at its float arguments times ``scale``, rounded to ``dtype`` and held in float64:
    the subject in ``dtype`` and the truth in float64 both run at exactly these values."""
    torch = ctx.torch
    return ctx.with_args({n: (ctx.args[n] * scale).to(dtype).to(torch.float64) for n in ctx.diff})


def _cotangents64(ctx, dtype):
    """Seeded grad_outputs rounded to ``dtype``, kept in float64 (every side gets the same values)."""
    torch = ctx.torch
    return [c.to(dtype).to(torch.float64) for c in ctx.cotangents(ctx.base[0])]


def _reference(ctx):
    """``(callable, label)`` of the measuring stick's reference, or ``(None, reason)``."""
    if ctx.reference is not None:
        return ctx.reference.call, f"the reference {ctx.reference.name}"
    if "stick" not in ctx.cache:
        ctx.cache["stick"] = _composite(ctx)
    return ctx.cache["stick"]


def _composite(ctx):
    composite = ctx.subject.composite()
    if composite is None:
        return None, "no reference: give --reference"
    label = "torch's composite form: the forward through autograd"
    cot = _cotangents64(ctx, ctx.torch.float64)
    try:
        mine, theirs = _measure(ctx, ctx.torch.float64, None, cot), _measure(ctx, ctx.torch.float64, composite, cot)
    except Exception as err:
        return None, f"no reference: torch's composite form of the subject cannot run ({ctx.raised(err)})"
    pairs = [(mine.outputs[k], theirs.outputs.get(k)) for k in mine.outputs] + \
        [(mine.grads[n], theirs.grads.get(n)) for n in mine.grads]
    if any(b is None or not ctx.gap(b, a).ok for a, b in pairs):
        return None, ("no reference: torch's composite form of the subject differs from it in float64 (not plain "
                      "torch ops); give --reference")
    return composite, label


def _judge(ctx, label: str, got: Measured, truth: Measured, ref: Measured | None, ref_truth: Measured | None,
           low, setting: str, reproduce):
    """The first tensor whose error exceeds FACTOR × max(stick, eps max|truth|) (or that is non-finite
    where the truth rounded to ``low`` is finite), as a fail; else None. Also returns the largest
    ratio error / (FACTOR × allowed) seen."""
    torch = ctx.torch
    eps = float(torch.finfo(low).eps)
    items = [(f"output {k}", f"output {k}", ("output", k), got.outputs[k], truth.outputs[k],
              ref and ref.outputs.get(k), ref_truth and ref_truth.outputs.get(k)) for k in truth.outputs]
    items += [(f"the gradient w.r.t. {n}", n, ("grad", n), got.grads[n], truth.grads[n], ref and ref.grads.get(n),
               ref_truth and ref_truth.grads.get(n)) for n in truth.grads]
    worst = 0.0
    for what, entry, key, a, t, r, rt in items:
        if a.numel() == 0:
            continue
        broken = ~torch.isfinite(a) & torch.isfinite(t.to(low))
        if broken.any():
            index = tuple(int(i) for i in np.argwhere(broken.numpy())[0])
            at = f" ({entry} = {ctx.args[entry][index].item():.6g})" if key[0] == "grad" else ""
            return fail(f"{setting}: {what} is {a[index].item()} at {where(entry, index)}{at}, where the float64 "
                        f"value is {t[index].item():.6g}", max_error=math.inf,
                        where=f"{setting}, {where(entry, index)}", reproducer=reproduce(key)), math.inf
        gap = ctx.gap(a, t)
        scale = float(t[torch.isfinite(t)].abs().max()) if torch.isfinite(t).any() else 0.0
        stick = ctx.gap(r, rt).error if r is not None and rt is not None else 0.0
        stick = stick if math.isfinite(stick) else 0.0
        allowed = max(stick, eps * scale)
        ratio = gap.error / allowed if allowed > 0 else (math.inf if gap.error > 0 else 0.0)
        if ratio > FACTOR:
            stick_text = (f"the larger of {label}'s error, {stick:.3g}, and one rounding of the largest value, "
                          f"{eps * scale:.3g}" if r is not None else f"one rounding of the largest value; {label}")
            return fail(f"{setting}: {what} is off by {gap.error:.3g} at {where(entry, gap.index)}: {ratio:.3g} times "
                        f"the measuring stick {allowed:.3g} ({stick_text}); at most {FACTOR}× is allowed",
                        max_error=gap.error, where=f"{setting}, {where(entry, gap.index)}",
                        reproducer=reproduce(key)), ratio
        worst = max(worst, ratio)
    return None, worst


def dtypes(ctx):
    torch = ctx.torch
    for name in ctx.options.dtypes:
        dtype = getattr(torch, name)
        yield _float64(ctx) if dtype == torch.float64 else _one_dtype(ctx, name, dtype)


def _float64(ctx) -> Verdict:
    if ctx.reference is None:
        return skip("float64 is the measuring dtype (the others are measured against it); --reference compares "
                    "the subject with a reference in float64", part="float64")
    torch = ctx.torch
    cot = _cotangents64(ctx, torch.float64)
    mine, theirs = _measure(ctx, torch.float64, None, cot), _measure(ctx, torch.float64, ctx.reference.call, cot)
    pairs = [(f"output {k}", f"output {k}", a, theirs.outputs.get(k)) for k, a in mine.outputs.items()]
    pairs += [(f"the gradient w.r.t. {n}", n, a, theirs.grads.get(n)) for n, a in mine.grads.items()]
    for what, entry, a, b in pairs:
        gap = ctx.gap(a, b) if b is not None else None
        if gap is None or not gap.ok:
            return fail(f"float64: {what} differs from the reference {ctx.reference.name}" +
                        (f" by {gap.error:.3g} at {where(entry, gap.index)}" if gap else " (it has none)"),
                        max_error=gap.error if gap else None, where=f"float64, {entry}", part="float64")
    return ok(f"float64: outputs and gradients agree with the reference {ctx.reference.name}", part="float64")


def stress_scale(ctx) -> float:
    """The factor that brings the largest |entry| of the float arguments up to STRESS (1: already there)."""
    largest = max((float(ctx.args[n].abs().max()) for n in ctx.diff if ctx.args[n].numel()), default=0.0)
    return STRESS / largest if 0 < largest < STRESS else 1.0


def _one_dtype(ctx, name: str, dtype) -> Verdict:
    reference, label = _reference(ctx)
    scale = stress_scale(ctx)
    worst = 0.0
    for factor in (1.0, scale) if scale > 1 else (1.0,):
        setting = name if factor == 1 else f"{name} at the arguments × {factor:.4g} (largest |entry| {STRESS:g})"
        try:
            verdict, ratio = _compare(ctx, dtype, reference, label, setting, factor,
                                      lambda key, f=factor: _dtype_repro(ctx, name, key, scale=f))
        except Rejected as err:  # an op need not take every dtype: said, not failed
            return skip(f"{name}: the subject does not take {name} arguments ({err})", part=name)
        except Exception as err:
            return fail(f"{setting}: forward ran, backward raised: {ctx.raised(err)}", where=setting, part=name,
                        reproducer=_dtype_repro(ctx, name, ("output", ctx.float_outputs(ctx.base[0])[0]), scale=factor))
        if verdict is not None:
            return replace(verdict, part=name)
        worst = max(worst, ratio)
    at = f", also at the arguments × {scale:.3g}" if scale > 1 else ""
    return ok(f"errors within {worst:.2g}× the measuring stick ({label}{at}); at most {FACTOR}× allowed", part=name)


def _compare(ctx, low, reference, label, setting, scale, reproduce, autocast=None):
    """The subject in ``low`` (under ``autocast``: float32 arguments, ``autocast`` the lower dtype)
    against its float64 value at the same rounded arguments, judged by :func:`_judge`."""
    torch = ctx.torch
    point = _rounded(ctx, torch.float32 if autocast else low, scale)
    cot = _cotangents64(point, torch.float32 if autocast else low)
    given = torch.float32 if autocast else low
    got = _measure(point, given, None, cot, autocast=autocast)
    truth = _measure(point, torch.float64, None, cot)
    ref = ref_truth = None
    if reference is not None:
        try:
            ref, ref_truth = _measure(point, given, reference, cot, autocast=autocast), \
                _measure(point, torch.float64, reference, cot)
        except Exception:  # the reference cannot run there (under autocast): the rounding floor alone
            label = "no reference: it does not run here"
    return _judge(point, label, got, truth, ref, ref_truth, autocast or low, setting, reproduce)


def _dtype_repro(ctx, name: str, key, autocast: bool = False, scale: float = 1.0) -> str:
    what, which = key
    k = 0 if what == "grad" else ctx.float_outputs(ctx.base[0]).index(which)  # (the body's Y holds float outputs)
    i = ctx.diff.index(which) if what == "grad" else 0
    low = "torch.float32" if autocast else f"torch.{name}"
    enter = "A=torch.autocast(\"cpu\",dtype=torch.bfloat16); A.__enter__(); " if autocast else ""
    leave = "A.__exit__(None,None,None); " if autocast else ""
    measure = ("e=(y.double()-t).abs().max().item()" if what == "output" else
               f"G=torch.randn_like(t).to(y.dtype); a=torch.autograd.grad(y,D[{i}],G)[0]; "
               f"b=torch.autograd.grad(t,W[{i}],G.double())[0]; e=(a.double()-b).abs().max().item()")
    scaled = f"X=[x*{scale!r} if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; " if scale != 1 else ""
    return ctx.repro.command(
        f"{scaled}T={low}; L=lambda y:[v for v in (y if isinstance(y,(tuple,list)) else [y]) if v.is_floating_point()]; "
        "Z=[x.to(T).requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; "
        "D=[z for z in Z if torch.is_tensor(z) and z.requires_grad]; "
        "W=[z.detach().double().requires_grad_() if torch.is_tensor(z) and z.is_floating_point() else z for z in Z]; "
        "t=L(f(*W)); W=[w for w in W if torch.is_tensor(w) and w.requires_grad]; "
        f"{enter}y=L(f(*Z))[{k}]; {leave}t=t[{k}]; {measure}; "
        f"assert e<={FACTOR}*{_eps_text(name, autocast)}*t.abs().max().item(), e")


def _eps_text(name: str, autocast: bool) -> str:
    return "torch.finfo(torch.bfloat16).eps" if autocast else f"torch.finfo(torch.{name}).eps"


def autocast(ctx) -> Verdict:
    torch = ctx.torch
    device = torch.device(ctx.options.device).type
    reference, label = _reference(ctx)
    point = _rounded(ctx, torch.float32)
    cot = _cotangents64(point, torch.float32)
    try:
        plain, truth = _measure(point, torch.float32, None, cot), _measure(point, torch.float64, None, cot)
    except Exception as err:
        return skip(f"the subject does not run at float32 arguments ({ctx.raised(err)}): see dtypes")
    pairs = [(plain.outputs[k], truth.outputs[k]) for k in truth.outputs] + \
        [(plain.grads[n], truth.grads[n]) for n in truth.grads]
    if any((~torch.isfinite(a) & torch.isfinite(t.float())).any() for a, t in pairs):
        return skip("the subject already gives non-finite values in plain float32 (dtypes:float32 reports it); "
                    "autocast adds nothing to judge")
    setting = f"{device} autocast (bfloat16)"
    try:
        verdict, worst = _compare(ctx, torch.float32, reference, label, setting, 1.0,
                                  lambda key: _dtype_repro(ctx, "float32", key, autocast=True), autocast=torch.bfloat16)
    except Exception as err:
        return fail(f"under {setting} the subject raised: {ctx.raised(err)} (a backward that mixes the dtypes autocast "
                    "gave its forward? torch.amp.custom_fwd/custom_bwd, or cast grad_output)", where="autocast",
                    reproducer=_dtype_repro(ctx, "float32", ("grad", ctx.diff[0]), autocast=True))
    if verdict is not None:
        return verdict
    return ok(f"errors within {worst:.2g}× the bfloat16 measuring stick ({label}); at most {FACTOR}× allowed")
