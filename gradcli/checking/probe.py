"""Probe mode of ``check``: the scalar ``vᵀ J u`` per argument, from each backend.

For every differentiated argument ``a`` and probe ``k``, ``u_ak`` is a seeded
Rademacher direction shaped like ``a`` (entries ±1) and ``v`` one random
cotangent shaped like the output (1 for a scalar output). Each backend gives
the same number a different way:

- autograd: ONE reverse pass gives ``g_a = vᵀ J_a`` for every argument at
  once; the probes are the dot products ``g_a · u_ak``;
- analytic (built-ins): the closed-form vjp per argument, dotted the same way;
- forward: one forward-mode pass ``J_a u_ak`` per probe, dotted with ``v``;
- fd: the derivative at 0 of ``φ(t) = vᵀ f(a + t u_ak)`` by central
  differences at ``t = ±h, ±2h`` with Richardson extrapolation, an error
  estimate ``|D(h) - D(2h)| + eps |φ| / h``, and a smaller step where that
  estimate says a kink lies within the step.

None of these costs grows with the number of entries of ``a``: the fd budget
is two evaluations per probe and argument where it agrees, five to thirteen
where it does not. The Taylor test (``--taylor``)
uses the same directions: ``r(h) = |φ(h) - φ(0) - h (g_a · u)|`` for halving
``h`` falls like ``h²`` when ``g_a`` is right and like ``h`` when it is not.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..core.errors import BackendError
from ..problem.problem import Problem

FD_MULTIPLES = (1.0, 2.0)  # steps ±h, ±2h: one Richardson estimate and its error
FD_LEVELS = 3  # adaptive step: h, h/100, h/10^4 until the estimate is consistent
TAYLOR_STEPS = 16  # r(h) at h = scale, scale/2, ..., scale/2^15
TAYLOR_RIGHT, TAYLOR_WRONG = 1.75, 1.35  # observed order: >= right is order 2, <= wrong is order 1


@dataclass(frozen=True)
class Probes:
    """Directions: ``u[name]`` is ``(K, *shape)`` of ±1; ``v`` is shaped like the output (None: scalar output)."""

    u: Mapping[str, np.ndarray]
    v: np.ndarray | None
    seed: int

    @property
    def count(self) -> int:
        return next(iter(self.u.values())).shape[0]


@dataclass(frozen=True)
class ProbeValues:
    """One backend's ``vᵀ J u`` per argument: ``values[name]`` is ``(K,)``;
    fd adds ``error[name]`` ``(K,)``; autograd and analytic keep ``grads[name] = vᵀ J``."""

    values: Mapping[str, np.ndarray]
    seconds: float
    error: Mapping[str, np.ndarray] | None = None
    grads: Mapping[str, np.ndarray] | None = None
    evaluations: int = 0
    jump: Mapping[str, np.ndarray] | None = None  # fd: one-sided slopes' difference where a kink lies at the point


@dataclass(frozen=True)
class Taylor:
    """The Taylor remainder test of one argument. Per probe ``k``: ``orders[k]``,
    the observed order (None where ``r(h)`` never rose clear of rounding), and
    ``wrong[k]``, True when the two smallest usable steps both show order ≈ 1."""

    orders: tuple[float | None, ...]
    wrong: tuple[bool, ...]
    steps: tuple[float, ...]
    remainders: tuple[tuple[float, ...], ...]  # (K, steps)
    floor: float

    @property
    def order(self) -> float | None:
        """The median observed order over the probes."""
        known = sorted(o for o in self.orders if o is not None)
        return known[len(known) // 2] if known else None

    @property
    def ok(self) -> bool | None:
        """False: most probes show order 1 (a wrong derivative shows along almost every
        direction; a kink crossed by the steps, only along some); True: most show order 2;
        None: inconclusive."""
        half = len(self.orders) / 2
        if sum(self.wrong) > half:
            return False
        if sum(o is not None and o >= TAYLOR_RIGHT for o in self.orders) > half:
            return True
        return None


def argument_seed(seed: int, name: str) -> int:
    """Each argument's directions depend only on ``--seed`` and its name: adding an argument changes no other's."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**32


def make_probes(shapes: Mapping[str, tuple[int, ...]], output_shape: tuple[int, ...], count: int, seed: int,
                dtype) -> Probes:
    u = {}
    for name, shape in shapes.items():
        rng = np.random.default_rng(argument_seed(seed, name))
        signs = rng.integers(0, 2, size=(count, *shape), dtype=np.int8).astype(dtype)
        signs *= 2
        signs -= 1
        u[name] = signs
    v = None if output_shape == () else np.random.default_rng(seed).standard_normal(output_shape).astype(dtype)
    return Probes(u=u, v=v, seed=seed)


class TorchFunction:
    """The problem as a torch function of its differentiated arguments (a dict
    ``name -> tensor``), with every other argument fixed."""

    def __init__(self, problem: Problem, names, device: str = "cpu", dtype=None) -> None:
        from ..backends.torchbase import import_torch

        self.torch = torch = import_torch()
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("--device cuda: torch sees no CUDA device here; use --device cpu")
        self.problem = problem
        work = problem.dtype if dtype is None else np.dtype(dtype)
        self.tensors = {k: torch.from_numpy(np.array(a, dtype=work if a.dtype.kind == "f" else a.dtype)).to(device)
                        for k, a in problem.args.items()}  # copies: the problem's arrays are read-only
        self.names = tuple(names)
        self.x0 = {k: self.tensors[k] for k in self.names}

    def along(self, phi, name: str, t: float, direction) -> float:
        """``φ`` at ``x0 + t · direction`` for argument ``name``, the moved argument
        written into one reused buffer (a fresh large tensor per evaluation costs
        more in page faults than the forward pass of a small network)."""
        buffers = self.__dict__.setdefault("_buffers", {})
        if name not in buffers:
            buffers[name] = self.torch.empty_like(self.x0[name])
        moved = self.torch.add(self.x0[name], direction, alpha=t, out=buffers[name])
        return float(phi({**self.x0, name: moved}))

    def __call__(self, xs: Mapping[str, object]):
        return self.problem.torch_forward({**self.tensors, **xs})

    @property
    def closed_form(self) -> bool:
        """Whether the function is a built-in's closed form (user code may round inside)."""
        return self.problem.function.closed_form

    def tensor(self, array):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(next(iter(self.x0.values())))

    def scalar(self, v) -> Callable:
        """``φ(xs) = vᵀ f(xs)`` (f itself for a scalar output)."""
        if v is None:
            return self
        vt = self.tensor(v)
        return lambda xs: (vt * self(xs)).sum()


def autograd_values(fn: TorchFunction, probes: Probes) -> ProbeValues:
    """One reverse pass for every argument: ``g_a = vᵀ J_a``, then ``g_a · u_ak``."""
    from ..backends.torchbase import to_numpy, torch_errors

    torch = fn.torch
    start = time.perf_counter()
    with torch_errors("autograd"):
        xs = {k: t.detach().requires_grad_(True) for k, t in fn.x0.items()}
        # Differentiating the scalar vᵀ f rather than passing v as grad_outputs: the same vjp, without the
        # second or more torch spends importing sympy on the first call that is given grad_outputs.
        out = fn.scalar(probes.v)(xs)
        grads = torch.autograd.grad(out, list(xs.values()), allow_unused=True)
    grads = {k: np.zeros(fn.x0[k].shape) if g is None else np.asarray(to_numpy(g), dtype=np.float64)
             for k, g in zip(xs, grads)}
    return _from_grads(grads, probes, time.perf_counter() - start)


def grads_values(grads: Mapping[str, np.ndarray], probes: Probes, seconds: float) -> ProbeValues:
    """Probe values from vjps computed elsewhere (the analytic backend)."""
    return _from_grads({k: np.asarray(g, dtype=np.float64) for k, g in grads.items()}, probes, seconds)


def _from_grads(grads, probes: Probes, seconds: float) -> ProbeValues:
    values = {k: np.asarray(probes.u[k], dtype=np.float64).reshape(probes.count, -1) @ g.reshape(-1)
              for k, g in grads.items()}
    return ProbeValues(values=values, seconds=seconds, grads=grads)


def forward_values(fn: TorchFunction, probes: Probes) -> ProbeValues:
    """``vᵀ (J_a u_ak)`` from torch forward mode, the K probes of an argument batched by vmap
    (fused kernels without a forward-mode formula in their composite forms, as the forward backend)."""
    from ..backends.forward import composite_forms

    torch = fn.torch
    start = time.perf_counter()
    values = {}
    v = None if probes.v is None else fn.tensor(probes.v)
    for name in fn.names:
        def along(xa, name=name):
            with composite_forms(torch):
                return fn({**fn.x0, name: xa})

        def one(t, name=name, along=along):
            tangent_out = torch.func.jvp(along, (fn.x0[name],), (t,))[1]
            return tangent_out if v is None else (v * tangent_out).sum()

        tangents = fn.tensor(probes.u[name])
        try:
            try:
                got = torch.func.vmap(one)(tangents)
            except (RuntimeError, BackendError):  # code vmap cannot batch (a custom autograd.Function): one at a time
                got = torch.stack([one(t) for t in tangents])
        except (RuntimeError, NotImplementedError, BackendError) as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BackendError(f"--backend forward: torch's forward mode cannot run this code (an op or a "
                               f"custom autograd.Function without a forward-mode formula): {text[:200]}") from err
        values[name] = got.detach().cpu().numpy().astype(np.float64).reshape(-1)
    return ProbeValues(values=values, seconds=time.perf_counter() - start)


def step_scale(x: np.ndarray) -> float:
    """The size of an entry of ``x``: its root mean square (1 when ``x`` is 0). A
    step ``h u`` moves every entry by ``h``, so ``h`` is scaled to the entries."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return rms if rms > 0 else 1.0


def fd_values(fn: TorchFunction, probes: Probes, fd_step: float | None = None,
              agrees: Callable[[str, int, float, float], bool] | None = None) -> ProbeValues:
    """The directional derivative of ``φ(t) = vᵀ f(a + t u)`` at 0 for each probe
    (``directional``), differenced in ``fn``'s dtype, from the step
    ``h = eps^(1/3) scale`` (or ``fd_step``). ``agrees(name, k, value, rounding)``
    says whether a first central difference already matches the reference."""
    torch = fn.torch
    start = time.perf_counter()
    phi = fn.scalar(probes.v)
    eps = dtype_eps(fn.x0[fn.names[0]])
    values, errors, jumps, count = {}, {}, {}, 0
    with torch.no_grad():
        if not fn.closed_form:  # user code may round inside (a .float() cast): measure it
            eps = working_eps(fn, phi, eps)
        for name in fn.names:
            h = fd_step if fd_step is not None else eps ** (1 / 3) * step_scale(fn.x0[name].cpu().numpy())
            got, err, jump = np.empty(probes.count), np.empty(probes.count), np.zeros(probes.count)
            for k, u in enumerate(fn.tensor(probes.u[name])):
                accept = None if agrees is None else (lambda value, rounding, k=k: agrees(name, k, value, rounding))
                got[k], err[k], jump[k], used = directional(lambda t, u=u: fn.along(phi, name, t, u), h, eps,
                                                            adaptive=fd_step is None, agrees=accept)
                count += used
            values[name], errors[name], jumps[name] = got, err, jump
    return ProbeValues(values=values, seconds=time.perf_counter() - start, error=errors, evaluations=count,
                       jump=jumps)


def working_eps(fn: TorchFunction, phi, eps: float) -> float:
    """The precision ``φ`` is computed in (``fd_steps.resolution``), probed along
    one seeded sign direction over every argument, scaled to its entries: more
    than ``eps`` where the code rounds inside (a ``.float()`` cast)."""
    from ..backends import fd_steps

    rng = np.random.default_rng(0)
    direction = {}
    for name in fn.names:
        a = fn.x0[name].cpu().numpy()
        magnitude = np.maximum(np.abs(a), step_scale(a))
        direction[name] = fn.tensor((magnitude * (rng.integers(0, 2, a.shape) * 2 - 1)).astype(a.dtype))
    phi0 = float(phi(fn.x0))

    def change(s: float):
        return tuple(float(phi({**fn.x0, **{n: fn.x0[n] + sign * s * direction[n] for n in fn.names}})) - phi0
                     for sign in (1.0, -1.0))

    return fd_steps.resolution(change, eps, abs(phi0))


def directional(phi: Callable[[float], float], h: float, eps: float, *, adaptive: bool = True,
                agrees: Callable[[float, float], bool] | None = None,
                central_only: bool = False) -> tuple[float, float, float, int]:
    """``φ'(0)`` by finite differences: ``(value, error estimate, kink jump, evaluations)``.

    First the central difference at ``h`` (two evaluations): where
    ``agrees(value, rounding)`` says it already matches the reference within
    tolerance, it is accepted as is (its error estimate is then the rounding
    part alone). Otherwise ``±2h`` too and Richardson (``richardson``), and,
    when ``adaptive``, steps 100 and 10⁴ times smaller while the truncation
    part of the error estimate is above both ten times the rounding part and
    ``sqrt(eps) |R|`` (a kink within the step: relu units switching), keeping
    the estimate with the smallest error. The kink jump (``kink_jump``) says
    whether a kink sits at the point itself. ``central_only``: the first central
    difference whatever it says (a rough value where two evaluations must do)."""
    at = {m: phi(m * h) for m in (1.0, -1.0)}
    used = 2
    central = (at[1.0] - at[-1.0]) / (2 * h)
    rounding = eps * (abs(at[1.0]) + abs(at[-1.0])) / h
    if central_only or agrees is not None and agrees(central, rounding):
        return central, rounding, 0.0, used
    phi0 = phi(0.0)
    used += 1
    best = (math.nan, math.inf, 0.0)
    for level in range(FD_LEVELS if adaptive else 1):
        step = h * 0.01**level
        multiples = (2.0,) if level == 0 else FD_MULTIPLES
        at = {**(at if level == 0 else {}), **{m * s: phi(m * s * step) for m in multiples for s in (1, -1)}}
        used += 2 * len(multiples)
        value, truncation, rounding = richardson(at, step, eps)
        best = min(best, (value, truncation + rounding, kink_jump(at, phi0, step, rounding)), key=lambda e: e[1])
        if truncation <= max(10 * rounding, math.sqrt(eps) * abs(value)):
            break  # consistent: a smaller step would only add rounding
    return (*best, used)


def non_smooth(error, jump, diff, size):
    """Where fd cannot judge (arrays or numbers): its error bar exceeds a tenth of the
    value's size (the steps do not converge: a kink within every step), or the
    one-sided slopes at the point differ by at least half the difference (a
    kink at the point, such as relu at 0, where torch's convention picks one side)."""
    return np.logical_or(np.greater(error, 0.1 * np.asarray(size)), np.greater_equal(jump, 0.5 * np.asarray(diff)))


def kink_jump(at: Mapping[float, float], phi0: float, h: float, rounding: float) -> float:
    """The difference of the one-sided slopes, ``|φ(h) - 2φ(0) + φ(-h)| / h``, when it
    looks like a kink at the point itself (it grows like the step, not like its
    square: ``s(2h) < 3 s(h)``) and stands above rounding; else 0. Central
    differences average the two sides consistently at every step there, so
    Richardson's error estimate cannot see such a kink."""
    s1 = abs(at[1.0] - 2 * phi0 + at[-1.0])
    s2 = abs(at[2.0] - 2 * phi0 + at[-2.0])
    jump = s1 / h
    return jump if jump > 10 * rounding and s2 < 3 * s1 else 0.0


def dtype_eps(tensor) -> float:
    return float(np.finfo(str(tensor.dtype).replace("torch.", "")).eps)


def richardson(at: Mapping[float, float], h: float, eps: float) -> tuple[float, float, float]:
    """From ``φ(±h)`` and ``φ(±2h)``: central differences ``D(s) = (φ(s) - φ(-s)) / 2s``
    (error ``c s²``) and Richardson's ``R = D(h) + (D(h) - D(2h)) / 3`` (error O(h⁴)).
    The error estimate ``|D(h) - D(2h)|`` (three times D(h)'s own truncation
    error, which bounds R's) plus the rounding ``eps (|φ(h)| + |φ(-h)|) / h``
    stays honest when a kink within the step breaks the smooth error model.
    Returns ``(R, truncation, rounding)``."""
    d1, d2 = ((at[m] - at[-m]) / (2 * m * h) for m in FD_MULTIPLES)
    rounding = eps * (abs(at[1.0]) + abs(at[-1.0])) / h
    return d1 + (d1 - d2) / 3, abs(d1 - d2), rounding


def taylor(fn: TorchFunction, probes: Probes, name: str, slopes: np.ndarray) -> Taylor:
    """``r(h) = |φ(h) - φ(0) - h s_k|`` for ``h = scale / 2^i`` along each probe, where
    ``s_k`` is the reference's ``vᵀ J u_k``; evaluated in the problem's dtype (no
    float64 help), so it judges float32 code as it runs. The rounding floor is
    ``eps |φ(0)|``; remainders under 32 times that are not used.

    A probe is ``wrong`` when the two smallest usable steps both show order ≈ 1
    AND the remainder is odd there: ``e(±h) = φ(±h) - φ(0) ∓ h s`` are
    ``±δh + O(h²)`` for a slope off by δ, while a relu kink crossed on one side
    of the step (order 1 too, in a right model) leaves the other side alone."""
    torch = fn.torch
    phi = fn.scalar(probes.v)
    x0 = fn.x0[name]
    eps = dtype_eps(x0)
    scale = step_scale(x0.cpu().numpy())
    steps = tuple(scale / 2**i for i in range(TAYLOR_STEPS))
    orders, wrong, remainders = [], [], []
    with torch.no_grad():
        phi0 = float(phi(fn.x0))
        floor = eps * max(abs(phi0), float(np.finfo(np.float64).tiny))
        for k, u in enumerate(fn.tensor(probes.u[name])):
            ahead = [fn.along(phi, name, h, u) - phi0 - h * float(slopes[k]) for h in steps]
            r = tuple(abs(e) for e in ahead)
            remainders.append(r)
            usable = [i for i in range(len(r) - 1) if r[i] > 32 * floor and r[i + 1] > 32 * floor]
            pairs = [math.log2(r[i] / r[i + 1]) for i in usable]
            tail = sorted(pairs[-3:])
            orders.append(float(tail[len(tail) // 2]) if len(pairs) >= 2 else None)
            linear = len(pairs) >= 2 and max(pairs[-2:]) <= TAYLOR_WRONG
            if linear:  # is the remainder odd at those steps? (three more evaluations)
                last = sorted({usable[-2], usable[-1], usable[-1] + 1})
                behind = {i: fn.along(phi, name, -steps[i], u) - phi0 + steps[i] * float(slopes[k]) for i in last}
                linear = all(abs(ahead[i] + behind[i]) <= 0.5 * abs(ahead[i] - behind[i]) for i in last)
            wrong.append(linear)
    return Taylor(orders=tuple(orders), wrong=tuple(wrong), steps=steps, remainders=tuple(remainders), floor=floor)
