"""The library: build a problem, pick a backend, compute, return a Result.

Importable without typer, rich or torch::

    import gradcli
    res = gradcli.jacobian("softmax", input=x, layout="blocks", backend="analytic")
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Mapping

import numpy as np

from .arrays import check_finite
from .backends import BackendOptions, get_backend, resolve
from .errors import UsageError
from .problem import Problem, build_problem
from .results import BackendName, Layout, Quantity, Result, frozen

DEFAULT_MAX_MEMORY = 2 * 2**30
ARRAY_ARGS = ("input", "target", "class_weight", "weight", "bias", "pos_weight")


def solve(
    problem: Problem,
    quantity: Quantity,
    *,
    backend: BackendName = BackendName.AUTO,
    layout: Layout = Layout.AUTO,
    cotangent: np.ndarray | None = None,
    tangent: np.ndarray | None = None,
    options: BackendOptions = BackendOptions(),
    max_memory: int = DEFAULT_MAX_MEMORY,
    allow_nonfinite: bool = False,
    verify_blocks: bool = False,
) -> Result:
    """Compute ``quantity`` for a validated ``problem``.

    ``cotangent`` (vjp) is shaped like the output, default ones: what
    ``out.backward(torch.ones_like(out))`` uses. ``tangent`` (jvp) is shaped
    like the ``wrt`` argument and required for jvp. ``verify_blocks`` (user
    code, per-sample blocks): check on a few rows that samples do not interact.
    """
    name = resolve(BackendName(backend), problem)
    natural = problem
    per_sample = (quantity is Quantity.JACOBIAN and Layout(layout) is Layout.BLOCKS and problem.rows is None
                  and hasattr(problem.function, "per_sample"))
    if per_sample:
        problem = per_sample_problem(problem)
    layout = resolve_layout(problem, quantity, Layout(layout))
    if layout is Layout.BLOCKS and problem.rows.elementwise:
        problem = as_blocks_along_last_axis(problem)
    vector = None
    if quantity is Quantity.GRAD:
        if problem.output_shape != ():
            raise UsageError(
                f"grad: {problem.function.name} gives an output of shape {list(problem.output_shape)}, not one number; "
                "use --reduction mean or sum, or `gradcli vjp` (what out.backward(v) computes)"
            )
        vector = np.ones((), dtype=problem.dtype)
    elif quantity is Quantity.VJP:
        if cotangent is None:
            cotangent = np.ones(problem.output_shape, dtype=problem.dtype)
        vector = _vector(cotangent, problem.output_shape, problem, "--cotangent", "the output", allow_nonfinite)
    elif quantity is Quantity.JVP:
        if tangent is None:
            raise UsageError(f"--tangent: jvp needs a direction shaped like --{problem.wrt} {list(problem.wrt_shape)}, e.g. --tangent randn")
        vector = _vector(tangent, problem.wrt_shape, problem, "--tangent", f"--{problem.wrt}", allow_nonfinite)
    check_memory(problem, quantity, layout, max_memory, streaming=options.allocate is not np.zeros)

    engine = get_backend(name, options)
    start = time.perf_counter()
    # Overflow (exp of 1000) and 0/0 give inf and NaN, counted in the result's
    # `nonfinite` and said in its notes: not NumPy warnings on stderr.
    with np.errstate(all="ignore"):
        if quantity is Quantity.JACOBIAN:
            got = engine.jacobian(problem, layout)
        elif quantity is Quantity.JVP:
            got = engine.jvp(problem, vector)
        else:
            got = engine.vjp(problem, vector)
    seconds = time.perf_counter() - start
    value = np.asarray(got.value).astype(problem.dtype, copy=False)
    notes = problem.notes + got.notes
    if options.device != "cpu" and name in (BackendName.ANALYTIC, BackendName.FD):
        notes += (f"--device {options.device}: the {name.value} backend computes with NumPy on the CPU; "
                  "--device applies to -b autograd and -b forward",)
    if per_sample:  # user code's blocks, (B, F_out, F_in) -> (B, *out, *in)
        value = value.reshape(natural.output_shape + natural.wrt_shape[1:])
        got = dataclasses.replace(got, output=np.asarray(got.output).reshape(natural.output_shape))
        if verify_blocks:
            notes += (verify_samples_independent(natural, engine),)
        problem = dataclasses.replace(natural, rows=None)
    return Result(
        quantity=quantity,
        function=problem.function.name,
        params={k: v for k, v in problem.params.items() if not k.startswith("_")},
        wrt=problem.wrt,
        backend=name,
        dtype=str(problem.dtype),
        input_shape=problem.input_shape,
        wrt_shape=problem.wrt_shape,
        output_shape=problem.output_shape,
        layout=layout if quantity is Quantity.JACOBIAN else None,
        # Every backend's value in the working dtype (torch's forward mode can
        # promote a 0-d float32 tangent to float64).
        value=frozen(value),
        output=frozen(np.asarray(got.output).astype(problem.dtype, copy=False)),
        notes=notes,
        seconds=seconds,
        error=None if got.error is None else frozen(np.asarray(got.error).astype(problem.dtype, copy=False)),
        evaluations=got.evaluations,
        formulas=problem.function.formulas,
        rows=problem.rows,
        vector=frozen(vector) if quantity in (Quantity.VJP, Quantity.JVP) else None,
    )


def resolve_layout(problem: Problem, quantity: Quantity, layout: Layout) -> Layout:
    """``auto``: diag for elementwise functions, per-row blocks when the output
    keeps batch rows, else full."""
    if quantity is not Quantity.JACOBIAN:
        return Layout.FULL
    rows = problem.rows
    has_blocks = rows is not None and not rows.reduced
    if layout is Layout.AUTO:
        if has_blocks and rows.elementwise:
            return Layout.DIAG
        return Layout.BLOCKS if has_blocks and rows.rows else Layout.FULL
    if layout in (Layout.BLOCKS, Layout.DIAG) and not has_blocks:
        why = "its output is one number (use --reduction none to keep rows)" if rows is not None else "it has no row structure"
        raise UsageError(f"--layout {layout.value}: {problem.function.name} has no {layout.value} here because {why}; use --layout full")
    if layout is Layout.DIAG and not rows.elementwise:
        raise UsageError(f"--layout diag: {problem.function.name} is not elementwise; use --layout blocks or full")
    if layout is Layout.BLOCKS and rows.elementwise and not rows.in_shape:
        raise UsageError("--layout blocks: a 0-d input has no rows; use --layout diag or full")
    return layout


def per_sample_problem(problem: Problem) -> Problem:
    """User code as per-sample blocks: input ``(B, *in)`` and output ``(B, *out)``
    seen as ``(B, F_in)`` and ``(B, F_out)``, the batch as rows."""
    if problem.wrt != "input":
        raise UsageError("--layout blocks: per-sample blocks are w.r.t. the input; use --layout full for parameters")
    args, params = problem.function.per_sample(dict(problem.args), dict(problem.params))
    for array in args.values():
        array.flags.writeable = False
    return dataclasses.replace(problem, args=args, params=params, output_shape=problem.function.output_shape(args, params),
                               rows=problem.function.row_layout(args, params, "input"))


def verify_samples_independent(problem: Problem, engine, rows: int = 3) -> str:
    """The full Jacobian of the first few samples: any non-zero entry between two
    different samples means the samples interact (batch norm in training mode)."""
    k = min(rows, problem.input_shape[0])
    if k < 2:
        return "--verify-blocks: one sample only, nothing to verify"
    from .rows import batch_rows

    sub = batch_rows(dict(problem.args), slice(0, k))
    params = {key: v for key, v in problem.params.items() if key != "_output_shape"}
    problem.function.check(sub, params)
    small = dataclasses.replace(problem, args=sub, params=params, output_shape=problem.function.output_shape(sub, params))
    full = np.asarray(engine.jacobian(small, Layout.FULL).value).reshape(k, -1, k, int(np.prod(sub["input"].shape[1:])))
    scale = max(1.0, float(np.abs(full).max()))
    cross = max(float(np.abs(full[i, :, j]).max()) for i in range(k) for j in range(k) if i != j)
    if cross <= 100 * float(np.finfo(problem.dtype).eps) * scale:
        return f"--verify-blocks: samples do not interact (checked on the first {k}: every cross-sample derivative is 0)"
    return (f"--verify-blocks: samples INTERACT (a cross-sample derivative of {cross:.2e} among the first {k}): the "
            "blocks are not the whole Jacobian; batch norm in training mode does this (call model.eval())")


def as_blocks_along_last_axis(problem: Problem) -> Problem:
    """An elementwise problem shown as blocks: rows along the last axis, each
    block the diagonal matrix of that row's derivatives."""
    axis = len(problem.wrt_shape) - 1
    rows = problem.function.row_layout(problem.args, problem.params, problem.wrt, axis=axis)
    return dataclasses.replace(problem, rows=rows, axis=axis)


def result_shape(problem: Problem, quantity: Quantity, layout: Layout) -> tuple[int, ...]:
    if quantity is Quantity.JVP:
        return problem.output_shape
    if quantity is not Quantity.JACOBIAN:
        return problem.wrt_shape
    if layout is Layout.BLOCKS:
        return problem.rows.blocks_shape + ((problem.rows.features,) if problem.rows.elementwise else ())
    if layout is Layout.DIAG:
        return problem.wrt_shape
    return problem.output_shape + problem.wrt_shape


def check_memory(problem: Problem, quantity: Quantity, layout: Layout, max_memory: int, streaming: bool = False) -> None:
    """Refuse, before any work, a result larger than ``max_memory`` bytes.
    ``streaming``: a full Jacobian scattered from blocks goes straight into a
    memory-mapped ``.npy`` file, so only the blocks must fit."""
    need = math.prod(result_shape(problem, quantity, layout)) * problem.dtype.itemsize
    scattered = (quantity is Quantity.JACOBIAN and layout is Layout.FULL and problem.rows is not None
                 and not problem.rows.reduced)
    blocks = math.prod(problem.rows.blocks_shape) * problem.dtype.itemsize if scattered else None
    if need <= max_memory or (streaming and scattered and blocks <= max_memory):
        return
    fits = []
    if scattered and blocks <= max_memory:
        fits.append(f"--layout blocks ({format_bytes(blocks)})")
        fits.append("-o J.npy alone (written in chunks, never held whole)")
    if quantity is Quantity.JACOBIAN:  # a vjp/jvp/grad is already the size of one argument
        fits.append("`gradcli vjp` or `gradcli jvp` (the size of one argument)")
    advice = f"try {' or '.join(fits)}, or raise --max-memory" if fits else "raise --max-memory or use a smaller input"
    raise UsageError(
        f"--max-memory: the {quantity.value} result {list(result_shape(problem, quantity, layout))} needs {format_bytes(need)}, "
        f"over the limit of {format_bytes(max_memory)}; {advice}"
    )


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _vector(value, shape, problem: Problem, option: str, what: str, allow_nonfinite: bool) -> np.ndarray:
    vector = np.asarray(value)
    if vector.dtype.kind not in "iuf":
        raise UsageError(f"{option}: dtype {vector.dtype} is not numeric")
    if vector.shape != tuple(shape):
        raise UsageError(f"{option}: shape {list(vector.shape)} does not match {what} {list(shape)}; give that shape")
    vector = vector.astype(problem.dtype)
    if not allow_nonfinite:
        check_finite(vector, option)
    return vector


# --- the public API ----------------------------------------------------------------


def library_call(function: str, kwargs: Mapping[str, Any], run_names: tuple[str, ...]):
    """Split a library call's keywords: arrays and options build the problem,
    backend settings make the BackendOptions, ``run_names`` pass through.
    Returns ``(problem, options, run)``."""
    kw = dict(kwargs)
    arrays = {name: kw.pop(name) for name in ARRAY_ARGS if name in kw}
    run = {name: kw.pop(name) for name in run_names if name in kw}
    options = BackendOptions(**{name: kw.pop(name) for name in ("device", "fd_method", "fd_step", "fd_dtype") if name in kw})
    problem = build_problem(function, arrays, {k: v for k, v in kw.items() if k not in ("wrt", "dtype")},
                            wrt=kw.get("wrt", "input"), dtype=kw.get("dtype", "float64"),
                            allow_nonfinite=run.get("allow_nonfinite", False))
    return problem, options, run


def _run(quantity: Quantity, function: str, kwargs: Mapping[str, Any]) -> Result:
    problem, options, run = library_call(function, kwargs, ("backend", "layout", "cotangent", "tangent", "max_memory",
                                                            "allow_nonfinite", "verify_blocks"))
    return solve(problem, quantity, options=options, **run)


def jacobian(function: str, **kwargs: Any) -> Result:
    """The Jacobian of ``function`` w.r.t. ``wrt`` (default the input).

    Keyword arguments: the arrays (``input``, ``target``, ``class_weight``), the
    function's options (``dim``, ``reduction``, ``ignore_index``,
    ``label_smoothing``), and ``wrt``, ``backend``, ``layout``
    (auto|full|blocks), ``dtype``, ``device``, ``fd_method``, ``fd_step``,
    ``fd_dtype``, ``max_memory``, ``allow_nonfinite``.
    """
    return _run(Quantity.JACOBIAN, function, kwargs)


def grad(function: str, **kwargs: Any) -> Result:
    """The gradient of a scalar output, shaped like the ``wrt`` argument."""
    return _run(Quantity.GRAD, function, kwargs)


def vjp(function: str, **kwargs: Any) -> Result:
    """``v^T J`` for ``cotangent`` v (default ones): what ``out.backward(v)`` gives."""
    return _run(Quantity.VJP, function, kwargs)


def jvp(function: str, **kwargs: Any) -> Result:
    """``J t`` for ``tangent`` t (required): the directional derivative."""
    return _run(Quantity.JVP, function, kwargs)
