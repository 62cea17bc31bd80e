"""``certify()``: load the subject and its arguments, run each selected property, return the report.

The library's entry point (``gradcli.certify``), the CLI's and the pytest
plugin's (``gradients.certify``). Arguments: ``input`` fills the first
parameter, ``args`` (or extra keywords) any other by name; each is an array, a
tensor, a number, or an ARRAY spec string as on the command line (``"randn:64,64"``,
``"x.npy"``), read with ``load_array`` within ``max_memory``.
"""

from __future__ import annotations

import inspect
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ..core.errors import BackendError, GradcliError, UsageError
from ..io.arrays import as_array, check_finite, load_array
from ..problem.function import USER_RE
from ..problem.plan import DEFAULT_MAX_MEMORY
from .context import DEFAULT_DTYPES, Ctx, Options, raised_text
from .registry import select
from .repro import make_repro
from .report import CertifyReport, Row, Status, Verdict
from .subject import Kind, Subject, make_subject

LOW_DTYPES = ("float64", "float32", "bfloat16", "float16")
COPIES = 16  # how many copies of the arguments certify holds at once (batches, dtypes, fd's points), for --max-memory


def certify(function, input=None, *, args: Mapping[str, Any] | None = None, reference=None,
            dtypes: Iterable[str] | str | None = None, properties: Iterable[str] | str | None = None,
            skip: Iterable[str] | str | None = None, seed: int = 0, runs: int = 3, nondet_tol: float = 0.0,
            device: str = "cpu", max_memory: int | str | None = None, probes: int = 4,
            **named: Any) -> CertifyReport:
    """Certify ``function`` (``"PATH.py:NAME"``, an ``autograd.Function`` subclass, a
    ``torch.library`` custom op, or a callable of tensors) at its arguments: one row per
    property (SPEC §7). ``reference``: the same function in plain torch ops (``"PATH.py:NAME"``
    or a callable), the measuring stick of ``dtypes``. Raises UsageError (bad input) or
    BackendError (the function cannot run at all); a failing property is a row, not an exception."""
    started = time.perf_counter()
    options = _options(dtypes, seed, runs, nondet_tol, device, max_memory, probes)
    chosen = select(properties, skip)
    subject = load_subject(function, "FUNCTION")
    ref = load_subject(reference, "--reference") if reference is not None else None
    values, specs = _arguments(subject, input, {**(args or {}), **named}, options)
    import torch

    if options.device == "cuda" and not torch.cuda.is_available():
        raise BackendError("--device cuda: torch sees no CUDA device here; use --device cpu")
    tensors = _tensors(subject, values, options.device)
    repro = make_repro(subject.path, subject.attr, subject.kind is Kind.FUNCTION,
                       {p.name: tensors[p.name] for p in subject.params if not p.keyword_only and p.name in tensors},
                       specs, seed)
    ctx = Ctx(subject, tensors, options, repro, ref)
    if not ctx.diff:
        raise UsageError(f"--input: {subject.name} takes no float argument here, and certify differentiates the "
                         "float ones; give float arrays (-x randn:3,4)")
    rows: list[Row] = []
    with subject.guard(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warnings about what the properties provoke on purpose
        broken = _baseline(ctx)
        for prop in chosen:
            if broken is not None and prop.name not in ("gradient", "opcheck"):
                rows.append(Row(prop.name, Status.SKIP, f"backward raises at the given arguments ({broken}): see gradient"))
                continue
            rows.extend(_rows(prop, ctx, broken))
    return CertifyReport(function=subject.name, kind=subject.kind.value,
                         shapes=tuple((n, tuple(t.shape)) for n, t in tensors.items() if isinstance(t, torch.Tensor)),
                         rows=tuple(rows), seconds=time.perf_counter() - started, notes=subject.notes)


def _baseline(ctx) -> str | None:
    """Forward and backward at the arguments once. A forward that raises stops everything (exit 3);
    a backward that raises is the gradient property's failure (returned as text)."""
    try:
        inputs = ctx.inputs()
        outs = ctx.call(inputs)
    except GradcliError:
        raise
    except Exception as err:
        raise BackendError(f"{ctx.subject.name} raised at the given arguments, so nothing could run: "
                           f"{raised_text(err, ctx.subject.path)}") from err
    if not ctx.float_outputs(outs):
        kinds = ", ".join(type(y).__name__ if not hasattr(y, "dtype") else str(y.dtype) for y in outs)
        raise UsageError(f"FUNCTION: {ctx.subject.name} returned {kinds}: no float tensor to differentiate; return "
                         "the float tensor(s) it computes")
    try:
        ctx.base
    except GradcliError:
        raise
    except Exception as err:
        return raised_text(err, ctx.subject.path)
    return None


def _rows(prop, ctx, broken: str | None) -> list[Row]:
    """The property's verdicts as rows, each timed; what it raises becomes its failure."""
    rows = []
    start = time.perf_counter()
    if prop.name == "gradient" and broken is not None:
        body = "X=[x.requires_grad_() if torch.is_tensor(x) and x.is_floating_point() else x for x in X]; " \
               "Y=f(*X); torch.autograd.grad(Y,[x for x in X if torch.is_tensor(x) and x.requires_grad]," \
               "[torch.randn_like(y) for y in (Y if isinstance(Y,(tuple,list)) else [Y])])"
        return [Row("gradient", Status.FAIL, f"backward raised: {broken}", where="backward",
                    reproducer=ctx.repro.command(body), seconds=time.perf_counter() - start)]
    try:
        found = prop.check(ctx)
        for verdict in ([found] if isinstance(found, Verdict) else found):
            name = f"{prop.name}:{verdict.part}" if verdict.part else prop.name
            rows.append(Row(name, verdict.status, verdict.detail, verdict.max_error, verdict.where, verdict.reproducer,
                            time.perf_counter() - start))
            start = time.perf_counter()
    except GradcliError:
        raise
    except Exception as err:  # the code under a property's condition raised where the property did not expect it
        rows.append(Row(prop.name, Status.FAIL, f"raised: {raised_text(err, ctx.subject.path)}", where=prop.name,
                        seconds=time.perf_counter() - start))
    return rows


def load_subject(function, option: str) -> Subject:
    """``"PATH.py:NAME"`` (loaded with the user-code loader) or an object given to the library."""
    if isinstance(function, str):
        match = USER_RE.match(function.strip())
        if not match:
            raise UsageError(f"{option}: {function!r}: certify takes PATH.py:NAME (an autograd.Function, a "
                             "torch.library custom op, or a function of tensors defined in the file)")
        from ..usercode.function import as_callable, is_library_op, load_object

        path, attr = Path(match["path"]), match["name"]
        obj = load_object(str(path), attr)
        import torch

        if not (inspect.isclass(obj) and issubclass(obj, torch.autograd.Function) or is_library_op(obj)):
            obj = as_callable(obj, path, attr)
        return make_subject(obj, f"{path}:{attr}", path, attr)
    path, attr = _source_of(function)
    name = f"{path}:{attr}" if path is not None else getattr(function, "__qualname__", type(function).__name__)
    return make_subject(function, name, path, attr)


def _source_of(obj) -> tuple[Path | None, str | None]:
    """Where a library object is defined at the top level of a file (for runnable reproducers), or (None, None)."""
    import sys

    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    name = getattr(obj, "__name__", None)
    file = getattr(module, "__file__", None)
    if module is None or name is None or file is None or getattr(module, name, None) is not obj:
        return None, None
    path = Path(file)
    try:
        path = path.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return path, name


def _options(dtypes, seed, runs, nondet_tol, device, max_memory, probes) -> Options:
    if dtypes is None:
        dtypes = DEFAULT_DTYPES
    names = [d.strip() for d in (dtypes.split(",") if isinstance(dtypes, str) else dtypes) if str(d).strip()]
    if not names:
        raise UsageError("--dtypes: empty; give dtypes separated by commas, e.g. float64,float32,bfloat16")
    for d in names:
        if d not in LOW_DTYPES:
            raise UsageError(f"--dtypes: {d!r} is not one of {', '.join(LOW_DTYPES)}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UsageError(f"--runs: {runs!r}; give a whole number of backward passes, at least 1")
    if not isinstance(nondet_tol, (int, float)) or not nondet_tol >= 0:
        raise UsageError(f"--nondet-tol: {nondet_tol!r}; give a difference >= 0 (0: identical to the bit)")
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise UsageError(f"--probes: {probes!r}; give a whole number of directions, at least 1")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"--device: {device!r}; give cpu or cuda")
    if isinstance(max_memory, str):
        from ..core.sizes import parse_size

        max_memory = parse_size(max_memory, "max_memory")
    return Options(seed=int(seed), runs=runs, nondet_tol=float(nondet_tol), dtypes=tuple(dict.fromkeys(names)),
                   device=device, max_memory=DEFAULT_MAX_MEMORY if max_memory is None else int(max_memory),
                   probes=probes)


def _arguments(subject: Subject, input, named: Mapping[str, Any], options: Options):
    """``input`` and the named arguments as arrays (or numbers) by parameter name, in call order,
    with the defaults of those not given; the ARRAY specs read (for the reproducer: ``specs``)."""
    params = subject.params
    if not params:
        raise UsageError(f"FUNCTION: {subject.name} takes no argument to differentiate")
    if input is None:
        raise UsageError(f"--input: missing; give {subject.name}'s first argument ({params[0].name}) with -x ARRAY")
    known = {p.name for p in params}
    for name in named:
        if name not in known:
            raise UsageError(f"--arg {name}: {subject.name} has no parameter {name!r}; it takes "
                             f"{', '.join(p.name for p in params)}")
        if name == params[0].name:
            raise UsageError(f"--arg {name}: {name} is the first parameter, which -x/--input fills; give it with -x")
    given = {params[0].name: ("-x", input), **{n: (f"--arg {n}", v) for n, v in named.items()}}
    values: dict[str, Any] = {}
    specs: dict[str, tuple[str, str]] = {}
    held = 0
    for p in params:
        if p.name not in given:
            if p.default is inspect.Parameter.empty:
                raise UsageError(f"--arg {p.name}: {subject.name} needs {p.name} (it has no default); give it with "
                                 f"--arg {p.name}=ARRAY")
            values[p.name] = p.default
            continue
        option, value = given[p.name]
        if isinstance(value, str):
            array = load_array(value, option, seed=options.seed, max_bytes=options.max_memory // COPIES, held=held)
            specs[p.name] = (option, value)
        elif isinstance(value, (int, float, bool)) and p.number is not None:
            values[p.name] = value
            continue
        else:
            array = as_array(value)
        check_finite(array, option)
        held += array.nbytes
        if held * COPIES > options.max_memory:
            raise UsageError(f"{option}: certify holds about {COPIES} copies of its arguments (batches, dtypes, fd's "
                             f"points): {held * COPIES} bytes, over --max-memory {options.max_memory}; give smaller "
                             "arrays or a larger --max-memory")
        if p.number is not None:
            if array.ndim:
                raise UsageError(f"{option}: {p.name} is a number for {subject.name} ({p.number.__name__}); give one "
                                 f"value, e.g. --arg {p.name}=2.5")
            values[p.name] = p.number(array.item())
            continue
        values[p.name] = array
    return values, specs


def _tensors(subject: Subject, values: Mapping[str, Any], device: str) -> dict[str, Any]:
    """Arrays as tensors on ``device``: float ones in float64 (the working dtype), the others as they are."""
    import torch

    out = {}
    for name, value in values.items():
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(np.array(value))
            out[name] = (t.to(torch.float64) if t.is_floating_point() else t).to(device)
        else:
            out[name] = value
    return out

