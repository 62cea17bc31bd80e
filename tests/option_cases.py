"""One deterministic sample per catalogue option (torch's OpInfo idea): every
family with each of its options set to a value other than the default, so
that a formula that ignores an option differs from torch in a known test,
not only when a hypothesis draw happens to reach it.

Each case is the dict the helpers of ``test_backends`` and ``test_hessian``
take: ``function``, ``arrays``, ``params``, ``wrt``.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(2024)


def _logits(*shape):
    return _rng.standard_normal(shape) * 1.5


def _probs(*shape, axis=-1):
    p = _rng.random(shape) + 0.1
    return p / p.sum(axis=axis, keepdims=True)


def case(function, arrays, wrt="input", **params):
    return {"function": function, "arrays": arrays, "params": params, "wrt": wrt}


WEIGHT3 = np.array([0.2, 1.0, 3.0])
X43 = _logits(4, 3)
PROBS43 = _probs(4, 3)
PAIRS = _logits(3, 2)  # inputs of the entry-by-entry losses
TARGETS = PAIRS + np.array([[0.1, -0.2], [0.6, -1.4], [-2.5, 0.35]])  # |x - t| on both sides of 0.3, 0.5, 1, 2
LOGPROBS43 = np.log(PROBS43)

CASES = {
    # cross_entropy: class weights, ignore_index, label smoothing, probability targets, reductions, K dims
    "ce-class-weight-mean": case("cross_entropy", {"input": X43, "target": np.array([0, 2, 1, 2]),
                                                   "class_weight": WEIGHT3}),
    "ce-ignore-index-weight": case("cross_entropy", {"input": X43, "target": np.array([0, 1, 2, 1]),
                                                     "class_weight": WEIGHT3}, ignore_index=1),
    "ce-smoothing-weight": case("cross_entropy", {"input": X43, "target": np.array([0, 2, 1, 2]),
                                                  "class_weight": WEIGHT3}, label_smoothing=0.1),
    "ce-smoothing-ignore-sum": case("cross_entropy", {"input": X43, "target": np.array([2, 0, 2, 1])},
                                    label_smoothing=0.2, ignore_index=2, reduction="sum"),
    "ce-probabilities-weight-smoothing": case("cross_entropy", {"input": X43, "target": PROBS43,
                                                                "class_weight": WEIGHT3}, label_smoothing=0.1),
    "ce-probabilities-wrt-target": case("cross_entropy", {"input": X43, "target": PROBS43,
                                                          "class_weight": WEIGHT3}, wrt="target", label_smoothing=0.1),
    "ce-unbatched": case("cross_entropy", {"input": _logits(4), "target": np.array(2), "class_weight": _rng.random(4) + 0.5},
                         label_smoothing=0.3),
    "ce-k-dims-none": case("cross_entropy", {"input": _logits(2, 3, 2), "target": np.array([[0, 2], [1, 1]]),
                                             "class_weight": WEIGHT3}, reduction="none"),
    # nll_loss
    "nll-weight-ignore": case("nll_loss", {"input": LOGPROBS43, "target": np.array([0, 2, 1, 0]),
                                           "class_weight": WEIGHT3}, ignore_index=0),
    # entry-by-entry losses, each option
    "bce-logits-pos-weight": case("binary_cross_entropy_with_logits",
                                  {"input": PAIRS, "target": _rng.random((3, 2)), "pos_weight": np.array([0.5, 3.0])}),
    "bce-logits-pos-weight-none": case("binary_cross_entropy_with_logits",
                                       {"input": PAIRS, "target": _rng.random((3, 2)), "pos_weight": np.array([2.0, 0.25])},
                                       reduction="none"),
    "bce-logits-pos-weight-wrt-target": case("binary_cross_entropy_with_logits",
                                             {"input": PAIRS, "target": _rng.random((3, 2)),
                                              "pos_weight": np.array([0.5, 3.0])}, wrt="target", reduction="sum"),
    "bce-probabilities": case("binary_cross_entropy", {"input": _rng.random((3, 2)) * 0.9 + 0.05,
                                                       "target": _rng.random((3, 2))}, reduction="sum"),
    "kl-div-log-target": case("kl_div", {"input": LOGPROBS43, "target": np.log(_probs(4, 3))},
                              reduction="batchmean", log_target=True),
    "kl-div-probabilities": case("kl_div", {"input": LOGPROBS43, "target": _probs(4, 3)}),
    "huber-delta": case("huber_loss", {"input": PAIRS, "target": TARGETS}, delta=0.3),
    "huber-delta-wrt-target": case("huber_loss", {"input": PAIRS, "target": TARGETS}, wrt="target", delta=2.0,
                                   reduction="sum"),
    "smooth-l1-beta": case("smooth_l1_loss", {"input": PAIRS, "target": TARGETS}, beta=0.5),
    "smooth-l1-beta-large": case("smooth_l1_loss", {"input": PAIRS, "target": TARGETS}, beta=2.0, reduction="none"),
    "mse-sum": case("mse_loss", {"input": PAIRS, "target": TARGETS}, reduction="sum"),
    "mse-none-wrt-target": case("mse_loss", {"input": PAIRS, "target": TARGETS}, wrt="target", reduction="none"),
    "l1-mean": case("l1_loss", {"input": PAIRS, "target": TARGETS}),
    "l1-wrt-target": case("l1_loss", {"input": PAIRS, "target": TARGETS}, wrt="target", reduction="sum"),
    "bce-probabilities-none": case("binary_cross_entropy", {"input": _rng.random((2, 3)) * 0.9 + 0.05,
                                                            "target": _rng.random((2, 3))}, reduction="none"),
    "kl-div-log-target-none": case("kl_div", {"input": LOGPROBS43, "target": np.log(_probs(4, 3))}, reduction="none",
                                   log_target=True),
    # linear and chains
    "linear-wrt-weight": case("linear", {"input": _logits(4, 3), "weight": _logits(2, 3), "bias": _logits(2)},
                              wrt="weight"),
    "linear-wrt-bias": case("linear", {"input": _logits(4, 3), "weight": _logits(2, 3), "bias": _logits(2)},
                            wrt="bias"),
    "linear-cross-entropy-wrt-weight": case("linear,cross_entropy", {"input": _logits(4, 3), "weight": _logits(3, 3),
                                                                     "target": np.array([0, 2, 1, 1])}, wrt="weight"),
    "sigmoid-mse-chain": case("sigmoid,mse_loss", {"input": PAIRS, "target": _rng.random((3, 2))}),
    "square-softmax-chain": case("expr:(x+1)**2,softmax", {"input": _logits(2, 3) * 0.5}),
    "tanh-log-softmax-chain": case("tanh,log_softmax", {"input": _logits(2, 3)}),
    # softmax family and elementwise functions with options
    "softmax-dim-0": case("softmax", {"input": _logits(3, 4)}, dim=0),
    "log-softmax": case("log_softmax", {"input": _logits(2, 4)}),
    "softplus-beta-threshold": case("softplus", {"input": np.array([-2.0, -0.3, 0.4, 1.2, 2.5])}, beta=2.0,
                                    threshold=3.0),
    "gelu": case("gelu", {"input": _logits(5)}),
    "sigmoid": case("sigmoid", {"input": _logits(2, 3)}),
    "tanh": case("tanh", {"input": _logits(2, 3)}),
    "exp": case("exp", {"input": _logits(5)}),
    "log": case("log", {"input": _rng.random(5) + 0.1}),
    "relu": case("relu", {"input": np.array([-1.5, -0.2, 0.3, 2.0])}),
    "expr-quotient": case("expr:x/(1+x**2)", {"input": _logits(5)}),
    "expr-product": case("expr:sin(x)*exp(-x**2/2)", {"input": _logits(5)}),
}
