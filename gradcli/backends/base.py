"""The one small interface every backend implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..problem.problem import Problem
from ..core.options import BackendName, BackendOptions, Layout


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
