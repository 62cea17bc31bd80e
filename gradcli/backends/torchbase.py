"""Shared by the torch backends (autograd, forward): the problem as a torch
function of the differentiated argument, and the row-structured Jacobians.

Only this module and its two users import torch, and only when they run.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np

from ..core import rowform
from ..core.errors import BackendError, UsageError, UserCodeError
from ..core.options import Device, Layout
from ..problem.problem import Problem
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
        self._function = None
        self._problem = None

    def setup(self, problem: Problem):
        """Return ``(torch, F, x0)`` where ``F(x)`` is the function of the wrt argument."""
        torch = import_torch()
        self._function = problem.function  # whose measured activations the chunk sizes may reuse
        self._problem = problem
        self._output_bytes = int(np.prod(problem.output_shape)) * problem.dtype.itemsize
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
        with torch_errors(self.name.value, user_model(problem)):
            if rows is not None and not rows.reduced:
                output, blocks = self.blocks(torch, F, x0, rows)
                blocks = to_numpy(blocks)
                if layout is Layout.DIAG:
                    value = rows.from_rows(blocks)
                elif layout is Layout.FULL:
                    off = None if np.isfinite(blocks).all() else to_numpy(zero_cotangent_vjp(torch, F, x0))
                    value = rowform.blocks_to_full(blocks, rows, self.options.allocate, off)
                else:
                    value = blocks
            else:
                output = value_of(torch, F, x0)
                value = to_numpy(self.full(torch, F, x0, output))
        return Computed(value=value, output=to_numpy(output))

    def chunk(self, torch, F, x0, directions: int, per_direction: int, *, forward: bool,
              activations: int | None = None) -> int:
        """vmap's ``chunk_size`` within ``--max-memory``, from one measured evaluation
        (:mod:`.memory`; ``activations``: already measured); the result
        (``directions * per_direction`` bytes) is held."""
        from .memory import chunk_size

        known = activations
        if known is None and self._function is not None and self._function.closed_form:  # no hidden activations
            known = 4 * (x0.numel() * x0.element_size() + self._output_bytes)
        return chunk_size(torch, F, x0, directions=directions, per_direction=per_direction,
                          held=directions * per_direction, budget=self.options.max_memory, forward=forward,
                          function=self._function, activations=known)

    # --- pieces the modes provide ------------------------------------------

    def blocks(self, torch, F, x0, rows):
        """``(output, blocks)``: ``F(x0)`` and its per-row blocks ``(*rows, C_out, C_in)``."""
        raise NotImplementedError

    def full(self, torch, F, x0, output):
        raise NotImplementedError


def zero_cotangent_vjp(torch, F, x0):
    """The vjp of a zero cotangent by one backward pass: what jacrev puts off the
    blocks of a row-independent function (log's ``0 / x``: nan at 0, but 0 at a
    subnormal x, where the block's ``1/x`` is inf and ``0 * inf`` would be nan)."""
    x = x0.detach().requires_grad_(True)
    with torch.enable_grad():
        output = F(x)
    if not output.requires_grad:
        return torch.zeros_like(x0)
    (grad,) = torch.autograd.grad(output, x, torch.zeros_like(output), allow_unused=True)
    return torch.zeros_like(x0) if grad is None else grad


def value_of(torch, F, x0):
    """``F(x0)`` alone: no graph held (a model's parameters require grad)."""
    with torch.no_grad():
        return F(x0)


def user_model(problem: Problem):
    """The user's torch.nn.Module behind ``problem`` (None for built-ins and functions)."""
    return getattr(problem.function, "module", None)


def basis_rows(torch, start: int, stop: int, n: int, *, dtype, device):
    """Rows ``start:stop`` of the ``n x n`` identity, ``(stop - start, n)``: a chunk of
    basis directions, made only when it runs (the whole identity is n^2 entries)."""
    rows = torch.zeros((stop - start, n), dtype=dtype, device=device)
    rows[torch.arange(stop - start), torch.arange(start, stop)] = 1
    return rows


def expand_along(torch, e, axis: int, shape):
    """A length-n vector ``e`` placed along ``axis`` and broadcast to ``shape``:
    the same basis direction in every row at once."""
    view = [1] * len(shape)
    view[axis] = e.shape[0]
    return e.reshape(view).expand(shape)


def functorch_refused(err: BaseException) -> bool:
    """torch.func cannot transform this code (an old-style autograd.Function, an
    in-place update of a captured tensor, randomness under vmap): the caller
    falls back to classic autograd or to a loop. User code's errors are
    classified by what they wrap."""
    return refusal_kind(err) is not None


def refusal_kind(err: BaseException) -> str | None:
    """Which torch.func refusal ``err`` is: ``"inplace"``, ``"function"``,
    ``"random"``, ``"batching"`` (an op vmap has no rule for), or None when it
    is not one."""
    err = getattr(err, "original", err)
    if not isinstance(err, RuntimeError):
        return None
    text = str(err)
    if "mutate a captured Tensor" in text or "in-place operation" in text and "transform" in text:
        return "inplace"
    if "setup_context" in text or "autograd.Function" in text:
        return "function"
    if "randomness" in text and "vmap" in text:
        return "random"
    if "Batching rule not implemented" in text:
        return "batching"
    if "functorch" in text or "transform" in text:
        return "function"
    return None


def refusal_message(err: BaseException, backend: str, model=None) -> str:
    """The real cause of a torch.func refusal, naming the module, the class or
    the op, and the fix."""
    kind = refusal_kind(err)
    original = getattr(err, "original", err)
    if kind == "inplace":
        who = _culprit_module(original, model)
        return (f"--backend {backend}: {who} updates a buffer in place during forward (running statistics, a "
                "counter), which torch.func cannot transform; call .eval() on it in your file, or use --backend "
                "autograd or fd")
    if kind == "random":
        return (f"--backend {backend}: your code draws random numbers inside a vmap (dropout in training mode?), "
                "which torch.func cannot batch; call .eval() in your file, or use --backend autograd")
    if kind == "batching":
        op = re.search(r"not implemented for ([\w:.]+?)\.?(?:\s|$)", str(original))
        return (f"--backend {backend}: torch.func's vmap has no batching rule for {op.group(1) if op else 'an op'} "
                "in your code; use --backend autograd or fd")
    name = _frame_local(original, "cls", lambda v: isinstance(v, type))
    what = f"the old-style torch.autograd.Function {name.__name__}" if name is not None else \
        "an old-style torch.autograd.Function"
    return (f"--backend {backend}: your code uses {what} (forward(ctx, ...) without setup_context), which torch.func "
            "cannot transform; use --backend autograd or fd")


def _frame_local(err: BaseException, name: str | None, accept):
    """The innermost traceback frame's local ``name`` (None: the frame's first
    argument, ``self`` of a method whatever its name) that ``accept`` takes."""
    found = None
    tb = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        key = name or (code.co_varnames[0] if code.co_argcount else None)
        value = tb.tb_frame.f_locals.get(key) if key else None
        if value is not None and accept(value):
            found = value
        tb = tb.tb_next
    return found


def _culprit_module(err: BaseException, model) -> str:
    """The innermost module in whose forward ``err`` was raised, as "name (Class)"."""
    torch = import_torch()
    module = _frame_local(err, None, lambda v: isinstance(v, torch.nn.Module))
    if module is None:
        return "a module of your code"
    names = {id(m): n for n, m in model.named_modules()} if isinstance(model, torch.nn.Module) else {}
    name = names.get(id(module))
    return f"{'the model' if name == '' else name or 'a module'} ({type(module).__name__})"


VMAP_BUDGET_BYTES = 512 * 2**20  # the batched tangents one vmap call of the second-order basis holds


def vmap_chunk(tensor) -> int:
    """vmap's ``chunk_size`` for a batch of tensors shaped like ``tensor`` (second
    order's basis sweeps): as many as fit the budget."""
    return max(1, VMAP_BUDGET_BYTES // max(1, tensor.numel() * tensor.element_size()))


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


@contextmanager
def torch_errors(backend: str, model=None):
    """torch's errors inside a backend -> BackendError (exit 3) with the real
    cause (``model``: the user's module, to name the one at fault), whether
    raised in gradcli or inside the user's code. Running out of memory inside
    gradcli's batching is a usage error naming the fix, never "your code raised"."""
    try:
        yield
    except (UserCodeError, RuntimeError, NotImplementedError, MemoryError) as err:
        original = getattr(err, "original", err)
        if functorch_refused(err):
            raise BackendError(refusal_message(err, backend, model)) from err
        if _out_of_memory(original):
            raise UsageError(OUT_OF_MEMORY) from err
        text = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
        op = re.search(r"forward AD with ([\w:.]+\w)", text)
        if op:
            raise BackendError(f"--backend forward: torch has no forward-mode formula for {op.group(1)}; "
                               "use --backend autograd") from err
        if isinstance(err, UserCodeError):
            raise
        raise BackendError(f"--backend {backend}: torch failed: {text[:300]}") from err


OUT_OF_MEMORY = ("--max-memory: the computation ran out of memory while batching; lower --max-memory to get smaller "
                 "chunks, use --rows or a smaller batch, or `gradcli vjp` (one backward pass)")


def _out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower() \
        or "DefaultCPUAllocator" in text
