"""Activation bytes of one forward pass, measured once per function and batch.

Every tensor autograd saves for the backward pass goes through
``torch.autograd.graph.saved_tensors_hooks``; their bytes measure a model's
activations. The check that samples do not interact runs such a forward pass
anyway, so it records the measurement here and the torch backends' chunk
sizing (:mod:`gradcli.backends.memory`) reuses it instead of running the
model once more.
"""

from __future__ import annotations

import weakref

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


STACK_BUDGET = 512 * 2**20  # what one batched evaluation of fd's perturbed points may hold


def points_per_call(torch, function, x0, run) -> int:
    """How many points (each like ``x0``) one ``vmap`` evaluation may take so
    that their activations stay within :data:`STACK_BUDGET`; ``run(x0)`` is one
    evaluation, measured once when the samples check has not measured it."""
    nbytes = recall(function, x0)
    if nbytes is None:
        nbytes = saved_bytes(torch, lambda: run(x0.detach()))[1]
        remember(function, x0, nbytes)
    return max(1, STACK_BUDGET // max(1, nbytes))
