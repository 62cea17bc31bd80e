"""The typer app: options -> library call -> renderer -> exit code.

The computing commands share one option list, generated from the catalogue
(every built-in's array arguments and typed Params, with their help and
defaults) plus the run options below, and one body, :func:`run_command`.
Commands raise or return an exit code; :class:`GradcliGroup.main` is the one
place that turns click errors, GradcliError, interrupts and a command's
returned code into the exit status. torch is imported only by the backends
that need it.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
import time
from dataclasses import dataclass, replace
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import ExitCode, GradcliError, UsageError
from .options import BackendName, Device, DType, FdDType, FdMethod, Format, Layout, Quantity


class GradcliGroup(TyperGroup):
    """The one place errors become exit codes (SPEC §2): one or two lines on
    stderr, never a traceback unless ``--traceback``, nothing on stdout."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        show_traceback = "--traceback" in argv
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:  # click's own errors (typer vendors click)
            if type(err).__name__ == "NoArgsIsHelpError":  # bare `gradcli`: the help is the answer
                typer.echo(err.format_message())
                sys.exit(0)
            ctx = getattr(err, "ctx", None)
            hint = f"; see `{ctx.command_path} --help`" if err.exit_code == ExitCode.USAGE and ctx is not None else ""
            _error(f"{err.format_message().rstrip('.')}{hint}")
            code = err.exit_code
        except typer.Exit as err:
            code = err.exit_code
        except (typer.Abort, KeyboardInterrupt):
            code = ExitCode.INTERRUPTED
        except GradcliError as err:
            if show_traceback:
                raise
            _error(str(err))
            code = err.exit_code
        except BrokenPipeError:  # the reader went away (`| head`): nothing more to say
            code = ExitCode.OK
        except Exception as err:
            if show_traceback:
                raise
            _error(f"internal error: {type(err).__name__}: {err}; rerun with --traceback and report it", prefix="gradcli: ")
            code = ExitCode.BACKEND
        if code == ExitCode.INTERRUPTED:  # typer turns a Ctrl-C inside a command into a silent 130
            _error("interrupted", prefix="gradcli: ")
        try:
            if sys.stdout is not None:
                sys.stdout.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
        sys.exit(int(code or 0))


def _error(message: str, prefix: str = "gradcli: error: ") -> None:
    if sys.stderr is not None:
        sys.stderr.write(f"{prefix}{message}\n")
        sys.stderr.flush()


app = typer.Typer(
    cls=GradcliGroup,
    name="gradcli",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    help="Inspect derivatives of PyTorch losses and functions from the shell: Jacobians, per-row blocks, "
    "gradients, vector-Jacobian and Jacobian-vector products, with torch autograd, forward mode, "
    "closed forms or finite differences.",
)


ARRAY_HELP = "ARRAY: a .npy/.npz[:key]/.json/.pt file, inline JSON, - for stdin, or a generator such as randn:3,5"


def _option(name: str, type_: Any, default: Any, *decls: str, help: str, **kw: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[type_, typer.Option(*decls, help=help, **kw)])


FUNCTION_ARG = inspect.Parameter(
    "function", inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=Annotated[str, typer.Argument(help="a built-in (see `gradcli functions`), a chain such as linear,cross_entropy, "
                                             "expr:EXPRESSION in x such as 'expr:(x+1)**2', or your code: PATH.py:NAME "
                                             "(a function, a torch.nn.Module or a factory; -x is its first argument, "
                                             "-t its second, --arg NAME=ARRAY any other), PATH.pt (TorchScript) or "
                                             "PATH.pt2 (torch.export); --wrt param:NAME differentiates a module "
                                             "parameter",
                                             show_default=False, metavar="FUNCTION")],
)

SHORT = {"input": "-x", "target": "-t"}  # the two arrays every story uses


def catalogue_options() -> list[inspect.Parameter]:
    """One option per array argument and per scalar Param of the built-ins,
    with help and defaults read from the catalogue: a new loss touches one file."""
    from .functions import array_arguments, parameters

    options = []
    for name, arg in array_arguments().items():
        decls = [f"--{name.replace('_', '-')}"] + ([SHORT[name]] if name in SHORT else [])
        options.append(_option(name, Optional[str], None, *decls, help=f"{arg.help}. {ARRAY_HELP}" if name == "input"
                               else arg.help))
    for name, users in parameters().items():
        first = users[0][1]
        defaults = {repr(p.default) for _, p in users}
        names = ", ".join(function for function, _ in users[:4]) + (", ..." if len(users) > 4 else "")
        default = f"; default {_show(first.default)}" if len(defaults) == 1 and first.default is not None else ""
        text = first.help if first.help.split(":")[0] in names else f"{names}: {first.help}"
        option = f"--{name.replace('_', '-')}"
        kind = first.kind
        decls = (f"{option}/--no-{name.replace('_', '-')}",) if kind is bool else (option,)
        options.append(_option(name, Optional[kind], None, *decls, help=f"{text}{default}"))
    return options


def _show(value) -> str:
    return value.value if isinstance(value, enum.Enum) else str(value)


RUN_OPTIONS = [
    _option("wrt", str, "input", "--wrt", help="the argument to differentiate: input, target (float targets), weight, "
            "bias, or param:NAME (a parameter of your torch.nn.Module)"),
    _option("arg", Optional[list[str]], None, "--arg", help="user code: another argument by name, NAME=ARRAY "
            "(repeatable: a mask, lengths, a second input); --input is its first argument, --target its second"),
    _option("backend", BackendName, BackendName.AUTO, "--backend", "-b",
            help="auto = analytic where a closed form exists, else autograd"),
    _option("dtype", DType, DType.FLOAT64, "--dtype", help="working precision"),
    _option("device", Device, Device.CPU, "--device", help="torch backends"),
    _option("seed", int, 0, "--seed", help="seed of the generators (randn:3,5, ...)"),
    _option("fd_method", FdMethod, FdMethod.RICHARDSON, "--fd-method", help="finite-difference formula"),
    _option("fd_step", str, "auto", "--fd-step", help="auto (adaptive), or an absolute step such as 1e-4"),
    _option("fd_dtype", FdDType, FdDType.FLOAT64, "--fd-dtype", help="difference float32 problems in float64, or same"),
    _option("json", bool, False, "--json", help="print one JSON document (same as --format json)"),
    _option("format", Format, Format.TABLE, "--format", help="table or json"),
    _option("output", Optional[str], None, "--output", "-o", help="also write the result to .npy, .npz or .json"),
    _option("precision", int, 4, "--precision", help="digits in tables", min=0, max=17),
    _option("explain", bool, False, "--explain", help="add the formula, how to read the value, and its structure"),
    _option("heatmap", bool, False, "--heatmap", help="colour cells by value: red positive, blue negative (on a terminal)"),
    _option("plot", Optional[str], None, "--plot", help="also draw the value as a heatmap image PATH.png (needs gradcli[plot])"),
    _option("max_memory", str, "2GiB", "--max-memory", help="refuse results larger than this (e.g. 512MiB, 4GiB)"),
    _option("allow_nonfinite", bool, False, "--allow-nonfinite", help="accept NaN/Inf in inputs and let them propagate"),
    _option("no_summarize", bool, False, "--no-summarize", help="print every value of a large array"),
    _option("rows", Optional[str], None, "--rows", help="only these batch rows (dim 0): 0 | 0,3 | 2:10 (row-independent outputs)"),
    _option("no_timing", bool, False, "--no-timing", help="drop timing fields (byte-identical JSON between runs)"),
    _option("traceback", bool, False, "--traceback", help="show the full traceback of an error"),
]
COMMON = [FUNCTION_ARG, *catalogue_options(), *RUN_OPTIONS]
EXTRA = {
    Quantity.JACOBIAN: [_option("layout", Layout, Layout.AUTO, "--layout",
                                help="auto: diag for elementwise functions, blocks for row-independent functions of a batch, "
                                     "else full; user code: blocks = per-sample Jacobians (B, *out, *in)"),
                        _option("verify_blocks", bool, True, "--verify-blocks/--no-verify-blocks",
                                help="user code, blocks: check on two samples that they do not interact before "
                                     "trusting per-sample blocks")],
    Quantity.VJP: [_option("cotangent", str, "ones", "--cotangent",
                           help="the vector v, shaped like the output (ones: what out.backward(torch.ones_like(out)) uses)")],
    Quantity.JVP: [_option("tangent", Optional[str], None, "--tangent",
                           help="the direction v, shaped like the differentiated argument (randn allowed)")],
    Quantity.GRAD: [_option("per_sample", bool, False, "--per-sample",
                            help="the gradient of each sample's loss alone (a batch of one), (B, *param_shape) per "
                                 "--wrt param:NAME (comma-separated, globs such as 'param:*')"),
                    _option("norms", bool, False, "--norms",
                            help="with --per-sample: only each sample's gradient norm over every --wrt, (B,), "
                                 "never forming the gradients where the layer allows"),
                    _option("top", int, 5, "--top", help="with --norms: list the K samples with the largest norms",
                            min=0)],
}
EXAMPLES = {
    Quantity.JACOBIAN: "Example: gradcli jacobian softmax -x '[[1, 2, 3, 4], [1, 1, 1, 1]]'  (one 4x4 block per row)\n\n"
                       "Your model: gradcli jacobian model.py:net -x images.npy  (per-sample Jacobians (B, classes, "
                       "c, h, w))",
    Quantity.GRAD: "Example: gradcli grad cross_entropy -x randn:3,5 -t '[1, 0, 4]'  ((softmax - onehot) / 3)\n\n"
                   "Your model: gradcli grad model.py:loss -x images.npy -t labels.json --wrt param:fc.weight; "
                   "per sample: --per-sample --norms --wrt 'param:*'",
    Quantity.VJP: "Example: gradcli vjp softmax -x randn:2,3  (zero: softmax rows sum to 1)\n\n"
                  "Your model: gradcli vjp model.pt -x randn:4,3,32,32  (what out.backward(ones) gives)",
    Quantity.JVP: "Example: gradcli jvp cross_entropy -x randn:3,5 -t '[1, 0, 4]' --tangent randn\n\n"
                  "Your model: gradcli jvp model.py:net -x images.npy --tangent randn",
}
HELP = {
    Quantity.JACOBIAN: "The Jacobian: per-row blocks (*rows, out, in), or full (output axes then input axes).",
    Quantity.GRAD: "The gradient of a scalar output (a reduced loss), shaped like the differentiated argument.",
    Quantity.VJP: "v^T J: what out.backward(v) puts in x.grad (v = --cotangent, default ones).",
    Quantity.JVP: "J v: the forward-mode directional derivative along --tangent.",
}


@dataclass(frozen=True)
class Loaded:
    """What every computing command needs, read from its options."""

    problem: Any
    vectors: dict
    options: Any
    max_memory: int
    out_path: Any
    plot_path: Any
    as_json: bool
    timing: bool


def load(quantity: Quantity, opts: dict[str, Any]) -> Loaded:
    """Options -> arrays -> a validated problem (and the vjp/jvp vector)."""
    from .arrays import load_array
    from .functions import array_arguments, parameters
    from .functions.base import option_name
    from .options import BackendOptions
    from .outfile import check_output_path
    from .problem import build_problem

    specs = {name: opts[name] for name in array_arguments() if opts.get(name) is not None}
    vector_option = {Quantity.VJP: "cotangent", Quantity.JVP: "tangent"}.get(quantity)
    vector_spec = opts.get(vector_option) if vector_option else None
    if [*specs.values(), vector_spec].count("-") > 1:
        raise UsageError("-: only one option can read standard input; give the others as files")
    if opts.get("input") is None:
        raise UsageError("--input: missing; give the input with -x, e.g. -x randn:3,5 or -x logits.npy")
    max_memory = parse_size(opts["max_memory"])
    out_path = check_output_path(opts["output"]) if opts.get("output") else None
    plot_path = None
    if opts.get("plot"):
        from .render.plot import check_plot_path

        plot_path = check_plot_path(opts["plot"])
    from .functions.signature import parse_arg_options, user_function

    named = parse_arg_options(opts.get("arg"), set(specs))
    function = user_function(opts["function"], opts["seed"], tuple(named))
    specs.update(named)
    arrays = {name: load_array(spec, f"--arg {name}" if name in named else option_name(name), seed=opts["seed"],
                               max_bytes=max_memory) for name, spec in specs.items()}
    params = {name: opts[name] for name in parameters() if opts.get(name) is not None}
    problem = build_problem(function, arrays, params, wrt=opts["wrt"], dtype=opts["dtype"],
                            allow_nonfinite=opts["allow_nonfinite"])
    if opts.get("rows"):
        from .rows import select_rows

        problem = select_rows(problem, opts["rows"])
    vectors = {}
    if vector_spec is not None:
        like = problem.output_shape if quantity is Quantity.VJP else problem.wrt_shape
        vectors[vector_option] = load_array(vector_spec, option_name(vector_option), seed=opts["seed"], like=like)
    fd_step = None if opts["fd_step"] == "auto" else parse_positive_float(opts["fd_step"], "--fd-step")
    options = BackendOptions(device=opts["device"], fd_method=opts["fd_method"], fd_step=fd_step,
                             fd_dtype=opts["fd_dtype"], progress=DelayedProgress())
    return Loaded(problem, vectors, options, max_memory, out_path, plot_path,
                  as_json=opts["json"] or opts["format"] is Format.JSON, timing=not opts["no_timing"])


def run_command(quantity: Quantity, opts: dict[str, Any]) -> int:
    """Load, compute, render, print, then publish files: the body of jacobian,
    grad, vjp and jvp. Standard output is written first; an output file is
    published only after it, so a failure leaves nothing behind."""
    from .api import solve

    if quantity is Quantity.GRAD and (opts.get("per_sample") or opts.get("norms")):
        return per_sample_command(opts)
    got = load(quantity, opts)
    stream = None
    if got.out_path is not None and got.out_path.suffix.lower() == ".npy" and quantity is Quantity.JACOBIAN:
        from .outfile import NpyStream

        if got.as_json:
            _refuse_json_over_memory(got, quantity, opts)
        stream = NpyStream(got.out_path)
    try:
        options = got.options if stream is None else replace(got.options, allocate=stream.allocate)
        result = solve(got.problem, quantity, backend=opts["backend"], layout=opts.get("layout", Layout.AUTO),
                       options=options, max_memory=got.max_memory, allow_nonfinite=opts["allow_nonfinite"],
                       verify_blocks=opts.get("verify_blocks", True), **got.vectors)
        _emit_result(result, got, opts, stream)
    finally:
        if stream is not None:
            stream.abort()  # a no-op once committed: the temporary file is gone
    return ExitCode.OK


def per_sample_command(opts: dict[str, Any]) -> int:
    """``grad --per-sample [--norms]``: one gradient (or norm) per sample."""
    from .render.samples import render_samples, samples_to_dict, write_samples
    from .samples import per_sample_gradients

    if not opts.get("per_sample"):
        raise UsageError("--norms: gives per-sample gradient norms; add --per-sample")
    got = load(Quantity.GRAD, {**opts, "wrt": "input"})  # the parameters are chosen by per_sample_gradients
    res = per_sample_gradients(got.problem, opts["wrt"], norms=opts["norms"], top=opts["top"],
                               max_memory=got.max_memory)
    if got.as_json:
        from .render.json import dumps

        emit(dumps(samples_to_dict(res, timing=got.timing)))
    else:
        emit(render_samples(res, precision=opts["precision"], summarize=not opts["no_summarize"], timing=got.timing))
    if got.out_path is not None:
        write_samples(got.out_path, res)
    return ExitCode.OK


def _refuse_json_over_memory(got: Loaded, quantity: Quantity, opts) -> None:
    from .plan import format_bytes, make_plan

    plan = make_plan(got.problem, quantity, opts.get("layout", Layout.AUTO), max_memory=2**62)
    if plan.nbytes > got.max_memory:
        raise UsageError(f"--json: the result needs {format_bytes(plan.nbytes)}, over --max-memory; drop --json and let "
                         "-o write it in chunks")


def _emit_result(result, got: Loaded, opts, stream) -> None:
    from .outfile import atomic_write, write_result

    if got.as_json:
        from .render.json import dumps, result_to_dict

        output = dumps(result_to_dict(result, timing=got.timing))
    else:
        from .render.table import render_result

        output = render_result(result, precision=opts["precision"], summarize=not opts["no_summarize"],
                               explain=opts["explain"], timing=got.timing, heatmap=opts["heatmap"])
    emit(output)
    if got.out_path is not None:
        write_result(got.out_path, result, timing=got.timing, stream=stream)
    if got.plot_path is not None:
        from .render.plot import draw_plot

        atomic_write(got.plot_path, lambda handle: draw_plot(result, handle))


def check_command(opts: dict[str, Any]) -> int:
    """Every backend against a reference; exit 1 on a mismatch."""
    from .checking import default_quantity, run_check
    from .outfile import write_text

    quantity = opts.get("quantity")
    if quantity is Quantity.JVP and opts.get("tangent") is None:
        opts = {**opts, "tangent": "randn"}  # a random direction, as JAX's check_grads (seeded by --seed)
    if opts.get("output") and not str(opts["output"]).lower().endswith(".json"):
        raise UsageError("--output: check writes its report as .json; give PATH.json")
    got = load(quantity or Quantity.GRAD, opts)
    quantity = quantity or default_quantity(got.problem)
    backends = None
    if opts.get("backends"):
        backends = [parse_backend(name, "--backends") for name in opts["backends"].split(",") if name.strip()]
    report = run_check(
        got.problem, quantity=quantity, backends=backends,
        reference=parse_backend(opts["reference"], "--reference") if opts.get("reference") else None,
        atol=opts.get("atol"), rtol=opts.get("rtol"), top=opts["top"], layout=opts.get("layout", Layout.AUTO),
        options=got.options, max_memory=got.max_memory, allow_nonfinite=opts["allow_nonfinite"], **got.vectors,
    )
    from .render.json import dumps, report_to_dict

    document = dumps(report_to_dict(report, timing=got.timing))
    if got.as_json:
        output = document
    else:
        from .render.check import render_report

        output = render_report(report, timing=got.timing)
    if got.out_path is not None:
        write_text(got.out_path, document)
    emit(output)
    return int(ExitCode.OK if report.ok else ExitCode.MISMATCH)


def parse_backend(name: str, option: str) -> BackendName:
    try:
        return BackendName(name.strip())
    except ValueError:
        raise UsageError(f"{option}: unknown backend {name.strip()!r}; use autograd, forward, analytic or fd") from None


class DelayedProgress:
    """A progress bar on standard error, shown only once a computation has run
    for a second and only when standard error is a terminal."""

    DELAY = 1.0

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.bar = None
        self.task = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if time.perf_counter() - self.start < self.DELAY or not sys.stderr.isatty():
                return
            from rich.console import Console
            from rich.progress import Progress

            self.bar = Progress(console=Console(stderr=True), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("computing", total=total)
        self.bar.update(self.task, completed=done, total=total)
        if done >= total:
            self.bar.stop()
            self.bar = None
            self.start = time.perf_counter()


def emit(output) -> None:
    """The one place that writes a result to standard output."""
    if isinstance(output, str):
        sys.stdout.write(output)
    else:
        make_console().print(output)


def make_console():
    from rich.console import Console

    # A pipe has no width; 140 columns keeps tables whole in files and logs.
    return Console(width=None if sys.stdout.isatty() else 140, highlight=False, soft_wrap=False)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$", re.IGNORECASE)
_UNITS = {None: 1, "b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30,
          "tb": 10**12, "tib": 2**40}


def parse_size(text: str) -> int:
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"--max-memory: cannot read {text!r} as a size; write e.g. 512MiB or 4GiB")
    return int(float(match[1]) * _UNITS[match[2].lower() if match[2] else None])


def parse_positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option}: {text!r} is not a positive number; write auto or e.g. 1e-4")
    return value


def _make_command(quantity: Quantity):
    def command(**opts: Any) -> int:
        return run_command(quantity, opts)

    command.__signature__ = inspect.Signature(COMMON + EXTRA[quantity])
    command.__name__ = quantity.value
    command.__doc__ = f"{HELP[quantity]}\n\n{EXAMPLES[quantity]}"
    app.command(quantity.value)(command)


for _quantity in (Quantity.JACOBIAN, Quantity.GRAD, Quantity.VJP, Quantity.JVP):
    _make_command(_quantity)


CHECK_OPTIONS = [
    _option("quantity", Optional[Quantity], None, "--quantity",
            help="what to compare (default: grad for a scalar output, else jacobian)"),
    _option("backends", Optional[str], None, "--backends",
            help="comma-separated, e.g. analytic,fd (default: all that apply)"),
    _option("reference", Optional[str], None, "--reference", help="the backend the others are compared with (default autograd)"),
    _option("atol", Optional[float], None, "--atol", help="absolute tolerance (default from the dtype: float64 1e-8)"),
    _option("rtol", Optional[float], None, "--rtol", help="relative tolerance (default from the dtype: float64 1e-6)"),
    _option("top", int, 5, "--top", help="offending entries to list", min=0),
    EXTRA[Quantity.JACOBIAN][0], *EXTRA[Quantity.VJP],
    _option("tangent", Optional[str], None, "--tangent", help="jvp: the direction (default randn, seeded by --seed)"),
]


def _check(**opts: Any) -> int:
    return check_command(opts)


_check.__signature__ = inspect.Signature(COMMON + CHECK_OPTIONS)
_check.__doc__ = ("Compare backends: every applicable backend against a reference, entry by entry; exit 1 on a "
                  "mismatch.\n\nExample: gradcli check cross_entropy -x randn:4,5 -t '[0, 1, 4, 2]' --label-smoothing 0.1"
                  "\n\nYour model: gradcli check model.py:loss -x images.npy -t labels.json --wrt param:fc.weight")
app.command("check")(_check)


@app.command("functions")
def functions_command(
    name: Annotated[Optional[str], typer.Argument(help="show one function's formulas and options")] = None,
    json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """The catalogue: every built-in with its arguments, options and Jacobian structure.

    Example: gradcli functions softmax
    """
    from .render.catalogue import catalogue_to_dict, render_catalogue

    if json:
        from .render.json import dumps

        sys.stdout.write(dumps(catalogue_to_dict(name)))
    else:
        make_console().print(render_catalogue(name))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gradcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")] = False,
) -> None:
    """gradcli: derivatives of PyTorch losses and functions, from the shell."""
