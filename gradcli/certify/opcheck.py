"""opcheck: ``torch.library.opcheck``'s four tests, a row each, for custom ops.

They check the registration (schema, autograd registration, fake kernel, AOT
dispatch), not the formula: a wrong backward passes all four (the gradient
property is what sees it). Each runs alone (``test_utils=`` one name), with the
float arguments requiring grad so the autograd registration is exercised.
"""

from __future__ import annotations

from .context import first_line
from .report import fail, ok, skip
from .subject import Kind, op_overload

TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def check(ctx):
    torch = ctx.torch
    if ctx.subject.kind is not Kind.CUSTOM_OP:
        yield skip(f"opcheck tests torch.library custom ops only (this is: {ctx.subject.kind.value})")
        return
    op = op_overload(ctx.subject.obj)
    for test in TESTS:
        inputs = ctx.inputs()
        args = tuple(inputs[n] for n in ctx.positional)
        kwargs = {n: v for n, v in inputs.items() if n not in ctx.positional}
        result = torch.library.opcheck(op, args, kwargs, test_utils=test, raise_exception=False)[test]
        if result == "SUCCESS":
            yield ok(f"torch.library.opcheck {test} passes", part=test)
            continue
        body = ("X=[x.requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; "
                f"torch.library.opcheck(f,tuple(X),test_utils=\"{test}\")")
        cause = result.__cause__ or result
        yield fail(f"torch.library.opcheck {test} fails: {first_line(cause)}", where=test, part=test,
                   reproducer=ctx.repro.command(body))
