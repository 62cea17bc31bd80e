"""``jacobian``, ``grad``, ``vjp``, ``jvp``, ``hessian``, ``hvp``: one body for all
six (:func:`run_command`), generated from one option list per command
(:mod:`gradcli.cli.params`): load, compute, render, print, then publish files."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from typing import Any

from rich.markup import escape

from ..core.errors import ExitCode, UsageError
from ..core.options import BackendName, Quantity
from . import params
from .inputs import Loaded, load
from .main import app
from .options import RunOptions, run_options
from . import output as out
from .output import DelayedProgress, emit, stdout_then_files

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


def run_command(run: RunOptions) -> int:
    """Load, compute, render, print, then publish files. Standard output is written
    first; an output file is published only after it, so a failure leaves nothing."""
    from ..compute.solve import solve

    if run.backend is BackendName.COMPILE:
        raise UsageError("--backend compile: compares compiled gradients with eager ones, so it belongs to check: "
                         "gradcli check ... --backends autograd,compile")
    if run.quantity is Quantity.GRAD and (run.per_sample or run.norms):
        return per_sample_command(run)
    from ..problem.wrt import is_list

    if run.quantity is Quantity.GRAD and is_list(run.inputs.wrt):
        return grads_command(run)
    vector = {params_vector(run.quantity): run.vector} if run.vector is not None else {}
    got = load(run.inputs, run.output, vectors=vector)
    if not run.output.as_json and not run.output.summarize:
        _refuse_table_over_memory(got, run)
    stream = None
    if got.out_path is not None and got.out_path.suffix.lower() == ".npy" and run.quantity is Quantity.JACOBIAN:
        from ..io.files import NpyStream

        stream = NpyStream(got.out_path)
    try:
        options = replace(run.settings, progress=DelayedProgress(),
                          **({"allocate": stream.allocate} if stream is not None else {}))
        result = solve(got.problem, run.quantity, backend=run.backend, layout=run.layout, options=options,
                       max_memory=run.inputs.max_memory, allow_nonfinite=run.inputs.allow_nonfinite,
                       verify_blocks=run.verify_blocks, eig=run.eig, **got.vectors)
        _emit_result(result, got, run, stream)
    finally:
        if stream is not None:
            stream.abort()  # a no-op once published: the temporary file is gone
    return ExitCode.OK


def grads_command(run: RunOptions) -> int:
    """``grad --wrt 'param:*'`` (any glob or comma list): one named gradient per argument,
    the parameters in one backward pass (:func:`gradcli.compute.solve.solve_grads`)."""
    from ..compute.solve import solve_grads
    from ..problem.wrt import expand, names_input

    wrt = run.inputs.wrt
    got = load(replace(run.inputs, wrt="input"), run.output, differentiates_input=names_input(wrt))
    options = replace(run.settings, progress=DelayedProgress())
    result = solve_grads(got.problem, expand(got.problem.function, wrt), wrt, backend=run.backend, options=options,
                         max_memory=run.inputs.max_memory, allow_nonfinite=run.inputs.allow_nonfinite)
    _emit_result(result, got, run, None)
    return ExitCode.OK


def params_vector(quantity: Quantity) -> str:
    return "cotangent" if quantity is Quantity.VJP else "tangent"


def per_sample_command(run: RunOptions) -> int:
    """``grad --per-sample [--norms]``: one gradient (or norm) per sample."""
    from ..compute.per_sample import per_sample_gradients
    from ..render.files import prepare_samples
    from ..render.samples import render_samples, samples_to_dict

    if not run.per_sample:
        raise UsageError("--norms: gives per-sample gradient norms; add --per-sample")
    # the parameters are chosen by per_sample_gradients; an integer input (token ids) stays integer
    got = load(replace(run.inputs, wrt="input"), run.output, differentiates_input=False)
    res = per_sample_gradients(got.problem, run.inputs.wrt, norms=run.norms, top=run.top,
                               max_memory=run.inputs.max_memory, verify_blocks=run.verify_blocks)
    if run.output.as_json:
        from ..render.json import dumps

        output = dumps(samples_to_dict(res, timing=run.output.timing))
    else:
        output = render_samples(res, precision=run.output.precision, summarize=run.output.summarize,
                                timing=run.output.timing)
    pending = [prepare_samples(got.out_path, res)] if got.out_path is not None else []
    stdout_then_files(lambda: emit(output), pending)
    return ExitCode.OK


def _refuse_table_over_memory(got: Loaded, run: RunOptions) -> None:
    """A table of every entry (--no-summarize) is held as text and rich cells
    while it renders; JSON is streamed and summarised tables are small."""
    from ..core.sizes import format_bytes
    from ..problem.plan import make_plan
    from ..render.table import TABLE_BYTES_PER_ENTRY

    plan = make_plan(got.problem, run.quantity, run.layout, max_memory=2**62)
    need = math.prod(plan.shape) * TABLE_BYTES_PER_ENTRY
    if need > run.inputs.max_memory:
        raise UsageError(f"--no-summarize: a table of every entry needs about {format_bytes(need)} to render, over "
                         "--max-memory; drop --no-summarize, or use --json or -o (written as a stream)")


def _emit_result(result, got: Loaded, run: RunOptions, stream) -> None:
    """Standard output first; the files (-o, --plot) are written before it but
    published only after it succeeded, and removed on any failure."""
    from ..io.files import pending_write
    from ..render.files import prepare_result

    output = run.output

    def total() -> float:
        return time.perf_counter() - got.started

    def write_stdout() -> None:
        if output.as_json:
            from ..render.json import dump, result_to_dict

            dump(result_to_dict(result, timing=output.timing, value=output.value, total_seconds=total),
                 sys.stdout.write)
        else:
            _emit_table(result, got, run)

    pending = []
    try:
        if got.out_path is not None:
            pending.append(prepare_result(got.out_path, result, timing=output.timing, stream=stream,
                                          total_seconds=total))
        if got.plot_path is not None:
            from ..render.plot import draw_plot

            pending.append(pending_write(got.plot_path, lambda handle: draw_plot(result, handle), "--plot"))
    except BaseException:
        for file in pending:
            file.abort()
        raise
    stdout_then_files(write_stdout, pending)


def _emit_table(result, got: Loaded, run: RunOptions) -> None:
    """The body is rendered first so that the header's time covers the whole run."""
    from ..render.table import header, render_body

    console = out.make_console()
    output = run.output
    body = render_body(result, precision=output.precision, summarize=output.summarize, explain=output.explain,
                       heatmap=output.heatmap)
    render_start = time.perf_counter()
    with console.capture() as capture:
        console.print(body)
    now = time.perf_counter()
    times = {"load": got.loaded - got.started, "compute": result.seconds, "render": now - render_start,
             "total": now - got.started}
    console.print(header(result, output.timing, times))
    console.print()
    sys.stdout.write(capture.get())


def _register(quantity: Quantity) -> None:
    def command(**values: Any) -> int:
        return run_command(run_options(quantity, values))

    command.__signature__ = params.signature(params.function_argument(), params.command_options(quantity))
    command.__name__ = quantity.value
    command.__doc__ = escape(f"{HELP[quantity]}\n\n{EXAMPLES[quantity]}")
    app.command(quantity.value)(command)


for _quantity in (Quantity.JACOBIAN, Quantity.GRAD, Quantity.VJP, Quantity.JVP, Quantity.HESSIAN, Quantity.HVP):
    _register(_quantity)
