"""The typer app: options -> library call -> renderer -> exit code.

Every computing command shares one option list (built once, below) and one
body, :func:`run_command`. Errors become exit codes in one place,
:func:`errors_to_exit_codes`. torch is imported only by the backends that need it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import math
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import ExitCode, GradcliError, UsageError
from .results import BackendName, Layout, Quantity

class ShortErrorsGroup(TyperGroup):
    """Click's own parsing errors (a bad choice, an unknown option) in gradcli's
    short form — one or two lines on stderr, exit 2 — instead of a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # bare `gradcli`: the help is the answer
                typer.echo(err.format_message())
                sys.exit(0)
            ctx = getattr(err, "ctx", None)
            hint = f"; see `{ctx.command_path} --help`" if err.exit_code == ExitCode.USAGE and ctx is not None else ""
            typer.echo(f"gradcli: error: {err.format_message().rstrip('.')}{hint}", err=True)
            code = err.exit_code
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("gradcli: interrupted", err=True)
            code = ExitCode.INTERRUPTED
        sys.stdout.flush()
        sys.exit(int(code or 0))


app = typer.Typer(
    cls=ShortErrorsGroup,
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


class DType(str, enum.Enum):
    float64 = "float64"
    float32 = "float32"


class Reduction(str, enum.Enum):
    mean = "mean"
    sum = "sum"
    none = "none"
    batchmean = "batchmean"


class FdMethod(str, enum.Enum):
    central = "central"
    richardson = "richardson"
    forward = "forward"


class FdDType(str, enum.Enum):
    float64 = "float64"
    same = "same"


class Format(str, enum.Enum):
    table = "table"
    json = "json"


class CheckMode(str, enum.Enum):
    auto = "auto"
    full = "full"
    probe = "probe"


class Device(str, enum.Enum):
    cpu = "cpu"
    cuda = "cuda"


ARRAY_HELP = "ARRAY: a .npy/.npz[:key]/.json/.pt file, inline JSON, - for stdin, or a generator such as randn:3,5"


def _option(name: str, type_: Any, default: Any, *decls: str, help: str, **kw: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[type_, typer.Option(*decls, help=help, **kw)])


FUNCTION_ARG = inspect.Parameter(
    "function", inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=Annotated[str, typer.Argument(help="a built-in (see `gradcli functions`), a chain such as linear,cross_entropy, "
                                             "or expr:EXPRESSION in x such as 'expr:(x+1)**2'",
                                             show_default=False, metavar="FUNCTION")],
)

COMMON = [
    FUNCTION_ARG,
    _option("input", Optional[str], None, "--input", "-x", help=f"the input (logits). {ARRAY_HELP}"),
    _option("target", Optional[str], None, "--target", "-t", help="class indices (integers) or probabilities (floats)"),
    _option("class_weight", Optional[str], None, "--class-weight", help="a weight per class, shape (C,)"),
    _option("weight", Optional[str], None, "--weight", help="linear: the weight W, shape (out, in)"),
    _option("bias", Optional[str], None, "--bias", help="linear: the bias b, shape (out,)"),
    _option("pos_weight", Optional[str], None, "--pos-weight", help="binary_cross_entropy_with_logits: positive-class weight"),
    _option("dim", Optional[int], None, "--dim", help="softmax/log_softmax dim (default -1); losses use torch's class dim"),
    _option("reduction", Optional[Reduction], None, "--reduction",
            help="losses: mean (default), sum or none (kl_div: also batchmean), as torch"),
    _option("ignore_index", Optional[int], None, "--ignore-index", help="losses: target value to skip (default -100)"),
    _option("label_smoothing", Optional[float], None, "--label-smoothing", help="cross_entropy: in [0, 1] (default 0)"),
    _option("beta", Optional[float], None, "--beta", help="smooth_l1_loss: where quadratic turns linear (default 1)"),
    _option("delta", Optional[float], None, "--delta", help="huber_loss: where quadratic turns linear (default 1)"),
    _option("log_target", Optional[bool], None, "--log-target/--no-log-target", help="kl_div: the target holds log-probabilities"),
    _option("wrt", str, "input", "--wrt", help="the argument to differentiate: input, target (float targets), weight, bias, "
                                               "param:NAME; check: a comma list and globs such as input,param:*"),
    _option("backend", BackendName, BackendName.AUTO, "--backend", "-b",
            help="auto = analytic where a closed form exists, else autograd"),
    _option("dtype", DType, DType.float64, "--dtype", help="working precision"),
    _option("device", Device, Device.cpu, "--device", help="torch backends"),
    _option("seed", int, 0, "--seed", help="seed of the generators (randn:3,5, ...)"),
    _option("fd_method", FdMethod, FdMethod.richardson, "--fd-method", help="finite-difference formula"),
    _option("fd_step", str, "auto", "--fd-step", help="auto (eps-based, scaled by max(1, |x|)), or an absolute step such as 1e-4"),
    _option("fd_dtype", FdDType, FdDType.float64, "--fd-dtype", help="difference float32 problems in float64, or same"),
    _option("json", bool, False, "--json", help="print one JSON document (same as --format json)"),
    _option("format", Format, Format.table, "--format", help="table or json"),
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
EXTRA = {
    Quantity.JACOBIAN: [_option("layout", Layout, Layout.AUTO, "--layout",
                                help="auto: diag for elementwise functions, blocks for row-independent functions of a batch, "
                                     "else full; user code: blocks = per-sample Jacobians (B, *out, *in)"),
                        _option("verify_blocks", bool, False, "--verify-blocks",
                                help="user code with --layout blocks: check on a few rows that samples do not interact")],
    Quantity.VJP: [_option("cotangent", str, "ones", "--cotangent",
                           help="the vector v, shaped like the output (ones: what out.backward(torch.ones_like(out)) uses)")],
    Quantity.JVP: [_option("tangent", Optional[str], None, "--tangent",
                           help="the direction v, shaped like the differentiated argument (randn allowed)")],
    Quantity.GRAD: [],
}
EXAMPLES = {
    Quantity.JACOBIAN: "Example: gradcli jacobian softmax -x '[[1, 2, 3, 4], [1, 1, 1, 1]]'  (one 4x4 block per row)",
    Quantity.GRAD: "Example: gradcli grad cross_entropy -x randn:3,5 -t '[1, 0, 4]'  ((softmax - onehot) / 3)",
    Quantity.VJP: "Example: gradcli vjp softmax -x randn:2,3  (zero: softmax rows sum to 1)",
    Quantity.JVP: "Example: gradcli jvp cross_entropy -x randn:3,5 -t '[1, 0, 4]' --tangent randn",
}
HELP = {
    Quantity.JACOBIAN: "The Jacobian: per-row blocks (*rows, out, in), or full (output axes then input axes).",
    Quantity.GRAD: "The gradient of a scalar output (a reduced loss), shaped like the differentiated argument.",
    Quantity.VJP: "v^T J: what out.backward(v) puts in x.grad (v = --cotangent, default ones).",
    Quantity.JVP: "J v: the forward-mode directional derivative along --tangent.",
}
ARRAY_OPTIONS = ("input", "target", "class_weight", "weight", "bias", "pos_weight")
PARAM_OPTIONS = ("dim", "reduction", "ignore_index", "label_smoothing", "beta", "delta", "log_target")


def errors_to_exit_codes(func):
    """The one place that turns errors into a message on stderr and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        show_traceback = kwargs.get("traceback", False)
        try:
            return func(*args, **kwargs)
        except GradcliError as err:
            if show_traceback:
                raise
            typer.echo(f"gradcli: error: {err}", err=True)
            raise typer.Exit(int(err.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("gradcli: interrupted", err=True)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except (typer.Exit, typer.TyperException):
            raise
        except Exception as err:
            if show_traceback:
                raise
            typer.echo(f"gradcli: internal error: {type(err).__name__}: {err}; rerun with --traceback and report it", err=True)
            raise typer.Exit(int(ExitCode.BACKEND)) from None

    return wrapper


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
    from .backends import BackendOptions
    from .functions.base import option_name
    from .outfile import check_output_path
    from .problem import build_problem

    specs = {name: opts[name] for name in ARRAY_OPTIONS if opts.get(name) is not None}
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
    arrays = {name: load_array(spec, option_name(name), seed=opts["seed"], max_bytes=max_memory)
              for name, spec in specs.items()}
    params = {name: opts[name].value if isinstance(opts[name], enum.Enum) else opts[name]
              for name in PARAM_OPTIONS if opts.get(name) is not None}
    problem = build_problem(opts["function"], arrays, params, wrt=opts["wrt"], dtype=opts["dtype"].value,
                            allow_nonfinite=opts["allow_nonfinite"])
    if opts.get("rows"):
        from .rows import select_rows

        problem = select_rows(problem, opts["rows"])
    vectors = {}
    if vector_spec is not None:
        like = problem.output_shape if quantity is Quantity.VJP else problem.wrt_shape
        vectors[vector_option] = load_array(vector_spec, option_name(vector_option), seed=opts["seed"], like=like)
    fd_step = None if opts["fd_step"] == "auto" else parse_positive_float(opts["fd_step"], "--fd-step")
    options = BackendOptions(device=opts["device"].value, fd_method=opts["fd_method"].value, fd_step=fd_step,
                             fd_dtype=opts["fd_dtype"].value, progress=DelayedProgress())
    return Loaded(problem, vectors, options, max_memory, out_path, plot_path,
                  as_json=opts["json"] or opts["format"] is Format.json, timing=not opts["no_timing"])


def run_command(quantity: Quantity, opts: dict[str, Any]) -> None:
    """Load, compute, render, write: the body of jacobian, grad, vjp and jvp."""
    from .api import solve

    got = load(quantity, opts)
    stream = None
    if got.out_path is not None and got.out_path.suffix.lower() == ".npy" and quantity is Quantity.JACOBIAN:
        from .outfile import NpyStream

        if got.as_json:
            _refuse_json_over_memory(got, quantity, opts)
        stream = NpyStream(got.out_path)
    try:
        options = got.options if stream is None else dataclasses.replace(got.options, allocate=stream.allocate)
        result = solve(got.problem, quantity, backend=opts["backend"], layout=opts.get("layout", Layout.AUTO),
                       options=options, max_memory=got.max_memory, allow_nonfinite=opts["allow_nonfinite"],
                       verify_blocks=opts.get("verify_blocks", False), **got.vectors)
        _emit_result(result, got, opts, stream)
    finally:
        if stream is not None:
            stream.abort()  # a no-op once committed: the temporary file is gone


def _refuse_json_over_memory(got: Loaded, quantity: Quantity, opts) -> None:
    from .api import format_bytes, resolve_layout, result_shape

    layout = resolve_layout(got.problem, quantity, opts.get("layout", Layout.AUTO))
    need = math.prod(result_shape(got.problem, quantity, layout)) * got.problem.dtype.itemsize
    if need > got.max_memory:
        raise UsageError(f"--json: the result needs {format_bytes(need)}, over --max-memory; drop --json and let "
                         "-o write it in chunks")


def _emit_result(result, got: Loaded, opts, stream) -> None:
    from .outfile import write_result

    if got.as_json:
        from .render.json import dumps, result_to_dict

        output = dumps(result_to_dict(result, timing=got.timing))
    else:
        from .render.table import render_result

        output = render_result(result, precision=opts["precision"], summarize=not opts["no_summarize"],
                               explain=opts["explain"], timing=got.timing, heatmap=opts["heatmap"])
    if got.out_path is not None:
        write_result(got.out_path, result, timing=got.timing, stream=stream)
    if got.plot_path is not None:
        from .render.plot import write_plot

        write_plot(got.plot_path, result)
    emit(output)


def check_command(opts: dict[str, Any]) -> int:
    """Every backend against a reference, per argument; exit 1 on a mismatch, 3 when nothing was compared."""
    from .checking import default_quantity
    from .modelcheck import run_checks
    from .outfile import write_text
    from .wrtlist import expand, is_list, retarget

    quantity = Quantity(opts["quantity"].value) if opts.get("quantity") else None
    if quantity is Quantity.JVP and opts.get("tangent") is None:
        opts = {**opts, "tangent": "randn"}  # a random direction, as JAX's check_grads (seeded by --seed)
    if opts.get("output") and not str(opts["output"]).lower().endswith(".json"):
        raise UsageError("--output: check writes its report as .json; give PATH.json")
    many = is_list(opts["wrt"])
    got = load(quantity or Quantity.GRAD, {**opts, "wrt": "input"} if many else opts)
    problems = [retarget(got.problem, w) for w in expand(got.problem.function, opts["wrt"])] if many else [got.problem]
    backends = None
    if opts.get("backends"):
        backends = [parse_backend(name, "--backends") for name in opts["backends"].split(",") if name.strip()]
    model = run_checks(
        problems, mode=opts["mode"].value, probes=opts["probes"], seed=opts["seed"], taylor=opts["taylor"],
        locate=opts["locate"], quantity=quantity, backends=backends,
        reference=parse_backend(opts["reference"], "--reference") if opts.get("reference") else None,
        atol=opts.get("atol"), rtol=opts.get("rtol"), top=opts["top"], options=got.options, max_memory=got.max_memory,
        layout=opts.get("layout", Layout.AUTO), allow_nonfinite=opts["allow_nonfinite"], **got.vectors,
    )
    from .render.json import dumps
    from .render.models import model_to_dict

    document = dumps(model_to_dict(model, timing=got.timing))
    if got.as_json:
        output = document
    else:
        from .render.models import render_model

        output = render_model(model, timing=got.timing)
    if got.out_path is not None:
        write_text(got.out_path, document)
    emit(output)
    return int(ExitCode.BACKEND if model.ok is None else ExitCode.OK if model.ok else ExitCode.MISMATCH)


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
    def command(**opts: Any) -> None:
        run_command(quantity, opts)

    command.__signature__ = inspect.Signature(COMMON + EXTRA[quantity])
    command.__name__ = quantity.value
    command.__doc__ = f"{HELP[quantity]}\n\n{EXAMPLES[quantity]}"
    app.command(quantity.value)(errors_to_exit_codes(command))


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
    _option("mode", CheckMode, CheckMode.auto, "--mode",
            help="full: every entry; probe: vᵀ J u along --probes random directions per argument (cost independent "
                 "of its size); auto: full below about 2e4 function evaluations, else probe"),
    _option("probes", int, 4, "--probes", help="probe mode: seeded sign directions per argument", min=1),
    _option("taylor", bool, False, "--taylor",
            help="Taylor remainder test along each probe: order 2 when the derivative is right, 1 when wrong "
                 "(decides in float32, where fd's tolerance cannot)"),
    _option("locate", bool, True, "--locate/--no-locate",
            help="after a mismatch: the wrong module (each submodule checked alone) and the worst entries"),
]


def _check(**opts: Any) -> int:
    code = check_command(opts)
    if code:
        raise typer.Exit(code)
    return code


_check.__signature__ = inspect.Signature(COMMON + CHECK_OPTIONS)
_check.__doc__ = ("Compare backends: every applicable backend against a reference, entry by entry or along random "
                  "probes, for one or several --wrt arguments; exit 1 on a mismatch (naming the wrong module), 3 when "
                  "nothing but the reference ran.\n\nExample: gradcli check cross_entropy -x randn:4,5 -t '[0, 1, 4, 2]' "
                  "--label-smoothing 0.1\n\nA model's every parameter: gradcli check sample_inputs/mlp.py:loss "
                  "-x randn:32,784 -t randint:10:32 --wrt 'param:*'")
app.command("check")(errors_to_exit_codes(_check))


@app.command("functions")
@errors_to_exit_codes
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``gradcli`` and ``python -m gradcli``)."""
    # SIGTERM as Ctrl-C: the same clean stop (no partial output file), exit 130.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    typer.main.get_command(app).main(args=argv, prog_name="gradcli")
