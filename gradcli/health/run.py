"""``gradcli.health``: bind the batch, run one watched step, read the flags, and
trace a non-finite value to its origin.

The model computes in its own dtype (the dtype of its parameters: float32 for
a model as ``nn.Module`` builds it), not gradcli's float64 default: a NaN that
float32 training meets (``exp`` overflowing at 89) must happen here too.
``--dtype`` picks another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Iterable

import numpy as np

from ..core.errors import BackendError, UsageError
from ..problem.wrt import names_input
from . import flags as rules
from .hooks import NORM_RANGE, Recorder
from .origin import backward_culprit, nonfinite_parameter, trace_backward, trace_forward
from .where import forward_location
from .report import Flag, HealthReport, Origin, Phase, Thresholds
from .step import Batch, parameters_of, roots_of, survey
from .step import select as select_leaves


def parse_flags(value: str | Iterable[str | Flag] | None, option: str = "--fail-on") -> tuple[Flag, ...]:
    """``nonfinite,exploding`` (or a list) -> flags; ``none`` or empty: no flag fails the run."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = [str(getattr(i, "value", i)).strip() for i in items]
    if names in ([], ["none"], [""]):
        return ()
    known = [f.value for f in Flag]
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"{option}: unknown flag {bad[0]!r}; choose from {', '.join(known)} (comma-separated), "
                         "or none")
    return tuple(f for f in Flag if f.value in names)


def positive(value, option: str) -> float:
    """``value`` as a positive, finite float, or UsageError naming ``option``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: {value!r} is not a number; give a positive number such as 1e-3") from None
    if not (number > 0 and math.isfinite(number)):
        raise UsageError(f"{option}: {value} must be a positive, finite number")
    return number


def thresholds(explode=1e3, vanish=1e-7) -> Thresholds:
    """``--explode`` and ``--vanish`` checked: positive, the one above 1 and the other below."""
    limits = Thresholds(positive(explode, "--explode"), positive(vanish, "--vanish"))
    if limits.vanish >= 1 or limits.explode <= 1:
        raise UsageError(f"--explode {limits.explode:g} / --vanish {limits.vanish:g}: a gradient grows past "
                         "--explode (> 1) and shrinks below --vanish (< 1); give e.g. --explode 1e3 --vanish 1e-7")
    return limits


def _working_dtype(roots, dtype: str | None) -> tuple[str, list[str]]:
    """``--dtype``, else the model's own: its first float parameter's (float64 stays, any
    other computes in float32, the lowest gradcli offers, with a note); float64 without one."""
    if dtype is not None:
        return dtype, []
    for _, root in roots:
        for p in root.parameters():
            if p.is_floating_point():
                name = str(p.dtype).removeprefix("torch.")
                if name in ("float64", "float32"):
                    return name, []
                return "float32", [f"the model's parameters are {name}; health computes in float32 (--dtype offers "
                                   "float32 and float64)"]
    return "float64", []


def _float_kind(array) -> str | None:
    """The float dtype's name of a NumPy array, a torch tensor or a list; None for integers."""
    dtype = getattr(array, "dtype", None)
    name = str(dtype if dtype is not None else np.asarray(array).dtype).removeprefix("torch.")
    return name if name.startswith(("float", "bfloat")) else None


def bind(function, *, input, target=None, arrays: dict | None = None, wrt: str = "param:*", cotangent=None,
         seed: int = 0, dtype: str | None = None, device: str = "cpu", allow_nonfinite: bool = False,
         select: str | None = None, weights: str | None = None, weights_prefix: str | None = None,
         strict_weights: bool = True) -> tuple[Batch, Any]:
    """The user's code bound to its batch, ready to step: ``(batch, problem)``.
    ``function``: ``PATH.py:NAME``, or the Function it names (as the CLI configured it);
    ``arrays``: the other arguments by name (``--arg NAME=ARRAY``); ``cotangent``: an array,
    or a function of the output's shape returning one; ``select``, ``weights``: as
    :func:`gradcli.problem.function.user_function`'s."""
    import torch

    from ..compute.solve import checked_vector
    from ..problem.function import resolve, user_function
    from ..problem.problem import build_problem

    arrays = dict(arrays or {})
    if device != "cpu" and not torch.cuda.is_available():
        raise BackendError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    fn = resolve(function)
    if not hasattr(fn, "configure"):  # (not user code)
        raise UsageError(f"FUNCTION: health runs your model; {fn.name!r} is a built-in; give PATH.py:NAME naming "
                         "a torch.nn.Module (or a function calling one)")
    if isinstance(function, str):
        fn = user_function(function, seed, tuple(arrays), select=select, weights=weights,
                           weights_prefix=weights_prefix, strict_weights=strict_weights)
    else:  # configured already (the CLI: --select, --weights); the run's seed and argument names
        fn.configure(seed=seed, names=tuple(arrays), select=select or fn.select)
    roots = roots_of(fn)
    work, notes = _working_dtype(roots, dtype)
    kinds = {_float_kind(a) for a in (input, target, *arrays.values()) if a is not None} - {None, work}
    if dtype is None and kinds:
        notes.append(f"{', '.join(sorted(kinds))} arrays computed in {work}, the model's own dtype (--dtype picks "
                     "another)")
    if fn.module is None:  # a function's modules follow --dtype and --device as a model does
        for _, root in roots:
            root.to(dtype=getattr(torch, work) if dtype is not None else None, device=device)
    problem = build_problem(fn, {"input": input, "target": target, **arrays}, {}, wrt="input", dtype=work,
                            allow_nonfinite=allow_nonfinite, differentiates_input=names_input(wrt))
    tensors = {k: torch.from_numpy(np.array(v)).to(device) for k, v in problem.args.items()}
    use_input, chosen = select_leaves(wrt, parameters_of(roots))
    leaves = {}
    if use_input:
        leaves["input"] = tensors["input"].requires_grad_(True)
    leaves.update((f"param:{p.name}", p.tensor) for p in chosen if p.tensor.requires_grad)
    if not leaves:
        raise UsageError(f"--wrt {wrt}: nothing to differentiate (every parameter named is frozen: requires_grad "
                         "False); add input, or name parameters that train")
    out_shape = problem.output_shape
    if cotangent is None:
        if math.prod(out_shape) != 1:
            raise UsageError(f"--cotangent: {fn.name} returns shape {list(out_shape)}, not one number (a loss); give "
                             f"--cotangent ARRAY shaped like it (ones:{','.join(map(str, out_shape))} is what "
                             "out.backward(torch.ones_like(out)) uses), or return the loss")
        vector = np.ones(out_shape, dtype=problem.dtype)
    else:
        if callable(cotangent):  # read once the output's shape is known (the CLI's ARRAY spec: ones, randn)
            cotangent = cotangent(out_shape)
        vector = checked_vector(cotangent, out_shape, problem, "--cotangent", "the output", allow_nonfinite)
    x = tensors["input"]
    batch = Batch(fn, str(problem.dtype), tensors, roots, survey(roots), tuple(chosen), leaves,
                  torch.from_numpy(np.array(vector)).to(device), x.shape[0] if x.ndim else None)
    if fn.modes is not None and fn.modes.coupling:  # (bind's note speaks of a Jacobian: here, of training)
        kept = [n for n in problem.notes if "TRAINING-mode function" not in n]
        notes.append(f"{', '.join(fn.modes.coupling)} normalise(s) with the batch's statistics (training mode), as "
                     "training does; running statistics are left as they were")
        problem = dataclasses.replace(problem, notes=tuple(kept))
    return batch, problem.with_notes(*notes)


def examine(batch: Batch, *, limits: Thresholds = Thresholds(), lr: float | None = None,
            fail_on: tuple[Flag, ...] = (Flag.NONFINITE,), notes: Iterable[str] = (), name: str | None = None,
            diagnose: bool = True) -> HealthReport:
    """One watched forward and backward of ``batch``; the report. ``diagnose``: trace a
    non-finite value to its origin (one more run of the batch, only when there is one)."""
    import torch

    start = time.perf_counter()
    with _collector_paused():
        with Recorder(batch.modules, batch.batch) as recorder:
            out, grads = batch.step(between=recorder.forward_done)
        seen = recorder.settle()
        params = _parameter_numbers(torch, batch, dict(zip(batch.leaves, grads)))
    ref = float(torch.linalg.vector_norm(batch.cotangent.double()))
    value = float(out.detach().reshape(-1)[0]) if out.numel() == 1 else None
    notes = list(notes)

    forward_bad = any(s.finite is False for s in seen) or \
        not bool(torch.isfinite(out.detach()).all())
    nonfinite_params = {n for n, numbers in params.items() if numbers[3]}
    grads_bad = bool(nonfinite_params) or any(x is not None and not math.isfinite(x)
                                              for s in seen for x in (s.out_grad, s.in_grad))
    origin, confirmed = None, forward_bad or bool(nonfinite_params)
    if diagnose and forward_bad:
        origin = nonfinite_parameter(batch.roots) or trace_forward(batch.forward, batch.modules)
    elif diagnose and grads_bad:
        trace = trace_backward(batch.forward, lambda out: batch.backward(out, keep=True))
        confirmed = confirmed or trace.any_nonfinite
        if confirmed:
            origin = _backward_origin(seen, nonfinite_params, trace)
        else:
            notes.append("gradient norms past the dtype's range (they overflow to inf), while every gradient entry "
                         "is finite: flagged exploding, not nonfinite")
    elif grads_bad:
        confirmed = True

    learning = {id(p.tensor) for p in batch.parameters if params[p.name][0] not in (None, 0.0)}
    info = {id(w.module): w for w in batch.modules}
    learns = [bool(info[id(s.module)].inside & learning) for s in seen]
    peers = rules.peer_references([info[id(s.module)].linear_map for s in seen],
                                  [rules.gain_of(s.in_grad, s.out_grad) for s in seen])
    module_flags = rules.module_flags(seen, ref=ref, limits=limits, learns=learns, peers=peers,
                                      confirmed_nonfinite=confirmed)
    modules = rules.modules_health(seen, module_flags, [info[id(s.module)].forward_at for s in seen])
    parameters = tuple(
        rules.parameter_health(p.name, p.tensor.shape, norm=params[p.name][0], weight_norm=params[p.name][1],
                               zeros=params[p.name][2], nonfinite=params[p.name][3],
                               frozen=not p.tensor.requires_grad, ref=ref, limits=limits, lr=lr, aliases=p.aliases)
        for p in batch.parameters)
    raised = {f for row in (*modules, *parameters) for f in row.flags}
    if origin is not None:
        raised.add(Flag.NONFINITE)
    notes += _notes(seen, parameters)
    return HealthReport(name or batch.function.name, batch.dtype, tuple(batch.tensors["input"].shape),
                        tuple(out.shape), value, ref, tuple(batch.leaves), limits, lr, modules, parameters, origin,
                        tuple(f for f in Flag if f in raised), tuple(fail_on), tuple(dict.fromkeys(notes)),
                        time.perf_counter() - start)


@contextlib.contextmanager
def _collector_paused():
    """Python's cycle collector paused for the watched step (as ``timeit`` pauses it): the hooks
    make a dozen small objects per module call, none in a cycle (each is freed by its reference
    count), and a collection they trigger walks the objects torch made too (measured: ~2 ms of a
    12 ms step of a 37-module MLP). Its state is restored after."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _parameter_numbers(torch, batch: Batch, by_leaf) -> dict[str, tuple]:
    """``name -> (‖grad‖, ‖weight‖, zero entries, non-finite entries)``; gradient numbers
    None where no gradient reached the parameter (or it is frozen)."""
    from .hooks import _floats

    weights = [p.tensor.detach() for p in batch.parameters]
    taken = [(p, by_leaf.get(f"param:{p.name}")) for p in batch.parameters]
    grads = [g for _, g in taken if g is not None]
    nonzero = [torch.count_nonzero(g) for g in grads]
    values = iter(_floats(torch, [*_norms(torch, weights), *_norms(torch, grads), *nonzero]))
    weight_norms = _in_range(torch, weights, [next(values) for _ in weights])
    grad_norms = _in_range(torch, grads, [next(values) for _ in grads])
    counts = [int(next(values)) for _ in grads]
    numbers, k = {}, 0
    for (p, g), weight in zip(taken, weight_norms):
        if g is None:
            numbers[p.name] = (None, weight, None, None)
            continue
        norm = grad_norms[k]
        bad = 0 if math.isfinite(norm) else int((~torch.isfinite(g)).sum())  # a finite norm has finite entries
        numbers[p.name] = (norm, weight, g.numel() - counts[k], bad)
        k += 1
    return numbers


def _norms(torch, tensors: list) -> list:
    """``‖t‖₂`` of each tensor in its own dtype, in one fused call where torch has it
    (``clip_grad_norm_``'s); :func:`_in_range` redoes the ones its range may have spoiled."""
    if not tensors:
        return []
    try:
        return list(torch._foreach_norm(tensors))
    except (AttributeError, RuntimeError, TypeError):  # (a private op: absent, or refusing a mix of devices)
        return [torch.linalg.vector_norm(t) for t in tensors]


def _in_range(torch, tensors: list, norms: list[float]) -> list[float]:
    """Norms of tensors below float64 summed again in float64 where the squares may have left the
    dtype's range: a vanishing gradient of 1e-23 has a float32 norm of 0 (its squares underflow)."""
    out = []
    for t, norm in zip(tensors, norms):
        if t.dtype != torch.float64 and not NORM_RANGE[0] <= norm <= NORM_RANGE[1]:
            norm = float(torch.linalg.vector_norm(t, dtype=torch.float64))
        out.append(norm)
    return out


def _backward_origin(seen, nonfinite_params: set[str], trace) -> Origin:
    culprit = backward_culprit(seen, nonfinite_params)
    where = "" if culprit is None else f"{culprit.name or 'the model'} ({culprit.cls})"
    if trace.op is None:
        detail = "no single operation made it: finite gradients summed into one tensor's gradient overflowed"
    elif culprit is not None and culprit.in_grad is None:  # its input is data: it was one of its own ops
        detail = f"{trace.op} made it in {where}'s own code, outside its submodules"
    else:
        detail = (f"{where or 'a module'} received a finite output gradient and passed back a non-finite one; "
                  f"{trace.op} made it")
    return Origin(Phase.BACKWARD, None if culprit is None else culprit.name, None if culprit is None else culprit.cls,
                  None if culprit is None else culprit.call,
                  None if culprit is None else forward_location(culprit.module), trace.op, trace.op_at, trace.code,
                  trace.backward_at, detail)


def _notes(seen, parameters) -> list[str]:
    notes = []
    lost = sorted({s.name for s in seen if s.in_lost})
    if lost:
        notes.append(f"{', '.join(lost)}: an input that is a view was modified in place, so its input gradient (and "
                     "gain) cannot be observed")
    unused = [p.name for p in parameters if p.norm is None and not p.frozen]
    if unused:
        notes.append(f"{len(unused)} parameter(s) received no gradient (not used by this forward, or not on the path "
                     f"to the output): {', '.join(unused[:5])}{', …' if len(unused) > 5 else ''}")
    frozen = [p.name for p in parameters if p.frozen]
    if frozen:
        notes.append(f"{len(frozen)} parameter(s) frozen (requires_grad False), not differentiated: "
                     f"{', '.join(frozen[:5])}{', …' if len(frozen) > 5 else ''}")
    return notes


OPTIONS = ("wrt", "cotangent", "lr", "explode", "vanish", "fail_on", "seed", "dtype", "device", "allow_nonfinite",
           "diagnose")


def health(function, *, input, target=None, wrt: str = "param:*", cotangent=None, lr: float | None = None,
           explode: float = 1e3, vanish: float = 1e-7, fail_on="nonfinite", seed: int = 0, dtype: str | None = None,
           device: str = "cpu", allow_nonfinite: bool = False, diagnose: bool = True, select: str | None = None,
           weights: str | None = None, weights_prefix: str | None = None, strict_weights: bool = True,
           **arrays) -> HealthReport:
    """The gradient health of a model on one batch: one forward and one backward,
    watched by hooks that leave both unchanged. Other keywords are arrays passed to
    your code by name (``--arg NAME=ARRAY``); ``select`` picks the loss in what the code
    returns and ``weights`` loads trained weights first, as on the command line.
    ``report.ok`` is False when a flag of ``fail_on`` is raised::

        report = gradcli.health("model.py:loss", input=x, target=t, lr=1e-3)
        report.flags, report.origin, [m.label for m in report.modules if m.flags]
    """
    limits = thresholds(explode, vanish)
    failing = parse_flags(fail_on)
    rate = None if lr is None else positive(lr, "--lr")
    batch, problem = bind(function, input=input, target=target, arrays=arrays, wrt=wrt, cotangent=cotangent,
                          seed=seed, dtype=dtype, device=device, allow_nonfinite=allow_nonfinite, select=select,
                          weights=weights, weights_prefix=weights_prefix, strict_weights=strict_weights)
    return examine(batch, limits=limits, lr=rate, fail_on=failing, notes=problem.notes, diagnose=diagnose)
