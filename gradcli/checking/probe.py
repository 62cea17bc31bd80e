"""Probe mode of ``check``: joint probes ``vₖᵀ J uₖ`` over every differentiated argument.

Probe ``k`` draws ``uₖ`` over ALL the ``--wrt`` arguments together — for each
argument ``a`` a seeded Rademacher sign vector times ``s_a / S``, the root mean
square of ``a``'s entries relative to the largest argument's (``S``), so that a
step ``h S`` moves every argument relative to its own size, and one argument
alone gets ±1 — and ``vₖ``, a fresh random cotangent shaped like the output
(none for a scalar output). Each backend gives ``vₖᵀ J uₖ = Σ_a vₖᵀ J_a u_ka``
its own way:

- autograd: one reverse pass per probe (one for all of them when the output is
  a scalar) gives ``vₖᵀ J_a`` for every argument at once; the probe is the sum
  of the dot products with ``u_ka``, kept per argument (``parts``), so a subset
  of the arguments costs nothing more;
- analytic (built-ins): the closed-form vjp per argument, dotted the same way;
- forward: one forward-mode pass ``J uₖ`` per probe, dotted with ``vₖ``;
- fd: the derivative at 0 of ``φₖ(t) = vₖᵀ f(x + t uₖ)``, first by one
  difference (one-sided in float64: one evaluation), accepted when it already
  agrees with the reference; otherwise central differences and Richardson over
  ``±h, ±2h``, an error estimate ``|D(h) - D(2h)| + eps |φ| / h``, and smaller
  steps where that estimate says a kink lies within the step.

So the cost is K vjps and K directional differences, whatever the number of
arguments or entries. Only after a mismatch are the probes restricted to
subsets of the arguments (``locate.tensors``: halves, down to single tensors).

Working precision: user code may round inside (a ``.float()`` cast, an HF loss
that upcasts logits to float32). fd measures the precision the code resolves
(``working_eps``, after Moré and Wild) when its first differences do not all
agree — code computed in its dtype never pays for the measurement —
and then differences with steps and error bars for that precision; the
verdict's tolerance follows it (``joint.Tolerance``).

Detection guarantee (Rademacher ``u``): write ``e = vₖᵀ(J_ref − J)`` for the
error of the reference's vjp over every entry of every argument, weighted by
the arguments' scales. For any ``e`` with an entry ``|e_i| > τ`` (the probe's
tolerance at its largest over the signs), flipping the sign of ``u_i`` changes
``e·u`` by ``2|e_i|``, so at
least half of all sign vectors give ``|e·u| > τ``: each probe catches it with
probability at least 1/2, independently (fresh ``u`` and ``v`` per probe), and K
probes miss it with probability at most ``2^-K``. An error spread over many
entries (a scaled weight gradient, a wrong backward) gives ``e·u`` of spread
``‖e‖₂``, caught unless it falls within ``τ`` of 0. The tolerance is relative to
the size of the whole ``vₖᵀ J uₖ``: an argument carrying a tiny share of the
gradient is judged less tightly than when checked alone (``--wrt NAME``).

The Taylor test (``--taylor``) uses the same directions:
``r(h) = |φₖ(h) - φₖ(0) - h (vₖᵀ J uₖ)|`` for halving ``h`` falls like ``h²`` when
the derivative is right and like ``h`` when it is not.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..core.compare import Comparison, Entry, judged, meaningful_rel
from ..core.errors import BackendError
from ..problem.problem import Problem

FD_MULTIPLES = (1.0, 2.0)  # steps ±h, ±2h: one Richardson estimate and its error
FD_LEVELS = 3  # adaptive step: h, h/100, h/10^4 until the estimate is consistent
TAYLOR_STEPS = 16  # r(h) at h = s, s/2, ..., s/2^15 for the entries' size s
TAYLOR_RIGHT, TAYLOR_WRONG = 1.75, 1.35  # observed order: >= right is order 2, <= wrong is order 1


@dataclass(frozen=True)
class Probes:
    """K joint directions: ``u[name]`` is ``(K, *shape)``, entries ``±scales[name]`` (the
    argument's entry size relative to the largest argument's, so one argument alone gets ±1
    as before); ``step``: that largest entry size, the unit of the differences' steps (a step
    ``h·step`` moves every argument by ``h`` times its own entries' size). ``v`` is
    ``(K, *output_shape)``, one cotangent per probe (None: scalar output)."""

    u: Mapping[str, np.ndarray]
    v: np.ndarray | None
    seed: int
    scales: Mapping[str, float]
    step: float = 1.0

    @property
    def count(self) -> int:
        return next(iter(self.u.values())).shape[0]

    def cotangent(self, k: int) -> np.ndarray | None:
        return None if self.v is None else self.v[k]

    def take(self, ks: Sequence[int]) -> "Probes":
        """Only the probes ``ks`` (localisation tries a group's most telling probe first)."""
        ks = list(ks)
        return Probes(u={n: u[ks] for n, u in self.u.items()}, v=None if self.v is None else self.v[ks],
                      seed=self.seed, scales=self.scales, step=self.step)


@dataclass(frozen=True)
class ProbeValues:
    """One backend's ``vₖᵀ J uₖ`` over a set of arguments: ``values`` is ``(K,)``.

    autograd and analytic keep ``parts[name]`` ``(K,)`` (the argument's share,
    ``vₖᵀ J_a u_ka``) and ``squares[name]`` ``(K,)`` (``s_a² ‖vₖᵀ J_a‖²``: the
    share's typical size, squared); fd adds ``error`` and ``jump`` ``(K,)`` and
    the working precision ``eps`` it differenced in."""

    values: np.ndarray
    seconds: float
    parts: Mapping[str, np.ndarray] | None = None
    squares: Mapping[str, np.ndarray] | None = None
    error: np.ndarray | None = None
    jump: np.ndarray | None = None  # fd: one-sided slopes' difference where a kink lies at the point
    evaluations: int = 0
    eps: float | None = None

    def on(self, names: Sequence[str], ks: Sequence[int] | None = None) -> "ProbeValues":
        """The probes ``ks`` (default all) restricted to ``names`` (a backend that kept its parts)."""
        ks = slice(None) if ks is None else list(ks)
        parts = {n: np.asarray(self.parts[n])[ks] for n in names}
        squares = None if self.squares is None else {n: self.squares[n][ks] for n in names}
        return ProbeValues(values=sum(parts.values()), seconds=0.0, parts=parts, squares=squares)

    @classmethod
    def from_parts(cls, parts: Mapping[str, np.ndarray], seconds: float = 0.0) -> "ProbeValues":
        """Values known per argument (``parts[name]`` ``(K,)``: a jvp per argument, say), summed."""
        parts = {n: np.asarray(v, dtype=np.float64) for n, v in parts.items()}
        return cls(values=sum(parts.values()), seconds=seconds, parts=parts)

    @property
    def scale(self) -> np.ndarray:
        """``(K,)``: the typical size of ``vₖᵀ J uₖ`` for random signs, ``‖vₖᵀ J ∘ s‖₂`` (without
        the parts: the largest ``|value|``)."""
        if self.squares is not None:
            return np.sqrt(sum(self.squares.values()))
        return np.full(self.values.shape, float(np.max(np.abs(self.values))) if self.values.size else 0.0)


@dataclass(frozen=True)
class Taylor:
    """The Taylor remainder test along the joint probes. Per probe ``k``: ``orders[k]``,
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
                dtype, scales: Mapping[str, float] | None = None) -> Probes:
    """``count`` joint probes: signs per argument (seeded by ``argument_seed``) times its entries'
    size (``scales``: ``step_scale`` of its entries; 1 when not given) relative to the largest,
    and a standard normal cotangent per probe."""
    sizes = {name: 1.0 for name in shapes} if scales is None else dict(scales)
    step = max(sizes.values(), default=1.0)
    u, scales = {}, {name: size / step for name, size in sizes.items()}
    for name, shape in shapes.items():
        rng = np.random.default_rng(argument_seed(seed, name))
        size = count * math.prod(shape)
        bits = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8), count=size)
        signs = bits.astype(dtype).reshape(count, *shape)  # (eight signs per random byte: fast for large models)
        signs *= 2 * scales[name]
        signs -= scales[name]
        u[name] = signs
    v = None if output_shape == () else \
        np.random.default_rng(seed).standard_normal((count, *output_shape)).astype(dtype)
    return Probes(u=u, v=v, seed=seed, scales=scales, step=step)


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

    def along(self, phi, t: float, directions: Mapping[str, object]) -> float:
        """``φ`` at ``x0 + t · d`` for the arguments ``d`` names (the others stay), each
        moved argument written into one reused buffer (a fresh large tensor per
        evaluation costs more in page faults than the forward pass of a small network)."""
        buffers = self.__dict__.setdefault("_buffers", {})  # (here: a subclass may not call __init__)
        moved = {}
        for name, d in directions.items():
            if name not in buffers:
                buffers[name] = self.torch.empty_like(self.x0[name])
            moved[name] = self.torch.add(self.x0[name], d, alpha=t, out=buffers[name])
        return float(phi({**self.x0, **moved}))

    def __call__(self, xs: Mapping[str, object]):
        return self.problem.torch_forward({**self.tensors, **xs})

    @property
    def closed_form(self) -> bool:
        """Whether the function is a built-in's closed form (user code may round inside)."""
        return self.problem.function.closed_form

    def at_origin(self, v) -> float:
        """``φ(0) = vᵀ f(x0)``: from the output binding the problem computed (user code keeps
        it) when in this dtype, else from ``f(x0)`` evaluated once; a subclass with no problem
        (certify's ``Phi``, whose φ is its own) evaluates φ."""
        if getattr(self, "problem", None) is None:
            return float(self.scalar(v)(self.x0))
        if "_origin" not in self.__dict__:
            value = getattr(self.problem.bound, "value", None)
            x = next(iter(self.x0.values()))
            if value is not None and value.dtype == np.dtype(str(x.dtype).replace("torch.", "")):
                self._origin = self.torch.tensor(value, device=x.device)  # (a copy: the bound value is read-only)
            else:
                with self.torch.no_grad():
                    self._origin = self(self.x0)
        return float(self._origin) if v is None else float((self.tensor(v) * self._origin).sum())

    def tensor(self, array):
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(next(iter(self.x0.values())))

    def scalar(self, v) -> Callable:
        """``φ(xs) = vᵀ f(xs)`` (f itself for a scalar output)."""
        if v is None:
            return self
        vt = self.tensor(v)
        return lambda xs: (vt * self(xs)).sum()

    def directions(self, probes: Probes, k: int, names: Sequence[str]) -> dict[str, object]:
        """Probe ``k``'s direction over ``names`` (the other arguments stay), as tensors."""
        return {n: self.tensor(probes.u[n][k]) for n in names}


def autograd_values(fn: TorchFunction, probes: Probes) -> ProbeValues:
    """One forward pass and one reverse pass per probe (one in all for a scalar output):
    ``vₖᵀ J_a`` for every argument at once, dotted with ``u_ka``."""
    from ..backends.torchbase import torch_errors

    torch = fn.torch
    start = time.perf_counter()
    count = probes.count
    parts = {n: np.empty(count) for n in fn.names}
    squares = {n: np.empty(count) for n in fn.names}
    with torch_errors("autograd"):
        xs = {k: t.detach().requires_grad_(True) for k, t in fn.x0.items()}
        out = fn(xs)
        passes = 1 if probes.v is None else count
        for k in range(passes):
            # Differentiating the scalar vᵀ f rather than passing v as grad_outputs: the same vjp, without the
            # second or more torch spends importing sympy on the first call that is given grad_outputs.
            scalar = out if probes.v is None else (fn.tensor(probes.v[k]) * out).sum()
            grads = torch.autograd.grad(scalar, list(xs.values()), allow_unused=True, retain_graph=k < passes - 1)
            with torch.no_grad():
                for name, g in zip(xs, grads):
                    if g is None:
                        parts[name][k::passes], squares[name][k::passes] = 0.0, 0.0
                        continue
                    u = fn.tensor(probes.u[name]).reshape(count, -1)
                    g = g.reshape(-1).to(u.dtype)
                    dots = u @ g if passes == 1 else (u[k] @ g)[None]
                    parts[name][k::passes] = dots.double().cpu().numpy()
                    squares[name][k::passes] = probes.scales[name] ** 2 * float(g.double() @ g.double())
    return _summed(parts, squares, time.perf_counter() - start)


def grads_values(grads: Sequence[Mapping[str, np.ndarray]] | Mapping[str, np.ndarray], probes: Probes,
                 seconds: float) -> ProbeValues:
    """Probe values from vjps computed elsewhere (the analytic backend, certify): ``grads[k]``
    is ``vₖᵀ J_a`` per argument (one mapping for all probes of a scalar output)."""
    grads = [grads] if isinstance(grads, Mapping) else grads
    count = probes.count
    names = list(grads[0])
    parts = {n: np.empty(count) for n in names}
    squares = {n: np.empty(count) for n in names}
    for k in range(count):
        for n in names:
            g = np.asarray(grads[k % len(grads)][n], dtype=np.float64).reshape(-1)
            parts[n][k] = np.asarray(probes.u[n][k], dtype=np.float64).reshape(-1) @ g
            squares[n][k] = probes.scales[n] ** 2 * float(g @ g)
    return _summed(parts, squares, seconds)


def _summed(parts, squares, seconds: float) -> ProbeValues:
    return ProbeValues(values=sum(parts.values()), seconds=seconds, parts=parts, squares=squares)


def reference_grad(fn: TorchFunction, probes: Probes, k: int, name: str) -> np.ndarray:
    """autograd's ``vₖᵀ J_a`` for one argument (localising its entries): one more reverse pass."""
    from ..backends.torchbase import to_numpy, torch_errors

    torch = fn.torch
    with torch_errors("autograd"):
        x = fn.x0[name].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn.scalar(probes.cotangent(k))({**fn.x0, name: x}), [x], allow_unused=True)
    return np.zeros(x.shape) if g is None else np.asarray(to_numpy(g), dtype=np.float64)


def forward_values(fn: TorchFunction, probes: Probes, names: Sequence[str] | None = None) -> ProbeValues:
    """``vₖᵀ (J uₖ)`` from torch forward mode, one jvp along each joint direction (over
    ``names``, default every argument), the K probes batched by vmap (fused kernels
    without a forward-mode formula in their composite forms, as the forward backend)."""
    from ..backends.forward import composite_forms

    torch = fn.torch
    start = time.perf_counter()
    names = fn.names if names is None else tuple(names)
    primals = {n: fn.x0[n] for n in names}

    def along(xs):
        with composite_forms(torch):
            return fn({**fn.x0, **xs})

    def one(tangent, v=None):
        tangent_out = torch.func.jvp(along, (primals,), (tangent,))[1]
        return tangent_out if v is None else (v * tangent_out).sum()

    tangents = {n: fn.tensor(probes.u[n]) for n in names}
    cotangents = None if probes.v is None else fn.tensor(probes.v)
    batch = (tangents,) if cotangents is None else (tangents, cotangents)
    try:
        try:
            got = torch.func.vmap(one)(*batch)
        except (RuntimeError, BackendError):  # code vmap cannot batch (a custom autograd.Function): one at a time
            got = torch.stack([one(*[{n: t[k] for n, t in b.items()} if isinstance(b, dict) else b[k]
                                     for b in batch]) for k in range(probes.count)])
    except (RuntimeError, NotImplementedError, BackendError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise BackendError(f"--backend forward: torch's forward mode cannot run this code (an op or a "
                           f"custom autograd.Function without a forward-mode formula): {text[:200]}") from err
    return ProbeValues(values=got.detach().cpu().numpy().astype(np.float64).reshape(-1),
                       seconds=time.perf_counter() - start)


def step_scale(x: np.ndarray) -> float:
    """The size of an entry of ``x``: its root mean square (1 when ``x`` is 0). A
    step ``h u`` moves every entry by ``h``, so ``h`` is scaled to the entries."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    return rms if rms > 0 else 1.0


def fd_values(fn: TorchFunction, probes: Probes, fd_step: float | None = None,
              agrees: Callable[[int, float, float, float], bool] | None = None, *,
              names: Sequence[str] | None = None, eps: float | None = None) -> ProbeValues:
    """The directional derivative of ``φₖ(t) = vₖᵀ f(x + t uₖ)`` at 0 for each probe
    (``uₖ`` restricted to ``names``, default every argument), differenced in
    ``fn``'s dtype, the steps in units of ``probes.step``.

    ``agrees(k, value, rounding, eps)`` says whether a difference already
    matches the reference. First one difference per probe: in float64, a
    forward difference ``(φₖ(h₁) - φₖ(0)) / h₁`` at ``h₁ = sqrt(eps) S`` (its best
    step; one evaluation each: ``φₖ(0)`` comes from the output at ``x``, which
    binding the problem already computed), its error the rounding
    ``2 eps (|φₖ(h₁)| + |φₖ(0)|) / h₁``; in a coarser precision a central one
    (two evaluations). The probes that agree are kept. Only when some do not is the working
    precision measured (user code: ``working_eps``, unless ``eps`` is given) and
    the rest differenced in full (``directional``: central differences from
    ``h = eps^(1/3) S`` or ``fd_step``, Richardson, smaller steps at a kink)."""
    torch = fn.torch
    start = time.perf_counter()
    names = fn.names if names is None else tuple(names)
    count = probes.count
    phis = [fn.scalar(probes.cotangent(k)) for k in range(count)]
    seen: list[dict[float, float]] = [{} for _ in range(count)]

    def curve(k: int) -> Callable[[float], float]:
        directions = fn.directions(probes, k, names)

        def at(t: float) -> float:  # each point once: the full difference reuses the first one's
            if t not in seen[k]:
                seen[k][t] = fn.along(phis[k], t, directions)
            return seen[k][t]

        return at

    curves = [curve(k) for k in range(count)]
    measured = eps is not None
    eps = dtype_eps(fn.x0[names[0]]) if eps is None else eps
    values, errors, jumps = np.empty(count), np.empty(count), np.zeros(count)
    may_round = not fn.closed_form  # user code may round inside (a .float() cast)
    with torch.no_grad():
        if agrees is None:  # nothing to accept early: the precision first
            if may_round and not measured:
                eps, measured = working_eps(fn, phis[0], eps, names), True
            rest = list(range(count))
        else:
            # One-sided first differences err by about sqrt(eps) relative: 1.5e-8 in float64, far within its
            # tolerance; in a coarser precision that would be as large as the tolerance, so central ones there.
            one_sided = eps <= np.finfo(np.float64).eps
            rest = []
            for k in range(count):
                if one_sided:
                    seen[k][0.0] = at0 = fn.at_origin(probes.cotangent(k))
                    h = fd_step if fd_step is not None else math.sqrt(eps) * probes.step
                    ahead = curves[k](h)
                    values[k], errors[k] = (ahead - at0) / h, 2 * eps * (abs(ahead) + abs(at0)) / h
                else:
                    h = fd_step if fd_step is not None else eps ** (1 / 3) * probes.step
                    values[k], errors[k], _, _ = directional(curves[k], h, eps, central_only=True)
                if not agrees(k, values[k], errors[k], eps):
                    rest.append(k)
            if rest and may_round and not measured:
                eps, measured = working_eps(fn, phis[0], eps, names), True
        h = fd_step if fd_step is not None else eps ** (1 / 3) * probes.step
        for k in rest:
            accept = None if agrees is None else (lambda value, rounding, k=k: agrees(k, value, rounding, eps))
            values[k], errors[k], jumps[k], _ = directional(curves[k], h, eps, adaptive=fd_step is None, agrees=accept)
    return ProbeValues(values=values, seconds=time.perf_counter() - start, error=errors, jump=jumps,
                       evaluations=sum(len(s) for s in seen), eps=eps if measured else None)


def working_eps(fn: TorchFunction, phi, eps: float, names: Sequence[str] | None = None) -> float:
    """The precision ``φ`` is computed in (``core.resolution.resolution``), probed along
    one seeded sign direction over the arguments ``names``, scaled to each
    entry: more than ``eps`` where the code rounds inside (a ``.float()`` cast)."""
    from ..core.resolution import resolution

    rng = np.random.default_rng(0)
    direction = {}
    for name in fn.names if names is None else names:
        a = fn.x0[name].cpu().numpy()
        magnitude = np.maximum(np.abs(a), step_scale(a))
        direction[name] = fn.tensor((magnitude * (rng.integers(0, 2, a.shape) * 2 - 1)).astype(a.dtype))
    phi0 = float(phi(fn.x0))

    def change(s: float):
        return tuple(fn.along(phi, sign * s, direction) - phi0 for sign in (1.0, -1.0))

    return resolution(change, eps, abs(phi0))


def problem_precision(problem: Problem, names: Sequence[str], device: str = "cpu") -> float:
    """The precision user code computes ``problem`` in (``working_eps`` of ``vᵀ f`` for a
    seeded cotangent ``v``, along the arguments ``names``): its dtype's eps, or more
    where it rounds inside."""
    fn = TorchFunction(problem, names, device)
    v = None if problem.output_shape == () else np.random.default_rng(0).standard_normal(problem.output_shape)
    with fn.torch.no_grad():
        return working_eps(fn, fn.scalar(v), dtype_eps(fn.x0[names[0]]))


def precision_note(eps: float, dtype, consequence: str) -> str:
    """Says that the code computes to ``eps`` only, coarser than ``dtype`` does, and what follows."""
    return (f"working precision: your code resolves relative changes of its arguments only down to about {eps:.1e} "
            f"(it rounds inside, e.g. a float32 or bfloat16 cast; {np.dtype(dtype)} resolves "
            f"{float(np.finfo(dtype).eps):.1e}): {consequence}")


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


def taylor(fn: TorchFunction, probes: Probes, slopes: np.ndarray, names: Sequence[str] | None = None) -> Taylor:
    """``r(h) = |φₖ(h) - φₖ(0) - h sₖ|`` for ``h = S / 2^i`` along each probe (over
    ``names``, default every argument; ``S = probes.step``, the entries' size),
    where ``sₖ`` is the reference's ``vₖᵀ J uₖ``; evaluated in the
    problem's dtype (no float64 help), so it judges float32 code as it runs.
    The rounding floor is ``eps |φₖ(0)|``; remainders under 32 times that are not used.

    A probe is ``wrong`` when the two smallest usable steps both show order ≈ 1
    AND the remainder is odd there: ``e(±h) = φ(±h) - φ(0) ∓ h s`` are
    ``±δh + O(h²)`` for a slope off by δ, while a relu kink crossed on one side
    of the step (order 1 too, in a right model) leaves the other side alone."""
    torch = fn.torch
    names = fn.names if names is None else tuple(names)
    eps = dtype_eps(fn.x0[names[0]])
    steps = tuple(probes.step / 2**i for i in range(TAYLOR_STEPS))
    orders, wrong, remainders, floors = [], [], [], []
    with torch.no_grad():
        for k in range(probes.count):
            phi = fn.scalar(probes.cotangent(k))
            directions = fn.directions(probes, k, names)
            phi0 = float(phi(fn.x0))
            floor = eps * max(abs(phi0), float(np.finfo(np.float64).tiny))
            floors.append(floor)
            ahead = [fn.along(phi, h, directions) - phi0 - h * float(slopes[k]) for h in steps]
            r = tuple(abs(e) for e in ahead)
            remainders.append(r)
            usable = [i for i in range(len(r) - 1) if r[i] > 32 * floor and r[i + 1] > 32 * floor]
            pairs = [math.log2(r[i] / r[i + 1]) for i in usable]
            tail = sorted(pairs[-3:])
            orders.append(float(tail[len(tail) // 2]) if len(pairs) >= 2 else None)
            linear = len(pairs) >= 2 and max(pairs[-2:]) <= TAYLOR_WRONG
            if linear:  # is the remainder odd at those steps? (three more evaluations)
                last = sorted({usable[-2], usable[-1], usable[-1] + 1})
                behind = {i: fn.along(phi, -steps[i], directions) - phi0 + steps[i] * float(slopes[k]) for i in last}
                linear = all(abs(ahead[i] + behind[i]) <= 0.5 * abs(ahead[i] - behind[i]) for i in last)
            wrong.append(linear)
    return Taylor(orders=tuple(orders), wrong=tuple(wrong), steps=steps, remainders=tuple(remainders),
                  floor=max(floors))


def compare_probes(name: str, value: np.ndarray, reference: np.ndarray, atol: float, rtol: float,
                   scale: np.ndarray | float, *, seconds: float, top: int, error: np.ndarray | None = None,
                   jump: np.ndarray | None = None) -> Comparison:
    """Probe ``k`` agrees when ``|value - reference| <= atol + rtol max(|reference|, scale)
    (+ 3 × fd's error estimate)``, ``scale = ‖vₖᵀ J ∘ s‖₂``: the typical size of
    ``vₖᵀ J uₖ`` for random signs. A probe where fd cannot judge
    (``non_smooth``) is reported as non-smooth, never as a mismatch."""
    diff = np.abs(value - reference)
    size = np.maximum(np.abs(reference), scale)
    tol = atol + rtol * size + (0.0 if error is None else 3 * error)
    nonsmooth = (np.zeros(diff.shape, bool) if error is None else
                 non_smooth(error, np.zeros(diff.shape) if jump is None else jump, diff, size))
    with np.errstate(divide="ignore"):  # --atol 0 --rtol 0: any difference is out
        excess = np.where(diff == 0, 0.0, diff / tol)
    out = (excess > 1) & ~nonsmooth
    counted = np.where(nonsmooth, 0.0, excess)
    order = np.argsort(-counted, kind="stable")[: max(0, top)]
    entries = tuple(Entry(name, (int(k),), float(value[k]), float(reference[k]), float(diff[k]),
                          float(diff[k] / abs(reference[k])) if reference[k] else math.inf,
                          None if error is None else float(error[k]), float(counted[k]), kind="probe")
                    for k in order if out[k])
    worst = int(np.argmax(counted))
    rel = diff / np.where(np.abs(reference) > 0, np.abs(reference), np.inf)
    # fd flagging most probes non-smooth could not judge: inconclusive (compare.judged), not ok
    return judged(Comparison(name=name, ok=not out.any(), max_abs=float(diff.max()),
                             max_rel=meaningful_rel(rel, np.abs(reference), atol), worst_index=(worst,),
                             mismatches=int(out.sum()), seconds=seconds,
                             error_estimate=None if error is None else float(error.max()),
                             kink_entries=int((nonsmooth & (excess > 1)).sum()), worst=entries),
                  None if error is None else nonsmooth, "probes")
