"""The torch reference, declared once per built-in, in the spirit of torch's OpInfo
database: each :class:`Ref` is the torch call written out here (not gradcli's
catalogue), its sample inputs (a hypothesis strategy) and what torch itself cannot
do for it (a backend or quantity with the reason), read by every test family.

Adding a built-in: its catalogue module, its registry line, and one ``Ref`` here.
The helpers at the end differentiate the torch call with torch.autograd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

FIRST, SECOND = "first", "second"  # the quantity groups a limit may name


@dataclass(frozen=True)
class Ref:
    """One built-in as torch has it.

    ``call(args, params)``: the torch function on tensors. ``arrays``: the array
    arguments it takes (a chain's stage gets these). ``family``: the test family whose
    strategy draws it; ``samples``: its own sample inputs (a strategy of cases
    ``{"function", "arrays", "params", "wrt"}``). ``limits``: ``(backend, FIRST|SECOND)``
    -> why gradcli must refuse there (torch cannot do it): the tests assert the clean
    refusal, never skip. ``composite``: the same function in differentiable torch ops,
    the reference where torch's own op has no second derivative.
    """

    name: str
    call: Callable[[dict, dict], torch.Tensor]
    arrays: tuple[str, ...]
    family: str
    samples: Callable[[], st.SearchStrategy]
    limits: dict[tuple[str, str], str] = field(default_factory=dict)
    composite: Callable[[dict, dict], torch.Tensor] | None = None


# --- sample inputs ------------------------------------------------------------------


@st.composite
def arrays(draw, shape, scale=3.0):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).standard_normal(shape) * scale


def _shape(draw, min_dims=1, max_dims=3):
    return tuple(draw(st.lists(st.integers(1, 4), min_size=min_dims, max_size=max_dims)))


@st.composite
def softmax_cases(draw, name):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return {"function": name, "arrays": {"input": draw(arrays(shape))}, "params": {"dim": dim}, "wrt": "input"}


@st.composite
def class_loss_cases(draw, name):
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


@st.composite
def multi_margin_cases(draw, name):
    n_classes = draw(st.integers(2, 5))
    shape = draw(st.sampled_from([(n_classes,), (draw(st.integers(1, 4)), n_classes)]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.standard_normal(shape)
    y = rng.integers(0, n_classes, size=shape[:-1])
    params = {"reduction": draw(st.sampled_from(["mean", "sum", "none"])), "p": draw(st.sampled_from([1, 2])),
              "margin": draw(st.sampled_from([1.0, 0.5, 2.0]))}
    # off the hinge's kink (a violation margin - x_y + x_c at 0, within the reach of fd's widest second-order
    # step): tested separately. The target's own entry has violation margin >= 0.5 and is never moved.
    picked = np.take_along_axis(x, y[..., None], -1) if x.ndim > 1 else x[y][None]
    violation = params["margin"] - picked + x
    x = np.where(np.abs(violation) < 0.4, x + 0.8, x)
    arrays_ = {"input": x, "target": y}
    if draw(st.booleans()):
        arrays_["class_weight"] = rng.random(n_classes) + 0.1
    return {"function": name, "arrays": arrays_, "params": params, "wrt": "input"}


@st.composite
def elementwise_cases(draw, name):
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
def pointwise_loss_cases(draw, name):
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
def linear_cases(draw, name):
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


# --- the torch calls --------------------------------------------------------------------

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


def _red(params):
    return params.get("reduction", "mean")


def _class_loss(torch_fn, **fixed):
    def call(a, p):
        kw = {k: p[k] for k in ("label_smoothing",) if k in p}
        return torch_fn(a["input"], a["target"], weight=a.get("class_weight"), ignore_index=p.get("ignore_index", -100),
                        reduction=_red(p), **kw, **fixed)
    return call


def _multi_margin_composite(a, p):
    """torch's multi_margin_loss in differentiable ops: sum_{c != y, d_c > 0} w_y d_c^p / C."""
    x, y = a["input"], a["target"]
    batched = x.dim() == 2
    x2, y2 = (x, y) if batched else (x[None], y[None])
    d = p.get("margin", 1.0) - x2.gather(1, y2[:, None]) + x2
    other = torch.ones_like(d, dtype=torch.bool).scatter(1, y2[:, None], False)
    h = torch.where((d > 0) & other, d, torch.zeros_like(d)) ** p.get("p", 1)
    w = a.get("class_weight")
    loss = h.sum(1) / x2.shape[1] * (1 if w is None else w[y2])
    loss = loss if batched else loss[0]
    return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss}[_red(p)]()


def _elementwise(name, call):
    return Ref(name, lambda a, p: call(a["input"], p), ("input",), "elementwise", lambda: elementwise_cases(name))


def _pointwise(name, call, arrays=("target",)):
    return Ref(name, call, ("input", *arrays), "pointwise_losses", lambda: pointwise_loss_cases(name))


NO_FORWARD_MODE = "torch has no forward-mode formula for {}"
NO_DOUBLE_BACKWARD = "torch's {}_backward has no derivative"

REFERENCE: dict[str, Ref] = {r.name: r for r in [
    Ref("softmax", lambda a, p: torch.softmax(a["input"], dim=p.get("dim", -1)), ("input",), "softmax",
        lambda: softmax_cases("softmax")),
    Ref("log_softmax", lambda a, p: torch.log_softmax(a["input"], dim=p.get("dim", -1)), ("input",), "softmax",
        lambda: softmax_cases("log_softmax")),
    *[_elementwise(n, lambda x, p, n=n: getattr(torch, n)(x)) for n in ("sigmoid", "tanh", "relu", "exp", "log")],
    _elementwise("gelu", lambda x, p: F.gelu(x)),
    _elementwise("softplus", lambda x, p: F.softplus(x, beta=p.get("beta", 1.0), threshold=p.get("threshold", 20.0))),
    *[_elementwise("expr:" + e, lambda x, p, e=e: EXPRESSIONS[e](x)) for e in EXPRESSIONS],
    Ref("cross_entropy", _class_loss(F.cross_entropy), ("input", "target", "class_weight"), "cross_entropy",
        lambda: class_loss_cases("cross_entropy")),
    Ref("nll_loss", _class_loss(F.nll_loss), ("input", "target", "class_weight"), "nll_loss",
        lambda: class_loss_cases("nll_loss")),
    Ref("multi_margin_loss",
        lambda a, p: F.multi_margin_loss(a["input"], a["target"], p=p.get("p", 1), margin=p.get("margin", 1.0),
                                         weight=a.get("class_weight"), reduction=_red(p)),
        ("input", "target", "class_weight"), "multi_margin_loss", lambda: multi_margin_cases("multi_margin_loss"),
        limits={("forward", FIRST): NO_FORWARD_MODE.format("multi_margin_loss"),
                ("forward", SECOND): NO_FORWARD_MODE.format("multi_margin_loss"),
                ("autograd", SECOND): NO_DOUBLE_BACKWARD.format("multi_margin_loss")},
        composite=_multi_margin_composite),
    _pointwise("mse_loss", lambda a, p: F.mse_loss(a["input"], a["target"], reduction=_red(p))),
    _pointwise("l1_loss", lambda a, p: F.l1_loss(a["input"], a["target"], reduction=_red(p))),
    _pointwise("smooth_l1_loss", lambda a, p: F.smooth_l1_loss(a["input"], a["target"], reduction=_red(p),
                                                               beta=p.get("beta", 1.0))),
    _pointwise("huber_loss", lambda a, p: F.huber_loss(a["input"], a["target"], reduction=_red(p),
                                                       delta=p.get("delta", 1.0))),
    _pointwise("binary_cross_entropy_with_logits",
               lambda a, p: F.binary_cross_entropy_with_logits(a["input"], a["target"], pos_weight=a.get("pos_weight"),
                                                               reduction=_red(p)), ("target", "pos_weight")),
    _pointwise("binary_cross_entropy", lambda a, p: F.binary_cross_entropy(a["input"], a["target"], reduction=_red(p))),
    _pointwise("kl_div", lambda a, p: F.kl_div(a["input"], a["target"], reduction=_red(p),
                                               log_target=p.get("log_target", False))),
    Ref("linear", lambda a, p: F.linear(a["input"], a["weight"], a.get("bias")), ("input", "weight", "bias"),
        "linear_and_chains", lambda: linear_cases("linear")),
]}
CHAINS = chain_cases  # chains of several built-ins, a family of their own


def families() -> dict[str, st.SearchStrategy]:
    """Every test family's strategy: the sample inputs of its built-ins, then the chains."""
    found: dict[str, list[st.SearchStrategy]] = {}
    for r in REFERENCE.values():
        found.setdefault(r.family, []).append(r.samples())
    return {**{family: st.one_of(*strategies) for family, strategies in found.items()}, "chains": CHAINS()}


def cases() -> st.SearchStrategy:
    """A mixed draw over the families whose every backend runs every quantity."""
    return st.one_of(softmax_cases("softmax"), softmax_cases("log_softmax"), class_loss_cases("cross_entropy"),
                     class_loss_cases("nll_loss"))


def stages(name: str) -> list[str]:
    """A chain's stage names (``expr:`` texts hold no comma)."""
    return name.split(",")


def limit(name: str, backend: str, order: str) -> str | None:
    """Why torch cannot do ``backend`` at ``order`` (FIRST or SECOND) for ``name`` or a stage of it."""
    for stage in stages(name):
        ref = REFERENCE.get(stage)
        reason = None if ref is None else ref.limits.get((backend, order))
        if reason:
            return reason
    return None


def call(name: str, args: dict, params: dict, composite: bool = False):
    """The torch function ``name`` on tensors ``args`` with ``params``; a chain ``a,b`` is
    b(a(input)), each stage taking the arrays it declares. ``composite``: where a stage has
    one, its differentiable composite form (second order where torch's op has none)."""
    z = args["input"]
    for stage in stages(name):
        ref = REFERENCE[stage]
        given = {"input": z, **{k: v for k, v in args.items() if k in ref.arrays and k != "input"}}
        z = (ref.composite if composite and ref.composite else ref.call)(given, params)
    return z


# --- fixed samples: every option of every family set once (torch's OpInfo idea) ------------
# A formula that ignores an option differs from torch in a known test, not only when a
# hypothesis draw happens to reach it. Each case: ``function``, ``arrays``, ``params``, ``wrt``.


def case(function, arrays, wrt="input", **params):
    return {"function": function, "arrays": arrays, "params": params, "wrt": wrt}


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

FIXED = {
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
    # multi_margin_loss: p, margin, class weights, reductions (violations away from the hinge's kink)
    "multi-margin-p2-margin-weight": case("multi_margin_loss", {"input": X43, "target": np.array([0, 2, 1, 2]),
                                                                "class_weight": WEIGHT3}, p=2, margin=0.7),
    "multi-margin-p1-sum": case("multi_margin_loss", {"input": X43, "target": np.array([1, 0, 2, 2])},
                                margin=1.5, reduction="sum"),
    "multi-margin-unbatched-none": case("multi_margin_loss", {"input": _logits(4), "target": np.array(3)}, p=2,
                                        reduction="none"),
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


# --- torch.autograd on the calls ------------------------------------------------------------


def _tensors(arrays: dict, dtype):
    out = {}
    for name, a in arrays.items():
        a = np.asarray(a)
        out[name] = torch.tensor(a, dtype=torch.int64) if a.dtype.kind in "iu" else torch.tensor(a, dtype=getattr(torch, dtype))
    return out


def function_of_wrt(name, arrays, params, wrt, dtype, composite=False):
    tensors = _tensors(arrays, dtype)
    fixed = {k: v for k, v in tensors.items() if k != wrt}
    return (lambda x: call(name, {**fixed, wrt: x}, params, composite)), tensors[wrt]


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
    """``J t``; reverse mode twice where torch has no forward mode for a stage (the double-vjp trick)."""
    f, x = function_of_wrt(name, arrays, params, wrt, dtype)
    t = torch.tensor(np.asarray(tangent), dtype=x.dtype)
    if limit(name, "forward", FIRST) is None:
        return torch.autograd.functional.jvp(f, x, t)[1].numpy()
    return torch.einsum("...i,i->...", torch.tensor(full_jacobian(name, arrays, params, wrt, dtype)).reshape(
        *np.shape(output(name, arrays, params, wrt, dtype)), -1), t.reshape(-1)).numpy()


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
    ``torch.autograd.functional`` does the same job; where it has no double backward either,
    the stage's composite form."""
    composite = limit(name, "autograd", SECOND) is not None
    f, x = function_of_wrt(name, arrays, params, wrt, dtype, composite)
    try:
        return torch.func.hessian(f)(x).detach().numpy()
    except (RuntimeError, NotImplementedError):
        return torch.autograd.functional.jacobian(
            lambda z: torch.autograd.functional.jacobian(f, z, create_graph=True), x).detach().numpy()


def hvp(name, arrays, params, tangent, wrt="input", dtype="float64") -> np.ndarray:
    """``torch.autograd.functional.hvp`` of a scalar output (the composite form where needed)."""
    f, x = function_of_wrt(name, arrays, params, wrt, dtype, limit(name, "autograd", SECOND) is not None)
    return torch.autograd.functional.hvp(f, x, torch.tensor(np.asarray(tangent), dtype=x.dtype))[1].numpy()
