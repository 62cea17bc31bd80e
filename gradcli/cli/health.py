"""``gradcli health PATH.py:NAME -x ARRAY -t ARRAY``: one watched forward and backward
of a batch; the table (or ``--json``), ``-o FILE.json``; exit 1 when a flag of
``--fail-on`` is raised (:mod:`gradcli.health`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

from rich.markup import escape

from ..core.options import Format
from . import params
from .main import app
from .options import Inputs, Output, inputs_of, refuse_empty
from .output import emit, stdout_then_files

HEALTH = "Health"
FUNCTION_HELP = ("your code, PATH.py:NAME: a torch.nn.Module computing the loss (or a class or factory making one), or "
                 "a function computing it with modules it names; -x is its first argument, -t its second, "
                 "--arg NAME=ARRAY any other")
OWN = [
    params.opt("input", str, None, "--input", "-x", metavar="ARRAY", panel=params.INPUTS, show_default=False,
               help=f"the batch: your code's first argument. {params.ARRAY_HELP}"),
    params.opt("target", str, None, "--target", "-t", metavar="ARRAY", panel=params.INPUTS, show_default=False,
               help="its second argument (class indices stay integers)"),
    params.opt("output", str, None, "--output", "-o", metavar="FILE.json", panel=params.OUTPUT, show_default=False,
               help="also write the JSON document to FILE.json, whole or not at all"),
    params.opt("max_memory", str, "2GiB", metavar="SIZE", panel=params.LIMITS,
               help="refuse input arrays larger than this together (e.g. 512MiB); the model's own memory is not "
                    "bounded"),
    params.opt("wrt", str, "param:*", metavar="LIST", panel=params.DIFF,
               help="what the backward differentiates: input and param:NAME or globs such as 'param:encoder.*', "
                    "comma-separated; with input, the first module has an input gradient and a gain"),
    params.opt("cotangent", str, None, metavar="ARRAY", panel=params.DIFF, show_default=False,
               help="the gradient seed of a non-scalar output, shaped like it (ones: what "
                    "out.backward(torch.ones_like(out)) uses); a scalar output (a loss) needs none"),
    params.opt("dtype", params.DType, None, panel=params.DIFF, show_default=False,
               help="working precision (default: the model's own, float32 for a model as nn.Module makes it)"),
    params.opt("lr", float, None, metavar="LR", panel=HEALTH, show_default=False,
               help="also the update scale lr·‖grad‖/‖w‖ of each parameter (how far one SGD step moves it)"),
    params.opt("explode", float, 1e3, metavar="E", panel=HEALTH,
               help="exploding: a gain above E, a gradient norm above E×‖v‖ (v: the output's gradient seed), or a "
                    "Linear's or convolution's gain above E^(1/3) times the others'"),
    params.opt("vanish", float, 1e-7, metavar="V", panel=HEALTH,
               help="vanishing: a module's gradient norm above 0 and below V×‖v‖"),
    params.opt("fail_on", str, "nonfinite", metavar="FLAGS", panel=HEALTH,
               help="the flags that make the exit code 1: nonfinite, exploding, vanishing, dead (comma-separated), "
                    "or none"),
    params.opt("top", int, None, metavar="K", panel=params.OUTPUT, min=0, show_default=False,
               help="at most K rows per table, flagged ones first (default: 20 in the table, every row in JSON)"),
]
COMMON = ("arg", "seed", "allow_nonfinite", "device", "json", "format", "no_timing", "traceback", "select", "weights",
          "weights_prefix", "strict_weights")


def health_options() -> list[params.Opt]:
    return params.in_panel_order([*OWN, *(o for o in params.RUN if o.name in COMMON)])


def function_argument():
    import inspect
    from typing import Annotated

    import typer

    argument = typer.Argument(help=escape(FUNCTION_HELP), show_default=False, metavar="FUNCTION")
    return inspect.Parameter("function", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[str, argument])


@dataclass(frozen=True)
class HealthOptions:
    """``health``'s options, typed: the batch (:class:`Inputs`), the report's output, the
    cotangent's ARRAY spec, and the thresholds and flags."""

    inputs: Inputs
    output: Output
    cotangent: str | None
    lr: float | None
    explode: float
    vanish: float
    fail_on: str
    top: int | None
    device: str


def health_options_of(values: Mapping[str, Any]) -> HealthOptions:
    refuse_empty(values)
    output = Output(as_json=values["json"] or values["format"] is Format.JSON, path=values.get("output"),
                    timing=not values["no_timing"])
    return HealthOptions(inputs_of(values), output, values.get("cotangent"), values.get("lr"), values["explode"],
                         values["vanish"], values["fail_on"], values.get("top"), values["device"].value)


def _read_cotangent(spec: str, inputs: Inputs, held: int, shape):
    """``--cotangent``, read once the output's shape is known (ones, randn)."""
    from ..io.arrays import load_array

    return load_array(spec, "--cotangent", seed=inputs.seed, like=shape, max_bytes=inputs.max_memory, held=held)


def health_command(opts: HealthOptions) -> int:
    """The thresholds checked before any work, the arrays read, the batch bound, one
    watched step, the report on standard output and in ``-o``; exit 1 on a --fail-on flag."""
    from ..health.run import bind, examine, parse_flags, positive, thresholds
    from ..io.files import pending_write
    from ..render.health import health_to_dict, render_health
    from ..render.json import dumps
    from .inputs import read

    limits = thresholds(opts.explode, opts.vanish)
    fail_on = parse_flags(opts.fail_on)
    lr = None if opts.lr is None else positive(opts.lr, "--lr")
    inputs = opts.inputs
    got = read(inputs, opts.output, vectors={"cotangent": opts.cotangent}, suffixes=(".json",))
    arrays = dict(got.arrays)
    cotangent = None if opts.cotangent is None else functools.partial(
        _read_cotangent, opts.cotangent, inputs, sum(a.nbytes for a in arrays.values()))
    batch, problem = bind(got.function, input=arrays.pop("input"), target=arrays.pop("target", None), arrays=arrays,
                          wrt=inputs.wrt, cotangent=cotangent, seed=inputs.seed,
                          dtype=None if inputs.dtype is None else inputs.dtype.value, device=opts.device,
                          allow_nonfinite=inputs.allow_nonfinite)
    report = examine(batch, limits=limits, lr=lr, fail_on=fail_on, notes=problem.notes, name=inputs.function)
    document = dumps(health_to_dict(report, top=opts.top, timing=opts.output.timing))
    shown = document if opts.output.as_json else render_health(report, top=opts.top, timing=opts.output.timing)
    pending = [pending_write(got.out_path, lambda handle: handle.write(document.encode()))] if got.out_path else []
    stdout_then_files(lambda: emit(shown), pending)
    return 0 if report.ok else 1


def _health(**values: Any) -> int:
    return health_command(health_options_of(values))


_health.__signature__ = params.signature(function_argument(), health_options())
_health.__doc__ = escape(
    "Gradient health of a model on one batch: one forward and one backward watched by hooks that change neither. "
    "Per module its gain ‖∂L/∂in‖/‖∂L/∂out‖, dead and saturated outputs; per parameter ‖grad‖, ‖grad‖/‖w‖ and "
    "the update scale; flags nonfinite, exploding, vanishing, dead; and where a NaN or inf first appeared: the "
    "module, the op and your line. Exit 1 when a flag of --fail-on (default nonfinite) is raised."
    "\n\nExample: gradcli health model.py:loss -x batch.npy -t labels.json --lr 1e-3"
    "\n\nA non-scalar output: gradcli health model.py:net -x randn:64,784 --cotangent ones"
    "\n\nIn CI: gradcli health model.py:loss -x batch.npy -t labels.json --fail-on nonfinite,exploding --json "
    "-o health.json")
app.command("health")(_health)
