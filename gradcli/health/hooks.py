"""Hooks that watch one forward and one backward without changing either.

Per module call (a forward pre-hook on each watched module, one global forward hook):

- each float input that requires grad is passed to the module as an alias,
  ``x.view_as(x)`` (the same values and storage), with a pre-hook on the alias's
  node: the gradient that reaches the alias is this call's own share of ``∂L/∂x``,
  not the whole of it (a residual connection also sends ``x`` round the module).
  Inputs that are the same tensor share one alias, so code that tests ``q is k``
  (``nn.MultiheadAttention``) takes the same path;
- each float output that requires grad gets a pre-hook on the node that made it:
  ``∂L/∂output``, all of it (every use of the output);
- the output's dead units and saturation are measured when the call returns,
  before later code can change it in place.

No full backward hooks (``register_full_backward_hook``): they wrap inputs and
outputs in a custom ``autograd.Function`` whose outputs are views, and an
in-place module after them (``nn.ReLU(inplace=True)``) raises. An in-place
module here modifies the alias, and autograd routes the gradient of a view
modified in place round the view's own node, so the alias's hook would never
fire: the gradient of the input's old value is read instead from the node that
made it (a pre-hook on ``x.grad_fn``), which is the call's own share whenever
nothing else read ``x`` before it was overwritten. An input that is itself a
view and is modified in place has no such node: its gradient is not observed.

The hooks read and never write: every hook returns None. What they measure
stays in 0-d tensors until :meth:`Recorder.settle` reads them all at once (one
device synchronisation, not one per hook); on the CPU a gradient's norm is read
at once (see :meth:`Recorder._norm`).
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

NORM_RANGE = (1e-15, 1e15)  # a float32 norm outside this may have lost squares to underflow or overflow (1e±38)
DEFER_BATCH = 32  # from this batch size on, each output's per-unit extremes (2/B of it) wait to be read together


class Call:
    """What the hooks saw of one call of one module. Tensors stay tensors until settled.
    ``order``: when the call returned, counting from 1 (children before their parent);
    ``out_seen``/``in_seen``: the backward clock when its first output or input gradient
    arrived; ``in_lost``:
    an input (a view) was modified in place, so its gradient cannot be observed;
    ``watch``: ``(alias, version, node, output_nr)`` of each input while the call runs."""

    __slots__ = ("name", "module", "number", "order", "output_shape", "stats", "out_norms", "in_norms", "out_seen",
                 "in_seen", "in_lost", "watch")

    def __init__(self, name: str, module, number: int) -> None:
        self.name, self.module, self.number = name, module, number
        self.order = 0
        self.output_shape: tuple[int, ...] | None = None
        self.stats: _OutputStats | None = None
        self.out_norms: list = []
        self.in_norms: list = []
        self.out_seen: int | None = None
        self.in_seen: int | None = None
        self.in_lost = False
        self.watch: list = []


@dataclass(eq=False)
class _OutputStats:
    """Per output unit, the largest and smallest value over the batch (``low`` None for an
    output that cannot be negative), until read: ``units`` (None without a batch axis);
    or, read at once, ``zeros`` (units 0 for every sample) and ``bad`` (non-finite units);
    ``saturated`` entries of ``entries``."""

    high: Any = None
    low: Any = None
    units: int | None = None
    zeros: Any = None
    bad: Any = None
    saturated: Any = None
    entries: int = 0


class Recorder:
    """Installs the hooks on every module of ``modules`` (:class:`.step.Watched`) and
    records one :class:`Call` per call. ``batch``: the size of the input's first
    axis, the batch axis of outputs that share it. Use as a context manager: the
    hooks are removed on exit, whatever happened."""

    def __init__(self, modules, batch: int | None) -> None:
        import torch

        self.torch = torch
        self.tensor = torch.Tensor
        self.batch = batch
        self.calls: list[Call] = []
        self.names: dict[int, tuple[str, str]] = {}  # id(module) -> (name, its output's kind: Watched.kind)
        self.counts: dict[int, int] = {}
        self.stack: list[Call] = []  # the calls running now, innermost last (module calls nest)
        self.finished = 0
        self.clock = 0
        self.handles: list = []  # the module hooks: removed when the forward is done
        self.leaf_handles: list = []  # tensor hooks on leaves (a parameter returned as it is): kept to the end
        self.outputs: dict[int, tuple] = {}  # id(tensor) -> (weakref, version, stats, calls): one hook per tensor
        self.modules = modules

    def __enter__(self) -> "Recorder":
        for w in self.modules:
            self.names[id(w.module)] = (w.name, w.kind)
            self.handles.append(w.module.register_forward_pre_hook(self._before, with_kwargs=True))
        # One forward hook for every module (the pre-hooks above say which calls are watched): one
        # registration rather than one per module. The module's own forward hooks run after it.
        self.handles.append(self.torch.nn.modules.module.register_module_forward_hook(self._after, with_kwargs=True))
        return self

    def forward_done(self) -> None:
        """No call after this one is watched: a checkpointed segment's forward, run again inside
        the backward (``torch.utils.checkpoint``), is not a call of its own."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.outputs.clear()

    def __exit__(self, *exc) -> None:
        self.forward_done()
        for handle in self.leaf_handles:  # (a leaf's hook would stay on the user's parameter)
            handle.remove()
        self.leaf_handles.clear()

    # --- forward ------------------------------------------------------------------

    def _before(self, module, args, kwargs):
        key = id(module)
        number = self.counts[key] = self.counts.get(key, 0) + 1
        call = Call(self.names[key][0], module, number)
        self.calls.append(call)
        self.stack.append(call)
        tensor = self.tensor
        if not kwargs and all(type(a) is tensor for a in args):  # the common case, without pytree's cost
            if not any(a.requires_grad for a in args):
                return None
            return tuple(self._aliases(call, list(args))), kwargs
        pytree = self.torch.utils._pytree
        leaves, spec = pytree.tree_flatten((args, kwargs))
        if not any(isinstance(t, tensor) and t.requires_grad for t in leaves):
            return None
        return pytree.tree_unflatten(self._aliases(call, leaves), spec)

    def _aliases(self, call: Call, values: list):
        """``values`` with each float tensor that requires grad replaced by its watched alias."""
        made: dict[int, Any] = {}
        for i, t in enumerate(values):
            if not (isinstance(t, self.tensor) and t.requires_grad and t.is_floating_point()):
                continue
            alias = made.get(id(t))
            if alias is None:
                alias = made[id(t)] = t.view_as(t)
                alias.grad_fn.register_prehook(functools.partial(self._input_grad, call))  # (its ViewBackward)
                node = t.grad_fn if t._base is None else None  # (a view's own node is bypassed in place)
                call.watch.append((alias, alias._version, node, t.output_nr))
            values[i] = alias
        return values

    def _after(self, module, args, kwargs, output):
        if id(module) not in self.names:  # (a module outside the roots, or a plain Sequential)
            return None
        call = self.stack.pop()
        for alias, version, node, nr in call.watch:
            if alias._version != version:  # modified in place: read the old value's gradient where it was made
                if node is not None:
                    node.register_prehook(functools.partial(self._input_grad, call, nr=nr))
                else:
                    call.in_lost = True
        call.watch = []  # (no reference kept past the call)
        self.finished += 1
        call.order = self.finished
        tensor = self.tensor
        if type(output) is tensor:
            outs = [output] if output.is_floating_point() else []
        else:
            outs = [t for t in self.torch.utils._pytree.tree_flatten(output)[0]
                    if isinstance(t, tensor) and t.is_floating_point()]
        for i, t in enumerate(outs):
            known = self.outputs.get(id(t))
            if known is not None and known[0]() is t and known[1] == t._version:
                stats, calls = known[2], known[3]  # the same tensor as a child's output: measured once
                calls.append(call)
            else:
                stats = self._measure(self.names[id(module)][1], t) if i == 0 else None
                calls = [call]
                if t.grad_fn is not None:  # the node that made it: its pre-hook sees the output's gradient
                    t.grad_fn.register_prehook(functools.partial(self._output_grad, calls, t.output_nr))
                elif t.requires_grad:  # a leaf returned as it is (a parameter)
                    self.leaf_handles.append(t.register_hook(functools.partial(self._output_grad, calls, None)))
                self.outputs[id(t)] = (weakref.ref(t), t._version, stats, calls)
            if i == 0:
                call.output_shape, call.stats = tuple(t.shape), stats
        return None

    def _measure(self, kind: str, t) -> _OutputStats | None:
        """The output's per-unit extremes over the batch (read at :meth:`settle`), or for a
        small batch its zero and non-finite unit counts at once; saturation for tanh and sigmoid."""
        if t.numel() == 0:
            return None
        torch = self.torch
        d = t.detach()  # (read without recording: nothing here enters the graph)
        batched = d.ndim >= 1 and d.shape[0] == self.batch
        high = d.amax(0) if batched else d.amax()
        low = None if kind in (">=0", "sigmoid") else d.amin(0) if batched else d.amin()
        stats = _OutputStats(high, low, high.numel() if batched else None)
        if not batched or self.batch < DEFER_BATCH:  # read now: kept, they would cost up to a copy
            units = _largest_magnitude(torch, high, low)
            stats.zeros, stats.bad = units.eq(0).sum(), units.isfinite().logical_not().sum()
            stats.high = stats.low = None
        if kind in ("tanh", "sigmoid"):
            eps = torch.finfo(d.dtype).eps
            # tanh: |y| within eps of 1; sigmoid: y within eps of 0 or of 1 (|y - 1/2| within eps of 1/2)
            far = d.abs() if kind == "tanh" else (d - 0.5).abs()
            stats.saturated = far.ge((1.0 if kind == "tanh" else 0.5) - eps).sum()
            stats.entries = d.numel()
        return stats

    # --- backward (node pre-hooks: they read, they return None) ----------------------

    def _norm(self, g):
        """``‖g‖₂``, accurate over the whole float64 range: in float32 the squares of a vanishing
        gradient (1e-23) underflow to a norm of 0, those of a large one (1e20) overflow to inf.
        On the CPU the norm is taken in g's dtype and taken again in float64 only when it lands
        outside ``NORM_RANGE`` (reading it costs no device synchronisation there; a float64 norm
        of a million float32 entries costs 13x a float32 one). Elsewhere it is summed in float64
        and read at :meth:`settle`."""
        torch = self.torch
        if g.dtype == torch.float64:
            return torch.linalg.vector_norm(g)
        if g.device.type != "cpu":
            return torch.linalg.vector_norm(g, dtype=torch.float64)
        norm = float(torch.linalg.vector_norm(g))
        if NORM_RANGE[0] <= norm <= NORM_RANGE[1]:
            return norm
        return float(torch.linalg.vector_norm(g, dtype=torch.float64))

    def _output_grad(self, calls: list[Call], nr: int | None, grads) -> None:
        """A pre-hook of the node that made the output (``grads[nr]`` its gradient), or a tensor
        hook of a leaf output (``nr`` None: ``grads`` is the gradient)."""
        g = grads if nr is None else grads[nr] if nr < len(grads) else None
        if g is None:
            return
        norm = self._norm(g)
        self.clock += 1
        for call in calls:
            call.out_norms.append(norm)
            if call.out_seen is None:
                call.out_seen = self.clock

    def _input_grad(self, call: Call, grads, nr: int = 0) -> None:
        """A pre-hook of the node that made the input: ``grads[nr]`` is the input's gradient."""
        g = grads[nr] if nr < len(grads) else None
        if g is None:
            return
        self.clock += 1
        if call.in_seen is None:
            call.in_seen = self.clock
        call.in_norms.append(self._norm(g))

    # --- reading ------------------------------------------------------------------------

    def settle(self) -> list["Seen"]:
        """Every call's measurements as Python numbers, in the order calls returned."""
        torch = self.torch
        calls = sorted(self.calls, key=lambda c: c.order)
        _read_units(torch, [c.stats for c in calls if c.stats is not None and c.stats.high is not None])
        pending: list = []

        def later(t):
            if t is None or isinstance(t, float):  # (a number already read: _norm, _read_units)
                return t
            pending.append(t)
            return len(pending) - 1

        plans = []
        for call in calls:
            s = call.stats
            plans.append((call, [later(n) for n in call.out_norms], [later(n) for n in call.in_norms],
                          None if s is None else (later(s.bad), later(s.zeros), s.units, later(s.saturated),
                                                  s.entries)))
        values = _floats(torch, pending)
        seen = []
        def value(i):
            return i if isinstance(i, float) else values[i]

        for call, outs, ins, stats in plans:
            out_grad = _root_sum_square([value(i) for i in outs]) if outs else None
            in_grad = None if call.in_lost or not ins else _root_sum_square([value(i) for i in ins])
            finite = dead = saturated = None
            if stats is not None:
                finite = value(stats[0]) == 0
                dead = None if stats[2] is None else value(stats[1]) / stats[2]
                saturated = None if stats[3] is None else value(stats[3]) / stats[4]
            seen.append(Seen(call.name, type(call.module).__name__, call.module, call.number,
                             self.counts[id(call.module)], call.order, call.output_shape, out_grad, in_grad,
                             call.out_seen, call.in_seen, finite, dead, saturated, call.in_lost))
        return seen


def _largest_magnitude(torch, high, low):
    """Each unit's largest |value| from its largest and smallest (NaN stays NaN)."""
    return high.abs() if low is None else torch.maximum(high.abs(), low.abs())


def _read_units(torch, stats: list[_OutputStats]) -> None:
    """The kept per-unit extremes of many outputs read together: every output's units joined
    (one tensor per dtype and device, 1/B of the outputs), brought to NumPy in one transfer,
    and each output's count of zero and of non-finite units summed over its own stretch
    (``np.add.reduceat``), instead of four small torch ops per output."""
    import numpy as np

    groups: dict[tuple, list[_OutputStats]] = {}
    for s in stats:
        groups.setdefault((s.high.dtype, s.high.device), []).append(s)
    for group in groups.values():
        high = torch.cat([s.high.reshape(-1) for s in group])
        low = torch.cat([(s.high if s.low is None else s.low).reshape(-1) for s in group])
        units = np.maximum(np.abs(high.cpu().numpy()), np.abs(low.cpu().numpy()))  # (NaN stays NaN)
        starts = np.cumsum([0] + [s.units for s in group[:-1]])
        zeros = np.add.reduceat(units == 0, starts)
        bad = np.add.reduceat(~np.isfinite(units), starts)
        for s, z, b in zip(group, zeros.tolist(), bad.tolist()):
            s.zeros, s.bad, s.high, s.low = float(z), float(b), None, None


@dataclass(frozen=True)
class Seen:
    """One call's measurements as numbers (see :class:`gradcli.health.report.ModuleHealth`).
    ``finite``: whether its output was finite (None: no float output)."""

    name: str
    cls: str
    module: Any
    call: int
    calls: int
    order: int
    output_shape: tuple[int, ...] | None
    out_grad: float | None
    in_grad: float | None
    out_seen: int | None
    in_seen: int | None
    finite: bool | None
    dead: float | None
    saturated: float | None
    in_lost: bool


def _root_sum_square(norms: list[float]) -> float:
    """The norm of several tensors taken together from their own norms: ``sqrt(Σ nᵢ²)``."""
    import math

    if len(norms) == 1:
        return norms[0]
    return math.sqrt(sum(n * n for n in norms))


def _floats(torch, tensors: list) -> list[float]:
    """0-d tensors as Python floats, one transfer per dtype and device."""
    values: list[float] = [0.0] * len(tensors)
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    for indices in groups.values():
        got = torch.stack([tensors[i] for i in indices]).tolist()
        for i, v in zip(indices, got):
            values[i] = float(v)
    return values
