"""Shared by the torch backends (autograd, forward): the problem as a torch
function of the differentiated argument, and the row-structured Jacobians.

Only this module and its two users import torch, and only when they run.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np

from .. import rowform
from ..errors import BackendError, UserCodeError
from ..options import Device, Layout
from ..problem import Problem
from .base import Backend, Computed


def import_torch():
    try:
        import torch
    except ImportError as err:
        raise BackendError("torch is not installed; install torch==2.13.0, or use --backend analytic or fd") from err
    return torch


class TorchBackend(Backend):
    """Common set-up; subclasses give the mode-specific pieces."""

    def __init__(self, options) -> None:
        super().__init__(options)
        import_torch()  # here, so a result's timing does not include torch's import

    def setup(self, problem: Problem):
        """Return ``(torch, F, x0)`` where ``F(x)`` is the function of the wrt argument."""
        torch = import_torch()
        device = self.options.device.value
        if self.options.device is Device.CUDA and not torch.cuda.is_available():
            raise BackendError("--device cuda: torch sees no CUDA device here; use --device cpu")
        tensors = {name: torch.from_numpy(np.array(a)).to(device) for name, a in problem.args.items()}
        fixed = {name: t for name, t in tensors.items() if name != problem.wrt}

        def F(x):
            return problem.torch_forward({**fixed, problem.wrt: x})

        return torch, F, tensors[problem.wrt]

    def jacobian(self, problem: Problem, layout: Layout) -> Computed:
        torch, F, x0 = self.setup(problem)
        rows = problem.rows
        with torch_errors(self.name.value):
            output = F(x0)
            if rows is not None and not rows.reduced:
                blocks = to_numpy(self.blocks(torch, F, x0, rows, output))
                if layout is Layout.DIAG:
                    value = rows.from_rows(blocks)
                elif layout is Layout.FULL:
                    value = rowform.blocks_to_full(blocks, rows, self.options.allocate)
                else:
                    value = blocks
            else:
                value = to_numpy(self.full(torch, F, x0))
        return Computed(value=value, output=to_numpy(output))

    # --- pieces the modes provide ------------------------------------------

    def blocks(self, torch, F, x0, rows, output):
        raise NotImplementedError

    def full(self, torch, F, x0):
        raise NotImplementedError


def expand_along(torch, e, axis: int, shape):
    """A length-n vector ``e`` placed along ``axis`` and broadcast to ``shape``:
    the same basis direction in every row at once."""
    view = [1] * len(shape)
    view[axis] = e.shape[0]
    return e.reshape(view).expand(shape)


VMAP_BUDGET_BYTES = 512 * 2**20  # the batched gradients or tangents one vmap call holds


def vmap_chunk(tensor) -> int:
    """vmap's ``chunk_size`` for a batch of tensors shaped like ``tensor``: as many
    as fit the budget (a large Jacobian is computed in slices, not all at once)."""
    return max(1, VMAP_BUDGET_BYTES // max(1, tensor.numel() * tensor.element_size()))


def functorch_refused(err: BaseException) -> bool:
    """torch.func cannot transform this code (an old-style autograd.Function, an
    in-place update of a captured tensor): the caller falls back to classic
    autograd or to a loop. User code's errors are classified by what they wrap."""
    err = getattr(err, "original", err)
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        marker in text for marker in ("autograd.Function", "functorch", "setup_context", "transform",
                                      "does not have vmap support"))


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


@contextmanager
def torch_errors(backend: str):
    """torch's errors inside a backend -> BackendError (exit 3) with the op's name."""
    try:
        yield
    except UserCodeError as err:
        if functorch_refused(err):
            raise BackendError(f"--backend {backend}: your code uses an old-style torch.autograd.Function "
                               "(forward(ctx, ...)), which torch.func cannot transform; use --backend autograd or fd") from err
        raise
    except (RuntimeError, NotImplementedError) as err:
        if functorch_refused(err):
            raise BackendError(f"--backend {backend}: your code uses an old-style torch.autograd.Function "
                               "(forward(ctx, ...)), which torch.func cannot transform; use --backend autograd or fd") from err
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        op = re.search(r"forward AD with (\w+)", text)
        if op:
            raise BackendError(f"--backend forward: torch has no forward-mode formula for {op.group(1)}; "
                               "use --backend autograd") from err
        raise BackendError(f"--backend {backend}: torch failed: {text[:300]}") from err
