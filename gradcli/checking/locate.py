"""Where a wrong derivative lives: which module, which entries.

Modules: hooks record what every submodule of the user's ``nn.Module``
receives during one real forward and backward pass (its inputs, and the
gradient its output gets); each submodule is then checked on its own at those
inputs — its vjp (autograd) against a directional finite difference of that
submodule alone, along a random direction over its float inputs and
parameters (each scaled to its entries' size), first for the output gradient
it received (an error shows at the size it has in the whole model), then for
a random one. A failing module is blamed only when none of its descendants
fails: a container of a wrong module fails too, but is not the culprit. When
no submodule fails, the result is "inconclusive", never a place.

Arguments (``tensors``): group testing over the ``--wrt`` arguments after the
joint probes failed, the probes restricted to halves of them.

Entries (group testing): along sign directions restricted to halves of the
wrong argument's entries, the difference between the reference's ``vᵀ J u``
and fd's (one central difference, two evaluations) says which half holds the
error; the ``top`` worst halves are split again down to single entries,
O(top · log n) directional differences.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import probe
from ..core.compare import Entry
from ..problem.problem import Problem
from ..core.results import CheckReport

MODULE_PROBES = 2  # directions per submodule


@dataclass(frozen=True)
class ModuleFinding:
    """One submodule checked alone: ``value`` is autograd's ``vᵀ J u``, ``reference``
    fd's (the believed side), ``error_estimate`` fd's error estimate. ``nonsmooth``:
    autograd and fd differ only as a kink at its inputs explains (relu at exact
    zeros: torch's convention picks one side), so fd cannot judge it: never blamed."""

    path: str
    cls: str
    file: str | None
    line: int | None
    ok: bool
    value: float
    reference: float
    error_estimate: float
    nonsmooth: bool = False
    blamed: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.file else "?"


def _definition(module) -> tuple[str | None, int | None]:
    """``file:line`` of the module's class definition, relative to the working folder when inside it.
    (A user file gradcli loaded is not in ``sys.modules``, where ``inspect`` looks: its
    methods' code objects still name the file, and the ``class`` line is found there.)"""
    cls = type(module)
    try:
        path, line = inspect.getsourcefile(cls), inspect.getsourcelines(cls)[1]
    except (TypeError, OSError):
        path, line = _class_line(cls)
    if path is None:
        return None, None
    return display_path(path), line


def display_path(path: str) -> str:
    """A source file as a person reads it: relative to the working folder when inside it,
    from its package on when installed (``torch/nn/modules/linear.py``), else as it is."""
    rel = os.path.relpath(path)
    if not rel.startswith(".."):
        return rel
    return path.replace(os.sep, "/").split("/site-packages/")[-1]


def _class_line(cls) -> tuple[str | None, int | None]:
    import re

    codes = [f.__code__ for f in vars(cls).values() if inspect.isfunction(f)]
    if not codes:
        return None, None
    path = codes[0].co_filename
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        return path, None
    pattern = re.compile(rf"^\s*class\s+{re.escape(cls.__name__)}\b")
    before = min(c.co_firstlineno for c in codes)
    found = [i + 1 for i, text in enumerate(lines[:before]) if pattern.match(text)]
    return path, found[-1] if found else None


def locate_modules(problem: Problem, *, seed: int, atol: float, rtol: float, failing=(), eps: float | None = None):
    """``(findings, notes)``: every submodule checked alone (deepest first), or
    ``(None, notes)`` when the function is not an ``nn.Module``. ``failing``: the
    arguments found wrong (named when no module can be); ``eps``: the working
    precision fd measured (code that rounds inside), when coarser than the dtype's."""
    function = problem.function
    module = getattr(function, "module", None)
    if module is None:
        return None, ["module localisation needs a torch.nn.Module as FUNCTION (PATH.py:NAME naming a module); "
                      "this one is not"]
    import torch

    calls = _record(function, problem, torch, seed)
    depth = {path: path.count(".") for path in calls}
    findings = []
    rng = np.random.default_rng(seed)
    sides = np.random.default_rng([seed, 1])  # the kink test's own draws: the probes stay those of --seed
    for path in sorted(calls, key=lambda p: -depth[p]):
        sub = module.get_submodule(path)
        found = _check_module(sub, *calls[path], rng=rng, sides=sides, atol=atol, rtol=rtol, eps=eps, torch=torch)
        if found is None:
            continue
        file, line = _definition(sub)
        findings.append(ModuleFinding(path, type(sub).__name__, file, line, *found))
    # A module is blamed when it fails on its own and no descendant fails or sits on a kink (a container of
    # either fails as they do, and is not the culprit).
    wrong = {f.path for f in findings if not f.ok and not f.nonsmooth}
    unclear = {f.path for f in findings if not f.ok}
    findings = [dataclasses.replace(f, blamed=f.path in wrong and not any(p.startswith(f.path + ".") for p in unclear))
                for f in findings]
    notes = []
    kinked = [f for f in findings if f.nonsmooth]
    if kinked:
        notes.append(f"{', '.join(f'{f.path} ({f.cls})' for f in kinked)}: the input received holds a kink (exact "
                     "zeros of a relu, say), where torch's convention picks one side and fd sees both: non-smooth there, "
                     "not a wrong backward, and not blamed")
    if wrong and not any(f.blamed for f in findings):
        notes.append("no submodule is wrong on its own")
    elif not unclear:
        # Never a place named without evidence: a submodule's own check can miss an error the whole model
        # shows (its tolerance is relative to that submodule's own vjp), and the top-level forward is unchecked.
        where = f"; the wrong gradients are those of {', '.join(failing)}" if failing else ""
        notes.append(f"module localisation inconclusive: every submodule agrees with fd on its own (at the inputs "
                     f"and output gradients it received), so the checks cannot place the error: it may lie in the "
                     f"top-level forward ({type(module).__name__}) or in a submodule where it is too small for that "
                     f"submodule's own check{where}")
    return tuple(findings), notes


def _record(function, problem: Problem, torch, seed: int) -> dict[str, tuple]:
    """Each submodule's first call during a real float64 forward and backward pass:
    ``path -> (args, kwargs, cotangent)``, the cotangent being the gradient its output
    received (None where it received none): for a scalar loss, the output's own
    gradient; else that of ``vᵀ f`` for a seeded ``v``. A module's check along it
    sees an error at the size the whole model's gradient does."""
    module = function.module
    calls: dict[str, tuple] = {}
    outputs: dict[str, object] = {}
    handles = []

    def keep(value):
        return value.detach().clone() if isinstance(value, torch.Tensor) else value

    for path, sub in module.named_modules():
        if not path:
            continue

        def hook(mod, args, kwargs, output, path=path):
            if path not in calls:
                calls[path] = (tuple(keep(a) for a in args), {k: keep(v) for k, v in kwargs.items()})
                if isinstance(output, torch.Tensor) and output.requires_grad:
                    outputs[path] = output

        handles.append(sub.register_forward_hook(hook, with_kwargs=True))
    tensors = {k: torch.from_numpy(np.array(v.astype(np.float64) if v.dtype.kind == "f" else v))
               for k, v in problem.args.items() if not k.startswith("param:")}
    try:
        with torch.enable_grad():
            out = function.call(tensors)  # the module follows the input's dtype: float64 here
    finally:
        for h in handles:
            h.remove()
    cotangents: dict[str, object] = {}
    if outputs and isinstance(out, torch.Tensor) and out.requires_grad:
        v = torch.from_numpy(np.random.default_rng(seed).standard_normal(tuple(out.shape))).to(out)
        scalar = out if out.dim() == 0 else (v * out).sum()
        paths = list(outputs)
        try:
            got = torch.autograd.grad(scalar, [outputs[p] for p in paths], allow_unused=True)
        except RuntimeError:  # (a backward that cannot run here fails the checks themselves: random cotangents)
            got = [None] * len(paths)
        cotangents = {p: g.detach() for p, g in zip(paths, got) if g is not None}
    return {path: (*call, cotangents.get(path)) for path, call in calls.items()}


def _check_module(sub, args, kwargs, cotangent, *, rng, sides, atol, rtol, eps, torch):
    """``(ok, autograd, fd, fd_error, nonsmooth)`` of the worst of a few probes (the first
    along the output gradient the module received, the others along random cotangents;
    wrong before non-smooth before ok), or None when the submodule has nothing to
    differentiate or does not return one float tensor. A probe that disagrees is
    non-smooth where fd sees a kink at the point (``probe.non_smooth``) or where
    autograd's value lies between the one-sided slopes along a positive direction and
    cotangent (:func:`_between_sides`)."""
    slots = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
    params = {n: p.detach() for n, p in sub.named_parameters()}
    if not slots and not params:
        return None
    leaves = {**{f"arg{i}": args[i] for i in slots}, **params}

    def run(values):
        call_args = list(args)
        for i in slots:
            call_args[i] = values[f"arg{i}"]
        return torch.func.functional_call(sub, {n: values[n] for n in params}, tuple(call_args), kwargs)

    with torch.no_grad():
        out = run(leaves)
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        return None
    given = [cotangent] if cotangent is not None and cotangent.shape == out.shape and cotangent.any() else []
    worst = None
    for k in range(MODULE_PROBES):
        v = given[k] if k < len(given) else torch.from_numpy(rng.standard_normal(tuple(out.shape))).to(out)
        d = {n: t.new_tensor(rng.integers(0, 2, t.shape) * 2.0 - 1) * probe.step_scale(t.cpu().numpy())
             for n, t in leaves.items()}
        xs = {n: t.detach().requires_grad_(True) for n, t in leaves.items()}
        grads = torch.autograd.grad((v * run(xs)).sum(), list(xs.values()), allow_unused=True)
        value = sum(float((g * d[n]).sum()) for n, g in zip(xs, grads) if g is not None)
        size = math.sqrt(sum(float(((g * d[n]) ** 2).sum()) for n, g in zip(xs, grads) if g is not None))
        precision = max(probe.dtype_eps(out), eps or 0.0)

        def tolerance(fd, err):
            return atol + rtol * max(abs(fd), size) + 3 * err

        with torch.no_grad():
            fd, err, jump, _ = probe.directional(
                lambda t: float((v * run({n: leaves[n] + t * d[n] for n in leaves})).sum()), precision ** (1 / 3),
                precision, agrees=lambda fd, rounding: abs(value - fd) <= tolerance(fd, rounding))
        excess = abs(value - fd) / tolerance(fd, err)
        ok = excess <= 1
        kink = not ok and (bool(probe.non_smooth(err, jump, abs(value - fd), max(abs(fd), size)))
                           or _between_sides(run, leaves, out, sides, torch, atol, rtol))
        rank = (not ok and not kink, not ok, 0.0 if ok else excess)  # wrong, non-smooth, ok (the first of those)
        if worst is None or rank > worst[0]:
            worst = (rank, ok, value, fd, err, kink)
    return worst[1:]


def _between_sides(run, leaves, out, rng, torch, atol, rtol) -> bool:
    """Whether autograd's ``vᵀ J u`` lies between the one-sided slopes of
    ``φ(t) = vᵀ f(x + t u)`` at 0, for ``v`` and ``u`` of positive entries
    (scaled as the probes are). At a kink of an elementwise function each
    entry's convention (torch's relu: 0 at 0) lies between its left and right
    slope, and with every ``v_i u_i > 0`` so does their sum: a right backward
    stays between the sides, a wrong one (3x where 2x is right) does not."""
    v = torch.from_numpy(np.abs(rng.standard_normal(tuple(out.shape)))).to(out)
    d = {n: t.new_tensor(rng.uniform(0.5, 1.0, t.shape)) * probe.step_scale(t.cpu().numpy()) for n, t in leaves.items()}
    xs = {n: t.detach().requires_grad_(True) for n, t in leaves.items()}
    grads = torch.autograd.grad((v * run(xs)).sum(), list(xs.values()), allow_unused=True)
    value = sum(float((g * d[n]).sum()) for n, g in zip(xs, grads) if g is not None)
    eps = probe.dtype_eps(out)
    h = eps ** (1 / 3)
    with torch.no_grad():
        phi = {m: float((v * run({n: leaves[n] + m * h * d[n] for n in leaves})).sum()) for m in (-2, -1, 0, 1, 2)}
    # one-sided second-order differences: (-3 φ(0) + 4 φ(±h) - φ(±2h)) / (±2h)
    right = (-3 * phi[0] + 4 * phi[1] - phi[2]) / (2 * h)
    left = (3 * phi[0] - 4 * phi[-1] + phi[-2]) / (2 * h)
    slack = atol + rtol * max(abs(left), abs(right)) + 8 * eps * max(abs(p) for p in phi.values()) / h
    return min(left, right) - slack <= value <= max(left, right) + slack and abs(right - left) > slack


def tensors(prober, joint) -> tuple[dict[str, Any], list[str]]:
    """Each argument's verdict after the joint probes failed (``joint.Prober``; ``joint``:
    their judgement): group testing over the arguments. A failing group is split
    in halves, each judged along the same probes restricted to it (autograd's
    shares are reused; fd differences again, first along the group's worst probe
    alone, which settles a failing half); a passing half clears its arguments, a
    failing one is split again, down to single arguments, which get their own
    judgement over all K probes: O(b log T) judgements for b wrong arguments out
    of T. A group that fails while neither half does (errors that cancel) is
    reported failing as a whole, never cleared. Returns ``name -> Judgement``
    (its own, or its group's) and notes."""
    verdicts: dict[str, Any] = {}
    notes: list[str] = []
    frontier = [(prober.names, joint)]
    while frontier:
        group, judged = frontier.pop(0)
        halves = (group[: len(group) // 2], group[len(group) // 2:])
        # a half of several arguments first along its group's worst probe: one failing probe settles it
        first = _worst_probe(judged)
        parts = [prober.judge(half, first=first if len(half) > 1 else None) for half in halves]
        for half, part in zip(halves, parts):
            if len(half) == 1 or part.ok is not False:
                verdicts.update(dict.fromkeys(half, part))
            else:
                frontier.append((half, part))
        if all(part.ok is not False for part in parts):  # the group fails, neither half does
            verdicts.update(dict.fromkeys(group, judged))
            notes.append(f"the probes over {_names(group)} disagree, but neither half of them does on its own (their "
                         "errors cancel in part, or the difference sits at the tolerance): they are reported failing "
                         "together; check them one by one with --wrt NAME")
    return verdicts, notes


def _worst_probe(judgement) -> int | None:
    worst = max((e for c in judgement.comparisons for e in c.worst), key=lambda e: e.excess, default=None)
    return None if worst is None else worst.index[0]


def _names(names) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{len(names)} arguments ({names[0]} … {names[-1]})"


def with_entries(report: CheckReport, prober, top: int) -> CheckReport:
    """The report of a wrong argument with its worst entries found by group testing (``top``),
    along its worst probe."""
    if top <= 0 or not report.top or report.top[0].kind != "probe":
        return report
    k = report.top[0].index[0]
    grad = prober.reference_grad(report.wrt, k)
    if grad is None:
        return report
    entries = worst_entries(prober.fd_fn, prober.probes, report.wrt, top, k=k, grad=grad, tolerance=prober.tolerance,
                            eps=prober.eps, fd_step=prober.options.fd_step)
    if not entries:
        return report
    note = (f"{report.wrt}: entries located by group testing (probe {k} restricted to halves of the tensor, "
            f"{len(entries)} listed, each with fd's derivative and {report.reference.value}'s)")
    return dataclasses.replace(report, top=tuple(entries), notes=report.notes + (note,))


def worst_entries(fn, probes, name: str, top: int, *, k: int, grad: np.ndarray, tolerance, eps: float | None = None,
                  fd_step: float | None = None) -> list[Entry]:
    """Beam search over halves of argument ``name``, along probe ``k`` (``probe.Probes``) of
    ``fn`` (a ``probe.TorchFunction``): keep the ``top`` subsets whose difference between the
    reference's ``grad · u`` and fd's stands out of ``tolerance`` (``joint.Tolerance``, with
    fd's error bar), split them, down to single entries. ``eps``: the working precision."""
    torch = fn.torch
    grad = np.asarray(grad, dtype=np.float64).reshape(-1)
    x0 = fn.x0[name]
    phi = fn.scalar(probes.cotangent(k))
    eps = eps or probe.dtype_eps(x0)
    u = probes.u[name][k].reshape(-1).astype(np.float64)  # ± the argument's relative scale
    h = fd_step if fd_step is not None else eps ** (1 / 3) * probes.step

    def measure(lo: int, hi: int):
        direction = np.zeros(grad.size)
        direction[lo:hi] = u[lo:hi]
        d = fn.tensor(direction.reshape(tuple(x0.shape)))
        value = float(grad[lo:hi] @ u[lo:hi])
        size = float(np.linalg.norm(grad[lo:hi] * u[lo:hi]))
        with torch.no_grad():
            # Two evaluations per half: the argument's own check already settled which side is believed.
            fd, err, _, _ = probe.directional(lambda t: fn.along(phi, t, {name: d}), h, eps, central_only=True)
        return abs(value - fd) / float(tolerance.bound(fd, size, err)), value, fd, err

    frontier = [(0, grad.size)]
    found: list[tuple[float, int, float, float, float]] = []
    while frontier:
        scored = []
        for lo, hi in frontier:
            halves = [(lo, hi)] if hi - lo == 1 else [(lo, (lo + hi) // 2), ((lo + hi) // 2, hi)]
            for a, b in halves:
                excess, value, fd, err = measure(a, b)
                if excess > 1:
                    scored.append((excess, a, b, value, fd, err))
        scored.sort(key=lambda s: -s[0])
        frontier = []
        for excess, a, b, value, fd, err in scored[:top]:
            if b - a == 1:  # one entry: its derivative is the directional one over its move u[a]
                found.append((excess, a, value / u[a], fd / u[a], err / abs(u[a])))
            else:
                frontier.append((a, b))
        if len(found) >= top:
            break
    entries = []
    for excess, flat, value, fd, err in sorted(found, key=lambda f: -f[0])[:top]:
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(x0.shape)))
        diff = abs(value - fd)
        # As in every top list: the backend's value (fd, believed within its error bar) against the reference's.
        entries.append(Entry("fd", index, fd, value, diff, diff / abs(value) if value else math.inf, err, excess))
    return entries
