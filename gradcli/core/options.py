"""Every mode gradcli has, as an enum, and the settings a backend reads.

Strings exist only at the edges (the CLI's options, JSON); everything below
passes these values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

import numpy as np


class Choice(str, enum.Enum):
    """A mode as the command line writes it: ``str()`` and f-strings give the value
    (``mean``), on every Python (3.11 changed ``format()`` of a str-mixin enum to
    ``Reduction.MEAN``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Quantity(Choice):
    JACOBIAN = "jacobian"
    GRAD = "grad"
    VJP = "vjp"
    JVP = "jvp"
    HESSIAN = "hessian"
    HVP = "hvp"


class Layout(Choice):
    AUTO = "auto"
    FULL = "full"
    BLOCKS = "blocks"
    DIAG = "diag"


class BackendName(Choice):
    AUTO = "auto"
    AUTOGRAD = "autograd"
    FORWARD = "forward"
    ANALYTIC = "analytic"
    FD = "fd"
    COMPILE = "compile"  # check only, when named: torch.compile then autograd


class DType(Choice):
    FLOAT64 = "float64"
    FLOAT32 = "float32"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)


class Reduction(Choice):
    """torch's reductions; each loss declares which it takes (batchmean: kl_div only)."""

    MEAN = "mean"
    SUM = "sum"
    NONE = "none"
    BATCHMEAN = "batchmean"


class FdMethod(Choice):
    CENTRAL = "central"
    RICHARDSON = "richardson"
    FORWARD = "forward"


class FdDType(Choice):
    FLOAT64 = "float64"
    SAME = "same"


class Device(Choice):
    CPU = "cpu"
    CUDA = "cuda"


class CheckMode(Choice):
    """check: every entry (full), K random directions per argument (probe), or by cost (auto)."""

    AUTO = "auto"
    FULL = "full"
    PROBE = "probe"


class Format(Choice):
    TABLE = "table"
    JSON = "json"


@dataclass(frozen=True)
class BackendOptions:
    """Settings a backend may read; the others ignore them."""

    device: Device = Device.CPU
    fd_method: FdMethod = FdMethod.RICHARDSON
    fd_step: float | None = None  # None: automatic
    fd_dtype: FdDType = FdDType.FLOAT64
    progress: Callable[[int, int], None] | None = None  # (done, total) as long computations advance
    allocate: Callable[..., np.ndarray] = np.zeros  # (shape, dtype=) -> zeros: where a full Jacobian is scattered
    max_memory: int | None = None  # --max-memory: torch backends size their vmap chunks to it (None: 2 GiB)

    def __post_init__(self) -> None:  # library callers may pass strings
        object.__setattr__(self, "device", Device(self.device))
        object.__setattr__(self, "fd_method", FdMethod(self.fd_method))
        object.__setattr__(self, "fd_dtype", FdDType(self.fd_dtype))
