"""What a catalogue entry is: a static description, and ``bind``.

A :class:`Function` is data about a function — its array arguments, its typed
:class:`Param` options with defaults and help (the CLI's options are generated
from them), its Jacobian structure and its formulas — plus pure methods of
``(args, params)``. :meth:`Function.bind` validates a call once and returns a
:class:`Bound`: the arrays, the resolved (read-only) options, the output
shape, the notes, and, computed on first use and kept, the row layout and the
NumPy kernel for each differentiated argument. Backends and renderers read a
Bound; nothing re-validates or re-computes it.

Row-independent functions are described in "row form" (see
:mod:`gradcli.rowform`): the differentiated argument with its feature axis
last, ``(*rows, C)``, and per-row blocks ``(*rows, *out_block, C)``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Mapping

import numpy as np

from ..core.errors import UsageError
from ..core.options import Choice, Reduction
from ..core.rowform import GeneralKernel, RowKernel, RowLayout
from ..core.rows import batch_rows


class Structure(Choice):
    """Shape of a Jacobian's non-zero pattern, as the catalogue declares it."""

    BLOCKS = "blocks"  # block-diagonal across batch rows
    DIAGONAL = "diagonal"  # elementwise
    FULL = "full"  # no structure worth exploiting


@dataclass(frozen=True)
class Param:
    """A scalar option of a function (``--dim``, ``--reduction``, ...).

    ``kind`` is the Python type of its value (``int``, ``float``, ``bool``) or an
    enum class (its values are the choices); ``choices`` narrows an enum to the
    values this function accepts. The CLI option, its help and its default are
    generated from this one declaration.
    """

    name: str
    default: Any
    help: str
    kind: type = int
    choices: tuple[Any, ...] | None = None

    @property
    def option(self) -> str:
        return option_name(self.name)

    def validate(self, value: Any, function: str) -> Any:
        """``value`` as this parameter's type, or UsageError naming the option."""
        if value is None:
            return None
        if isinstance(self.kind, type) and issubclass(self.kind, enum.Enum):
            allowed = self.choices or tuple(self.kind)
            try:
                value = self.kind(value)
            except ValueError:
                value = None
            if value not in allowed:
                raise UsageError(f"{self.option}: {function} takes {', '.join(a.value for a in allowed)}")
            return value
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"{self.option}: {value!r} is not a finite number")
            return float(value)
        if self.kind is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
            raise UsageError(f"{self.option}: {value!r} is not an integer")
        if self.kind is bool and not isinstance(value, bool):
            raise UsageError(f"{self.option}: {value!r} is not true or false")
        return value


class ArrayKind(Choice):
    """How an array argument's dtype is treated when a problem is built."""

    FLOAT = "float"  # converted to the working dtype (integers with a note)
    INDEX = "index"  # class indices: must be integers, kept as int64
    INDEX_OR_FLOAT = "index or float"  # integers are indices, floats are probabilities
    DATA = "float when differentiated"  # user code's input: FLOAT under --wrt input, else INDEX_OR_FLOAT (token ids)


@dataclass(frozen=True)
class ArrayArg:
    """An array argument of a function and what it means."""

    name: str
    help: str
    required: bool = False
    kind: ArrayKind = ArrayKind.FLOAT

    @property
    def option(self) -> str:
        return option_name(self.name)


def option_name(arg: str) -> str:
    """The command-line option that carries argument ``arg``."""
    return "--" + arg.replace("_", "-")


class Function:
    """A catalogue entry. Subclasses fill in the class attributes and the pure
    methods of ``(args, params)``; :meth:`bind` is the one entry point."""

    name: ClassVar[str]
    summary: ClassVar[str]
    arrays: ClassVar[tuple[ArrayArg, ...]]
    params: ClassVar[tuple[Param, ...]] = ()
    formulas: ClassVar[tuple[str, ...]]
    second_formulas: ClassVar[tuple[str, ...]] = ()  # second derivatives (hessian, hvp), shown with the formulas
    structure: ClassVar[Structure]
    family: ClassVar[str] = "the losses"  # whose options these are, in --help ("Options of the losses")
    closed_form: ClassVar[bool] = True  # has NumPy forward and blocks (analytic, fd)

    # --- binding ----------------------------------------------------------

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Typed values with defaults filled; refuse options this function does not take."""
        known = {p.name: p for p in self.params}
        for name, value in given.items():
            if name not in known and value is not None:
                raise UsageError(f"{option_name(name)}: {self.name} takes no such option; its options are "
                                 f"{', '.join(p.option for p in self.params) or 'none'}")
        resolved = {}
        for p in self.params:
            value = p.validate(given.get(p.name), self.name)
            resolved[p.name] = p.default if value is None else value
        return resolved

    def bind(self, args: Mapping[str, np.ndarray], params: Mapping[str, Any], dtype=None) -> "Bound":
        """Validate ``args`` (converted, read-only arrays) and ``params`` once. ``dtype``: the
        working dtype, for user code whose arguments do not show it (NumPy built-ins ignore it)."""
        resolved = self.resolve_params(params)
        notes = self.check(dict(args), resolved)
        return Bound(self, MappingProxyType(dict(args)), MappingProxyType(resolved),
                     tuple(self.output_shape(args, resolved)), tuple(notes))

    # --- the pure description -----------------------------------------------

    def check(self, args: dict[str, np.ndarray], params: dict[str, Any]) -> list[str]:
        """Validate shapes, dtypes and ranges; may normalise ``params`` in place. Returns notes."""
        return []

    def differentiable(self, args: Mapping[str, np.ndarray]) -> tuple[str, ...]:
        """Names of the arguments that may be given to ``--wrt``."""
        return ("input",)

    def output_shape(self, args: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> tuple[int, ...]:
        raise NotImplementedError

    def row_layout(self, args, params, wrt: str, axis: int | None = None) -> RowLayout | None:
        """The row structure of the Jacobian w.r.t. ``wrt``, or None (``axis``: as in :meth:`kernel`)."""
        return None

    def notes(self, args, params, wrt: str) -> list[str]:
        """Facts about this function at this point worth telling the user."""
        return []

    def torch_second_order_notes(self, args, params) -> list[str]:
        """Where torch's own second derivatives (double backward) lose precision
        at this point, said when torch is the reference of a Hessian check."""
        return []

    def parameter_array(self, name: str) -> np.ndarray:
        """The value of a module parameter, for ``--wrt param:NAME``."""
        raise UsageError(f"--wrt param:{name}: {self.name} is not a torch.nn.Module; only modules have parameters")

    def kinks(self, args, params) -> np.ndarray | None:
        """Entries of the input where the function is not differentiable (torch
        picks a convention there), as a mask shaped like the input; None if none."""
        return None

    def kernel(self, args, params, wrt: str, axis: int | None = None) -> RowKernel | GeneralKernel:
        """NumPy forward and closed-form derivative (analytic and fd backends).

        ``axis`` (elementwise functions only, inside a chain or shown as blocks):
        build the kernel in the row form of that feature axis, with diagonal blocks.
        """
        raise NotImplementedError

    def torch_forward(self, args: Mapping[str, Any], params: Mapping[str, Any]):
        """The torch reference: the real torch call on tensors."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Bound:
    """A function bound to validated arguments: what every later layer reads.

    ``args``: read-only arrays (floats in the working dtype, class indices
    int64); ``params``: resolved options, read-only; ``output_shape``;
    ``notes``: what validation found. Row layouts and kernels are computed on
    first use and kept, so a query never re-walks the function.
    """

    function: Function
    args: Mapping[str, np.ndarray]
    params: Mapping[str, Any]
    output_shape: tuple[int, ...]
    notes: tuple[str, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def name(self) -> str:
        return self.function.name

    def differentiable(self) -> tuple[str, ...]:
        return tuple(self.function.differentiable(self.args))

    def row_layout(self, wrt: str, axis: int | None = None) -> RowLayout | None:
        return self._cached(("rows", wrt, axis), lambda: self.function.row_layout(self.args, self.params, wrt, axis))

    def kernel(self, wrt: str, axis: int | None = None, budget: int | None = None) -> RowKernel | GeneralKernel:
        """``budget``: the bytes an evaluation may hold (``--max-memory``); only user
        code reads it (its activations are hidden), a built-in's NumPy stacks are sized by fd."""
        return self._cached(("kernel", wrt, axis), lambda: self.function.kernel(self.args, self.params, wrt, axis))

    def wrt_notes(self, wrt: str) -> tuple[str, ...]:
        return tuple(self.function.notes(self.args, self.params, wrt))

    def kinks(self) -> np.ndarray | None:
        return self.function.kinks(self.args, self.params)

    def torch_forward(self, tensors: Mapping[str, Any]):
        return self.function.torch_forward(tensors, self.params)

    def per_sample(self) -> "Bound":
        raise UsageError(f"--layout blocks: {self.name} is a built-in; per-sample blocks are for user code")

    def rebind(self, args: Mapping[str, np.ndarray]) -> "Bound":
        """The same function and options at other arrays (fd's dtype, ``--rows``)."""
        return self.function.bind(args, self.params)

    def at_rows(self, index: np.ndarray) -> "Bound":
        """The same function at batch rows ``index`` (``--rows``): every argument
        with the batch axis sliced along it (:func:`gradcli.rows.has_batch_axis`)."""
        return self.rebind(batch_rows(self.args, index))


def check_axis(dim: int, ndim: int, option: str = "--dim") -> int:
    """Normalise a possibly negative axis as torch does, or refuse it."""
    if not -ndim <= dim < ndim:
        raise UsageError(f"{option}: {dim} is out of range for a {ndim}-D input; use {-ndim}..{ndim - 1}")
    return dim % ndim


__all__ = ["ArrayArg", "ArrayKind", "Bound", "Function", "GeneralKernel", "Param", "Reduction", "RowKernel",
           "RowLayout", "Structure", "check_axis", "option_name"]
