"""Chunk sizes for the torch backends from a measured evaluation, so that
autograd and forward mode stay within ``--max-memory`` on real networks.

The input tensor says nothing about what a model allocates: a CIFAR-sized
convolutional net turns a 400 KB batch into tens of MB of activations, and
forward mode batched over ``c`` tangents holds ``c`` copies of them. So one
forward pass of the batch is run under ``torch.autograd.graph.saved_tensors_hooks``,
which sees every tensor autograd keeps for the backward pass: their bytes
``A`` measure the activations. Then, for ``c`` directions per ``vmap`` call:

    reverse (cotangents): A (saved once) + c * (A + gradient chunk)
    forward (tangents):   A (primal)     + c * (SAFETY * A + output chunk)

(each batched direction carries activation-sized tensors; ``SAFETY`` covers
workspaces no hook sees, such as a convolution's unfolded columns). ``c`` is
the largest that fits the budget; when not even one direction fits, the run
stops with exit 2 naming what would.
"""

from __future__ import annotations

from ..core.errors import UsageError
from ..usercode.activations import recall, remember, saved_bytes
from ..core.sizes import format_bytes

SAFETY = 2
DEFAULT_BUDGET = 2 * 2**30


def activation_bytes(torch, F, x0, function=None) -> int:
    """Bytes autograd saves in one forward pass of ``F`` at ``x0``, plus its
    output; measured once per ``function`` and batch (:mod:`..functions.activations`)."""
    known = recall(function, x0) if function is not None else None
    if known is not None:
        return known
    x = x0.detach().requires_grad_(True)
    nbytes = saved_bytes(torch, lambda: F(x))[1]
    if function is not None:
        remember(function, x0, nbytes)
    return nbytes


def chunk_size(torch, F, x0, *, directions: int, per_direction: int, held: int, budget: int | None,
               forward: bool, function=None, activations: int | None = None) -> int:
    """How many of ``directions`` tangents (``forward``) or cotangents one
    ``vmap`` call may take. ``per_direction``: the bytes of one direction's
    slice of the result; ``held``: bytes already held (the result); ``activations``:
    known without measuring (a built-in's are a few copies of its input and output)."""
    budget = DEFAULT_BUDGET if budget is None else budget
    if activations is None:
        activations = activation_bytes(torch, F, x0, function)
    each = (SAFETY if forward else 1) * activations + per_direction
    room = budget - held - activations
    if room < each:
        raise UsageError(
            f"--max-memory: one {'forward' if forward else 'backward'} pass of this batch needs about "
            f"{format_bytes(activations + each)} (activations measured: {format_bytes(activations)}), over the "
            f"{format_bytes(max(0, budget - held))} left of the limit; use --rows or a smaller batch, "
            f"`gradcli vjp` (one backward pass), or raise --max-memory")
    return max(1, min(directions, room // each))
