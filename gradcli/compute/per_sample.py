"""``grad --per-sample``: each sample's gradient of a loss w.r.t. module
parameters, ``(B, *param_shape)`` per parameter, or with ``--norms`` only each
sample's gradient norm ``(B,)`` over every ``--wrt`` and the top K samples.

Validation here (a module loss returning one number, samples that do not
interact, the result within ``--max-memory``); the torch computation in
:mod:`gradcli.backends.samplegrads`. Library::

    res = gradcli.per_sample_grad("model.py:loss", input=x, target=t, wrt="param:*", norms=True)
    res.norms, res.top
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..core.errors import UsageError
from ..problem.plan import DEFAULT_MAX_MEMORY
from ..core.sizes import format_bytes
from ..problem.problem import Problem
from ..core.results import frozen


@dataclass(frozen=True)
class SampleGrads:
    """``grads``: parameter name -> ``(B, *shape)`` (None with ``--norms``);
    ``norms``: ``(B,)``, each sample's gradient norm over every parameter
    asked for; ``top``: ``(sample, norm)`` of the largest norms; ``method``:
    how the norms were computed."""

    function: str
    wrt: tuple[str, ...]
    shapes: Mapping[str, tuple[int, ...]]
    dtype: str
    input_shape: tuple[int, ...]
    norms: np.ndarray
    top: tuple[tuple[int, float], ...]
    method: str
    notes: tuple[str, ...]
    seconds: float
    grads: Mapping[str, np.ndarray] | None = field(default=None)


def per_sample_gradients(problem: Problem, wrt: str, *, norms: bool = False, top: int = 5,
                         max_memory: int = DEFAULT_MAX_MEMORY, verify_blocks: bool = True) -> SampleGrads:
    """Per-sample gradients (or norms) of ``problem``'s scalar loss w.r.t. the
    module parameters ``wrt`` names (comma-separated ``param:NAME`` and globs).

    ``verify_blocks``: refuse when samples interact, as far as three checks
    see: the batch loss must be the sum or the mean of the per-sample losses
    (values); with the layer shortcut, samples 0, B // 2 and B-1 must have the
    same layer inputs and output gradients in the batch as alone; with the
    definition, the sum
    of the per-sample gradients (times the mean's 1/B) must be the batch's
    gradient. An interaction that leaves all three unchanged goes unseen."""
    from .per_sample_torch import (by_activations, decomposition, exact, grads_from, layer_terms, norms_from,
                                       reduction_scale, select_parameters, shortcut_gap, squared_norms, sum_gap,
                                       top_samples)
    from ..backends.torchbase import import_torch, torch_errors
    from ..usercode.precision import PARAMETERS, note, working_eps

    torch = import_torch()
    function = problem.function
    module = getattr(function, "module", None)
    if module is None:
        raise UsageError("--per-sample: needs your loss as a torch.nn.Module (PATH.py:NAME), whose parameters "
                         "--wrt param:NAME names")
    if problem.output_shape != ():
        raise UsageError(f"--per-sample: {function.name} returns shape {list(problem.output_shape)}; it must return "
                         "the batch's loss as one number (a mean or a sum over samples)")
    x = problem.args["input"]
    if x.ndim == 0:
        raise UsageError("--per-sample: the input has no batch dim; give (B, ...)")
    modes = function.modes
    if modes and modes.coupling:
        raise UsageError(f"--per-sample: samples interact through {', '.join(modes.coupling)} in training mode, so a "
                         "sample's loss on a batch of one is not its share of the batch; call .eval() in your file")
    names = select_parameters(module, [w.strip() for w in wrt.split(",") if w.strip()])
    shapes = {n: tuple(p.shape) for n, p in module.named_parameters() if n in names}
    b = x.shape[0]
    nbytes = b * sum(math.prod(s) for s in shapes.values()) * problem.dtype.itemsize
    if not norms and nbytes > max_memory:
        raise UsageError(f"--max-memory: per-sample gradients {b} x {sum(math.prod(s) for s in shapes.values())} "
                         f"need {format_bytes(nbytes)}, over the limit of {format_bytes(max_memory)}; add --norms "
                         "(only each sample's norm), narrow --wrt, or raise --max-memory")
    notes = list(modes.notes(function.seed)) if modes else []
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in problem.args.items()}
    # Dropout in training mode draws other masks on a batch of one, so neither the loss's value nor its
    # gradient can tell interacting samples from another mask: the definition, unchecked, with a note.
    verify = verify_blocks and not (modes and modes.random)
    start = time.perf_counter()
    grads = None
    eps = float(np.finfo(problem.dtype).eps)
    measured: list[float] = []  # the code's working precision, measured once where a check at eps would refuse

    def working() -> float:
        if not measured:
            measured.append(max(eps, working_eps(function, tensors, problem.dtype, PARAMETERS)))
        return measured[0]

    def beyond_rounding(gap: float, what: str) -> bool:
        """A gap (in units of a thousand roundings of eps) beyond the code's own rounding; a note
        where only the working precision explains it."""
        if gap <= 1:
            return False
        if gap * eps / working() > 1:
            return True
        notes.append(note(working(), eps, problem.dtype, f"--per-sample ({what})"))
        return False

    with torch_errors("autograd", module):
        scale, batch_loss, summed, size = decomposition(torch, function, tensors)
        if scale is None and verify and working() > eps:  # judged again at the code's own rounding
            scale = reduction_scale(batch_loss, summed, size, b, working())
            if scale is not None:
                notes.append(note(working(), eps, problem.dtype, "--per-sample (the loss is the batch's mean or sum)"))
        if scale is None and verify:
            raise UsageError(f"--per-sample: {function.name}'s batch loss is {batch_loss:.6g}, but its {b} samples' "
                             f"losses, each on a batch of one, sum to {summed:.6g} (mean {summed / b:.6g}): samples "
                             "interact (a batch statistic, a loss over pairs), the reduction is neither a sum nor a "
                             "mean, or dim 0 of --input is not the batch (a time-major (T, B, ...) nn.LSTM/GRU/"
                             "Transformer input: make the model batch-first); --no-verify-blocks takes each batch of "
                             "one's gradient anyway")
        # the shortcut only where its premise is checked: unverified, each gradient is its batch of one's
        fast = by_activations(torch, module, names) if scale is not None and verify else []
        use = fast and (norms or len(fast) == len(names))  # gradients: every parameter or none by activations
        terms = layer_terms(torch, function, tensors, fast, scale) if use else None
        if terms is not None and verify:
            gap, where = shortcut_gap(torch, function, tensors, fast, terms, sorted({0, b // 2, b - 1}))
            if beyond_rounding(gap, "each sample's layer inputs and output gradients"):
                raise _interaction(function.name, f"layer {where}'s output gradient")
        sums = {} if verify else None  # filled by the definition where it runs
        how: dict = {}  # filled by the definition: looped, where vmap cannot batch the code
        if norms and terms is not None and len(fast) < len(names):
            # Linear/Conv2d layers by their activations, the other parameters by the definition, in chunks
            rest = [n for n in names if n not in fast]
            squares = norms_from(torch, terms) + exact(torch, function, tensors, rest, norms_only=True,
                                                       budget=max_memory, sums=sums, how=how)
            by = "a loop over samples" if how.get("looped") else "vmap(grad(functional_call)) in chunks"
            method = (f"norms from activations and output gradients for {', '.join(fast)}, and by {by} for "
                      f"{', '.join(rest)}; no gradient formed whole")
        elif terms is not None and len(fast) == len(names):
            squares = norms_from(torch, terms)
            method = "norms from each layer's activations and output gradients (Linear/Conv2d), no gradient formed"
            if not norms:
                method = "gradients from each layer's activations and output gradients (Linear/Conv2d)"
                grads = {n: frozen(g) for n, g in grads_from(torch, function, terms, names).items()}
        else:
            got = exact(torch, function, tensors, names, norms_only=norms, budget=max_memory, sums=sums, how=how)
            method = ("computed by a loop of backward passes on batches of one (vmap cannot batch this code)"
                      if how.get("looped") else "computed by vmap(grad(functional_call)) over samples")
            if norms:
                squares = got
            else:
                grads = {n: frozen(got[n].detach().cpu().numpy()) for n in names}
                squares = squared_norms(torch, got.values())
        if sums:
            gap, where = sum_gap(torch, function, tensors, list(sums), sums, scale)
            if beyond_rounding(gap, "the per-sample gradients sum to the batch's"):
                raise _interaction(function.name, f"param:{where}'s gradient")
    if not verify:
        notes.append("samples' independence not checked (" + ("a random mask in training mode" if modes and
                     modes.random else "--no-verify-blocks") + "): each gradient is its batch of one's")
    values = frozen(squares.sqrt().detach().cpu().numpy())
    seconds = time.perf_counter() - start
    notes.append(f"per-sample gradients: sample b's is the gradient of the loss on the batch of one x[b:b+1] "
                 f"(the functorch recipe); {method}")
    return SampleGrads(function=function.name, wrt=tuple(f"param:{n}" for n in names), shapes=shapes,
                       dtype=str(problem.dtype), input_shape=tuple(x.shape), norms=values,
                       top=tuple(top_samples(values, top)), method=method, notes=tuple(notes), seconds=seconds,
                       grads=grads)


def _interaction(name: str, where: str) -> UsageError:
    return UsageError(f"--per-sample: samples interact in {name}: {where} in the batch differs from the one on a "
                      "batch of one, although the loss's value does not show it, so a sample's gradient is not its "
                      "share of the batch's; --no-verify-blocks takes each batch of one's gradient anyway")


def per_sample_grad(function: str, **kwargs: Any) -> SampleGrads:
    """The library's ``grad --per-sample``: the same keywords as ``gradcli.grad``
    with ``wrt`` naming parameters (``"param:*"``), plus ``norms`` and ``top``."""
    from .solve import library_call

    kwargs = dict(kwargs)
    wrt = kwargs.pop("wrt", "param:*")
    problem, _, run = library_call(function, kwargs, ("norms", "top", "max_memory", "verify_blocks"),
                                   differentiates_input=False)  # token ids stay integer, as in the CLI
    return per_sample_gradients(problem, wrt, **run)
