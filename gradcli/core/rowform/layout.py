"""RowLayout: how the differentiated argument and the output split into independent rows.

Examples (``x`` the differentiated argument):

=============================  ==============  =======  ========  ============  =======  ===================
function                       x shape         in_axis  out_axis  out_features  reduced  blocks_shape
=============================  ==============  =======  ========  ============  =======  ===================
softmax (dim -1)               (5, 4)          1        1         4             False    (5, 4, 4)
softmax (dim 0)                (5, 4)          0        0         5             False    (4, 5, 5)
cross_entropy, none            (N, C)          1        None      1             False    (N, C)
cross_entropy, none            (N, C, d)       1        None      1             False    (N, d, C)
cross_entropy, mean            (N, C)          1        None      1             True     (N, C)
relu (elementwise)             (3, 2)          None     None      1             False    (3, 2, 1)
relu inside a chain (axis 1)   (3, 2)          1        1         2             False    (3, 2, 2)
linear w.r.t. input            (N, in)         1        1         out           False    (N, out, in)
=============================  ==============  =======  ========  ============  =======  ===================

``rows`` is ``x``'s shape without ``in_axis`` (every entry for an elementwise
function); a block maps one row's ``C = features`` inputs to its ``out_block``
outputs (``(out_features,)``, or ``()`` when each row gives one number). A
reduced output is the single number ``sum(coef * per_row)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RowLayout:
    """``in_shape``: the differentiated argument's shape; ``in_axis`` its feature
    axis (non-negative) or None (elementwise: every entry is a row of one
    feature). ``out_axis``: the feature axis of the unreduced output, or None
    when each row gives one number. ``reduced``: the output is one number.

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
    def n_rows(self) -> int:
        return int(np.prod(self.rows, dtype=int))

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
    def output_shape(self) -> tuple[int, ...]:
        return () if self.reduced else self.unreduced_shape

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

    def along_axis(self, axis: int) -> "RowLayout":
        """An elementwise layout seen as rows along ``axis`` (diagonal blocks)."""
        return RowLayout(self.in_shape, axis, None if self.reduced else axis,
                         1 if self.reduced else self.in_shape[axis], self.reduced)
