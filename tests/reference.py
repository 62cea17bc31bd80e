"""Independent torch references for the tests: the torch call written out
here (not gradcli's catalogue), differentiated with torch.autograd."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def call(name: str, args: dict, params: dict):
    """The torch function ``name`` on tensors ``args`` with ``params``."""
    if name == "softmax":
        return torch.softmax(args["input"], dim=params.get("dim", -1))
    if name == "log_softmax":
        return torch.log_softmax(args["input"], dim=params.get("dim", -1))
    if name == "cross_entropy":
        return F.cross_entropy(args["input"], args["target"], weight=args.get("class_weight"),
                               ignore_index=params.get("ignore_index", -100), reduction=params.get("reduction", "mean"),
                               label_smoothing=params.get("label_smoothing", 0.0))
    if name == "nll_loss":
        return F.nll_loss(args["input"], args["target"], weight=args.get("class_weight"),
                          ignore_index=params.get("ignore_index", -100), reduction=params.get("reduction", "mean"))
    raise KeyError(name)


def _tensors(arrays: dict, dtype):
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        out[name] = torch.tensor(a, dtype=torch.int64) if a.dtype.kind in "iu" else torch.tensor(a, dtype=getattr(torch, dtype))
    return out


def function_of_wrt(name, arrays, params, wrt, dtype):
    tensors = _tensors(arrays, dtype)
    fixed = {k: v for k, v in tensors.items() if k != wrt}
    return (lambda x: call(name, {**fixed, wrt: x}, params)), tensors[wrt]


def full_jacobian(name, arrays, params, wrt="input", dtype="float64") -> np.ndarray:
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    return torch.autograd.functional.jacobian(f, x).numpy()


def output(name, arrays, params, wrt="input", dtype="float64") -> np.ndarray:
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    return f(x).detach().numpy()


def backward(name, arrays, params, wrt="input", dtype="float64", cotangent=None) -> np.ndarray:
    """What ``out.backward(v)`` accumulates in ``x.grad`` (v = ones by default)."""
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    x = x.clone().requires_grad_(True)
    out = f(x)
    v = torch.ones_like(out) if cotangent is None else torch.tensor(np.asarray(cotangent), dtype=out.dtype)
    out.backward(v)
    return x.grad.numpy()


def jvp(name, arrays, params, tangent, wrt="input", dtype="float64") -> np.ndarray:
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    return torch.autograd.functional.jvp(f, x, torch.tensor(np.asarray(tangent), dtype=x.dtype))[1].numpy()


def blocks_from_full(J: np.ndarray, in_shape, in_axis: int, out_axis: int | None) -> np.ndarray:
    """The per-row blocks read off a full Jacobian, one row at a time."""
    rows = in_shape[:in_axis] + in_shape[in_axis + 1:]
    out_ndim = J.ndim - len(in_shape)
    blocks = None
    for r in np.ndindex(*rows):
        in_index = r[:in_axis] + (slice(None),) + r[in_axis:]
        out_index = r if out_axis is None else r[:out_axis] + (slice(None),) + r[out_axis:]
        assert len(out_index) == out_ndim
        block = J[out_index + in_index]
        if blocks is None:
            blocks = np.zeros(rows + block.shape, dtype=J.dtype)
        blocks[r] = block
    return blocks
