"""Activation bytes of one forward pass, measured once per function and batch.

Every tensor autograd saves for the backward pass goes through
``torch.autograd.graph.saved_tensors_hooks``; their bytes measure a model's
activations. The first pass that measures them (autograd's per-sample blocks,
the torch backends' chunk sizing in :mod:`gradcli.backends.memory`, fd's
batched evaluations) records the bytes here, and the others reuse them
instead of running the model once more (``check`` runs several backends on
one function).
"""

from __future__ import annotations

import weakref

from ..core.errors import UsageError
from ..core.sizes import format_bytes

_MEASURED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def key(x) -> tuple:
    """The same batch seen natural ``(B, *in)`` or flattened ``(B, F)`` has one key."""
    return int(x.numel()), str(x.dtype), str(x.device)


def saved_bytes(torch, run):
    """``(output, bytes)``: ``run()`` under autograd, counting every saved tensor and the output."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return out, total + out.numel() * out.element_size()


def remember(function, x, nbytes: int) -> None:
    try:
        _MEASURED.setdefault(function, {})[key(x)] = nbytes
    except TypeError:  # not weak-referenceable: nothing to remember
        pass


def recall(function, x) -> int | None:
    try:
        return _MEASURED.get(function, {}).get(key(x))
    except TypeError:
        return None


STACK_BUDGET = 512 * 2**20  # the most one batched evaluation of fd's perturbed points holds


def points_per_call(torch, function, x0, run, *, budget: int | None = None, held: int = 0) -> int:
    """How many points (each like ``x0``) one ``vmap`` evaluation may take.

    ``run(x0)`` is one evaluation, measured once (activations ``A``: every
    tensor autograd would save, plus the output) when the samples check has
    not measured it. ``c`` points hold about ``c * A``, so
    ``c = min(STACK_BUDGET, budget - held) // A``: at most
    :data:`STACK_BUDGET` (bigger calls are no faster), less under a small
    ``budget`` (``--max-memory``; None: no limit besides the cap). ``held``:
    bytes the caller already holds (the stack of points). When not even one
    point fits, the run stops with exit 2 naming the fix.
    """
    nbytes = recall(function, x0)
    if nbytes is None:
        # x0 requires grad, as in the samples check: else a function of replaced parameters saves nothing
        nbytes = saved_bytes(torch, lambda: run(x0.detach().requires_grad_(x0.is_floating_point())))[1]
        remember(function, x0, nbytes)
    room = STACK_BUDGET if budget is None else min(STACK_BUDGET, budget - held)
    if budget is not None and budget - held < nbytes:
        raise UsageError(
            f"--max-memory: one evaluation of {function.name} at one of fd's perturbed points needs about "
            f"{format_bytes(nbytes)} (activations measured), over the {format_bytes(max(0, budget - held))} left "
            f"of the limit once fd's own arrays and the {format_bytes(held)} of perturbed points are held; use "
            f"--rows or a smaller "
            f"batch, or raise --max-memory")
    return max(1, room // max(1, nbytes))
