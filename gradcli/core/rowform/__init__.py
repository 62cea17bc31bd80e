"""The row algebra: the bottom layer of gradcli. Imports nothing else from gradcli.

A row-independent function (softmax along a dim, a loss per sample, an
elementwise function) is described once in *row form*: its differentiated
argument with the feature axis moved last, ``(*rows, C)``. Everything that
follows from per-row Jacobian blocks — full Jacobians, gradients, vjp, jvp —
lives here, in NumPy.

- :mod:`.layout`: :class:`RowLayout`, how an argument and an output split into rows;
- :mod:`.kernels`: :class:`RowKernel` and :class:`GeneralKernel`, the NumPy side of
  a function at one point, which every catalogue entry provides;
- :mod:`.algebra`: scatter/gather between blocks and full Jacobians, vjp/jvp
  from blocks or from a kernel's own operators.
"""

from .algebra import (
    blocks_to_full,
    diagonal_blocks,
    forward,
    full_shape,
    full_to_blocks,
    general_full,
    jvp,
    jvp_blocks,
    off_block_max,
    output,
    row_jvp,
    row_vjp,
    vjp,
    vjp_blocks,
)
from .kernels import GeneralKernel, RowKernel
from .layout import RowLayout

__all__ = [
    "GeneralKernel", "RowKernel", "RowLayout", "blocks_to_full", "diagonal_blocks", "forward", "full_shape",
    "full_to_blocks", "general_full", "jvp", "jvp_blocks", "off_block_max", "output", "row_jvp", "row_vjp", "vjp", "vjp_blocks",
]
