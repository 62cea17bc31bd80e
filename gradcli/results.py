"""Frozen result values and the enums that name modes. Pure data, no torch."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


class Quantity(str, enum.Enum):
    JACOBIAN = "jacobian"
    GRAD = "grad"
    VJP = "vjp"
    JVP = "jvp"


class Layout(str, enum.Enum):
    AUTO = "auto"
    FULL = "full"
    BLOCKS = "blocks"
    DIAG = "diag"


class BackendName(str, enum.Enum):
    AUTO = "auto"
    AUTOGRAD = "autograd"
    FORWARD = "forward"
    ANALYTIC = "analytic"
    FD = "fd"


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
    error: np.ndarray | None = None
    evaluations: int | None = None
    formulas: tuple[str, ...] = field(default=())
    rows: Any = None  # the RowLayout the value was computed with (structure notes read it)

    @functools.cached_property
    def structure(self) -> tuple[str, ...]:
        """Notes on the Jacobian's structure (jacobian only), computed when first asked for."""
        if self.quantity is not Quantity.JACOBIAN:
            return ()
        from .structure import describe

        return describe(self.value, self.layout, self.rows, np.dtype(self.dtype))

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
    is within tolerance, None when none but the reference ran. ``backends``
    holds ``compare.Comparison`` values, ``top`` the worst offending
    ``compare.Entry`` values across backends. ``mode`` is "full" (every entry)
    or "probe" (``vᵀ J u`` along K directions: ``shape`` is the argument's);
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
    mode: str = "full"
    taylor: Any = None
