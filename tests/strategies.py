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
