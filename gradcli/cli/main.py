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
import math

import sys
import time
from dataclasses import dataclass, replace
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .. import __version__
from ..core.errors import ExitCode, GradcliError, UsageError
from ..core.options import BackendName, CheckMode, Device, DType, FdDType, FdMethod, Format, Layout, Quantity


class ReaderGone(Exception):
    """Standard output's reader went away (``| head``). Raised in place of
    BrokenPipeError, which typer would turn into a silent exit 1 (``check``'s
    "mismatch")."""


class GradcliGroup(TyperGroup):
    """The one place errors become exit codes (SPEC §2): one or two lines on
    stderr, never a traceback unless ``--traceback``, nothing on stdout.
    A broken pipe on standard output ends the run silently with 141, as the
    shell reports a tool killed by SIGPIPE (``yes | head``)."""

    def make_context(self, *args, **kwargs):  # where --help and --version print
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as err:
            raise ReaderGone() from err

    def invoke(self, ctx):  # where the commands (and their --help) print
        try:
            return super().invoke(ctx)
        except BrokenPipeError as err:
            raise ReaderGone() from err

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
            _error(err.cli_message())
            code = err.exit_code
        except (ReaderGone, BrokenPipeError):  # the reader went away (`| head`): nothing more to say
            _drop_stdout()
            code = ExitCode.BROKEN_PIPE
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


FUNCTION_HELP = ("a built-in (see `gradcli functions`), a chain such as linear,cross_entropy, "
                 "expr:EXPRESSION in x such as 'expr:(x+1)**2', or your code: PATH.py:NAME "
                 "(a function, a torch.nn.Module or a factory; -x is its first argument, "
                 "-t its second, --arg NAME=ARRAY any other), PATH.pt (TorchScript) or "
                 "PATH.pt2 (torch.export); --wrt param:NAME differentiates a module parameter")
FUNCTION_ARG = inspect.Parameter(
    "function", inspect.Parameter.POSITIONAL_OR_KEYWORD,
    annotation=Annotated[str, typer.Argument(help=FUNCTION_HELP,
                                             show_default=False, metavar="FUNCTION")],
)

SHORT = {"input": "-x", "target": "-t"}  # the two arrays every story uses


def catalogue_options() -> list[inspect.Parameter]:
    """One option per array argument and per scalar Param of the built-ins,
    with help and defaults read from the catalogue: a new loss touches one file."""
    from ..catalogue import array_arguments, parameters

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
            "bias, or param:NAME (a parameter of your torch.nn.Module); check: a comma list and globs such as "
            "input,param:*, one result each; hessian/hvp/grad: a glob such as 'param:*' joins the matching "
            "parameters into one flat vector"),
    _option("arg", Optional[list[str]], None, "--arg", help="user code: another argument by name, NAME=ARRAY "
            "(repeatable: a mask, lengths, a second input); --input is its first argument, --target its second"),
    _option("backend", BackendName, BackendName.AUTO, "--backend", "-b",
            help="auto = analytic where a closed form exists, else autograd"),
    _option("dtype", Optional[DType], None, "--dtype",
            help="working precision (default float64; a note says when float32 data is upcast)"),
    _option("device", Device, Device.CPU, "--device", help="torch backends"),
    _option("seed", int, 0, "--seed", help="seed of the generators (randn:3,5, ...) and of dropout masks "
            "(0 to 2**64 - 1, as torch.manual_seed)", min=0, max=2**64 - 1),
    _option("fd_method", FdMethod, FdMethod.RICHARDSON, "--fd-method", help="finite-difference formula"),
    _option("fd_step", str, "auto", "--fd-step", help="auto (adaptive per entry: Richardson steps from eps^(1/5), "
            "halved or doubled until they converge), or an absolute step such as 1e-4"),
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
    _option("no_value", bool, False, "--no-value", help="JSON: leave value out (metadata and notes only); useful with -o"),
    _option("traceback", bool, False, "--traceback", help="show the full traceback of an error"),
]
COMMON = [FUNCTION_ARG, *catalogue_options(), *RUN_OPTIONS]
CHECK_FUNCTION_ARG = FUNCTION_ARG.replace(
    default=None,
    annotation=Annotated[Optional[str], typer.Argument(help=FUNCTION_HELP + "; omit it with --suite",
                                                       show_default=False, metavar="[FUNCTION]")])
EXTRA = {
    Quantity.JACOBIAN: [_option("layout", Layout, Layout.AUTO, "--layout",
                                help="auto: diag for elementwise functions, blocks for row-independent functions of a batch, "
                                     "else full; user code: blocks = per-sample Jacobians (B, *out, *in)"),
                        _option("verify_blocks", bool, True, "--verify-blocks/--no-verify-blocks",
                                help="user code, blocks: check on three samples that they do not interact before "
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
                            min=0),
                    _option("verify_blocks", bool, True, "--verify-blocks/--no-verify-blocks",
                            help="with --per-sample: refuse when samples interact (the batch loss must be the sum "
                                 "or mean of the per-sample losses, and their gradients its gradient)")],
    Quantity.HESSIAN: [_option("layout", Layout, Layout.AUTO, "--layout",
                               help="auto: diag for elementwise functions, blocks (*rows, C, C) for functions of rows, "
                                    "else full (output axes, then the argument's axes twice, as torch.func.hessian)"),
                       _option("eig", Optional[int], None, "--eig", metavar="K",
                               help="also the K smallest and K largest eigenvalues (scalar output): exact from the "
                                    "blocks, else Lanczos on hvp")],
    Quantity.HVP: [_option("tangent", Optional[str], None, "--tangent",
                           help="the vector t of H t, shaped like the differentiated argument (randn allowed)")],
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
    Quantity.HESSIAN: "Example: gradcli hessian cross_entropy -x randn:3,5 -t '[1, 0, 4]' --eig 2  "
                      "(one 5x5 block per row: (diag(p) - p p^T) / 3)",
    Quantity.HVP: "Example: gradcli hvp cross_entropy -x randn:3,5 -t '[1, 0, 4]' --tangent randn",
}
HELP = {
    Quantity.JACOBIAN: "The Jacobian: per-row blocks (*rows, out, in), or full (output axes then input axes).",
    Quantity.GRAD: "The gradient of a scalar output (a reduced loss), shaped like the differentiated argument.",
    Quantity.VJP: "v^T J: what out.backward(v) puts in x.grad (v = --cotangent, default ones).",
    Quantity.JVP: "J v: the forward-mode directional derivative along --tangent.",
    Quantity.HESSIAN: "Second derivatives: per-row blocks (*rows, C, C), the diagonal, or full "
                      "(output axes, then the argument's axes twice); --eig K for the extreme eigenvalues.",
    Quantity.HVP: "H t: the Hessian of a scalar output times --tangent, shaped like the argument, never forming H.",
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
    started: float = 0.0  # time.perf_counter() when the command began, and when its inputs were loaded
    loaded: float = 0.0


def load(quantity: Quantity, opts: dict[str, Any], differentiates_input: bool | None = None) -> Loaded:
    """Options -> arrays -> a validated problem (and the vjp/jvp vector);
    ``differentiates_input``: as :func:`gradcli.problem.build_problem`'s."""
    started = time.perf_counter()
    from ..io.arrays import load_array
    from ..catalogue import array_arguments, parameters
    from ..catalogue.base import option_name
    from ..core.options import BackendOptions
    from ..io.files import check_output_path
    from ..problem.problem import build_problem

    specs = {name: opts[name] for name in array_arguments() if opts.get(name) is not None}
    vector_option = {Quantity.VJP: "cotangent", Quantity.JVP: "tangent", Quantity.HVP: "tangent"}.get(quantity)
    vector_spec = opts.get(vector_option) if vector_option else None
    if opts.get("input") is None:
        raise UsageError("--input: missing; give the input with -x, e.g. -x randn:3,5 or -x logits.npy")
    from ..core.sizes import parse_size

    max_memory = parse_size(opts["max_memory"])
    out_path = check_output_path(opts["output"]) if opts.get("output") else None
    plot_path = None
    if opts.get("plot"):
        from ..io.files import check_plot_path
        from ..render.plot import require_matplotlib

        plot_path = check_plot_path(opts["plot"])
    from ..problem.function import user_function
    from ..usercode.signature import parse_arg_options

    named = parse_arg_options(opts.get("arg"), set(specs))
    from ..io.arrays import file_of
    from ..io.files import refuse_same_file

    every = {**specs, **named, **({vector_option: vector_spec} if vector_spec is not None else {})}
    readers = [f"--arg {n}" if n in named else option_name(n) for n, spec in every.items() if spec.strip() == "-"]
    if len(readers) > 1:
        raise UsageError(f"{readers[1]}: only one option can read standard input (-), and {readers[0]} does; "
                         "give the others as files")
    refuse_same_file({"--output": out_path, "--save-baseline": opts.get("save_baseline")},
                     {f"--arg {n}" if n in named else option_name(n): file_of(spec)
                      for n, spec in every.items()})
    function = user_function(opts["function"], opts["seed"], tuple(named))
    specs.update(named)
    arrays: dict[str, Any] = {}
    for name, spec in specs.items():  # together within --max-memory, each refused before it is read
        arrays[name] = load_array(spec, f"--arg {name}" if name in named else option_name(name), seed=opts["seed"],
                                  max_bytes=max_memory, held=sum(a.nbytes for a in arrays.values()))
    params = {name: opts[name] for name in parameters() if opts.get(name) is not None}
    problem = build_problem(function, arrays, params, wrt=opts["wrt"], dtype=opts["dtype"],
                            allow_nonfinite=opts["allow_nonfinite"], differentiates_input=differentiates_input)
    if opts.get("rows") is not None:  # (an empty --rows is refused by its parser, not ignored)
        from ..problem.problem import select_rows

        problem = select_rows(problem, opts["rows"])
    vectors = {}
    if vector_spec is not None:
        like = problem.output_shape if quantity is Quantity.VJP else problem.wrt_shape
        vectors[vector_option] = load_array(vector_spec, option_name(vector_option), seed=opts["seed"], like=like,
                                            max_bytes=max_memory, held=sum(a.nbytes for a in arrays.values()))
    fd_step = None if opts["fd_step"] == "auto" else parse_positive_float(opts["fd_step"], "--fd-step")
    options = BackendOptions(device=opts["device"], fd_method=opts["fd_method"], fd_step=fd_step,
                             fd_dtype=opts["fd_dtype"], progress=DelayedProgress())
    return Loaded(problem, vectors, options, max_memory, out_path, plot_path,
                  as_json=opts["json"] or opts["format"] is Format.JSON, timing=not opts["no_timing"],
                  started=started, loaded=time.perf_counter())


def run_command(quantity: Quantity, opts: dict[str, Any]) -> int:
    """Load, compute, render, print, then publish files: the body of jacobian,
    grad, vjp and jvp. Standard output is written first; an output file is
    published only after it, so a failure leaves nothing behind."""
    from ..compute.solve import solve

    if opts["backend"] is BackendName.COMPILE:
        raise UsageError("--backend compile: compares compiled gradients with eager ones, so it belongs to check: "
                         "gradcli check ... --backends autograd,compile")
    if quantity is Quantity.GRAD and (opts.get("per_sample") or opts.get("norms")):
        return per_sample_command(opts)
    got = load(quantity, opts)
    if not got.as_json and opts["no_summarize"]:
        _refuse_table_over_memory(got, quantity, opts)
    stream = None
    if got.out_path is not None and got.out_path.suffix.lower() == ".npy" and quantity is Quantity.JACOBIAN:
        from ..io.files import NpyStream

        stream = NpyStream(got.out_path)
    try:
        options = got.options if stream is None else replace(got.options, allocate=stream.allocate)
        result = solve(got.problem, quantity, backend=opts["backend"], layout=opts.get("layout", Layout.AUTO),
                       options=options, max_memory=got.max_memory, allow_nonfinite=opts["allow_nonfinite"],
                       verify_blocks=opts.get("verify_blocks", True), eig=opts.get("eig"), **got.vectors)
        _emit_result(result, got, opts, stream)
    finally:
        if stream is not None:
            stream.abort()  # a no-op once committed: the temporary file is gone
    return ExitCode.OK


def per_sample_command(opts: dict[str, Any]) -> int:
    """``grad --per-sample [--norms]``: one gradient (or norm) per sample."""
    from ..render.files import prepare_samples
    from ..render.samples import render_samples, samples_to_dict
    from ..compute.per_sample import per_sample_gradients

    if not opts.get("per_sample"):
        raise UsageError("--norms: gives per-sample gradient norms; add --per-sample")
    # the parameters are chosen by per_sample_gradients; an integer input (token ids) stays integer
    got = load(Quantity.GRAD, {**opts, "wrt": "input"}, differentiates_input=False)
    res = per_sample_gradients(got.problem, opts["wrt"], norms=opts["norms"], top=opts["top"],
                               max_memory=got.max_memory, verify_blocks=opts["verify_blocks"])
    if got.as_json:
        from ..render.json import dumps

        output = dumps(samples_to_dict(res, timing=got.timing))
    else:
        output = render_samples(res, precision=opts["precision"], summarize=not opts["no_summarize"],
                                timing=got.timing)
    pending = [prepare_samples(got.out_path, res)] if got.out_path is not None else []
    stdout_then_files(lambda: emit(output), pending)
    return ExitCode.OK


def _refuse_table_over_memory(got: Loaded, quantity: Quantity, opts) -> None:
    """A table of every entry (--no-summarize) is held as text and rich cells
    while it renders; JSON is streamed and summarised tables are small."""
    from ..problem.plan import make_plan
    from ..core.sizes import format_bytes
    from ..render.table import TABLE_BYTES_PER_ENTRY

    plan = make_plan(got.problem, quantity, opts.get("layout", Layout.AUTO), max_memory=2**62)
    need = math.prod(plan.shape) * TABLE_BYTES_PER_ENTRY
    if need > got.max_memory:
        raise UsageError(f"--no-summarize: a table of every entry needs about {format_bytes(need)} to render, over "
                         "--max-memory; drop --no-summarize, or use --json or -o (written as a stream)")


def _emit_result(result, got: Loaded, opts, stream) -> None:
    """Standard output first; the files (-o, --plot) are written before it but
    published only after it succeeded, and removed on any failure."""
    from ..io.files import pending_write
    from ..render.files import prepare_result

    def total() -> float:
        return time.perf_counter() - got.started

    def write_stdout() -> None:
        if got.as_json:
            from ..render.json import dump, result_to_dict

            dump(result_to_dict(result, timing=got.timing, value=not opts["no_value"], total_seconds=total),
                 sys.stdout.write)
        else:
            _emit_table(result, got, opts)

    pending = []
    try:
        if got.out_path is not None:
            pending.append(prepare_result(got.out_path, result, timing=got.timing, stream=stream, total_seconds=total))
        if got.plot_path is not None:
            from ..render.plot import draw_plot

            pending.append(pending_write(got.plot_path, lambda handle: draw_plot(result, handle)))
    except BaseException:
        for file in pending:
            file.abort()
        raise
    stdout_then_files(write_stdout, pending)


def stdout_then_files(write_stdout, pending) -> None:
    """Run ``write_stdout``, then publish the ``pending`` output files; on any
    failure remove them. Standard output closed or full is a short error. A
    reader that went away (``| head``) only cut the display of a whole result:
    the files are published and the run ends silently (exit 141, in ``main``)."""
    try:
        if sys.stdout is None:  # started with standard output closed (>&-)
            raise UsageError("standard output is closed; give gradcli somewhere to write (e.g. > result.txt)")
        write_stdout()
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        for file in pending:
            file.publish()
        raise
    except BaseException as err:
        for file in pending:
            file.abort()
        if isinstance(err, OSError):  # a full device, a closed pipe: nothing more can reach standard output
            _drop_stdout()
            raise UsageError(f"standard output: cannot write ({err.strerror or err}); no output file was written") from err
        raise
    for file in pending:
        file.publish()


def _drop_stdout() -> None:
    """Point standard output at /dev/null so that the text still buffered is not
    written again (and fails again) at exit."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _emit_table(result, got: Loaded, opts) -> None:
    """The body is rendered first so that the header's time covers the whole run."""
    from ..render.table import header, render_body

    console = make_console()
    body = render_body(result, precision=opts["precision"], summarize=not opts["no_summarize"],
                       explain=opts["explain"], heatmap=opts["heatmap"])
    render_start = time.perf_counter()
    with console.capture() as capture:
        console.print(body)
    now = time.perf_counter()
    times = {"load": got.loaded - got.started, "compute": result.seconds, "render": now - render_start,
             "total": now - got.started}
    console.print(header(result, got.timing, times))
    console.print()
    sys.stdout.write(capture.get())


def check_report(opts: dict[str, Any]):
    """Run one check from its options (one result per ``--wrt`` argument):
    ``(report, baseline comparison or None, fingerprint to save or None, loaded)``."""
    from ..checking.full import default_quantity
    from ..checking.model import run_checks
    from ..problem.wrt import expand, is_list, names_input, retarget

    quantity = opts.get("quantity")
    many = is_list(opts["wrt"])
    if quantity in (Quantity.JVP, Quantity.HVP) and opts.get("tangent") is None and not many:
        # a random direction, as JAX's check_grads (seeded by --seed); a --wrt list's entries get theirs in run_checks
        opts = {**opts, "tangent": "randn"}
    if opts.get("output") and not str(opts["output"]).lower().endswith(".json"):
        raise UsageError("--output: check writes its report as .json; give PATH.json")
    if opts.get("plot"):  # check compares backends: there is no one value to draw
        raise UsageError("--plot: draws a computed value, which check does not keep; use e.g. "
                         "gradcli jacobian FUNCTION ... --plot PATH.png")
    if opts.get("save_baseline"):
        check_output_path_of(opts["save_baseline"], "--save-baseline", (".json",))
    from ..io.files import refuse_same_file

    refuse_same_file({"--output": opts.get("output")}, {"--baseline": opts.get("baseline")})  # (--save-baseline
    # may name the --baseline it refreshes; load() compares the outputs with the arrays and each other)
    got = (load(quantity or Quantity.GRAD, {**opts, "wrt": "input"}, differentiates_input=names_input(opts["wrt"]))
           if many else load(quantity or Quantity.GRAD, opts))
    problems = retarget(got.problem, expand(got.problem.function, opts["wrt"])) if many else [got.problem]
    old_baseline = None
    if opts.get("baseline"):  # read and checked before the work, which it would otherwise follow
        from ..checking import baseline

        old_baseline = baseline.load(opts["baseline"], max_bytes=got.max_memory)
    backends = None
    if opts.get("backends"):
        # each once: --backends fd,fd ran (and listed) fd twice
        backends = list(dict.fromkeys(parse_backend(name, "--backends") for name in opts["backends"].split(",")
                                      if name.strip()))
    report = run_checks(
        problems, mode=opts["mode"].value, probes=opts["probes"], seed=opts["seed"], taylor=opts["taylor"],
        locate=opts["locate"], quantity=quantity, backends=backends,
        reference=parse_backend(opts["reference"], "--reference") if opts.get("reference") else None,
        atol=opts.get("atol"), rtol=opts.get("rtol"), top=opts["top"], options=got.options, max_memory=got.max_memory,
        layout=opts.get("layout", Layout.AUTO), allow_nonfinite=opts["allow_nonfinite"], **got.vectors,
    )
    comparison = saved = None
    if opts.get("baseline") or opts.get("save_baseline"):
        from ..checking import baseline

        fingerprint = baseline.fingerprint(problems, backend=report.reference, seed=opts["seed"],
                                           max_memory=got.max_memory)
        if opts.get("baseline"):
            comparison = baseline.compare(opts["baseline"], old_baseline, fingerprint)
        if opts.get("save_baseline"):
            saved = fingerprint
    return report, comparison, saved, got


def check_code(report, comparison) -> ExitCode:
    """3 when nothing but the reference ran, 1 on a mismatch or a moved baseline, else 0."""
    if report.ok is None:
        return ExitCode.BACKEND
    return ExitCode.OK if report.ok and (comparison is None or comparison.ok) else ExitCode.MISMATCH


def check_command(opts: dict[str, Any]) -> int:
    """Every backend against a reference; exit 1 on a mismatch (or a moved baseline)."""
    if opts.get("suite"):
        return suite_command(opts)
    if opts.get("junit"):
        raise UsageError("--junit: goes with --suite FILE.toml")
    if not opts.get("function"):
        raise UsageError("FUNCTION: missing; name the function to check, or give --suite FILE.toml")
    from ..io.files import pending_write

    report, comparison, saved, got = check_report(opts)
    document = dumps_check(report, comparison, got.timing)
    if got.as_json:
        output = document
    else:
        output = render_check(report, comparison, got.timing)
    pending = [pending_write(got.out_path, lambda handle: handle.write(document.encode()))] if got.out_path else []
    if saved is not None:
        from ..checking.baseline import dumps

        text = dumps(saved).encode()
        pending.append(pending_write(check_output_path_of(opts["save_baseline"], "--save-baseline", (".json",)),
                                     lambda handle: handle.write(text)))
    stdout_then_files(lambda: emit(output), pending)
    return int(check_code(report, comparison))


def check_output_path_of(path: str, option: str, suffixes: tuple[str, ...]):
    from ..io.files import check_output_path

    return check_output_path(path, option, suffixes)


def check_document(report, comparison, timing: bool) -> dict:
    from ..render.models import model_to_dict

    doc = model_to_dict(report, timing=timing)
    if comparison is not None:
        from ..render.ci import baseline_to_dict

        doc["baseline"] = baseline_to_dict(comparison)
        doc["ok"] = doc["ok"] and comparison.ok if doc["ok"] is not None else None
    return doc


def dumps_check(report, comparison, timing: bool) -> str:
    from ..render.json import dumps

    return dumps(check_document(report, comparison, timing))


def render_check(report, comparison, timing: bool):
    from rich.console import Group
    from rich.text import Text

    from ..render.models import render_model

    if comparison is None:
        return render_model(report, timing=timing)
    from ..render.ci import render_baseline

    return Group(render_model(report, timing=timing), Text(), render_baseline(comparison))


SUITE_OPTIONS = ("suite", "junit", "json", "format", "no_timing", "traceback", "function", "baseline", "save_baseline")


def suite_command(opts: dict[str, Any]) -> int:
    """``check --suite FILE``: every entry in this process; one summary, the
    failing reports, and the suite's exit code (see :mod:`gradcli.suite`)."""
    from pathlib import Path

    from ..io.files import write_bytes, write_text
    from ..render.ci import junit_xml, plain_text, render_summary
    from ..checking.suite import PATH_KEYS, load_suite, run_suite, suite_exit_code

    if opts.get("function"):
        raise UsageError("--suite: the file names the functions; drop FUNCTION")
    for option in ("baseline", "save_baseline"):
        if opts.get(option):
            raise UsageError(f"--{option.replace('_', '-')}: with --suite, give it in the entry it belongs to "
                             f"({option.replace('_', '-')} = \"FILE.json\")")
    check = typer.main.get_command(app).commands["check"]
    for param in check.params:  # a per-check option on the command line would apply to no entry
        given = opts.get(param.name)
        if param.name not in SUITE_OPTIONS and given not in (None, [], ()) and given != param.default:
            raise UsageError(f"{param.opts[0]}: with --suite, each [[check]] takes its own options: write "
                             f"{param.name.replace('_', '-')} = ... in the entries (the command line takes only "
                             "--junit, --json, --format and --no-timing)")
    known = {p.name for p in check.params} - {"suite", "junit"}
    from ..catalogue import array_arguments

    path_keys = set(PATH_KEYS) | set(array_arguments()) | {"cotangent", "tangent"}
    entries = load_suite(opts["suite"], known | {"suite", "junit"}, path_keys)
    parsed = {entry.name: _entry_options(check, entry, opts["suite"]) for entry in entries}  # all valid before any runs
    _refuse_shared_outputs(parsed, opts["suite"])
    junit = check_output_path_of(opts["junit"], "--junit", (".xml",)) if opts.get("junit") else None
    timing = not opts["no_timing"]
    saves, reports = [], []

    def run(entry):
        options = parsed[entry.name]
        report, comparison, saved, _ = check_report(options)
        if saved is not None:
            saves.append((options["save_baseline"], saved))
        if options.get("output"):  # the entry's report, as `check -o` writes it
            reports.append((options["output"], dumps_check(report, comparison, timing and not options["no_timing"])))
        return report, comparison, check_code(report, comparison)

    outcomes = run_suite(entries, run)
    as_json = opts["json"] or opts["format"] is Format.JSON
    if as_json:
        import json as _json

        documents = [{"name": o.name, "exit_code": int(o.exit_code),
                      **(check_document(o.report, o.extra, timing) if o.report is not None
                         else {"ok": None, "error": o.error})} for o in outcomes]
        emit(_json.dumps(documents, indent=2, allow_nan=False) + "\n")
    else:
        from rich.console import Group
        from rich.text import Text

        parts = [render_summary(outcomes, timing=timing)]
        for o in outcomes:
            if o.exit_code == ExitCode.MISMATCH:
                parts += [Text(), Text(f"── {o.name} ──", style="bold"), render_check(o.report, o.extra, timing)]
            elif o.error is not None:
                parts += [Text(), Text(f"── {o.name}: {o.error}", style="bold red")]
        emit(Group(*parts))

    def report_text(outcome) -> str:
        return plain_text(render_check(outcome.report, outcome.extra, timing))

    if junit is not None:
        write_bytes(junit, junit_xml(outcomes, Path(opts["suite"]).stem, report_text))
    from ..checking.baseline import dumps

    for path, fingerprint in saves:
        write_text(check_output_path_of(path, "--save-baseline", (".json",)), dumps(fingerprint))
    for path, document in reports:
        write_text(check_output_path_of(path, "--output", (".json",)), document)
    return int(suite_exit_code(outcomes))


def _refuse_shared_outputs(parsed: dict[str, dict[str, Any]], suite: str) -> None:
    """Two entries writing the same file (``output``, ``save-baseline``): the second would
    silently replace the first's, so the suite is refused before any runs."""
    import os

    writers: dict[str, str] = {}
    for name, options in parsed.items():
        for key in ("output", "save_baseline"):
            if options.get(key):
                where = os.path.realpath(options[key])
                if where in writers and writers[where] != name:
                    raise UsageError(f"--suite: {suite}: check {name!r}: {key.replace('_', '-')} {options[key]} is "
                                     f"also written by check {writers[where]!r}; give each its own file")
                writers[where] = name


def _entry_options(check, entry, suite: str) -> dict[str, Any]:
    """An entry's options through the check command's own parser, so a suite
    means exactly what the same command line means."""
    import json

    from ..catalogue import array_arguments

    params = {p.name: p for p in check.params}
    arrays = {*array_arguments(), "cotangent", "tangent"}
    argv = [str(entry.options["function"])]
    for key, value in entry.options.items():
        if key == "function":
            continue
        param = params[key]
        flag = getattr(param, "is_flag", False) or getattr(param, "secondary_opts", None)
        if isinstance(value, bool) and flag:
            if value:
                argv.append(param.opts[0])
            elif param.secondary_opts:
                argv.append(param.secondary_opts[0])
            continue
        if isinstance(value, list) and getattr(param, "multiple", False):  # --arg: one flag per item
            for item in value:
                argv += [param.opts[0], str(item)]
            continue
        if isinstance(value, list):  # an array written in TOML is its JSON; a list of names joins with commas
            value = json.dumps(value) if key in arrays else ",".join(str(v) for v in value)
        argv += [param.opts[0], str(value)]
    try:
        ctx = check.make_context("check", argv, resilient_parsing=False)
    except typer.TyperException as err:
        raise UsageError(f"--suite: {suite}: check {entry.name!r}: {err.format_message().rstrip('.')}") from None
    # click hands back choices as strings; typer turns them into the enums on the way to
    # the command, so the same conversion happens here.
    kinds = {name: _enum_of(p.annotation) for name, p in _check.__signature__.parameters.items()}
    try:
        refuse_empty(ctx.params)
    except UsageError as err:
        raise UsageError(f"--suite: {suite}: check {entry.name!r}: {err.cli_message()}") from None
    return {name: kinds[name](value) if kinds.get(name) and value is not None else value
            for name, value in ctx.params.items()}


def _enum_of(annotation) -> type | None:
    """The enum class inside ``Annotated[Optional[E], ...]``, if any."""
    import typing

    for kind in (annotation, *typing.get_args(annotation)):
        for inner in (kind, *typing.get_args(kind)):
            if isinstance(inner, type) and issubclass(inner, enum.Enum):
                return inner
    return None


def parse_backend(name: str, option: str) -> BackendName:
    try:
        return BackendName(name.strip())
    except ValueError:
        raise UsageError(f"{option}: unknown backend {name.strip()!r}; use autograd, forward, analytic, fd "
                         "or (check only) compile") from None


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
    import errno

    from rich.console import Console

    class StdoutConsole(Console):
        def on_broken_pipe(self) -> None:  # rich would exit 1 here; GradcliGroup.main decides (silent, 141)
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    # A pipe has no width; 140 columns keeps tables whole in files and logs.
    return StdoutConsole(width=None if sys.stdout.isatty() else 140, highlight=False, soft_wrap=False)


def parse_positive_float(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{option}: {text!r} is not a positive number; write auto or e.g. 1e-4")
    if value < 2.2250738585072014e-308:  # subnormal: a difference quotient by it divides by ~0
        raise UsageError(f"{option}: {text!r} is below the smallest normal float64 (2.2e-308); write auto or e.g. 1e-4")
    return value


def refuse_empty(opts: dict[str, Any]) -> None:
    """An option given as an empty text (``--baseline "$BASELINE"`` with the variable unset)
    is refused: read as absent, ``--baseline ''`` compared nothing and passed, ``-o ''``
    wrote nothing, ``--backends ''`` ran the defaults."""
    for name, value in opts.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and not item.strip():
                option = "FUNCTION" if name == "function" else f"--{name.replace('_', '-')}"
                fix = "give one" if name in ("function", "input") else f"give a value or leave {option} out"
                raise UsageError(f"{option}: empty value (an unset shell variable?); {fix}")


def _make_command(quantity: Quantity):
    def command(**opts: Any) -> int:
        refuse_empty(opts)
        return run_command(quantity, opts)

    command.__signature__ = inspect.Signature(COMMON + EXTRA[quantity])
    command.__name__ = quantity.value
    command.__doc__ = f"{HELP[quantity]}\n\n{EXAMPLES[quantity]}"
    app.command(quantity.value)(command)


for _quantity in (Quantity.JACOBIAN, Quantity.GRAD, Quantity.VJP, Quantity.JVP, Quantity.HESSIAN, Quantity.HVP):
    _make_command(_quantity)


CHECK_OPTIONS = [
    _option("quantity", Optional[Quantity], None, "--quantity",
            help="what to compare (default: grad for a scalar output, else jacobian; hessian and hvp: second order)"),
    _option("backends", Optional[str], None, "--backends",
            help="comma-separated, e.g. analytic,fd (default: all that apply)"),
    _option("reference", Optional[str], None, "--reference", help="the backend the others are compared with (default autograd)"),
    _option("atol", Optional[float], None, "--atol", help="absolute tolerance (default from the dtype: float64 1e-8)"),
    _option("rtol", Optional[float], None, "--rtol", help="relative tolerance (default from the dtype: float64 1e-6)"),
    _option("top", int, 5, "--top", help="offending entries to list", min=0),
    EXTRA[Quantity.JACOBIAN][0], *EXTRA[Quantity.VJP],
    _option("tangent", Optional[str], None, "--tangent",
            help="jvp, hvp: the direction (default randn, seeded by --seed; each --wrt entry its own)"),
    _option("mode", CheckMode, CheckMode.AUTO, "--mode",
            help="full: every entry; probe: vᵀ J u along --probes random directions per argument (cost independent "
                 "of its size); auto: full below about 2e4 function evaluations, else probe"),
    _option("probes", int, 4, "--probes", help="probe mode: seeded sign directions per argument", min=1),
    _option("taylor", bool, False, "--taylor",
            help="Taylor remainder test along each probe: order 2 when the derivative is right, 1 when wrong "
                 "(decides in float32, where fd's tolerance cannot)"),
    _option("locate", Optional[bool], None, "--locate/--no-locate", show_default=False,
            help="after a mismatch: the wrong module (each submodule checked alone) and the worst entries "
                 "[default: on; --locate also says when a function has no modules to check]"),
    _option("baseline", Optional[str], None, "--baseline",
            help="compare the gradients with a fingerprint saved by --save-baseline; exit 1 if they moved"),
    _option("save_baseline", Optional[str], None, "--save-baseline",
            help="store a fingerprint of the output and gradients (seeded probes) in FILE.json"),
    _option("suite", Optional[str], None, "--suite", help="run every [[check]] of FILE.toml in one process"),
    _option("junit", Optional[str], None, "--junit", help="--suite: also write JUnit XML to PATH.xml"),
]


def _check(**opts: Any) -> int:
    refuse_empty(opts)
    return check_command(opts)


# check runs several backends (--backends), never one (--backend).
_check.__signature__ = inspect.Signature([CHECK_FUNCTION_ARG] + [p for p in COMMON[1:] if p.name != "backend"]
                                         + CHECK_OPTIONS)
_check.__doc__ = ("Compare backends: every applicable backend against a reference, entry by entry; exit 1 on a "
                  "mismatch. With --suite FILE.toml, every check the file lists, one summary, one exit code."
                  "\n\nExample: gradcli check cross_entropy -x randn:4,5 -t '[0, 1, 4, 2]' --label-smoothing 0.1"
                  "\n\nYour model: gradcli check model.py:loss -x images.npy -t labels.json --wrt 'param:*'"
                  "\n\nExample: gradcli check --suite checks.toml --junit report.xml")
app.command("check")(_check)


@app.command("functions")
def functions_command(
    name: Annotated[Optional[str], typer.Argument(help="show one function's formulas and options")] = None,
    json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False,
) -> None:
    """The catalogue: every built-in with its arguments, options and Jacobian structure.

    Example: gradcli functions softmax
    """
    from ..render.catalogue import catalogue_to_dict, render_catalogue

    if json:
        from ..render.json import dumps

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
