"""Frozen result values with their provenance. Pure data, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .options import BackendName, CheckMode, Layout, Quantity


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (results are immutable values; the caller's
    own array keeps its flags)."""
    array = np.asarray(array).view()
    array.flags.writeable = False
    return array


def chunks(array: np.ndarray, size: int = 1 << 20):
    """The entries of ``array``, flattened, ``size`` at a time (views, no copies
    for contiguous arrays): how a huge result is scanned without a temporary
    of its own size."""
    flat = np.asarray(array).reshape(-1)
    return (flat[i:i + size] for i in range(0, flat.size, size))


def count_nonfinite(array: np.ndarray) -> int:
    """NaN and infinite entries, counted a chunk at a time: a memory-mapped
    full Jacobian never gets a boolean mask of its own size."""
    if np.asarray(array).dtype.kind != "f":
        return 0
    return sum(int(part.size - np.count_nonzero(np.isfinite(part))) for part in chunks(array))


@dataclass(frozen=True)
class Result:
    """One computed derivative and its provenance.

    ``value``: the Jacobian (``layout`` full: ``output_shape + wrt_shape``;
    blocks: ``(*rows, *out_block, C)``), the gradient or vjp (shaped like the
    ``wrt`` argument) or the jvp (shaped like the output). ``output`` is the
    function's value. ``error`` is the fd backend's per-entry error estimate,
    shaped like ``value``, and ``nonsmooth`` its mask of entries where the
    differences did not converge.
    """

    quantity: Quantity
    function: str
    params: Mapping[str, Any]
    wrt: str
    backend: BackendName
    dtype: str
    input_shape: tuple[int, ...]
    wrt_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    layout: Layout | None
    value: np.ndarray
    output: np.ndarray
    notes: tuple[str, ...]
    seconds: float
    structure: tuple[str, ...] = ()  # notes on the Jacobian's structure (jacobian only), computed by solve
    error: np.ndarray | None = None
    evaluations: int | None = None
    formulas: tuple[str, ...] = field(default=())
    per_sample: bool = False  # user code's per-sample blocks (B, *out, *in)
    batch_axes: int = 0  # blocks: how many leading axes of ``value`` index the rows
    nonsmooth: np.ndarray | None = None  # fd: entries where the steps did not converge (kink, jump, domain edge)
    vector: np.ndarray | None = None  # vjp: the cotangent v, jvp: the tangent t (so the result can be reproduced)
    spectrum: Any = None  # hessian --eig: a curvature.Spectrum (the K smallest and largest eigenvalues)
    # ``wrt`` a joint flat vector of several arguments (--wrt 'param:*'): each piece's name and shape, in order
    parts: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    def named(self) -> dict[str, np.ndarray]:
        """The pieces of a joint vector by name (empty without ``parts``): the gradient,
        vjp or hvp of each argument shaped like it (as its ``.grad``); a Jacobian's
        ``output_shape + shape``; a Hessian's own block of each argument,
        ``output_shape + shape + shape`` (the cross terms stay in ``value``). Views."""
        if not self.parts or self.quantity is Quantity.JVP or self.value.shape[-1:] != self.wrt_shape[-1:]:
            return {}
        sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in self.parts]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        pieces = {}
        for (name, shape), a, b in zip(self.parts, starts[:-1], starts[1:]):
            if self.quantity is Quantity.HESSIAN:
                lead = self.value.shape[:-2]
                pieces[name] = self.value[..., a:b, a:b].reshape(lead + shape + shape)
            else:
                pieces[name] = self.value[..., a:b].reshape(self.value.shape[:-1] + shape)
        return pieces

    @property
    def nonfinite(self) -> int:
        """How many entries of ``value`` are NaN or infinite."""
        return count_nonfinite(self.value)


@dataclass(frozen=True)
class CheckReport:
    """Several backends against a reference: ``ok`` when every backend that ran
    is within tolerance, None when none but the reference ran. ``backends``
    holds ``compare.Comparison`` values, ``top`` the worst offending
    ``compare.Entry`` values across backends. ``mode`` is FULL (every entry)
    or PROBE (``vᵀ J u`` along K directions: ``shape`` is the argument's);
    ``taylor`` the ``probe.Taylor`` test when asked for."""

    function: str
    quantity: Quantity
    reference: BackendName
    dtype: str
    params: Mapping[str, Any]
    wrt: str
    shape: tuple[int, ...]
    atol: float
    rtol: float
    tolerance_source: str
    ok: bool | None
    backends: tuple[Any, ...]
    top: tuple[Any, ...]
    notes: tuple[str, ...]
    reference_seconds: float
    layout: Layout | None = None
    mode: CheckMode = CheckMode.FULL
    taylor: Any = None
    jointly: bool = False  # probe mode: ok from probes over a group of arguments it is in, no comparison of its own
