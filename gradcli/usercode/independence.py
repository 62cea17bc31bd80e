"""Do the samples of a batch interact in the user's code? Per-sample blocks
``d out[b] / d x[b]`` are the whole Jacobian only when ``d out[i] / d x[j] = 0``
for ``i != j``; this module checks it cheaply before blocks are trusted, and
decides ``--layout auto`` for user code.

The check runs the code on the first, the middle and the last sample as a
batch of three (the whole batch where they alone do not give their outputs
in it) and takes one classic backward pass for each, with a random cotangent on that
sample's output: the gradient that reaches the other sample's input is
exactly zero when the samples do not interact (each output entry's graph
never touches the other sample), and non-zero for almost every cotangent
when they do (batch norm in training mode).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import UsageError
from .precision import note, working_eps
from .training import interaction_message

ROWS = 3


def cross_sample(bound, rows: int = ROWS) -> tuple[list[int], float, float]:
    """``(checked, cross, scale)``: for the samples ``i`` in ``checked`` (the first,
    the middle and the last, at most ``rows``), the gradient of ``<v_i, out[i]>`` (random ``v_i``)
    w.r.t. the whole batch; ``cross`` is its largest entry on another sample,
    ``scale`` on sample ``i``.

    The checked samples run as a batch of their own (every per-sample argument
    sliced alike, :func:`gradcli.rows.batch_rows`): the check then costs a small
    fraction of one pass over a large batch, and an interaction through the batch
    (a batch statistic, a sum along it) couples them as it couples the whole
    batch. That holds only where the samples alone give the outputs they have
    in the whole batch: an interaction between other positions (a shift by three,
    ``torch.roll(x, 3, 0)``, or one among interior samples only) changes the
    outputs of the small batch, or vanishes from it. So the small batch is
    trusted only when its outputs equal the whole batch's
    (:func:`gradcli.rows.output_gap`); else, and for code that refuses a batch
    of that size (a model exported for one batch size), the check runs on the
    whole batch."""
    import torch

    from ..core.rows import batch_rows, output_gap

    b = bound.args["input"].shape[0]
    checked = sorted({0, b // 2, b - 1})[:rows]
    whole = getattr(bound, "value", None)  # the whole batch's output, from bind
    if len(checked) < b and whole is not None:
        try:
            cross, scale, out = _cross(torch, bound, batch_rows(bound.args, checked), range(len(checked)))
        except Exception:  # noqa: BLE001 (the code's own failure shows again on the whole batch)
            out = None
        if out is not None and output_gap(whole[checked], out) is None:
            return checked, cross, scale
    return checked, *_cross(torch, bound, bound.args, checked)[:2]


def _cross(torch, bound, args, picks) -> tuple[float, float, np.ndarray]:
    """``(cross, scale, output)`` of :func:`cross_sample` on the batch ``args`` for its samples ``picks``."""
    tensors = {name: torch.from_numpy(np.array(a)) for name, a in args.items()}
    xt = tensors["input"].requires_grad_(True)
    with torch.enable_grad():
        out = bound.function.call(tensors)
    rng = np.random.default_rng(0)
    cross = scale = 0.0
    for i in picks if out.requires_grad else ():  # else a constant: nothing reaches any sample
        v = torch.zeros_like(out)
        v[i] = torch.from_numpy(rng.standard_normal(out.shape[1:])).to(out.dtype)
        (g,) = torch.autograd.grad(out, xt, v, retain_graph=True, allow_unused=True)
        if g is None:
            continue
        g = g.detach().abs().reshape(g.shape[0], -1)
        scale = max(scale, float(g[i].max()))
        others = torch.cat([g[:i], g[i + 1:]])
        cross = max(cross, float(others.max()) if others.numel() else 0.0)
    return cross, scale, out.detach().cpu().numpy()


def interacts(bound) -> tuple[bool, str]:
    """``(True, why)`` when the first samples interact, else ``(False, note)``."""
    checked, cross, scale = cross_sample(bound)
    if len(checked) < 2:
        return False, "--verify-blocks: one sample only, nothing to verify"
    dtype = bound.args["input"].dtype
    eps = float(np.finfo(dtype).eps)
    named = ", ".join(map(str, checked[:-1])) + f" and {checked[-1]}"
    if cross <= 100 * eps * max(scale, np.finfo(dtype).tiny):
        return False, f"--verify-blocks: samples do not interact (checked from samples {named}: every cross-sample " \
                      "derivative is 0)"
    # code that rounds inside (a float32 cast) may leave a cross-sample derivative at its own rounding level
    found = _working_eps(bound)
    if found > eps and cross <= 100 * found * scale:
        return False, (f"--verify-blocks: samples do not interact (checked from samples {named}: every cross-sample "
                       f"derivative is within your code's rounding); {note(found, eps, dtype, '--verify-blocks')}")
    return True, f" (a cross-sample derivative of {cross:.2e}, --verify-blocks)"


def _working_eps(bound) -> float:
    import torch

    tensors = {name: torch.from_numpy(np.array(a)) for name, a in bound.args.items()}
    return working_eps(bound.function, tensors, bound.args["input"].dtype)


def verify_blocks(bound) -> str:
    """Per-sample blocks were asked for: refuse (exit 2) if samples interact, else a note."""
    found, text = interacts(bound)
    if found:
        raise UsageError(interaction_message(bound.function.modes, text))
    return text


def auto_blocks(bound, verify: bool) -> tuple[bool, str]:
    """``--layout auto`` for user code: ``(True, note)`` for per-sample blocks
    when the output's first dim is the input's batch dim and the samples do not
    interact; ``(False, why)`` for the full Jacobian."""
    x_shape, out_shape = bound.args["input"].shape, bound.output_shape
    if len(x_shape) < 2 or not out_shape or out_shape[0] != x_shape[0]:
        return False, (f"layout auto: full, since the output {list(out_shape)} does not keep the input's batch dim "
                       f"{list(x_shape[:1])} first (per-sample blocks need output (B, ...) of input (B, ...))")
    modes = bound.function.modes
    if modes and modes.coupling:
        return False, (f"layout auto: full, since {', '.join(modes.coupling)} in training mode make(s) samples "
                       "interact; call .eval() in your file for per-sample blocks")
    if not verify:
        return True, "layout auto: per-sample blocks (not verified: --no-verify-blocks)"
    found, text = interacts(bound)
    if found:
        return False, f"layout auto: full, since samples interact{text}"
    return True, "layout auto: per-sample blocks, since " + text.split(": ", 1)[1]
