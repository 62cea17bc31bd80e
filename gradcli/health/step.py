"""One training step of the user's code, without the optimizer: the batch bound
to the model, the forward, and the backward w.r.t. the ``--wrt`` tensors.

The same :class:`Batch` runs plainly (the reference the benchmark and the
tests compare with), watched by :class:`.hooks.Recorder`, and again by the
diagnostics of :mod:`.origin`: the model is called through
:meth:`gradcli.usercode.function.UserFunction.call` every time (the seeded
dropout mask, running statistics left alone, your ``print`` on standard
error), so every run sees the same function.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any

from ..core.errors import UsageError
from .where import forward_location

SATURATING = {"Tanh": "tanh", "Sigmoid": "sigmoid"}  # outputs saturating at ±1 (tanh), at 0 and 1 (sigmoid)
NONNEGATIVE = ("ReLU", "ReLU6", "Softplus", "Hardsigmoid")  # outputs >= 0: the largest is the largest |value|


def _output_kind(module) -> str:
    """What the module's output is known to be, from its ``torch.nn`` class."""
    import torch

    name = type(module).__name__
    if not isinstance(module, getattr(torch.nn, name, ())):
        return ""  # a class of the user's own, whatever its name
    return SATURATING.get(name, ">=0" if name in NONNEGATIVE else "")


@dataclass(frozen=True)
class Watched:
    """A module the hooks watch. ``kind``: what its output is known to be (``_output_kind``);
    ``forward_at``: ``file:line`` of its ``forward``; ``inside``: ``id`` of every parameter in
    it (a dead module is one whose outputs are all 0 and none of these learns)."""

    name: str
    module: Any
    kind: str
    forward_at: str | None
    inside: frozenset[int]
    linear_map: bool = False  # a Linear or ConvNd: its gain is compared with theirs (see .flags)


def _linear_maps():
    import torch

    return torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d


def survey(roots) -> tuple[Watched, ...]:
    """Every module the hooks watch, each once, in the model's order: all but the plain
    ``nn.Sequential`` containers, whose forward runs their children in order and does
    nothing of its own (their children have rows; a subclass with its own forward is watched).
    Read once per bound batch: the model's structure does not change between steps."""
    import torch

    LINEAR_MAPS = _linear_maps()
    # A Linear whose weight another kind of module holds too (a decoder tied to an nn.Embedding)
    # has that module's init, not a Linear's: its gain has no 1/√3 reference (see .flags).
    foreign: set[int] = {id(p) for _, root in roots for module in root.modules()
                         if not isinstance(module, LINEAR_MAPS) for p in module.parameters(recurse=False)}
    seen: set[int] = set()
    found = []
    for prefix, root in roots:
        for name, module in root.named_modules(prefix=prefix):
            if id(module) in seen or type(module).forward is torch.nn.Sequential.forward:
                continue
            seen.add(id(module))
            params = list(module.parameters())
            linear = isinstance(module, LINEAR_MAPS) and not any(id(p) in foreign for p in
                                                                 module.parameters(recurse=False))
            found.append(Watched(name, module, _output_kind(module), forward_location(module),
                                 frozenset(id(p) for p in params), linear))
    return tuple(found)



@dataclass(frozen=True)
class Parameter:
    """A parameter selected by ``--wrt``: its first name, the others it goes by (tied weights)."""

    name: str
    tensor: Any
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Batch:
    """The user's code bound to one batch. ``roots``: ``[(prefix, module)]``, the model itself,
    or the modules a plain function calls by name; ``modules``: the modules watched in them
    (:func:`survey`); ``leaves``:
    the tensors differentiated (``input`` and each ``param:NAME``), in ``--wrt``'s order;
    ``cotangent``: the output's gradient seed; ``batch``: the input's first dimension."""

    function: Any
    dtype: str
    tensors: dict
    roots: list
    modules: tuple[Watched, ...]
    parameters: tuple[Parameter, ...]
    leaves: dict
    cotangent: Any
    batch: int | None

    def forward(self):
        return self.function.call(self.tensors)

    def backward(self, out, keep: bool = False) -> tuple:
        """``torch.autograd.grad`` of ``out`` along the cotangent: what ``loss.backward()`` puts in
        each leaf's ``.grad``, returned instead (``.grad`` is left as it was). None: no gradient
        reached that leaf. ``keep``: keep the graph (to run a node again). Your backward's
        exceptions become exit 3 naming its line."""
        import torch

        with self.function.running():
            return torch.autograd.grad(out, list(self.leaves.values()), self.cotangent, allow_unused=True,
                                       retain_graph=keep)

    def step(self, between=None) -> tuple[Any, tuple]:
        """One forward and one backward, inside one set of the user-code guards; ``between()``,
        when given, runs after the forward."""
        with self.function.running():
            out = self.forward()
            if not out.requires_grad:
                names = ", ".join(self.leaves) or "none"
                raise UsageError(f"--wrt: the output does not depend on any tensor differentiated here ({names}); "
                                 "check that the model's parameters require grad, or add input to --wrt")
            if between is not None:
                between()
            return out, self.backward(out)


def roots_of(function) -> list:
    """The modules to watch: the model itself, or for a plain function the ``nn.Module``
    values it names (globals and closure variables), each under its own name."""
    import torch

    if function.module is not None:
        return [("", function.module)]
    try:
        names = inspect.getclosurevars(function.callable)
    except (TypeError, ValueError):  # not a Python function (a callable object, a builtin)
        names = None
    found = {} if names is None else {n: v for n, v in {**names.globals, **names.nonlocals}.items()
                                       if isinstance(v, torch.nn.Module)}
    if not found:
        raise UsageError(f"FUNCTION: health watches the modules of a torch.nn.Module; {function.name} is a "
                         "function that names none; name the model (PATH.py:MODEL) or a module computing the loss")
    return sorted(found.items())


def parameters_of(roots) -> list[Parameter]:
    """Every parameter once (a tied weight under its first name, its other names as aliases)."""
    by_id: dict[int, list] = {}
    order = []
    for prefix, root in roots:
        for name, p in root.named_parameters(prefix=prefix, remove_duplicate=False):
            if id(p) not in by_id:
                by_id[id(p)] = [p]
                order.append(id(p))
            by_id[id(p)].append(name)
    return [Parameter(by_id[i][1], by_id[i][0], tuple(by_id[i][2:])) for i in order]


def select(wrt: str, parameters: list[Parameter]) -> tuple[bool, list[Parameter]]:
    """``--wrt`` -> (differentiate the input?, the parameters named), in the model's order.
    Items: ``input``, ``param:NAME``, ``param:GLOB`` (fnmatch on any of a parameter's names)."""
    items = [item.strip() for item in wrt.split(",")]
    chosen: set[str] = set()
    use_input = False
    for item in items:
        if item == "input":
            use_input = True
            continue
        if not item.startswith("param:") or item == "param:":
            raise UsageError(f"--wrt {item or repr(wrt)}: health differentiates the input and the parameters; give "
                             "input, param:NAME or a glob such as 'param:*' (comma-separated)")
        pattern = item[len("param:"):]
        matched = [p.name for p in parameters
                   if any(fnmatch.fnmatchcase(n, pattern) for n in (p.name, *p.aliases))]
        if not matched:
            has = ", ".join(p.name for p in parameters[:8]) + (", …" if len(parameters) > 8 else "")
            raise UsageError(f"--wrt {item}: matches no parameter; the model has {has or 'none'}")
        chosen.update(matched)
    return use_input, [p for p in parameters if p.name in chosen]
