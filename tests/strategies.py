"""Hypothesis strategies: problems over the catalogue's whole option space."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def arrays(draw, shape, scale=3.0):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).standard_normal(shape) * scale


@st.composite
def softmax_cases(draw):
    name = draw(st.sampled_from(["softmax", "log_softmax"]))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return {"function": name, "arrays": {"input": draw(arrays(shape))}, "params": {"dim": dim}, "wrt": "input"}


@st.composite
def class_loss_cases(draw, name=None):
    name = name or draw(st.sampled_from(["cross_entropy", "nll_loss"]))
    n_classes = draw(st.integers(2, 5))
    kind = draw(st.sampled_from(["unbatched", "batched", "spatial"]))
    shape = {"unbatched": (n_classes,), "batched": (draw(st.integers(1, 4)), n_classes),
             "spatial": (draw(st.integers(1, 3)), n_classes, *draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))}[kind]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape) * 3
    axis = 0 if len(shape) == 1 else 1
    rows = shape[:axis] + shape[axis + 1:]
    params = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    arrays_ = {"input": x}
    probabilities = name == "cross_entropy" and draw(st.booleans())
    if probabilities:
        p = rng.random(shape) + 0.01
        arrays_["target"] = p / p.sum(axis=axis, keepdims=True)
    else:
        y = rng.integers(0, n_classes, size=rows)
        ignore = draw(st.sampled_from([-100, -1, 0]))
        if ignore != -100:
            params["ignore_index"] = ignore
        if y.size > 1 and draw(st.booleans()):  # some rows ignored, never all of them
            y.flat[0] = ignore
        arrays_["target"] = y
    if name == "nll_loss":
        arrays_["input"] = x - np.log(np.exp(x).sum(axis=axis, keepdims=True))  # log-probabilities
    if name == "cross_entropy" and draw(st.booleans()):
        params["label_smoothing"] = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    if draw(st.booleans()):
        arrays_["class_weight"] = rng.random(n_classes) + 0.1
    wrt = draw(st.sampled_from(["input", "target"])) if probabilities else "input"
    return {"function": name, "arrays": arrays_, "params": params, "wrt": wrt}


def cases():
    return st.one_of(softmax_cases(), class_loss_cases())


def _shape(draw, min_dims=1, max_dims=3):
    return tuple(draw(st.lists(st.integers(1, 4), min_size=min_dims, max_size=max_dims)))


@st.composite
def elementwise_cases(draw):
    from reference import EXPRESSIONS

    names = ["sigmoid", "tanh", "relu", "exp", "log", "gelu", "softplus"] + ["expr:" + e for e in EXPRESSIONS]
    name = draw(st.sampled_from(names))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(_shape(draw, 0, 3)) * 2
    params = {}
    if name == "softplus":  # torch's beta and threshold, the linear branch included
        params = {"beta": draw(st.sampled_from([1.0, 0.5, 3.0])), "threshold": draw(st.sampled_from([20.0, 1.0, 0.5]))}
        x = np.where(np.abs(params["beta"] * x - params["threshold"]) < 1e-3, x + 0.01, x)  # off the switch point
    if "log" in name and "1 + x" not in name:
        x = np.abs(x) + 0.1  # log's domain
    if name == "relu":
        x = np.where(np.abs(x) < 1e-3, 0.5, x)  # keep off the kink: torch's convention is tested separately
    return {"function": name, "arrays": {"input": x}, "params": params, "wrt": "input"}


@st.composite
def pointwise_loss_cases(draw):
    name = draw(st.sampled_from(["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy_with_logits",
                                 "binary_cross_entropy", "kl_div"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = _shape(draw, 1 if name == "kl_div" else 0, 3)
    x, t = rng.standard_normal(shape) * 2, rng.standard_normal(shape) * 2
    params = {"reduction": draw(st.sampled_from(["mean", "sum", "none"] + (["batchmean"] if name == "kl_div" else [])))}
    arrays_ = {"input": x, "target": t}
    if name in ("binary_cross_entropy_with_logits", "binary_cross_entropy"):
        arrays_["target"] = rng.random(shape)
    if name == "binary_cross_entropy":
        arrays_["input"] = rng.random(shape) * 0.9 + 0.05
    if name == "binary_cross_entropy_with_logits" and shape and draw(st.booleans()):
        arrays_["pos_weight"] = rng.random(shape[-1]) + 0.5
    if name == "smooth_l1_loss":
        params["beta"] = draw(st.sampled_from([1.0, 0.5, 2.0]))
    if name == "huber_loss":
        params["delta"] = draw(st.sampled_from([1.0, 0.3, 2.5]))
    if name == "kl_div":
        params["log_target"] = draw(st.booleans())
        p = rng.random(shape) + 0.05
        arrays_["target"] = np.log(p) if params["log_target"] else p
    differentiable_target = name in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "binary_cross_entropy_with_logits")
    wrt = draw(st.sampled_from(["input", "target"])) if differentiable_target else "input"
    if name in ("l1_loss", "smooth_l1_loss", "huber_loss"):
        # Off the kink (x = t) and off the switch from quadratic to linear (|x - t| = beta or delta), where the
        # second derivative jumps and finite differences lose their order: torch's convention is tested separately.
        switch = params.get("beta", params.get("delta", 0.0))
        d = np.abs(arrays_["input"] - arrays_["target"])
        near = (d < 0.05) | (np.abs(d - switch) < 0.05)
        arrays_["target"] = np.where(near, arrays_["target"] + 0.2, arrays_["target"])
    return {"function": name, "arrays": arrays_, "params": params, "wrt": wrt}


@st.composite
def linear_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(2, 4))
    lead = _shape(draw, 0, 2)
    tail = draw(st.sampled_from(["", "cross_entropy", "softmax", "log_softmax", "expr:tanh(2*x) + 0.5*x", "mse_loss",
                                 "sigmoid,binary_cross_entropy_with_logits"]))
    if tail == "cross_entropy" and len(lead) != 1:
        lead = (draw(st.integers(1, 4)),)
    arrays_ = {"input": rng.standard_normal(lead + (n_in,)), "weight": rng.standard_normal((n_out, n_in))}
    if draw(st.booleans()):
        arrays_["bias"] = rng.standard_normal(n_out)
    params = {}
    out_shape = lead + (n_out,)
    if tail == "cross_entropy":
        arrays_["target"] = rng.integers(0, n_out, size=lead)
        params["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    elif tail in ("mse_loss", "sigmoid,binary_cross_entropy_with_logits"):
        arrays_["target"] = rng.random(out_shape)
        params["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    name = "linear" + ("," + tail if tail else "")
    wrt = draw(st.sampled_from([w for w in ("input", "weight", "bias") if w in arrays_]))
    return {"function": name, "arrays": arrays_, "params": params, "wrt": wrt}


@st.composite
def chain_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (draw(st.integers(1, 3)), draw(st.integers(2, 4)))
    name = draw(st.sampled_from(["softmax,expr:log(x)", "expr:(x+1)**2,softmax", "tanh,log_softmax", "log_softmax,nll_loss",
                                 "sigmoid,mse_loss", "exp,sigmoid"]))
    arrays_ = {"input": rng.standard_normal(shape)}
    params = {}
    if name == "log_softmax,nll_loss":
        arrays_["target"] = rng.integers(0, shape[1], size=shape[0])
        params["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    if name == "sigmoid,mse_loss":
        arrays_["target"] = rng.random(shape)
        params["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    return {"function": name, "arrays": arrays_, "params": params, "wrt": "input"}
