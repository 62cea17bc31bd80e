"""What every catalogue entry provides, and the row structure they share.

A *row-independent* function (softmax along a dim, a loss per sample) is
described once, in "row form": the differentiated argument with its feature
axis moved last, ``x_rows`` of shape ``(*rows, C)``. Its derivative is then a
stack of per-row blocks ``(*rows, *out_block, C)`` where ``out_block`` is
``(C_out,)`` when each row maps to a vector (softmax) and ``()`` when it maps to
one number (a loss with ``reduction='none'``). A reduced loss is the linear
combination ``sum(coef * per_row)`` of those per-row values; ``coef`` depends
only on targets and class weights, never on the differentiated argument.

Every backend reads the same entry: the analytic backend its closed-form
``blocks``, the fd backend its NumPy ``forward``, the torch backends its
``torch_forward``; ``--explain`` and ``gradcli functions`` its ``formulas``.
"""

from __future__ import annotations

import math

import enum
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ..errors import UsageError


class Structure(str, enum.Enum):
    """Shape of a Jacobian's non-zero pattern, as the catalogue declares it."""

    BLOCKS = "blocks"  # block-diagonal across batch rows
    DIAGONAL = "diagonal"  # elementwise
    FULL = "full"  # no structure worth exploiting


class Reduction(str, enum.Enum):
    MEAN = "mean"
    SUM = "sum"
    NONE = "none"


@dataclass(frozen=True)
class Param:
    """A scalar option of a function (``--dim``, ``--reduction``, ...)."""

    name: str
    default: Any
    help: str

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


class ArrayKind(str, enum.Enum):
    """How an array argument's dtype is treated when a problem is built."""

    FLOAT = "float"  # converted to the working dtype (integers with a note)
    INDEX = "index"  # class indices: must be integers, kept as int64
    INDEX_OR_FLOAT = "index or float"  # integers are indices, floats are probabilities


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
    """The command-line option that carries array argument ``arg``."""
    return "--" + arg.replace("_", "-")


@dataclass(frozen=True)
class RowLayout:
    """How the differentiated argument and the output split into independent rows.

    ``in_shape`` is the differentiated argument's shape and ``in_axis`` its
    feature axis (non-negative), or None for an elementwise function, where
    every entry is a row with one feature. ``out_axis`` is the feature axis of
    the unreduced output, or None when each row gives one number. ``reduced``
    is True when the output is one number, ``sum(coef * per_row)``.

    The conversions accept extra leading (stack) axes.
    """

    in_shape: tuple[int, ...]
    in_axis: int | None
    out_axis: int | None
    out_features: int
    reduced: bool

    @property
    def elementwise(self) -> bool:
        return self.in_axis is None

    @property
    def rows(self) -> tuple[int, ...]:
        if self.in_axis is None:
            return self.in_shape
        return self.in_shape[: self.in_axis] + self.in_shape[self.in_axis + 1 :]

    @property
    def features(self) -> int:
        return 1 if self.in_axis is None else self.in_shape[self.in_axis]

    @property
    def out_block(self) -> tuple[int, ...]:
        return () if self.out_axis is None else (self.out_features,)

    @property
    def unreduced_shape(self) -> tuple[int, ...]:
        if self.out_axis is None:
            return self.rows
        return self.rows[: self.out_axis] + (self.out_features,) + self.rows[self.out_axis :]

    @property
    def blocks_shape(self) -> tuple[int, ...]:
        return self.rows + self.out_block + (self.features,)

    def to_rows(self, array: np.ndarray) -> np.ndarray:
        """An array shaped like the differentiated argument -> row form ``(*rows, C)``."""
        if self.in_axis is None:
            return array[..., None]
        return np.moveaxis(array, self.in_axis - len(self.in_shape), -1)

    def from_rows(self, array: np.ndarray) -> np.ndarray:
        """Row form ``(*rows, C)`` -> shaped like the differentiated argument."""
        if self.in_axis is None:
            return array[..., 0]
        return np.moveaxis(array, -1, self.in_axis - len(self.in_shape))

    def out_to_rows(self, array: np.ndarray) -> np.ndarray:
        """An unreduced output -> row form ``(*rows, *out_block)``."""
        if self.out_axis is None:
            return array
        return np.moveaxis(array, self.out_axis - len(self.unreduced_shape), -1)

    def out_from_rows(self, array: np.ndarray) -> np.ndarray:
        if self.out_axis is None:
            return array
        return np.moveaxis(array, -1, self.out_axis - len(self.unreduced_shape))


@dataclass(frozen=True)
class RowKernel:
    """The NumPy side of a row-independent function at one point.

    ``x0``: the differentiated argument in row form, ``(*rows, C)``.
    ``forward(x)``: ``(..., *rows, C) -> (..., *rows, *out_block)``; extra
    leading axes are a stack of evaluation points (the fd backend uses them).
    ``blocks()``: the closed-form per-row Jacobian ``(*rows, *out_block, C)``.
    ``coef``: ``(*rows)`` weights of the reduction, or None when unreduced.
    ``empty_mean``: a mean over no rows (every target ignored): torch returns
    nan for the value but zero derivatives, and so do we.
    """

    x0: np.ndarray
    forward: Callable[[np.ndarray], np.ndarray]
    blocks: Callable[[], np.ndarray]
    coef: np.ndarray | None
    empty_mean: bool = False


@dataclass(frozen=True)
class GeneralKernel:
    """The NumPy side of a function with no row structure w.r.t. its argument
    (a Linear layer's weight: every row uses all of it).

    Shapes are natural: ``forward(w)``: ``(..., *wrt_shape) -> (..., *output_shape)``;
    ``vjp(v)``: ``(..., *output_shape) -> (..., *wrt_shape)``; ``jvp(t)``:
    ``(..., *wrt_shape) -> (..., *output_shape)``. Leading axes are a stack.
    """

    x0: np.ndarray
    output_shape: tuple[int, ...]
    forward: Callable[[np.ndarray], np.ndarray]
    vjp: Callable[[np.ndarray], np.ndarray]
    jvp: Callable[[np.ndarray], np.ndarray]



class Function:
    """A catalogue entry. Subclasses fill in the class attributes and methods."""

    name: ClassVar[str]
    summary: ClassVar[str]
    arrays: ClassVar[tuple[ArrayArg, ...]]
    params: ClassVar[tuple[Param, ...]] = ()
    formulas: ClassVar[tuple[str, ...]]
    structure: ClassVar[Structure]
    closed_form: ClassVar[bool] = True  # has NumPy forward and blocks (analytic, fd)

    # --- validation -------------------------------------------------------

    def resolve_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults; refuse options this function does not take."""
        known = {p.name: p for p in self.params}
        for name, value in given.items():
            if name not in known and value is not None:
                raise UsageError(f"{option_name(name)}: {self.name} takes no such option; its options are "
                                 f"{', '.join(p.option for p in self.params) or 'none'}")
            if isinstance(value, float) and not math.isfinite(value):  # NaN passes every range check
                raise UsageError(f"{option_name(name)}: {value} is not a finite number; give a finite value")
        return {p.name: given.get(p.name) if given.get(p.name) is not None else p.default for p in self.params}

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

    def parameter_array(self, name: str) -> np.ndarray:
        """The value of a module parameter, for ``--wrt param:NAME``."""
        raise UsageError(f"--wrt param:{name}: {self.name} is not a torch.nn.Module; only modules have parameters")

    def kinks(self, args, params) -> np.ndarray | None:
        """Entries of the input where the function is not differentiable (torch
        picks a convention there), as a mask shaped like the input; None if none."""
        return None

    # --- evaluation -------------------------------------------------------

    def kernel(self, args, params, wrt: str, axis: int | None = None) -> RowKernel | GeneralKernel:
        """NumPy forward and closed-form derivative (analytic and fd backends).

        ``axis`` (elementwise functions only, inside a chain): build the kernel
        in the row form of that feature axis, with diagonal blocks.
        """
        raise NotImplementedError

    def torch_forward(self, args: Mapping[str, Any], params: Mapping[str, Any]):
        """The torch reference: the real torch call on tensors."""
        raise NotImplementedError


def check_axis(dim: int, ndim: int, option: str = "--dim") -> int:
    """Normalise a possibly negative axis as torch does, or refuse it."""
    if not -ndim <= dim < ndim:
        raise UsageError(f"{option}: {dim} is out of range for a {ndim}-D input; use {-ndim}..{ndim - 1}")
    return dim % ndim


def reduction_of(params: Mapping[str, Any]) -> Reduction:
    try:
        return Reduction(params["reduction"])
    except ValueError:
        raise UsageError(f"--reduction: unknown value {params['reduction']!r}; use mean, sum or none") from None
