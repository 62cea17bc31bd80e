"""The property table (SPEC §7): each property a small registered unit.

A :class:`Property` is a name (as ``--properties``/``--skip`` write it), a
one-line summary (the docs' table and ``--help``), and ``check(ctx)``, which
yields one or more :class:`Verdict` values (``dtypes`` one per dtype, ``opcheck``
one per torch test). Adding a property is one module with its function, plus
one line in :data:`PROPERTIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from ..core.errors import UsageError
from . import (compiled, determinism, grad_output, gradient, metadata, opcheck, precision, saved, second, shapes,
               tangent, transforms)
from .report import Verdict


@dataclass(frozen=True)
class Property:
    name: str
    summary: str
    check: Callable[..., Verdict | Iterable[Verdict]]
    title: str = ""  # SPEC §7's words for it, where they differ from the name

    @property
    def heading(self) -> str:
        return self.title or self.name


PROPERTIES = (
    Property("gradient", "vᵀJ from backward against fd (probes, the full Jacobian when small), Taylor order 2",
             gradient.check),
    Property("non-contiguous", "transposed, expanded (stride 0), sliced and channels-last grad_outputs give "
             "the gradient a contiguous one gives", grad_output.noncontiguous, "non-contiguous grad_output"),
    Property("grad-output-untouched", "backward does not modify its grad_output in place",
             grad_output.untouched, "grad_output untouched"),
    Property("inputs-untouched", "forward and backward leave the inputs alone; an input or output modified "
             "in place after forward raises or leaves the gradient right (saved tensors honest)", saved.check,
             "inputs untouched, saved tensors honest"),
    Property("zero-grad-output", "a zero grad_output gives a zero gradient; an undefined (None) one does not crash",
             grad_output.zero_and_undefined, "zero and undefined grad_output"),
    Property("gradient-metadata", "each gradient has its input's shape, dtype and device", metadata.check,
             "gradient metadata"),
    Property("double-backward", "the gradient of vᵀJ against fd of the gradient, or once_differentiable "
             "declared", second.check, "double backward"),
    Property("forward-mode", "jvp against fd, where the Function defines jvp", tangent.check, "forward mode"),
    Property("torch-func", "torch.func grad, vjp, jacrev and vmap(grad) run and agree with the loop",
             transforms.torch_func, "torch.func"),
    Property("batched", "vmap over a batch of inputs equals the loop over them", transforms.batched),
    Property("dtypes", "each of --dtypes: the error against the float64 value within a few times the "
             "reference's error in that dtype", precision.dtypes),
    Property("autocast", "under CPU autocast (bfloat16) the gradient is within the bfloat16 measuring stick",
             precision.autocast),
    Property("compile", "the gradient of torch.compile(f) against fd", compiled.check),
    Property("determinism", "--runs backward passes give identical gradients (or within --nondet-tol)",
             determinism.check),
    Property("shapes", "0-element, 1-element and scalar inputs, where the op accepts them", shapes.check),
    Property("opcheck", "custom ops: torch.library.opcheck's schema, autograd registration, fake tensor and "
             "AOT dispatch tests, a row each", opcheck.check),
)

NAMES = tuple(p.name for p in PROPERTIES)


def select(only: Iterable[str] | str | None = None, skip_names: Iterable[str] | str | None = None) -> list[Property]:
    """``--properties LIST`` (None: all) less ``--skip LIST``; names as :data:`NAMES`, comma-separated or a list."""
    chosen = _names(only, "properties") if only is not None else list(NAMES)
    dropped = set(_names(skip_names, "skip")) if skip_names is not None else set()
    wanted = [n for n in chosen if n not in dropped]
    if not wanted:
        raise UsageError("--skip: every property is skipped; leave at least one (--properties lists them: "
                         f"{', '.join(NAMES)})")
    return [p for p in PROPERTIES if p.name in wanted]


def _names(value, option: str) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in items if str(n).strip()]
    if not names:
        raise UsageError(f"--{option}: empty; give property names separated by commas, e.g. gradient,dtypes")
    for n in names:
        if n not in NAMES:
            import difflib

            close = difflib.get_close_matches(n, NAMES, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise UsageError(f"--{option}: unknown property {n!r}; {hint}the properties are {', '.join(NAMES)}")
    return names
