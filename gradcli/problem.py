"""Problem: a function, its arguments, what to differentiate and in which dtype,
validated once. Backends trust a Problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from .arrays import check_finite
from .errors import UsageError
from .functions import ArrayKind, Function, RowLayout, lookup
from .functions.base import option_name

DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Problem:
    """Everything a backend needs.

    ``args`` holds read-only arrays: float arguments in ``dtype``, class
    indices as int64. ``params`` holds every scalar option with defaults filled
    and axes normalised. ``rows`` is the row structure of the Jacobian w.r.t.
    ``wrt`` (None when the function has none).
    """

    function: Function
    args: Mapping[str, np.ndarray]
    params: Mapping[str, Any]
    wrt: str
    dtype: np.dtype
    output_shape: tuple[int, ...]
    rows: RowLayout | None
    notes: tuple[str, ...] = field(default=())
    axis: int | None = None  # elementwise functions shown as blocks: the feature axis they adopt

    @property
    def wrt_shape(self) -> tuple[int, ...]:
        return self.args[self.wrt].shape

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.args["input"].shape


def build_problem(
    function: str | Function,
    arrays: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    *,
    wrt: str = "input",
    dtype: str = "float64",
    allow_nonfinite: bool = False,
) -> Problem:
    """Validate ``arrays`` (name -> array-like) and ``params`` for ``function``.

    Raises :class:`UsageError` naming the option at fault.
    """
    fn = lookup(function) if isinstance(function, str) else function
    if dtype not in DTYPES:
        raise UsageError(f"--dtype: unknown dtype {dtype!r}; use float64 or float32")
    work = np.dtype(dtype)
    accepted = {a.name: a for a in fn.arrays}
    notes: list[str] = []
    args: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if value is None:
            continue
        if name not in accepted:
            raise UsageError(f"{option_name(name)}: {fn.name} takes no such array; it takes "
                             f"{', '.join(a.option for a in fn.arrays)}")
        args[name] = _convert(np.asarray(value), accepted[name].kind, work, option_name(name), notes)
        if not allow_nonfinite:
            check_finite(args[name], option_name(name))
    for arg in fn.arrays:
        if arg.required and arg.name not in args:
            raise UsageError(f"{arg.option}: {fn.name} needs {arg.help}; give it as a file, JSON or generator")
    resolved = fn.resolve_params(dict(params or {}))
    if wrt.startswith("param:"):
        args[wrt] = fn.parameter_array(wrt[len("param:"):]).astype(work)
    notes += fn.check(args, resolved)
    allowed = fn.differentiable(args)
    if wrt not in allowed:
        raise UsageError(_wrt_message(fn, wrt, args, allowed))
    for array in args.values():
        array.flags.writeable = False
    notes += fn.notes(args, resolved, wrt)
    return Problem(
        function=fn,
        args=MappingProxyType(args),
        params=MappingProxyType(resolved),
        wrt=wrt,
        dtype=work,
        output_shape=tuple(fn.output_shape(args, resolved)),
        rows=fn.row_layout(args, resolved, wrt),
        notes=tuple(notes),
    )


def _convert(array: np.ndarray, kind: ArrayKind, work: np.dtype, option: str, notes: list[str]) -> np.ndarray:
    """Working dtype for floats; int64 for class indices; integers to differentiate get a note."""
    if array.dtype.kind not in "iuf":
        raise UsageError(f"{option}: dtype {array.dtype} is not numeric; give integers or floats")
    if array.size == 0:
        raise UsageError(f"{option}: the array is empty; give at least one value")
    if array.dtype.kind in "iu":
        if kind is not ArrayKind.FLOAT:
            return array.astype(np.int64)
        notes.append(f"{option}: integer values converted to {work} (integers cannot be differentiated; "
                     "torch.arange(n) is an integer tensor, a classic trap)")
    with np.errstate(over="ignore"):  # a value too large for float32 becomes inf: said below, not warned
        converted = array.astype(work)
    overflow = np.isinf(converted) & ~np.isinf(array)
    if overflow.any():
        index = tuple(int(i) for i in np.argwhere(overflow)[0])
        raise UsageError(f"{option}: {array[index]} at index {list(index)} does not fit {work} "
                         f"(largest {np.finfo(work).max:.4g}); use --dtype float64 or rescale the data")
    return converted


def _wrt_message(fn: Function, wrt: str, args, allowed) -> str:
    choices = ", ".join(allowed)
    if wrt in args and args[wrt].dtype.kind in "iu":
        return (f"--wrt {wrt}: {option_name(wrt)} holds integer class indices, which cannot be differentiated "
                f"(torch: only floating point tensors can require gradients); "
                f"give probabilities to differentiate w.r.t. it, or use --wrt {allowed[0]}")
    if wrt in {a.name for a in fn.arrays}:
        return f"--wrt {wrt}: {fn.name} is not differentiated w.r.t. {wrt} here; choose from {choices}"
    return f"--wrt: {wrt!r} is not an argument of {fn.name}; choose from {choices}"
