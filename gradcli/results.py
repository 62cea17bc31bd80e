"""Frozen result values with their provenance. Pure data, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .options import BackendName, Layout, Quantity


def frozen(array: np.ndarray) -> np.ndarray:
    """A read-only array (results are immutable values)."""
    array = np.asarray(array)
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Result:
    """One computed derivative and its provenance.

    ``value``: the Jacobian (``layout`` full: ``output_shape + wrt_shape``;
    blocks: ``(*rows, *out_block, C)``), the gradient or vjp (shaped like the
    ``wrt`` argument) or the jvp (shaped like the output). ``output`` is the
    function's value. ``error`` is the fd backend's per-entry error estimate,
    shaped like ``value``.
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
    spectrum: Any = None  # hessian --eig: a curvature.Spectrum (the K smallest and largest eigenvalues)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape)

    @property
    def nonfinite(self) -> int:
        """How many entries of ``value`` are NaN or infinite."""
        return int(np.size(self.value) - np.count_nonzero(np.isfinite(self.value)))


@dataclass(frozen=True)
class CheckReport:
    """Several backends against a reference: ``ok`` when every backend that ran
    is within tolerance. ``backends`` holds ``compare.Comparison`` values,
    ``top`` the worst offending ``compare.Entry`` values across backends."""

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
    ok: bool
    backends: tuple[Any, ...]
    top: tuple[Any, ...]
    notes: tuple[str, ...]
    reference_seconds: float
    layout: Layout | None = None
