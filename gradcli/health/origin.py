"""Where a non-finite value first appeared: the module, the operation, your line.

The watched step (:mod:`.hooks`) names the module call: in the forward, the
first call to return whose inputs are finite and whose output is not; in the
backward, the first call (in backward order) whose input gradient is not
finite while its output gradient is. The operation inside it is found by
running the batch once more, only when something was non-finite:

- **forward**: under a ``TorchDispatchMode`` that sees every aten op, with the
  module calls tracked by hooks; the first op inside that call whose inputs
  are finite and whose output is not, and the innermost line of your code on
  the Python stack when it ran;
- **backward**: the forward under anomaly mode (``set_detect_anomaly(True,
  check_nan=False)``: every autograd node keeps the stack of the forward line
  that made it), then the backward with a hook on every node: the first node
  to run whose incoming gradients are finite and whose outgoing ones are not.
  ``detect_anomaly``'s own check would not do: it looks for NaN only (the
  backward of ``sqrt`` at 0 returns inf) and stops at the first node whose
  gradient is NaN, which is often a later one. For a custom
  ``autograd.Function`` the dispatch mode also runs through the backward and
  names the line of its ``backward`` that made the value.

Replaying the whole batch rather than the one module on its recorded inputs:
recording every module's inputs would hold a copy of every activation (the
watched step must stay within 1.2× a plain step's memory), an in-place module
overwrites its input before it could be kept, and a second pass to capture
one module's inputs costs what this one does.
"""

from __future__ import annotations

import functools
import math
import traceback
from dataclasses import dataclass

from .report import Origin, Phase
from .where import Frame, code_location, forward_location, user_frame

FOUND_LIMIT = 64  # fresh non-finite ops kept per diagnostic run: the first is the one reported


def _finite(torch, tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _floats(torch, tree) -> list:
    return [t for t in torch.utils._pytree.tree_flatten(tree)[0]
            if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]


def _nonfinite_number(torch, tree) -> bool:
    """A Python number among an op's arguments that is NaN or inf: the value it was told to write."""
    return any(isinstance(a, float) and not math.isfinite(a) for a in torch.utils._pytree.tree_flatten(tree)[0])


def _has_nan(torch, tensors) -> bool:
    return any(bool(torch.isnan(t).any()) for t in tensors)


@dataclass(frozen=True)
class Made:
    """An op that made a non-finite value: ``fresh``, from finite inputs (inf from ``exp``,
    ``log(0)``, ``x / 0``; NaN from ``sqrt(-1)``, ``0 / 0``); ``nan``, a NaN from inputs with
    none (a softmax over a row of -inf, ``inf - inf``); ``deliberate``, fresh but given a
    non-finite number to write (``masked_fill(mask, -inf)``, ``torch.full(..., -inf)``).
    ``stack``: the Python stack when it ran; ``calls``: the module calls open then."""

    op: str
    stack: list
    calls: tuple
    fresh: bool
    nan: bool
    deliberate: bool = False


def _nonfinite_mode(torch, stack: list):
    """A dispatch mode recording (:class:`Made`) each op whose output holds a non-finite value
    its inputs did not (the inputs read before it runs: an in-place op overwrites them)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Nonfinite(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.found: list[Made] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if len(self.found) >= FOUND_LIMIT:
                return func(*args, **kwargs)
            inputs = _floats(torch, (args, kwargs))
            finite_in = _finite(torch, inputs)
            nan_in = not finite_in and _has_nan(torch, inputs)
            out = func(*args, **kwargs)
            outs = _floats(torch, out)
            if outs and not _finite(torch, outs):
                nan = not nan_in and _has_nan(torch, outs)
                if finite_in or nan:
                    deliberate = finite_in and _nonfinite_number(torch, (args, kwargs))
                    self.found.append(Made(str(func), traceback.extract_stack()[:-1], tuple(stack), finite_in, nan,
                                           deliberate))
            return out

    return Nonfinite()


class CallTracker:
    """Hooks keeping :attr:`open` = the module calls running now, as ``(name, number)``,
    and with ``check``, :attr:`done`: ``(key, module, inputs finite, output finite, output
    holds NaN)`` of each call in the order calls returned. A context manager: the hooks go
    on exit."""

    def __init__(self, torch, modules, check: bool = False) -> None:
        self.torch, self.modules, self.check = torch, modules, check
        self.open: list[tuple[str, int]] = []
        self.done: list[tuple] = []
        self.inputs: list[bool] = []
        self.counts: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.handles: list = []

    def __enter__(self) -> "CallTracker":
        for w in self.modules:
            module = w.module
            self.names[id(module)] = w.name
            self.handles.append(module.register_forward_pre_hook(self._before, with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._after, with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()

    def _before(self, module, args, kwargs) -> None:
        self.counts[id(module)] = self.counts.get(id(module), 0) + 1
        self.open.append((self.names[id(module)], self.counts[id(module)]))
        if self.check:
            self.inputs.append(_finite(self.torch, _floats(self.torch, (args, kwargs))))

    def _after(self, module, args, kwargs, output) -> None:
        key = self.open.pop()
        if self.check:
            outs = _floats(self.torch, output)
            self.done.append((key, module, self.inputs.pop(), _finite(self.torch, outs), _has_nan(self.torch, outs)))


def nonfinite_parameter(roots) -> Origin | None:
    """A parameter or buffer holding NaN or inf before anything runs (a bad checkpoint)."""
    import torch

    for prefix, root in roots:
        for name, module in root.named_modules(prefix=prefix):
            for pname, p in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                    bad = int((~torch.isfinite(p)).sum())
                    full = f"{name}.{pname}" if name else pname
                    return Origin(Phase.PARAMETERS, name, type(module).__name__, None, forward_location(module), None,
                                  None, None, None, f"{full} holds {bad} non-finite value(s) before the forward runs")
    return None


def trace_forward(run, modules) -> Origin:
    """The forward's first non-finite value. ``run()`` runs the forward once, as the watched step did."""
    import torch

    with CallTracker(torch, modules, check=True) as calls:
        mode = _nonfinite_mode(torch, calls.open)
        with mode:
            run()
    culprit = next((done for done in calls.done if done[2] and not done[3]), None)
    if culprit is None:
        return Origin(Phase.INPUT, None, None, None, None, None, None, None, None,
                      "the input holds non-finite values (--allow-nonfinite let them in)")
    key, module, _, _, nan = culprit
    during = [m for m in mode.found if key in m.calls]
    own = [m for m in during if m.calls[-1] == key]
    candidates = own or during or mode.found
    # The first op to make an inf from finite numbers (exp overflowing, log(0), rsqrt(0)) is where
    # it went wrong, even when a later op turned that inf into the NaN the output holds. An inf
    # the code wrote on purpose (masked_fill(mask, -inf)) is not: then the op that made the NaN
    # (a softmax over a row of -inf), with the inf named beside it.
    made = next((m for m in candidates if m.nan), None) if nan else None
    first = next((m for m in candidates if m.fresh), None)
    arithmetic = first is not None and not first.deliberate and (
        made is None or candidates.index(first) <= candidates.index(made))
    op = first if arithmetic else made or first
    frame = user_frame(op.stack) if op else None
    name, number = key
    where = f"{name or 'the model'} ({type(module).__name__})"
    detail = f"{where} received finite inputs and returned {'NaN' if nan else 'infinite'} values"
    detail += f"; {op.op} made {'the first NaN' if op is made else 'the first of them'}" if op else \
        "; no single op made them"
    if op is made and first is not None and first is not made:  # a deliberate inf before the NaN
        before = user_frame(first.stack)
        detail += f", after {first.op} made an inf" + (f" at {before.at}: {before.code}" if before else "")
    elif op is first and made is not None and made is not first:
        after = user_frame(made.stack)
        detail += f" (an inf), which {made.op} turned into NaN" + (f" at {after.at}" if after else "")
    return Origin(Phase.FORWARD, name, type(module).__name__, number, forward_location(module),
                  op.op if op else None, frame.at if frame else None, frame.code if frame else None, None, detail)


@dataclass(frozen=True)
class BackwardTrace:
    """What the replayed backward saw: the first node whose incoming gradients were
    finite and whose outgoing ones were not (None: no node made one), and whether any
    gradient was non-finite at all (an overflowing sum of finite gradients makes one
    without any node)."""

    op: str | None
    op_at: str | None
    code: str | None
    backward_at: str | None
    any_nonfinite: bool


def trace_backward(run, backward) -> BackwardTrace:
    """``run()``: the forward, returning the output; ``backward(out)``: the same backward
    as the watched step (keeping the graph, for a custom Function's replay). The forward
    runs under anomaly mode for the nodes' stacks."""
    import torch

    with torch.autograd.set_detect_anomaly(True, check_nan=False):
        out = run()
    nodes, todo = [], [out.grad_fn]
    seen = set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        nodes.append(node)
        todo.extend(n for n, _ in node.next_functions)
    state: dict = {"node": None, "grads": None, "any": False}

    def post(node, grad_inputs, grad_outputs):
        incoming = [g for g in grad_outputs if g is not None]
        fine_in = _finite(torch, incoming)
        if not fine_in or not _finite(torch, [g for g in grad_inputs if g is not None]):
            state["any"] = True
            if fine_in and state["node"] is None:
                state["node"], state["grads"] = node, grad_outputs

    handles = [n.register_hook(functools.partial(post, n)) for n in nodes
               if type(n).__name__ != "AccumulateGrad"]
    try:
        backward(out)
    finally:
        for h in handles:
            h.remove()
    node = state["node"]
    if node is None:
        return BackwardTrace(None, None, None, None, state["any"])
    frame = user_frame(node.metadata.get("traceback_", []))
    backward_at = None
    forward_cls = getattr(node, "_forward_cls", None)  # a custom autograd.Function: its backward is Python
    if forward_cls is not None:
        line = _backward_line(torch, node, forward_cls.backward, state["grads"])
        backward_at = line.at if line else code_location(forward_cls.backward)
    return BackwardTrace(node.name(), frame.at if frame else None, frame.code if frame else None, backward_at, True)


def _backward_line(torch, node, backward, grads) -> Frame | None:
    """The line of a custom Function's ``backward`` that made the non-finite value: the
    node run again on the gradients it received, with a line tracer on that function
    alone (``sys.settrace``): the line after which a local tensor first turns
    non-finite, or the ``return`` whose value is. (A dispatch mode would see each op,
    but in a backward it makes torch import its compiler stack: seconds.)"""
    import linecache
    import sys

    code = getattr(backward, "__code__", None)
    if code is None or grads is None:
        return None
    state: dict = {"line": None, "found": None, "bad": set()}

    def bad_values(values) -> set:
        return {i for i, v in values if isinstance(v, torch.Tensor) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())}

    def local(frame, event, arg):
        if state["found"] is None:
            now = bad_values(frame.f_locals.items())
            if now - state["bad"] and state["line"] is not None:
                state["found"] = state["line"]
            elif event == "return" and bad_values(enumerate(arg if isinstance(arg, tuple) else (arg,))):
                state["found"] = frame.f_lineno
            state["bad"], state["line"] = now, frame.f_lineno
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        with torch.no_grad():
            node.apply(*grads)
    except Exception:  # (the replay is a diagnosis: the step itself already ran this backward)
        pass
    finally:
        sys.settrace(previous)
    if state["found"] is None:
        return None
    return Frame(code.co_filename, state["found"], linecache.getline(code.co_filename, state["found"]).strip())


def backward_culprit(seen, nonfinite_params: set[str]):
    """The call where the backward's non-finite gradient appeared (a :class:`.hooks.Seen`),
    or None. First in backward order: a call whose own input gradient is non-finite
    while its output gradient is finite. A call whose input is data (no input gradient)
    counts when something inside it is non-finite (a submodule's output gradient, or
    one of its own parameters' gradients): the model's own forward, outside any submodule."""

    def finite(x):
        return x is not None and math.isfinite(x)

    direct = [s for s in seen if finite(s.out_grad) and s.in_grad is not None and not math.isfinite(s.in_grad)]
    if direct:
        return min(direct, key=lambda s: s.in_seen if s.in_seen is not None else math.inf)

    def inside(s, other):
        return other is not s and (s.name == "" or other.name.startswith(s.name + "."))

    def own_bad(s):
        return any(name in nonfinite_params for name, _ in _own_parameters(s))

    enclosing = [s for s in seen if finite(s.out_grad) and s.in_grad is None and
                 (own_bad(s) or any(inside(s, o) and o.out_grad is not None and not math.isfinite(o.out_grad)
                                    for o in seen))]
    if not enclosing:
        return None
    return max(enclosing, key=lambda s: (s.name.count(".") + (s.name != ""), -s.order))


def _own_parameters(s):
    prefix = f"{s.name}." if s.name else ""
    return [(prefix + n, p) for n, p in s.module.named_parameters(recurse=False)]
