"""``--wrt act:MODULE``: the output of a named submodule as the differentiated
argument — the rest of the forward pass as a function of that activation.

One forward pass records the activation ``a0 = MODULE(...)`` (:func:`record`);
every later call runs the forward with a forward hook that replaces the
submodule's output by the tensor ``a`` being differentiated — as
``output + (a - a0)``, which is ``a`` itself at the recorded point
(:func:`replacing`) — so ``d out / d a`` is what autograd, forward mode, fd and
the second-order backends see. For a token model this is input saliency: the ids stay integer
constants, their embeddings (``act:bert.embeddings.word_embeddings``) are not.

Also the submodules' output shapes from one forward pass (``gradcli functions
PATH.py:NAME -x ...``, :func:`output_shapes`) and the embedding modules a
refusal of integer ids names (:func:`embeddings`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
from typing import Any, Callable, Mapping

from ..core.errors import UsageError
from .outputs import describe, tensors_inside

PREFIX = "act:"


def find(module, name: str, where: str):
    """The submodule called ``name``, or UsageError naming close ones."""
    if module is None:
        raise UsageError(f"--wrt {PREFIX}{name}: {where} is a function, not a torch.nn.Module, so it has no "
                         "submodules; name a module (or a factory returning one) as PATH.py:NAME")
    subs = dict(module.named_modules())
    if name in subs and name:
        return subs[name]
    names = [n for n in subs if n]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(PREFIX + c for c in close)}? " if close else ""
    raise UsageError(f"--wrt {PREFIX}{name}: {where} has no submodule {name!r}; {hint}`gradcli functions "
                     f"{where}` lists them (with their output shapes when given -x)")


def record(module, name: str, run: Callable[[], Any], where: str):
    """The output of submodule ``name`` in one ``run()`` of the forward pass: one tensor,
    from a submodule called once (else the activation is not one argument)."""
    import torch

    sub = find(module, name, where)
    seen = []
    handle = sub.register_forward_hook(lambda _m, _in, out: seen.append(out))
    try:
        run()
    finally:
        handle.remove()
    label = f"--wrt {PREFIX}{name}"
    if not seen:
        raise UsageError(f"{label}: {name} ({type(sub).__name__}) is not called by the forward pass at these inputs; "
                         "choose a submodule that runs")
    if len(seen) > 1:
        raise UsageError(f"{label}: {name} ({type(sub).__name__}) is called {len(seen)} times in one forward pass "
                         "(shared weights), so its output is not one activation; choose a submodule called once")
    out = seen[0]
    if not isinstance(out, torch.Tensor):
        path = _only_float(out)
        if path is None:
            inside = ", ".join(f"{sel} ({describe(t)})" for sel, t in tensors_inside(out)) or "no tensor"
            raise UsageError(f"{label}: {name} ({type(sub).__name__}) returns a {type(out).__name__} ({inside}), "
                             "not one tensor; choose the submodule that computes the tensor you want (one level "
                             "deeper)")
        out = dict(tensors_inside(out))[path]
    if not out.is_floating_point():
        raise UsageError(f"{label}: {name} returns a {str(out.dtype).removeprefix('torch.')} tensor, which cannot "
                         "be differentiated; choose a submodule with a float output")
    return out


@contextlib.contextmanager
def replacing(module, values: Mapping[str, Any], anchors: Mapping[str, Any]):
    """While inside, submodule ``name`` returns ``out + (value - anchor)``: its own output
    ``out`` moved by how far ``value`` is from the activation recorded at this point
    (``anchors[name]``, :func:`record`). With one ``act:`` argument ``out`` is the anchor,
    so the rest of the forward sees ``value`` itself; with several (``check --wrt
    act:embed,act:head``) a submodule upstream still reaches the ones downstream, where
    a plain replacement would make them constants (and their derivative 0)."""
    import torch

    if not values:
        yield
        return
    subs = dict(module.named_modules())

    def hook(out, value, anchor):
        anchor = torch.as_tensor(anchor, dtype=value.dtype, device=value.device)
        return _replaced(out, lambda tensor: tensor + (value - anchor))

    handles = [subs[name].register_forward_hook(lambda _m, _in, out, v=value, a=anchors[name]: hook(out, v, a))
               for name, value in values.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _only_float(out) -> str | None:
    """The path of the one float tensor in a container (an attention block's ``(output, None)``), else None."""
    floats = [sel for sel, t in tensors_inside(out) if t.is_floating_point()]
    return floats[0] if len(floats) == 1 else None


def _replaced(out, change):
    """``out`` with its tensor ``t`` replaced by ``change(t)``: the tensor itself, or the one
    float tensor of a tuple, list or dict (a ``ModelOutput`` keeps its class)."""
    import torch

    if isinstance(out, torch.Tensor):
        return change(out)
    return _put(out, _only_float(out).split("."), change)


def _put(container, path: list[str], change):
    if not path:
        return change(container)
    key, rest = path[0], path[1:]
    if isinstance(container, (tuple, list)):
        items = list(container)
        items[int(key)] = _put(items[int(key)], rest, change)
        return type(container)(items) if isinstance(container, list) or not hasattr(container, "_fields") \
            else type(container)(*items)
    if dataclasses.is_dataclass(container):  # (a ModelOutput too: it is a dataclass and a dict)
        return dataclasses.replace(container, **{key: _put(getattr(container, key), rest, change)})
    return {**container, key: _put(container[key], rest, change)}


def output_shapes(module, run: Callable[[], Any]) -> dict[str, str]:
    """Each submodule's output in one ``run()``: its shape (``[2, 5, 32]``), several for a
    tuple or ``ModelOutput``, and ``×N`` when it is called N times."""
    import torch

    seen: dict[str, list] = {}
    handles = []
    for name, sub in module.named_modules():
        if name:
            handles.append(sub.register_forward_hook(
                lambda _m, _in, out, name=name: seen.setdefault(name, []).append(out)))
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    shapes = {}
    for name, outs in seen.items():
        out = outs[0]
        text = describe(out) if isinstance(out, torch.Tensor) else \
            f"{type(out).__name__}: " + (", ".join(f"{sel} {describe(t)}" for sel, t in tensors_inside(out)) or "-")
        shapes[name] = text + (f" (called {len(outs)} times)" if len(outs) > 1 else "")
    return shapes


def embeddings(module) -> list[str]:
    """The ``nn.Embedding`` submodules, in order: where a token model's ids become floats."""
    import torch

    if module is None:
        return []
    return [name for name, sub in module.named_modules() if isinstance(sub, torch.nn.Embedding) and name]
