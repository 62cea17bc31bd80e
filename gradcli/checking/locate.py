"""Where a wrong derivative lives: which module, which entries.

Modules: forward hooks record what every submodule of the user's
``nn.Module`` receives during one real forward pass; each submodule is then
checked on its own at those inputs — its vjp (autograd) against a directional
finite difference of that submodule alone, along a random direction over its
float inputs and parameters (each scaled to its entries' size). A failing
module is blamed only when none of its descendants fails: a container of a
wrong module fails too, but is not the culprit.

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


def locate_modules(problem: Problem, *, seed: int, atol: float, rtol: float):
    """``(findings, notes)``: every submodule checked alone (deepest first), or
    ``(None, notes)`` when the function is not an ``nn.Module``."""
    function = problem.function
    module = getattr(function, "module", None)
    if module is None:
        return None, ["module localisation needs a torch.nn.Module as FUNCTION (PATH.py:NAME naming a module); "
                      "this one is not"]
    import torch

    calls = _record(function, problem, torch)
    depth = {path: path.count(".") for path in calls}
    findings = []
    rng = np.random.default_rng(seed)
    sides = np.random.default_rng([seed, 1])  # the kink test's own draws: the probes stay those of --seed
    for path in sorted(calls, key=lambda p: -depth[p]):
        sub = module.get_submodule(path)
        found = _check_module(sub, *calls[path], rng=rng, sides=sides, atol=atol, rtol=rtol, torch=torch)
        if found is None:
            continue
        file, line = _definition(sub)
        findings.append(ModuleFinding(path, type(sub).__name__, file, line, *found))
    # A module is blamed when it fails on its own and no descendant fails or sits on a kink (a container of
    # either fails as they do, and is not the culprit).
    failing = {f.path for f in findings if not f.ok and not f.nonsmooth}
    unclear = {f.path for f in findings if not f.ok}
    findings = [dataclasses.replace(f, blamed=f.path in failing and not any(p.startswith(f.path + ".") for p in unclear))
                for f in findings]
    notes = []
    kinked = [f for f in findings if f.nonsmooth]
    if kinked:
        notes.append(f"{', '.join(f'{f.path} ({f.cls})' for f in kinked)}: the input received holds a kink (exact "
                     "zeros of a relu, say), where torch's convention picks one side and fd sees both: non-smooth there, "
                     "not a wrong backward, and not blamed")
    if failing and not any(f.blamed for f in findings):
        notes.append("no submodule is wrong on its own")
    elif not unclear:
        notes.append("every submodule agrees with fd on its own: the error is in the top-level forward "
                     f"({type(module).__name__}), outside any submodule")
    return tuple(findings), notes


def _record(function, problem: Problem, torch) -> dict[str, tuple]:
    """Each submodule's first call during a float64 forward pass: ``path -> (args, kwargs)``."""
    module = function.module
    calls: dict[str, tuple] = {}
    handles = []

    def keep(value):
        return value.detach().clone() if isinstance(value, torch.Tensor) else value

    for path, sub in module.named_modules():
        if not path:
            continue

        def hook(mod, args, kwargs, output, path=path):
            if path not in calls:
                calls[path] = (tuple(keep(a) for a in args), {k: keep(v) for k, v in kwargs.items()})

        handles.append(sub.register_forward_hook(hook, with_kwargs=True))
    tensors = {k: torch.from_numpy(np.array(v.astype(np.float64) if v.dtype.kind == "f" else v))
               for k, v in problem.args.items() if not k.startswith("param:")}
    try:
        with torch.no_grad():
            function.call(tensors)  # the module follows the input's dtype: float64 here
    finally:
        for h in handles:
            h.remove()
    return calls


def _check_module(sub, args, kwargs, *, rng, sides, atol, rtol, torch):
    """``(ok, autograd, fd, fd_error, nonsmooth)`` of the worst of a few probes
    (wrong before non-smooth before ok), or None when the submodule has nothing
    to differentiate or does not return one float tensor. A probe that
    disagrees is non-smooth where fd sees a kink at the point (``probe.non_smooth``)
    or where autograd's value lies between the one-sided slopes along a
    positive direction and cotangent (:func:`_between_sides`)."""
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
    worst = None
    for _ in range(MODULE_PROBES):
        v = torch.from_numpy(rng.standard_normal(tuple(out.shape))).to(out)
        d = {n: t.new_tensor(rng.integers(0, 2, t.shape) * 2.0 - 1) * probe.step_scale(t.cpu().numpy())
             for n, t in leaves.items()}
        xs = {n: t.detach().requires_grad_(True) for n, t in leaves.items()}
        grads = torch.autograd.grad((v * run(xs)).sum(), list(xs.values()), allow_unused=True)
        value = sum(float((g * d[n]).sum()) for n, g in zip(xs, grads) if g is not None)
        size = math.sqrt(sum(float(((g * d[n]) ** 2).sum()) for n, g in zip(xs, grads) if g is not None))
        eps = probe.dtype_eps(out)

        def tolerance(fd, err):
            return atol + rtol * max(abs(fd), size) + 3 * err

        with torch.no_grad():
            fd, err, jump, _ = probe.directional(
                lambda t: float((v * run({n: leaves[n] + t * d[n] for n in leaves})).sum()), eps ** (1 / 3), eps,
                agrees=lambda fd, rounding: abs(value - fd) <= tolerance(fd, rounding))
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


def with_entries(report: CheckReport, context, top: int) -> CheckReport:
    """The report of a wrong argument with its worst entries found by group testing (``top``)."""
    if context.grads is None or top <= 0:
        return report
    entries = worst_entries(context, report.wrt, top)
    if not entries:
        return report
    note = (f"{report.wrt}: entries located by group testing (sign probes on halves of the tensor, "
            f"{len(entries)} listed, each with fd's derivative and {report.reference.value}'s)")
    return dataclasses.replace(report, top=tuple(entries), notes=report.notes + (note,))


def worst_entries(context, name: str, top: int) -> list[Entry]:
    """Beam search over halves: keep the ``top`` subsets whose reference-vs-fd
    difference stands out of fd's error bar, split them, down to single entries."""
    fn = context.fd_function
    torch = fn.torch
    grad = np.asarray(context.grads[name], dtype=np.float64).reshape(-1)
    x0 = fn.x0[name]
    phi = fn.scalar(context.probes.v)
    eps = probe.dtype_eps(x0)
    scale = probe.step_scale(x0.cpu().numpy())
    signs = context.probes.u[name][0].reshape(-1).astype(np.float64)
    flat_shape = x0.shape

    def measure(lo: int, hi: int):
        direction = np.zeros(grad.size)
        direction[lo:hi] = signs[lo:hi]
        d = fn.tensor(direction.reshape(flat_shape).astype(x0.cpu().numpy().dtype))
        value = float(grad[lo:hi] @ signs[lo:hi])
        size = float(np.linalg.norm(grad[lo:hi]))

        def tolerance(fd, err):
            return context.atol + context.rtol * max(abs(fd), size) + 3 * err

        h = context.fd_step if context.fd_step is not None else eps ** (1 / 3) * scale
        with torch.no_grad():
            # Two evaluations per half: the argument's own check already settled which side is believed.
            fd, err, _, _ = probe.directional(lambda t: fn.along(phi, name, t, d), h, eps, central_only=True)
        return abs(value - fd) / tolerance(fd, err), value, fd, err

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
            if b - a == 1:
                found.append((excess, a, signs[a] * value, signs[a] * fd, err))
            else:
                frontier.append((a, b))
        if len(found) >= top:
            break
    entries = []
    for excess, flat, value, fd, err in sorted(found, key=lambda f: -f[0])[:top]:
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(flat_shape)))
        diff = abs(value - fd)
        # As in every top list: the backend's value (fd, believed within its error bar) against the reference's.
        entries.append(Entry("fd", index, fd, value, diff, diff / abs(value) if value else math.inf, err, excess))
    return entries
