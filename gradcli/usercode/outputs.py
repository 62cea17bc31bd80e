"""``--select SEL``: the one tensor to differentiate when your code returns
several — a tuple, list, dict, dataclass or Hugging Face ``ModelOutput``.

``SEL`` is a path of steps joined by dots: a key (``logits``), an attribute
(``last_hidden_state``) or an index (``0``), so ``0.logits`` is the ``logits``
of the first element. Without ``--select`` such a return is refused naming
every tensor it holds, each with its shape and the ``--select`` that picks it.
A ``ModelOutput`` is a dict of its non-None fields that also takes an integer
index (``out[0]``, its first field), as transformers has it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Iterator

from ..core.errors import UsageError

MAX_DEPTH = 6  # nested containers walked when listing the tensors (a cache of 2 x 12 layers is depth 3)


def select(out: Any, path: str, where: str) -> Any:
    """``out`` followed along ``path`` (``"0.logits"``); ``where`` names the code in errors."""
    current, done = out, []
    for step in path.split("."):
        if not step:
            raise UsageError(f"--select {path}: empty step; join keys, attributes and indices with single dots, "
                             "e.g. --select 0.logits")
        try:
            current = _step(current, step)
        except (KeyError, IndexError, AttributeError, TypeError):
            at = f" at {'.'.join(done)}" if done else ""
            raise UsageError(f"--select {path}: the {type(current).__name__}{at} returned by {where} has no "
                             f"{step!r}; {_choices(out)}") from None
        done.append(step)
    import torch

    if not isinstance(current, torch.Tensor):  # None (a loss without labels), a number, or a container
        raise UsageError(f"--select {path}: picks {_kind(current)} in what {where} returned, not a tensor; "
                         f"{_choices(out)}")
    return current


def _step(obj: Any, step: str) -> Any:
    index = int(step) if step.lstrip("-").isdigit() else None
    if isinstance(obj, Mapping):
        if step in obj:
            return obj[step]
        if index is not None and hasattr(obj, "to_tuple"):  # ModelOutput: out[0] is its first non-None field
            return obj.to_tuple()[index]
        raise KeyError(step)
    if isinstance(obj, (tuple, list)):
        if index is None:
            return getattr(obj, step)  # a namedtuple's field
        return obj[index]
    if step.startswith("_"):
        raise AttributeError(step)
    return getattr(obj, step)


def tensors_inside(out: Any) -> list[tuple[str, Any]]:
    """Every tensor in ``out`` as ``(SEL, tensor)``, in order (keys, fields, indices)."""
    return list(_walk(out, "", 0))


def _walk(obj: Any, prefix: str, depth: int) -> Iterator[tuple[str, Any]]:
    import torch

    if isinstance(obj, torch.Tensor):
        yield prefix, obj
        return
    if depth >= MAX_DEPTH:
        return
    if isinstance(obj, Mapping):
        items = ((str(k), v) for k, v in obj.items())
    elif isinstance(obj, (tuple, list)):
        items = ((str(i), v) for i, v in enumerate(obj))
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        items = ((f.name, getattr(obj, f.name, None)) for f in dataclasses.fields(obj))
    else:
        return
    for key, value in items:
        yield from _walk(value, f"{prefix}.{key}" if prefix else key, depth + 1)


def describe(tensor) -> str:
    shape = list(tensor.shape)
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{shape}" if tensor.is_floating_point() else f"{shape} {dtype}"


def _choices(out: Any) -> str:
    found = tensors_inside(out)
    if not found:
        return f"it holds no tensor ({type(out).__name__}); return a tensor"
    return "it holds " + ", ".join(f"--select {sel} ({describe(t)})" for sel, t in found)


def refuse_several(out: Any, where: str) -> UsageError:
    """The refusal of a return that is not one tensor, naming every tensor inside and its ``--select``."""
    found = tensors_inside(out)
    kind = _kind(out)
    if not found:
        return UsageError(f"FUNCTION: {where} returned {kind}, which holds no tensor; return the tensor to "
                          "differentiate")
    count = f"{len(found)} tensors" if len(found) > 1 else "1 tensor"
    listed = ", ".join(f"--select {sel} ({describe(t)})" for sel, t in found)
    return UsageError(f"FUNCTION: {where} returned {kind} holding {count}, not one tensor; pick one with {listed}")


def _kind(obj: Any) -> str:
    """``None``, or the type's name with its article: ``an int``, ``a tuple``."""
    if obj is None:
        return "None"
    kind = type(obj).__name__
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}"
