"""What every property works from: the subject, its arguments at the working
dtype (float64), seeded cotangents, the baseline gradient, and the few helpers
they share (fresh inputs, a call, a backward, a comparison).

Shapes: ``args[name]`` is the argument as given (float ones float64); a call
returns the outputs as a tuple; ``cotangents(outs)`` is one tensor shaped like
each float output (None for the others), standard normal, seeded by ``--seed``
and the output's position; a gradient is a dict ``name -> tensor`` over the
differentiated (float) arguments.

The scalar every first-order comparison is about is ``φ(x) = Σ_k ⟨v_k, y_k(x)⟩``
(``v_k`` the cotangents, ``y_k`` the float outputs): ``∇φ = vᵀJ``, what one
backward pass with those grad_outputs gives.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..core.compare import default_tolerance
from ..core.errors import UserCodeError
from ..problem.plan import DEFAULT_MAX_MEMORY
from .repro import Repro
from .subject import Subject

DEFAULT_DTYPES = ("float64", "float32", "bfloat16")


@dataclass(frozen=True)
class Options:
    """The run's settings (SPEC §7's options)."""

    seed: int = 0
    runs: int = 3  # determinism: backward passes compared
    nondet_tol: float = 0.0  # determinism: largest difference between runs accepted
    dtypes: tuple[str, ...] = DEFAULT_DTYPES
    device: str = "cpu"
    max_memory: int = DEFAULT_MAX_MEMORY
    probes: int = 4  # gradient: seeded sign directions per argument, as check's probe mode


@dataclass(frozen=True)
class Gap:
    """The largest difference between two tensors: ``error`` at ``index``, against ``tolerance``."""

    error: float
    index: tuple[int, ...]
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance


class Ctx:
    """One certification's working state; properties read it and never change it
    (the baseline is computed once, on first use)."""

    def __init__(self, subject: Subject, args: Mapping[str, Any], options: Options, repro: Repro,
                 reference: Subject | None = None) -> None:
        import torch

        self.torch = torch
        self.subject, self.options, self.repro, self.reference = subject, options, repro, reference
        self.args = dict(args)  # call order
        self.diff = tuple(n for n, a in self.args.items() if isinstance(a, torch.Tensor) and a.is_floating_point())
        self.positional = [p.name for p in subject.params if not p.keyword_only and p.name in self.args]
        self.cache: dict[str, Any] = {}  # what one property computed and another reuses (the gradient's verdict)

    def with_args(self, args: Mapping[str, Any]) -> "Ctx":
        """The same subject and options at other arguments (the shapes property's variants)."""
        return Ctx(self.subject, {**self.args, **args}, self.options, self.repro, self.reference)

    # --- running the subject ----------------------------------------------

    def inputs(self, dtype=None, grad: bool = True) -> dict[str, Any]:
        """Fresh copies of the arguments: float ones in ``dtype`` (default float64) and
        requiring grad when ``grad``; the others as they are."""
        out = {}
        for name, a in self.args.items():
            if name in self.diff:
                out[name] = a.to(dtype=dtype or a.dtype, copy=True).requires_grad_(grad)
            else:
                out[name] = a
        return out

    def call(self, inputs: Mapping[str, Any], fn=None) -> tuple:
        """The outputs of ``fn`` (default the subject) as a tuple."""
        fn = self.subject.call if fn is None else fn
        positional = [inputs[n] for n in self.positional]
        keywords = {n: v for n, v in inputs.items() if n not in self.positional}
        out = fn(*positional, **keywords)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def float_outputs(self, outs) -> list[int]:
        """Positions of the outputs that carry a gradient (float tensors)."""
        torch = self.torch
        return [k for k, y in enumerate(outs) if isinstance(y, torch.Tensor) and y.is_floating_point()]

    def cotangents(self, outs) -> list:
        """Fresh grad_outputs for the float outputs of ``outs``, in each one's dtype and device."""
        torch = self.torch
        found = []
        for k in self.float_outputs(outs):
            rng = np.random.default_rng([self.options.seed, k])
            v = torch.from_numpy(rng.standard_normal(tuple(outs[k].shape)))
            found.append(v.to(dtype=outs[k].dtype, device=outs[k].device))
        return found

    def backward(self, inputs, outs, cotangents=None, *, create_graph: bool = False,
                 retain_graph: bool | None = None) -> dict[str, Any]:
        """``vᵀJ`` for each differentiated argument (None where the output does not depend on it)."""
        torch = self.torch
        ks = self.float_outputs(outs)
        cotangents = self.cotangents(outs) if cotangents is None else cotangents
        pairs = [(outs[k], v) for k, v in zip(ks, cotangents) if outs[k].requires_grad]
        wrt = [inputs[n] for n in self.diff]
        if not pairs:
            return dict.fromkeys(self.diff)
        grads = torch.autograd.grad([y for y, _ in pairs], wrt, [v for _, v in pairs], allow_unused=True,
                                    create_graph=create_graph, retain_graph=retain_graph)
        return dict(zip(self.diff, grads))

    def run(self, dtype=None, cotangents=None, fn=None) -> tuple[tuple, dict[str, Any]]:
        """One forward and one backward at fresh inputs: ``(outputs, gradient)``."""
        inputs = self.inputs(dtype)
        outs = self.call(inputs, fn)
        return outs, self.backward(inputs, outs, cotangents)

    @functools.cached_property
    def base(self) -> tuple[tuple, dict[str, Any]]:
        """The outputs and the gradient at the arguments in float64 (detached; None -> zeros)."""
        outs, grads = self.run()
        grads = {n: self.torch.zeros_like(self.args[n]) if g is None else g.detach() for n, g in grads.items()}
        return tuple(y.detach() if isinstance(y, self.torch.Tensor) else y for y in outs), grads

    def raised(self, err: BaseException) -> str:
        """What the subject raised, in one line, with the line of its file where known."""
        return raised_text(err, self.subject.path)

    # --- comparing --------------------------------------------------------

    def gap(self, got, want, dtype=None) -> Gap:
        """``max |got - want|`` and where, against ``atol + rtol max|want|`` (``default_tolerance``
        of ``dtype``, default float64). NaN or inf in ``got`` where ``want`` is finite is an
        infinite error; the same non-finite value in both is no error."""
        torch = self.torch
        atol, rtol = default_tolerance(np.dtype(dtype or "float64"))
        got = torch.zeros_like(want) if got is None else got
        a, b = got.detach().to(torch.float64).cpu(), want.detach().to(torch.float64).cpu()
        if a.shape != b.shape:
            return Gap(math.inf, (), 0.0)
        diff = (a - b).abs()
        same = (a == b) | (a.isnan() & b.isnan())
        diff = torch.where(same, torch.zeros_like(diff), torch.nan_to_num(diff, nan=math.inf))
        scale = float(b[b.isfinite()].abs().max()) if b.isfinite().any() else 0.0
        if diff.numel() == 0:
            return Gap(0.0, (), atol)
        flat = int(diff.reshape(-1).argmax())
        index = tuple(int(i) for i in np.unravel_index(flat, tuple(diff.shape)))
        return Gap(float(diff.reshape(-1)[flat]), index, atol + rtol * scale)

    def worst(self, grads, want) -> tuple[str, Gap]:
        """The argument whose gradient is furthest from ``want`` (past its tolerance first)."""
        gaps = {n: self.gap(grads.get(n), want[n]) for n in self.diff}
        name = max(gaps, key=lambda n: (not gaps[n].ok, gaps[n].error / max(gaps[n].tolerance, 1e-300)))
        return name, gaps[name]


def where(name: str, index: tuple[int, ...]) -> str:
    """``x[1, 2]``: an argument (or output) and an entry."""
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def first_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    if isinstance(err, UserCodeError):
        return str(err)
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    text = lines[0] if not lines[0].endswith(":") or len(lines) == 1 else f"{lines[0]} {lines[1]}"  # "raised:" + why
    return f"{type(err).__name__}: {text[:300]}"


def raised_text(err: BaseException, path) -> str:
    """:func:`first_line`, with the line of the user's file it came from where there is one."""
    import traceback
    from pathlib import Path

    if path is None:
        return first_line(err)
    mine = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == Path(path).resolve()]
    return first_line(err) + (f" (at {Path(path).name}:{mine[-1].lineno}: {mine[-1].line})" if mine else "")
