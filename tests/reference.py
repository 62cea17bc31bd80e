"""Independent torch references for the tests: the torch call written out
here (not gradcli's catalogue), differentiated with torch.autograd."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# expr: texts used by the tests, written out as torch code.
EXPRESSIONS = {
    "(x+1)**2": lambda x: (x + 1) ** 2,
    "sin(x)*exp(-x**2/2)": lambda x: torch.sin(x) * torch.exp(-x**2 / 2),
    "sigmoid(x) - abs(x)/3": lambda x: torch.sigmoid(x) - torch.abs(x) / 3,
    "log(1 + x**2)": lambda x: torch.log(1 + x**2),
    "tanh(2*x) + 0.5*x": lambda x: torch.tanh(2 * x) + 0.5 * x,
    "log(x)": lambda x: torch.log(x),
    "x/(1+x**2)": lambda x: x / (1 + x**2),
}
STAGE_ARRAYS = {"linear": ("weight", "bias"), "cross_entropy": ("target", "class_weight"), "nll_loss": ("target", "class_weight"),
                "binary_cross_entropy_with_logits": ("target", "pos_weight")}


def call(name: str, args: dict, params: dict):
    """The torch function ``name`` on tensors ``args`` with ``params``; a chain
    ``a,b`` is b(a(input)) with each stage taking the arrays it knows."""
    if "," in name:
        z = args["input"]
        for stage in name.split(","):
            known = STAGE_ARRAYS.get(stage, ("target",))
            z = call(stage, {"input": z, **{k: v for k, v in args.items() if k in known}}, params)
        return z
    x = args["input"]
    if name.startswith("expr:"):
        return EXPRESSIONS[name[5:]](x)
    if name in ("sigmoid", "tanh", "relu", "exp", "log"):
        return getattr(torch, name)(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "softplus":
        return F.softplus(x, beta=params.get("beta", 1.0), threshold=params.get("threshold", 20.0))
    if name == "linear":
        return F.linear(x, args["weight"], args.get("bias"))
    red = params.get("reduction", "mean")
    if name in ("mse_loss", "l1_loss"):
        return getattr(F, name)(x, args["target"], reduction=red)
    if name == "smooth_l1_loss":
        return F.smooth_l1_loss(x, args["target"], reduction=red, beta=params.get("beta", 1.0))
    if name == "huber_loss":
        return F.huber_loss(x, args["target"], reduction=red, delta=params.get("delta", 1.0))
    if name == "binary_cross_entropy_with_logits":
        return F.binary_cross_entropy_with_logits(x, args["target"], pos_weight=args.get("pos_weight"), reduction=red)
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy(x, args["target"], reduction=red)
    if name == "kl_div":
        return F.kl_div(x, args["target"], reduction=red, log_target=params.get("log_target", False))
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


def full_hessian(name, arrays, params, wrt="input", dtype="float64") -> np.ndarray:
    """``torch.func.hessian`` (forward over reverse): ``output_shape + wrt_shape + wrt_shape``.
    Where torch has no forward-mode formula for an op's backward, torch's reverse-over-reverse
    ``torch.autograd.functional`` does the same job."""
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    try:
        return torch.func.hessian(f)(x).detach().numpy()
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jacobian(
            lambda z: torch.autograd.functional.jacobian(f, z, create_graph=True), x).detach().numpy()


def hvp(name, arrays, params, tangent, wrt="input", dtype="float64") -> np.ndarray:
    """``torch.autograd.functional.hvp`` of a scalar output."""
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    return torch.autograd.functional.hvp(f, x, torch.tensor(np.asarray(tangent), dtype=x.dtype))[1].numpy()
