"""``certify``: every property of a custom autograd.Function, torch.library op or
callable, one verdict row each (SPEC §7); exit 0 all ok or skipped, 1 a failure,
2 bad input, 3 nothing could run."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Annotated, Any, Mapping

import typer
from rich.markup import escape

from . import params
from .main import app
from .options import refuse_empty
from .output import emit, stdout_then_files

CERTIFY = "Certify"
FUNCTION_HELP = ("PATH.py:NAME: a torch.autograd.Function subclass (called through .apply), a torch.library custom "
                 "op (torch.ops.NS.OP or a torch.library.custom_op object assigned to NAME), or a function of tensors")
INPUT = params.Opt("input", str, None, ("--input", "-x"), f"its first argument. {params.ARRAY_HELP}", params.INPUTS,
                   {"show_default": False, "metavar": "ARRAY"})
OPTIONS = [
    INPUT,
    params.opt("reference", str, None, metavar="PATH.py:NAME", help="the same function in plain torch ops: the "
               "measuring stick of --dtypes and autocast (default: torch's composite form of the Function's forward "
               "or the op's Python implementation, where it agrees in float64)", panel=CERTIFY, show_default=False),
    params.opt("dtypes", str, "float64,float32,bfloat16", metavar="LIST", help="dtypes to measure against float64 "
               "(float64, float32, bfloat16, float16)", panel=CERTIFY),
    params.opt("properties", str, None, metavar="LIST", help="only these properties (comma-separated): gradient, "
               "non-contiguous, grad-output-untouched, inputs-untouched, zero-grad-output, gradient-metadata, double-backward, "
               "forward-mode, torch-func, batched, dtypes, autocast, compile, determinism, shapes, opcheck",
               panel=CERTIFY, show_default=False),
    params.opt("skip", str, None, metavar="LIST", help="leave these properties out (e.g. compile: torch.compile's "
               "own cost, seconds)", panel=CERTIFY, show_default=False),
    params.opt("runs", int, 3, metavar="K", help="determinism: backward passes compared", panel=CERTIFY, min=1),
    params.opt("nondet_tol", float, 0.0, metavar="FLOAT", help="determinism: the largest difference between "
               "backward passes accepted (0: identical to the bit)", panel=CERTIFY, min=0.0),
    params.opt("probes", int, 4, metavar="K", help="gradient, double backward, forward mode: seeded sign directions "
               "per argument", panel=CERTIFY, min=1),
    params.opt("arg", list, None, metavar="NAME=ARRAY", help="another argument by name (repeatable); float arguments "
               "are differentiated, integer ones passed as they are", panel=params.INPUTS, show_default=False),
    params.opt("json", bool, False, help="print one JSON document", panel=params.OUTPUT),
    params.opt("junit", str, None, metavar="PATH.xml", help="also write JUnit XML, one test case per row",
               panel=params.CI, show_default=False),
    *[o for o in params.RUN if o.name in ("seed", "device", "no_timing", "max_memory", "traceback")],
]


@dataclass(frozen=True)
class CertifyOptions:
    """The command line, typed once: what to certify, at which arguments, how, and the output."""

    function: str
    input: str
    args: Mapping[str, str]
    reference: str | None
    dtypes: str
    properties: str | None
    skip: str | None
    seed: int
    runs: int
    nondet_tol: float
    probes: int
    device: str
    max_memory: str
    as_json: bool
    timing: bool
    junit: str | None

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> "CertifyOptions":
        from ..core.errors import UsageError
        from ..usercode.signature import parse_arg_options

        refuse_empty(values)
        if values.get("input") is None:
            raise UsageError("--input: missing; give the first argument with -x, e.g. -x randn:64,64 or -x x.npy")
        return cls(function=values["function"], input=values["input"],
                   args=parse_arg_options(values.get("arg"), {"input"}), reference=values.get("reference"),
                   dtypes=values["dtypes"], properties=values.get("properties"), skip=values.get("skip"),
                   seed=values["seed"], runs=values["runs"], nondet_tol=values["nondet_tol"], probes=values["probes"],
                   device=values["device"].value, max_memory=values["max_memory"], as_json=values["json"],
                   timing=not values["no_timing"], junit=values.get("junit"))


def certify_command(options: CertifyOptions) -> int:
    from ..certify.run import certify
    from ..io.arrays import file_of
    from ..io.files import check_output_path, pending_write, refuse_same_file
    from ..problem.function import function_file
    from ..render.certify import certify_junit, certify_to_dict, render_certify
    from ..render.json import dumps

    junit = check_output_path(options.junit, "--junit", (".xml",)) if options.junit else None
    refuse_same_file({"--junit": junit}, {"FUNCTION": function_file(options.function),
                                          "--reference": function_file(options.reference), "-x": file_of(options.input),
                                          **{f"--arg {n}": file_of(s) for n, s in options.args.items()}})
    report = certify(options.function, options.input, args=options.args, reference=options.reference,
                     dtypes=options.dtypes, properties=options.properties, skip=options.skip, seed=options.seed,
                     runs=options.runs, nondet_tol=options.nondet_tol, device=options.device,
                     max_memory=options.max_memory, probes=options.probes)
    pending = [pending_write(junit, lambda h: h.write(certify_junit(report)), "--junit")] if junit else []
    if options.as_json:
        stdout_then_files(lambda: emit(dumps(certify_to_dict(report, timing=options.timing))), pending)
    else:  # soft wrap: each reproducer stays one line, to be copied whole
        stdout_then_files(lambda: emit(render_certify(report, timing=options.timing), soft_wrap=True), pending)
    return int(report.exit_code)


def _certify(**values: Any) -> int:
    return certify_command(CertifyOptions.of(values))


_function = inspect.Parameter("function", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=Annotated[str, typer.Argument(help=escape(FUNCTION_HELP), show_default=False,
                                                                       metavar="FUNCTION")])
PANELS = [params.INPUTS, CERTIFY, params.BACKEND, params.OUTPUT, params.CI, params.LIMITS]
_certify.__signature__ = params.signature(_function, sorted(OPTIONS, key=lambda o: PANELS.index(o.panel)))
_certify.__doc__ = escape(
    "Certify a custom autograd.Function, torch.library op or function of tensors: every property (gradient against "
    "fd, non-contiguous and zero grad_outputs, saved tensors, double backward, forward mode, torch.func, vmap, "
    "dtypes against a measuring stick, autocast, compile, determinism, shapes, opcheck), one row each; a failing "
    "row names the largest error, where, and a one-line reproducer. Exit 0 every property ok or skipped, 1 one "
    "fails, 2 bad input, 3 nothing could run."
    "\n\nExample: gradcli certify sample_inputs/certify_triton_style.py:ScaledSwish -x randn:32,16 --skip compile"
    "\n\nTwo arguments: gradcli certify ops.py:Linear -x randn:8,4 --arg w=randn:4,3 --junit certify.xml")
app.command("certify")(_certify)
