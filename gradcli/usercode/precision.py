"""The precision your code really computes in, measured, for the tolerances
that decide a refusal.

A float64 problem whose code rounds inside — Hugging Face's causal-LM loss
casts the logits to float32 (``logits.float()``), a bfloat16 layer — gives
values and gradients that agree only to that precision: the batch loss and
the per-sample losses, or the batch gradient and the sum of the per-sample
ones, differ by about ``1e-7`` of their size, while float64's tolerance is
``1e-13``. Those checks (:mod:`gradcli.compute.per_sample`,
:mod:`.independence`) first judge at the dtype's ``eps``; only where that
would refuse do they measure the working precision here
(:func:`gradcli.core.resolution.resolution` along one seeded direction, as
fd does) and judge again at it, with a note.
"""

from __future__ import annotations

import numpy as np

from ..core.resolution import relative_direction, resolution

PARAMETERS = "param:*"  # move every parameter of the module: where the input holds integer ids


def working_eps(function, tensors: dict, dtype, along: str = "input") -> float:
    """The relative precision ``function``'s output is computed to at ``tensors``,
    moving ``along`` (``"input"``, or :data:`PARAMETERS`) along a seeded sign direction
    scaled to each entry: ``eps`` of ``dtype`` (the working dtype) when it computes to
    that, else coarser."""
    import torch

    eps = float(np.finfo(dtype).eps)
    if along == PARAMETERS:
        x0 = torch.from_numpy(function.parameter_array("*").astype(dtype))
    else:
        x0 = tensors[along]
    direction = torch.from_numpy(relative_direction(x0.detach().cpu().numpy()))

    def at(x) -> np.ndarray:
        with torch.no_grad():
            return function.call({**tensors, along: x}).detach().cpu().numpy().astype(np.float64)

    f0 = at(x0)

    def change(s: float):
        return at(x0 + s * direction) - f0, at(x0 - s * direction) - f0

    with np.errstate(all="ignore"):
        return resolution(change, eps, float(np.linalg.norm(np.nan_to_num(f0))))


def note(found: float, eps: float, dtype, what: str) -> str:
    """The note of a decision taken at the working precision ``found`` rather than ``eps``."""
    return (f"{what}: judged at your code's working precision, measured at {found:.1e} (it rounds inside, e.g. a "
            f"float32 cast such as Hugging Face's loss; {np.dtype(dtype).name} resolves {eps:.1e}): differences at that "
            "level are its rounding, not an interaction")
