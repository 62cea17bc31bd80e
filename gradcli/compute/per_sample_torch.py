"""Per-sample gradients of a loss w.r.t. a module's parameters, and their norms.

The definition (the functorch recipe): sample ``b``'s gradient is the
gradient of the loss evaluated on a batch of one,

    g_b = grad_theta  L(x[b:b+1], t[b:b+1]; theta),

computed as ``vmap(grad(functional_call))`` over the batch, in chunks of
samples sized to ``--max-memory``.

Norms without the gradients (Opacus, BackPACK): when the batch loss is
``L = c * sum_b l_b`` (``c = 1`` for a sum, ``1/B`` for a mean; checked on the
values, :func:`decomposition`, and on samples 0, B // 2 and B-1, :func:`shortcut_gap`)
and every parameter asked for is a ``Linear`` or ``Conv2d`` weight or
bias, one forward and one backward pass of the batch give each layer's input
``a`` and output gradient ``e = dL/dz``; sample b's gradient is
``W_b = (1/c) e_b^T a_b`` (summed over positions ``p``: a sequence's tokens,
a convolution's output pixels after unfolding its input), so

    ||W_b||^2 = (1/c^2) sum_{p,q} (e_bp . e_bq)(a_bp . a_bq)   (or ||e_b||^2 ||a_b||^2 with one position)
    ||bias_b||^2 = (1/c^2) ||sum_p e_bp||^2

whichever of this and forming ``W_b`` one sample at a time is cheaper. For
norms, the parameters of other layers use the definition in chunks of
samples, keeping only their squared norms; the gradients themselves take the
shortcut only when every parameter asked for allows it. A loss that does not
decompose uses the definition throughout.
"""

from __future__ import annotations

import fnmatch
import math

import numpy as np

from ..core.errors import UsageError
from ..backends.memory import DEFAULT_BUDGET


def select_parameters(module, patterns: list[str]) -> list[str]:
    """``param:NAME`` entries and globs (``param:*``, ``param:fc.*``) -> parameter names, in module order."""
    names = [n for n, p in module.named_parameters()]
    chosen: list[str] = []
    for pattern in patterns:
        if not pattern.startswith("param:"):
            raise UsageError(f"--wrt {pattern}: --per-sample differentiates module parameters; give param:NAME or "
                             "a glob such as 'param:*'")
        hits = fnmatch.filter(names, pattern[len("param:"):])
        if not hits:
            raise UsageError(f"--wrt {pattern}: no parameter matches; the module has {', '.join(names) or 'none'}")
        chosen += [h for h in hits if h not in chosen]
    return [n for n in names if n in chosen]


def batched(args: dict, batch: int) -> dict[str, bool]:
    """Which arguments carry the batch on dim 0 (split per sample); the rest are shared."""
    return {k: k == "input" or (v.ndim > 0 and v.shape[0] == batch) for k, v in args.items()}


def exact(torch, function, args: dict, names: list[str], *, norms_only: bool, budget: int | None,
          sums: dict | None = None, how: dict | None = None):
    """The definition, ``vmap(grad(functional_call))`` over chunks of samples.
    Returns ``{name: (B, *shape)}``, or ``(B,)`` squared norms when ``norms_only``;
    ``sums`` (a dict, filled when given) gets ``name: (sum_b g_b, sum_b |g_b|)``,
    for :func:`sum_gap`; ``how`` gets ``looped: True`` where vmap could not
    batch the code and a loop over samples ran instead."""
    module = function.module
    params = {n: p.detach() for n, p in module.named_parameters() if n in names}
    split = batched(args, args["input"].shape[0])
    keys = list(args)

    def loss(theta, *values):
        one = {k: (v.unsqueeze(0) if split[k] else v) for k, v in zip(keys, values)}
        return function.call({**one, **{f"param:{n}": p for n, p in theta.items()}})

    vmapped = torch.func.vmap(torch.func.grad(loss), in_dims=(None, *[0 if split[k] else None for k in keys]),
                              randomness="same")

    def looped(theta, *values):  # one classic backward pass per sample
        if how is not None:
            how["looped"] = True
        theta = {n: p.detach().requires_grad_(True) for n, p in theta.items()}
        rows = []
        for i in range(values[keys.index("input")].shape[0]):
            with torch.enable_grad():
                value = loss(theta, *[v[i] if split[k] else v for k, v in zip(keys, values)])
                rows.append(torch.autograd.grad(value, list(theta.values()), allow_unused=True))
        return {n: torch.stack([torch.zeros_like(p) if r[j] is None else r[j] for r in rows])
                for j, (n, p) in enumerate(theta.items())}

    def grad(theta, *values):
        return vmapped_or_looped(vmapped, looped, theta, *values)

    b = args["input"].shape[0]
    per_sample = sum(p.numel() for p in params.values()) * args["input"].element_size()
    # Each sample's gradients, plus its share of activations (about three copies of its input, a guess
    # kept conservative by the budget's margin).
    chunk = b if not norms_only else max(1, min(b, int((budget or DEFAULT_BUDGET) // (4 * per_sample + 1))))
    out: dict[str, list] = {n: [] for n in names}
    squares = []
    for start in range(0, b, chunk):
        values = [args[k][start:start + chunk] if split[k] else args[k] for k in keys]
        got = grad(params, *values)
        if sums is not None:
            got = {n: g.detach() for n, g in got.items()}
            for n in names:
                total, size = sums.get(n, (0, 0))
                sums[n] = (total + got[n].sum(0), size + got[n].abs().sum(0))
        if norms_only:
            squares.append(squared_norms(torch, got.values()))
        else:
            for n in names:
                out[n].append(got[n])
    if norms_only:
        return torch.cat(squares)
    return {n: v[0] if len(v) == 1 else torch.cat(v) for n, v in out.items()}


def vmapped_or_looped(vmapped, looped, *args):
    """``vmapped(*args)``, or the same by a loop over samples where torch.func
    cannot batch the code (an op without a batching rule, such as ``aten::lstm``,
    which fails in vmap with one error or another): the loop raises the code's
    real error, if it has one."""
    from ..core.errors import UserCodeError

    try:
        return vmapped(*args)
    except (RuntimeError, UserCodeError):
        return looped(*args)


def squared_norms(torch, grads):
    """``sum over tensors of ||g[b]||^2`` per sample, without a temporary the size of ``g``."""
    return sum(_squares(torch, g) for g in grads)


def by_activations(torch, module, names: list[str]) -> list[str]:
    """The parameters in ``names`` that belong to a layer the shortcut handles."""
    owners = {}
    for mname, sub in module.named_modules():
        for pname, _ in sub.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = sub
    return [n for n in names if _supported(torch, owners[n])]


def layer_terms(torch, function, args: dict, names: list[str], scale: float):
    """One forward and one backward pass of the batch with hooks on the layers
    that own ``names``: ``[(layer, its parameter names, a, e)]`` with ``a``
    ``(B, P, in)`` and ``e`` ``(B, P, out)`` the per-sample output gradient
    ``dL/dz / c`` (``c = scale``, :func:`decomposition`); None where the
    shortcut does not apply (another layer type, a layer used twice)."""
    module = function.module
    owners = {}
    for mname, sub in module.named_modules():
        for pname, _ in sub.named_parameters(recurse=False):
            owners[f"{mname}.{pname}" if mname else pname] = (mname, sub, pname)
    layers: dict[str, tuple] = {}
    for n in names:
        mname, sub, pname = owners[n]
        if not _supported(torch, sub):
            return None
        layers.setdefault(mname, (sub, []))[1].append(pname)
    seen: dict[str, list] = {m: [] for m in layers}
    handles = [sub.register_forward_hook(lambda mod, inputs, output, m=m: seen[m].append((inputs[0].detach(), output)))
               for m, (sub, _) in layers.items()]
    try:
        with torch.enable_grad():
            total = function.call(args)
    finally:
        for h in handles:
            h.remove()
    if total.ndim or any(len(v) != 1 for v in seen.values()):
        return None  # a layer used twice (shared weights) or a loss that is not one number
    outputs = [seen[m][0][1] for m in layers]
    # seeded with 1/c, so that every layer's output gradient arrives divided by c
    grads = torch.autograd.grad(total, outputs, grad_outputs=torch.full_like(total, 1 / scale), allow_unused=True)
    terms = []
    for (m, (sub, pnames)), out, g in zip(layers.items(), outputs, grads):
        g = torch.zeros_like(out) if g is None else g
        terms.append((sub, pnames, *_positions(torch, sub, seen[m][0][0], g)))
    return terms


def norms_from(torch, terms):
    """Squared per-sample norms from :func:`layer_terms` (see the module docstring)."""
    squares = 0
    for _, pnames, a, e in terms:
        if a.shape[1] == 1:  # one position: ||e_b a_b^T||^2 + ||e_b||^2 = ||e_b||^2 (||a_b||^2 + 1), fewest passes
            weight = _squares(torch, a) if "weight" in pnames else 0
            squares = squares + _squares(torch, e) * (weight + float("bias" in pnames))
            continue
        if "weight" in pnames:
            squares = squares + _outer_norms(torch, e, a)
        if "bias" in pnames:
            squares = squares + _squares(torch, e.sum(1))
    return squares


def _squares(torch, t):
    """``||t[b]||^2`` per sample."""
    return torch.linalg.vector_norm(t.reshape(t.shape[0], -1), dim=1).square()


def grads_from(torch, function, terms, names: list[str]):
    """Per-sample gradients ``{name: (B, *shape)}`` as NumPy arrays, from
    :func:`layer_terms`: ``W_b = e_b^T a_b`` per layer (one batched matrix
    product each, ``(B, out, P) @ (B, P, in)``; a convolution's weight
    ``(B, Cout, Cin, kh, kw)`` seen as ``(B, Cout, Cin*kh*kw)``, unfold's
    column order) and ``bias_b = sum_p e_bp``.

    On the CPU each product is written straight into its final NumPy array:
    the gradients are the size of the whole computation (B times the
    parameters), and NumPy's allocation of a large array asks for huge pages,
    so filling it costs a fraction of first-touching torch's 4 KiB pages."""
    params = dict(function.module.named_parameters())
    prefix = {id(sub): name for name, sub in function.module.named_modules()}
    got = {}
    for sub, pnames, a, e in terms:
        for pname in pnames:
            name = f"{prefix[id(sub)]}.{pname}" if prefix[id(sub)] else pname
            shape = (e.shape[0],) + tuple(params[name].shape)
            on_cpu = e.device.type == "cpu"
            buffer = np.empty(shape, dtype=torch.empty((), dtype=e.dtype).numpy().dtype) if on_cpu else None
            out = torch.from_numpy(buffer) if on_cpu else torch.empty(shape, dtype=e.dtype, device=e.device)
            if pname == "weight" and e.shape[1] == 1:  # one position: an outer product, cheaper than bmm's
                torch.mul(e.transpose(1, 2), a, out=out.view(shape[0], shape[1], -1))
            elif pname == "weight":
                torch.bmm(e.transpose(1, 2), a, out=out.view(shape[0], shape[1], -1))
            else:
                torch.sum(e, 1, out=out)
            got[name] = buffer if on_cpu else out.cpu().numpy()
    return {n: got[n] for n in names}


def _supported(torch, sub) -> bool:
    if isinstance(sub, torch.nn.Linear):
        return True
    return isinstance(sub, torch.nn.Conv2d) and sub.groups == 1 and sub.padding_mode == "zeros" \
        and not isinstance(sub.padding, str)


def _positions(torch, sub, a, e):
    """Layer input and output gradient as ``(B, P, in)`` and ``(B, P, out)``."""
    b = a.shape[0]
    if isinstance(sub, torch.nn.Linear):
        return a.reshape(b, -1, a.shape[-1]), e.reshape(b, -1, e.shape[-1])
    cols = torch.nn.functional.unfold(a, sub.kernel_size, dilation=sub.dilation, padding=sub.padding,
                                      stride=sub.stride)  # (B, Cin*k*k, P)
    return cols.transpose(1, 2), e.reshape(b, e.shape[1], -1).transpose(1, 2)


def _outer_norms(torch, e, a):
    """``||sum_p e_bp a_bp^T||^2`` per sample: through the P x P Gram matrices when
    that is cheaper than forming each sample's out x in matrix."""
    b, p, n_in = a.shape
    n_out = e.shape[2]
    if p * p * (n_in + n_out) <= p * n_in * n_out:
        return (torch.bmm(e, e.transpose(1, 2)) * torch.bmm(a, a.transpose(1, 2))).sum((1, 2))
    return torch.stack([(e[i].T @ a[i]).square().sum() for i in range(b)])


def decomposition(torch, function, args) -> tuple[float | None, float, float, float]:
    """``(c, L, S, size)``: the batch loss ``L``, the sum ``S`` of the per-sample
    losses on batches of one, the sum of their sizes, and ``c`` with ``L = c * S``
    at this point (1 or 1/B; :func:`reduction_scale`), None when neither holds
    (samples interact, or another reduction)."""
    b = args["input"].shape[0]
    split = batched(args, b)
    keys = list(args)

    def one(*values):
        return function.call({k: (v.unsqueeze(0) if split[k] else v) for k, v in zip(keys, values)})

    def looped(*values):
        return torch.stack([one(*[v[i] if split[k] else v for k, v in zip(keys, values)])
                            for i in range(b)])

    with torch.no_grad():
        total = function.call(args)
        vmapped = torch.func.vmap(one, in_dims=tuple(0 if split[k] else None for k in keys), randomness="same")
        losses = vmapped_or_looped(vmapped, looped, *[args[k] for k in keys])
    value, summed, size = float(total), float(losses.sum()), float(losses.abs().sum())
    return reduction_scale(value, summed, size, b, float(torch.finfo(total.dtype).eps)), value, summed, size


def reduction_scale(value: float, summed: float, size: float, b: int, eps: float) -> float | None:
    """``c`` in ``{1, 1/B}`` with ``value = c * summed`` within a thousand roundings
    (``eps``: the dtype's, or the code's working precision) of the losses' size; None
    when neither holds."""
    tol = 1e3 * eps * max(1.0, size)
    return next((c for c in (1.0, 1.0 / b) if math.isclose(value, c * summed, rel_tol=0, abs_tol=tol)), None)


def _gap(torch, got, expected) -> float:
    """``max |got - expected|`` in units of a thousand roundings of the largest entry (> 1: they differ)."""
    scale = max(float(expected.abs().max()), float(got.abs().max())) if expected.numel() else 0.0
    if scale == 0.0:
        return 0.0
    return float((got - expected).abs().max()) / (1e3 * torch.finfo(expected.dtype).eps * scale)


def shortcut_gap(torch, function, args: dict, names: list[str], terms, samples: list[int]) -> tuple[float, str]:
    """The shortcut's premise checked on ``samples``: each one's layer input
    ``a_b`` and output gradient ``e_b`` in the batch (:func:`layer_terms`) must
    be those of its loss on a batch of one, else its ``e_b^T a_b`` is not its
    gradient (something couples samples without changing the loss's value).
    Returns the largest gap (see :func:`_gap`) and the layer it is in."""
    split = batched(args, args["input"].shape[0])
    worst = (0.0, "")
    for b in samples:
        alone = layer_terms(torch, function, {k: v[b:b + 1] if split[k] else v for k, v in args.items()}, names, 1.0)
        if alone is None:
            return float("inf"), "a layer"
        for (sub, pnames, a, e), (_, _, a1, e1) in zip(terms, alone):
            gap = max(_gap(torch, a[b:b + 1], a1), _gap(torch, e[b:b + 1], e1))
            if gap > worst[0]:
                worst = (gap, _layer_name(function.module, sub))
    return worst


def sum_gap(torch, function, args: dict, names: list[str], sums: dict, scale: float) -> tuple[float, str]:
    """``c * sum_b g_b`` (the definition's gradients, summed by :func:`exact`)
    against the batch loss's gradient, which it equals when samples do not
    interact; the largest gap, in units of a thousand roundings of the sum of
    the terms' sizes, and the parameter it is in."""
    params = dict(function.module.named_parameters())
    with torch.enable_grad():
        total = function.call(args)
        grads = torch.autograd.grad(total, [params[n] for n in names], allow_unused=True)
    worst = (0.0, "")
    for n, g in zip(names, grads):
        summed, size = sums[n]
        g = torch.zeros_like(summed) if g is None else g
        bound = 1e3 * torch.finfo(summed.dtype).eps * (scale * float(size.max()) + float(g.abs().max()))
        gap = float((scale * summed - g).abs().max()) / bound if bound else 0.0
        if gap > worst[0]:
            worst = (gap, n)
    return worst


def _layer_name(module, sub) -> str:
    return next((name for name, m in module.named_modules() if m is sub), "")


def top_samples(norms: np.ndarray, k: int) -> list[tuple[int, float]]:
    order = np.argsort(-norms, kind="stable")[:k]
    return [(int(i), float(norms[i])) for i in order]
