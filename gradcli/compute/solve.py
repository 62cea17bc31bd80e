"""The library: build a problem, pick a backend, compute, return a Result.

Importable without typer, rich or torch::

    import gradcli
    res = gradcli.jacobian("softmax", input=x, layout="blocks", backend="analytic")
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import numpy as np

from ..io.arrays import as_array, check_finite
from ..backends import get_backend, resolve
from ..core.errors import BackendError, UsageError
from ..catalogue.base import option_name
from ..core.options import BackendName, BackendOptions, Device, Layout, Quantity
from ..problem.plan import DEFAULT_MAX_MEMORY, make_plan
from ..problem.problem import Problem, build_problem, one_number_fix
from ..core.results import Result, frozen
from .structure import describe


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
    verify_blocks: bool = True,
    eig: int | None = None,
) -> Result:
    """Compute ``quantity`` for a validated ``problem``.

    ``cotangent`` (vjp) is shaped like the output, default ones: what
    ``out.backward(torch.ones_like(out))`` uses. ``tangent`` (jvp) is shaped
    like the ``wrt`` argument and required for jvp. ``verify_blocks`` (user
    code, per-sample blocks): check on three samples that they do not interact
    before trusting blocks (refused, exit 2, where they do).
    """
    quantity, layout = Quantity(quantity), Layout(layout)
    vector = _quantity_vector(problem, quantity, cotangent, tangent, allow_nonfinite)
    if quantity in (Quantity.HESSIAN, Quantity.HVP):  # second order: its own plan and backends
        from .second_order import solve_second

        return solve_second(problem, quantity, backend=backend, layout=layout, tangent=vector, eig=eig,
                            options=options, max_memory=max_memory)
    name = resolve(BackendName(backend), problem, jacobian=quantity is Quantity.JACOBIAN)
    plan = make_plan(problem, quantity, layout, max_memory=max_memory, streaming=options.allocate is not np.zeros,
                     verify_blocks=verify_blocks, vector_bytes=None if vector is None else vector.nbytes)
    view = plan.problem
    engine = get_backend(name, dataclasses.replace(options, max_memory=max_memory))
    start = time.perf_counter()
    # Overflow (exp of 1000) and 0/0 give inf and NaN, counted in the result's
    # `nonfinite` and said in its notes: not NumPy warnings on stderr.
    with np.errstate(all="ignore"):
        if quantity is Quantity.JACOBIAN:
            try:
                got = engine.jacobian(view, plan.layout)
            except BackendError as err:
                if BackendName(backend) is not BackendName.AUTO or name is not BackendName.FORWARD:
                    raise
                # auto chose forward mode (fewer inputs than outputs) and torch could not run it: reverse mode
                name, engine = BackendName.AUTOGRAD, get_backend(BackendName.AUTOGRAD, engine.options)
                got = engine.jacobian(view, plan.layout)
                got = dataclasses.replace(got, notes=got.notes + (f"auto: forward mode could not run "
                                                                  f"({err.cli_message()}); reverse mode ran",))
        elif quantity is Quantity.JVP:
            got = engine.jvp(view, vector)
        else:
            got = engine.vjp(view, vector)
    seconds = time.perf_counter() - start
    value = np.asarray(got.value).astype(problem.dtype, copy=False)
    output = np.asarray(got.output).astype(problem.dtype, copy=False)
    error = None if got.error is None else np.asarray(got.error).astype(problem.dtype, copy=False)
    nonsmooth = got.nonsmooth
    notes = view.notes + got.notes
    if options.device is not Device.CPU and name in (BackendName.ANALYTIC, BackendName.FD):
        notes += (f"--device {options.device.value}: the {name.value} backend computes with NumPy on the CPU; "
                  "--device applies to -b autograd and -b forward",)
    if view.per_sample:  # user code's blocks, (B, F_out, F_in) -> (B, *out, *in); fd's error and mask as the value
        shape = problem.output_shape + problem.wrt_shape[1:]
        value, output = value.reshape(shape), output.reshape(problem.output_shape)
        error = None if error is None else error.reshape(shape)
        nonsmooth = None if nonsmooth is None else nonsmooth.reshape(shape)
    rows = view.rows
    scattered = rows is not None and not rows.reduced and plan.layout is Layout.FULL  # (every backend scatters blocks)
    structure = describe(value, plan.layout, rows, problem.dtype, per_sample=view.per_sample,
                         from_blocks=scattered) if quantity is Quantity.JACOBIAN else ()
    return Result(
        quantity=quantity,
        function=problem.function.name,
        params=problem.params,
        wrt=problem.wrt,
        backend=name,
        dtype=str(problem.dtype),
        input_shape=problem.input_shape,
        wrt_shape=problem.wrt_shape,
        output_shape=problem.output_shape,
        layout=plan.layout if quantity is Quantity.JACOBIAN else None,
        # Every backend's value in the working dtype (torch's forward mode can
        # promote a 0-d float32 tangent to float64).
        value=frozen(value),
        output=frozen(output),
        notes=notes,
        structure=structure,
        seconds=seconds,
        error=None if error is None else frozen(error),
        evaluations=got.evaluations,
        formulas=problem.function.formulas,
        per_sample=view.per_sample,
        batch_axes=len(view.rows.rows) if view.rows is not None and plan.layout is Layout.BLOCKS else 0,
        nonsmooth=None if nonsmooth is None else frozen(nonsmooth),
        vector=frozen(vector) if quantity in (Quantity.VJP, Quantity.JVP) else None,
        parts=problem.parts,
    )


def solve_grads(problem: Problem, names: list[str], label: str | None = None, **kwargs: Any) -> Result:
    """``grad`` w.r.t. several arguments (``--wrt input,param:*``): the parameters joined in
    one vector (one backward pass for all), every other argument on its own; one Result
    whose ``value`` joins every piece flattened, in that order, and ``parts`` names each
    (:meth:`Result.named` gives them shaped like their arguments). ``problem`` is bound
    with every argument (``wrt`` its first); ``label``: ``--wrt`` as given (the result's
    ``wrt``); ``kwargs`` as :func:`solve`'s."""
    from ..problem.wrt import retarget

    params = [n[len("param:"):] for n in names if n.startswith("param:")]
    groups = [n for n in names if not n.startswith("param:")] + (["param:" + ",".join(params)] if params else [])
    results = [solve(p, Quantity.GRAD, **kwargs) for p in retarget(problem, groups)]
    label = label or ",".join(names)
    if len(results) == 1 and results[0].parts:
        return dataclasses.replace(results[0], wrt=label)
    parts = tuple(piece for r in results for piece in (r.parts or ((r.wrt, r.wrt_shape),)))
    value = np.concatenate([r.value.reshape(-1) for r in results])
    backends = {r.backend for r in results}
    return dataclasses.replace(
        results[0], wrt=label, wrt_shape=value.shape, value=frozen(value), parts=parts,
        backend=results[0].backend, seconds=sum(r.seconds for r in results),
        notes=tuple(dict.fromkeys(n for r in results for n in r.notes)) + (
            (f"backends: {', '.join(f'{r.wrt} {r.backend.value}' for r in results)}",) if len(backends) > 1 else ()),
        error=None if any(r.error is None for r in results) else frozen(np.concatenate(
            [r.error.reshape(-1) for r in results])),
        evaluations=None if any(r.evaluations is None for r in results) else sum(r.evaluations for r in results),
        nonsmooth=None)


def _quantity_vector(problem: Problem, quantity: Quantity, cotangent, tangent, allow_nonfinite: bool):
    """The vector a quantity contracts with: ones for grad, the cotangent (default
    ones) for vjp, the tangent (required) for jvp; None for jacobian."""
    if quantity is Quantity.GRAD:
        if problem.output_shape != ():
            raise UsageError(
                f"grad: {problem.function.name} gives an output of shape {list(problem.output_shape)}, not one number; "
                f"{one_number_fix(problem.function)}, or use `gradcli vjp` (what out.backward(v) computes)"
            )
        return np.ones((), dtype=problem.dtype)
    if quantity is Quantity.VJP:
        if cotangent is None:
            cotangent = np.ones(problem.output_shape, dtype=problem.dtype)
        return checked_vector(cotangent, problem.output_shape, problem, "--cotangent", "the output", allow_nonfinite)
    if quantity in (Quantity.JVP, Quantity.HVP):
        if tangent is None:
            raise UsageError(f"--tangent: {quantity.value} needs a direction shaped like {_argument(problem.wrt)} "
                             f"{list(problem.wrt_shape)}, e.g. --tangent randn")
        return checked_vector(tangent, problem.wrt_shape, problem, "--tangent", _argument(problem.wrt), allow_nonfinite)
    return None


def _argument(wrt: str) -> str:
    """How the user named the differentiated argument: ``--input``, or ``--wrt param:NAME``."""
    return f"--wrt {wrt}" if wrt.startswith("param:") else option_name(wrt)


def checked_vector(value, shape, problem: Problem, option: str, what: str, allow_nonfinite: bool) -> np.ndarray:
    """A vector given for ``option`` (``--cotangent``, ``--tangent``): numeric, shaped like
    ``what`` (``shape``), in the problem's dtype, finite unless ``allow_nonfinite``."""
    vector = as_array(value)
    if vector.dtype.kind not in "iuf":
        raise UsageError(f"{option}: dtype {vector.dtype} is not numeric")
    if vector.shape != tuple(shape):
        raise UsageError(f"{option}: shape {list(vector.shape)} does not match {what} {list(shape)}; give that shape")
    vector = vector.astype(problem.dtype, copy=False)  # (a vocabulary-sized cotangent is not copied)
    if not allow_nonfinite:
        check_finite(vector, option)
    return vector


# --- the public API ----------------------------------------------------------------


USER_CODE = ("select", "weights", "weights_prefix", "strict_weights")  # the keywords only user code takes


def library_call(function, kwargs: Mapping[str, Any], run_names: tuple[str, ...],
                 differentiates_input: bool | None = None):
    """Split a library call's keywords: arrays and options build the problem,
    backend settings make the BackendOptions, ``run_names`` pass through
    (``differentiates_input``: as :func:`gradcli.problem.build_problem`'s).
    User code also takes ``args`` (``{NAME: array}``, as ``--arg NAME=ARRAY``),
    ``select``, ``weights``, ``weights_prefix`` and ``strict_weights``.
    Returns ``(problem, options, run)``."""
    from ..catalogue import array_arguments
    from ..problem.function import user_function

    kw = dict(kwargs)
    code = {name: kw.pop(name) for name in USER_CODE if name in kw}
    named = dict(kw.pop("args", None) or {})
    arrays = {name: kw.pop(name) for name in array_arguments() if name in kw}
    run = {name: kw.pop(name) for name in run_names if name in kw}
    if isinstance(run.get("max_memory"), str):  # "512MiB", as on the command line
        from ..core.sizes import parse_size

        run["max_memory"] = parse_size(run["max_memory"], "max_memory")
    options = BackendOptions(**{name: kw.pop(name) for name in ("device", "fd_method", "fd_step", "fd_dtype") if name in kw})
    wrt, dtype = kw.pop("wrt", "input"), kw.pop("dtype", None)  # None: float64, noting upcast float32 data
    fn = user_function(function, arg_names=tuple(named), max_memory=run.get("max_memory", DEFAULT_MAX_MEMORY),
                       **code)
    taken = [name for name in named if name in arrays]
    if taken:
        raise UsageError(f"args: {taken[0]!r} is given twice (as a keyword and in args); give it once")
    problem = build_problem(fn, {**arrays, **named}, kw, wrt=wrt, dtype=dtype,
                            allow_nonfinite=run.get("allow_nonfinite", False), differentiates_input=differentiates_input)
    return problem, options, run


def _run(quantity: Quantity, function: str, kwargs: Mapping[str, Any]) -> Result:
    problem, options, run = library_call(function, kwargs, ("backend", "layout", "cotangent", "tangent", "max_memory",
                                                            "allow_nonfinite", "verify_blocks", "eig"))
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
    """The gradient of a scalar output, shaped like the ``wrt`` argument. Several
    arguments (``wrt="param:*"``, ``"input,param:fc.*"``): one joint vector in
    ``value``, each argument's gradient by name in ``result.named()``."""
    from ..problem.wrt import expand, is_list, names_input

    wrt = kwargs.get("wrt", "input")
    if not is_list(wrt):
        return _run(Quantity.GRAD, function, kwargs)
    run_names = ("backend", "max_memory", "allow_nonfinite")
    problem, options, run = library_call(function, {**kwargs, "wrt": "input"}, run_names,
                                         differentiates_input=names_input(wrt))
    return solve_grads(problem, expand(problem.function, wrt), wrt, options=options, **run)


def vjp(function: str, **kwargs: Any) -> Result:
    """``v^T J`` for ``cotangent`` v (default ones): what ``out.backward(v)`` gives."""
    return _run(Quantity.VJP, function, kwargs)


def jvp(function: str, **kwargs: Any) -> Result:
    """``J t`` for ``tangent`` t (required): the directional derivative."""
    return _run(Quantity.JVP, function, kwargs)


def hessian(function: str, **kwargs: Any) -> Result:
    """Second derivatives of ``function`` w.r.t. ``wrt`` (default the input).

    The keywords of :func:`jacobian`, plus ``layout`` (auto | full | blocks |
    diag) and ``eig`` (K: the K smallest and largest eigenvalues of a scalar
    output's Hessian, in ``result.spectrum``)::

        H = gradcli.hessian("cross_entropy", input=x, target=t, layout="blocks")
    """
    return _run(Quantity.HESSIAN, function, kwargs)


def hvp(function: str, **kwargs: Any) -> Result:
    """``H t`` for ``tangent`` t (shaped like the argument) of a scalar output, without forming H.

    ``function`` may also be a Function from :func:`gradcli.problem.function.lookup`: a user
    file imported once and reused, where naming ``PATH.py:NAME`` imports it (and builds
    its model) on every call::

        from gradcli.problem.function import lookup

        net = lookup("mlp.py:net")
        Hv = gradcli.hvp(net, input=x, target=t, wrt="param:*", tangent=v).value
    """
    return _run(Quantity.HVP, function, kwargs)
