"""The one small interface every backend implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ..problem import Problem
from ..results import BackendName, Layout


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may read; the others ignore them."""

    device: str = "cpu"
    fd_method: str = "richardson"
    fd_step: float | None = None  # None: automatic
    fd_dtype: str = "float64"  # or "same"
    progress: Callable[[int, int], None] | None = None  # (done, total) as long computations advance
    allocate: Callable[..., np.ndarray] = np.zeros  # (shape, dtype=) -> zeros: where a full Jacobian is scattered


@dataclass(frozen=True)
class Computed:
    """What a backend returns: the value, the function's output, and extras."""

    value: np.ndarray
    output: np.ndarray
    error: np.ndarray | None = None
    evaluations: int | None = None
    notes: tuple[str, ...] = ()
    nonsmooth: np.ndarray | None = None  # fd: entries whose differences did not converge, shaped like value


class Backend(abc.ABC):
    name: ClassVar[BackendName]

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def jacobian(self, problem: Problem, layout: Layout) -> Computed:
        """``layout`` is FULL (``output_shape + wrt_shape``) or BLOCKS (``rows + out_block + (C,)``)."""

    @abc.abstractmethod
    def vjp(self, problem: Problem, cotangent: np.ndarray) -> Computed:
        """``v^T J`` for ``v`` shaped like the output; shaped like the wrt argument."""

    @abc.abstractmethod
    def jvp(self, problem: Problem, tangent: np.ndarray) -> Computed:
        """``J t`` for ``t`` shaped like the wrt argument; shaped like the output."""
