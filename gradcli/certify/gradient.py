"""gradient: ``vᵀJ`` from the subject's backward against finite differences.

Three tests, each from ``check``'s machinery (:mod:`.numeric`): the probes
``vᵀJu`` along seeded sign directions against fd's with its error bar; the
Taylor test along the same directions (``r(h)`` falls like ``h²`` only when the
slope is right); and, when the Jacobian has at most ``FULL_ENTRIES`` entries,
the full Jacobian (one backward pass per output entry) against fd's entry by
entry. A failure is located by ``check``'s group testing (halves of the argument).
"""

from __future__ import annotations

import numpy as np

from ..checking.locate import worst_entries
from ..checking.model import ProbeContext
from ..core.compare import default_tolerance
from .context import where
from .numeric import FULL_ENTRIES, Phi, entry_check, full_jacobian, make_probes, output_entries, probe_check
from .report import Verdict, fail, ok

BODY = ("X=[x.requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; "
        "torch.autograd.gradcheck(f,X,atol=1e-8,rtol=1e-6,fast_mode=True)")


def check(ctx) -> Verdict:
    """The verdict at the context's arguments, computed once (the shapes property asks too)."""
    if "gradient" not in ctx.cache:
        ctx.cache["gradient"] = _check(ctx)
    return ctx.cache["gradient"]


def _check(ctx) -> Verdict:
    outs, grads = ctx.base
    fn = Phi(ctx, ctx.call, ctx.cotangents(outs))
    claimed = {n: grads[n].cpu().numpy() for n in ctx.diff}
    found = probe_check(fn, claimed, ctx.options.probes, ctx.options.seed)
    reproducer = ctx.repro.command(BODY)
    for name in ctx.diff:
        f = found[name]
        if f.ok:
            continue
        detail = _probe_text(name, f)
        entries = locate(fn, claimed, name, ctx.options)
        if entries:
            e = entries[0]
            return fail(f"{detail}; the worst entry found by halving: backward {e.reference:.6g}, fd {e.value:.6g}",
                        max_error=e.abs_error, where=where(name, e.index), reproducer=reproducer)
        return fail(detail, max_error=f.comparison.max_abs, where=f"{name}, probe {f.comparison.worst_index[0]}",
                    reproducer=reproducer)
    full = output_entries(ctx) * sum(ctx.args[n].numel() for n in ctx.diff) <= FULL_ENTRIES
    if full:
        for name in ctx.diff:
            e = entry_check(fn, name, full_jacobian(ctx, fn, name))
            if not e.comparison.ok:
                return fail(f"the full Jacobian differs from fd: ∂(output {e.output})[{e.output_index}] / "
                            f"∂{where(name, e.input_index)} is {e.claimed:.6g} by backward, {e.value:.6g} by fd",
                            max_error=e.comparison.max_abs,
                            where=f"output {e.output} entry {e.output_index}, {where(name, e.input_index)}",
                            reproducer=reproducer)
    orders = [found[n].taylor.order for n in ctx.diff if found[n].taylor is not None and found[n].taylor.order]
    worst = max(found[n].comparison.max_abs for n in ctx.diff)
    return ok(f"vᵀJ = fd along {ctx.options.probes} probes per argument (largest |difference| {worst:.1e})"
              + (f", Taylor order {min(orders):.2f}" if orders else "") + ("; the full Jacobian too" if full else ""))


def locate(fn: Phi, claimed: dict, name: str, options) -> list:
    """The worst entry of ``name``'s gradient, by check's group testing (sign probes on halves
    of the argument, O(log n) directional differences: ``checking.locate.worst_entries``)."""
    atol, rtol = default_tolerance(np.float64)
    probes = make_probes(fn, options.probes, options.seed)
    return worst_entries(ProbeContext(fn, probes, claimed, atol, rtol, None), name, top=1)


def _probe_text(name: str, f) -> str:
    k = f.comparison.worst_index[0]
    text = (f"{name}: backward's vᵀJu is {f.reference[k]:.6g} along probe {k}, fd's {f.fd[k]:.6g} "
            f"(±{3 * f.error[k]:.1e})")
    if f.taylor is not None and f.taylor.ok is False:
        text += f"; Taylor remainder falls like h^{f.taylor.order:.2f}, not h² (a wrong slope)"
    elif not f.comparison.ok and f.taylor is not None and f.taylor.order is not None:
        text += f"; Taylor order {f.taylor.order:.2f}"
    return text
