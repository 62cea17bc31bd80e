"""compile: the gradient of ``torch.compile(f)`` against finite differences.

Not only against eager: the compiled backward (AOT autograd's, through the
op's fake kernel) is checked against fd of the eager forward along the
gradient property's probes, and the compiled outputs against the eager ones.
torch.compile's own cost (seconds) is why ``--skip compile`` exists. Where
compilation is not available here (no C++ compiler) the row is a skip.
"""

from __future__ import annotations

import contextlib
import logging

from .context import where
from .numeric import Phi, probe_check
from .report import Verdict, fail, ok, skip
from .subject import Kind

UNAVAILABLE = ("InvalidCxxCompiler", "CppCompileError")  # the platform cannot compile: not the subject's fault
BODY = ("X=[x.requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; "
        "torch.autograd.gradcheck(torch.compile(f),X,atol=1e-8,rtol=1e-6,fast_mode=True)")


@contextlib.contextmanager
def _quiet_logs():
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def check(ctx) -> Verdict:
    torch = ctx.torch
    import torch._dynamo

    torch._dynamo.reset()  # no cache from an earlier certification in this process
    compiled = torch.compile(ctx.subject.call, dynamic=False)
    reproducer = ctx.repro.command(BODY)
    try:
        with _quiet_logs():  # torch logs a failed compilation's traceback; the row says it in one line
            outs, grads = ctx.run(fn=compiled)
    except Exception as err:
        if type(err).__name__ in UNAVAILABLE:
            return skip(f"torch.compile cannot compile here: {ctx.raised(err)}")
        hint = " (the opcheck rows say whether the op's fake kernel is at fault)" \
            if ctx.subject.kind is Kind.CUSTOM_OP else ""
        return fail(f"torch.compile(f) raised: {ctx.raised(err)}{hint}", where="torch.compile", reproducer=reproducer)
    eager = ctx.base[0]
    for k in ctx.float_outputs(eager):
        gap = ctx.gap(outs[k], eager[k])
        if not gap.ok:
            return fail(f"torch.compile(f)'s output {k} differs from eager by {gap.error:.3g} at "
                        f"{where(f'output {k}', gap.index)}", max_error=gap.error, where=f"output {k}",
                        reproducer=reproducer)
    claimed = {n: (torch.zeros_like(ctx.args[n]) if grads[n] is None else grads[n]).detach().cpu().numpy()
               for n in ctx.diff}
    found = probe_check(Phi(ctx, ctx.call, ctx.cotangents(eager)), claimed, ctx.options.probes, ctx.options.seed,
                        taylor=False)
    for name in ctx.diff:
        f = found[name]
        if not f.ok:
            k = f.comparison.worst_index[0]
            return fail(f"the compiled gradient w.r.t. {name} differs from fd: along probe {k}, "
                        f"{f.reference[k]:.6g} against {f.fd[k]:.6g} (±{3 * f.error[k]:.1e})",
                        max_error=f.comparison.max_abs, where=f"{name}, probe {k}", reproducer=reproducer)
    return ok("torch.compile(f): outputs equal eager's, the gradient agrees with fd")
