"""Losses that compare input and target entry by entry: mse_loss, l1_loss,
smooth_l1_loss, huber_loss, binary_cross_entropy(_with_logits), kl_div.

Each entry ``i`` gives ``l_i(x_i, t_i)``; the output is ``l`` (``none``) or
``sum_i coef_i l_i`` with ``coef`` = 1 (``sum``), 1/numel (``mean``) or
1/input.size(0) (kl_div's ``batchmean``), as torch. The Jacobian of ``l`` is
diagonal; the gradient of a reduction is ``coef * dl/dx``.
"""

from __future__ import annotations

import functools

import numpy as np

from ..core.errors import UsageError
from ..core.options import Reduction
from ..core.rowform import RowKernel, RowLayout, diagonal_blocks
from .base import ArrayArg, Function, Param, Structure
from .elementwise import kink_notes
from .numerics import sigmoid_np, sigmoid_slope, softplus_np

_TARGET = ArrayArg("target", "the target, the input's shape", required=True)
_REDUCTION = Param("reduction", Reduction.MEAN, "mean | sum | none, as torch", kind=Reduction,
                   choices=(Reduction.MEAN, Reduction.SUM, Reduction.NONE))


class PointwiseLoss(Function):
    """Subclasses give ``loss(x, t, extra)`` and ``d_input``/``d_target`` (NumPy, elementwise)."""

    arrays = (ArrayArg("input", "the prediction, any shape", required=True), _TARGET)
    params = (_REDUCTION,)
    structure = Structure.DIAGONAL

    def loss(self, x, t, extra, params):
        raise NotImplementedError

    def d_input(self, x, t, extra, params):
        raise NotImplementedError

    d_target = None  # a method where the loss is differentiable w.r.t. its target

    def d2_input(self, x, t, extra, params):
        """d2 l / dx2 entry by entry (the Hessian is diagonal)."""
        raise NotImplementedError

    def d2_target(self, x, t, extra, params):
        return self.d2_input(x, t, extra, params)  # l depends on x - t for the regression losses

    def check(self, args, params):
        x, t = args["input"], args["target"]
        if t.shape != x.shape:
            raise UsageError(f"--target: shape {list(t.shape)} does not match --input {list(x.shape)}; "
                             "give the input's shape (gradcli does not broadcast targets)")
        return self.check_extra(args, params)

    def check_extra(self, args, params):
        return []

    def differentiable(self, args):
        return ("input", "target") if self.d_target is not None else ("input",)

    def output_shape(self, args, params):
        return () if params["reduction"] != "none" else args["input"].shape

    def _coef_value(self, shape, params) -> float | None:
        reduction = params["reduction"]
        if reduction == "none":
            return None
        if reduction == "sum":
            return 1.0
        if reduction == "batchmean":
            return 1.0 / shape[0]
        return 1.0 / int(np.prod(shape))

    def row_layout(self, args, params, wrt, axis=None):
        shape = args["input"].shape
        reduced = params["reduction"] != "none"
        if axis is None:
            return RowLayout(shape, None, None, 1, reduced=reduced)
        return RowLayout(shape, axis, None if reduced else axis, 1 if reduced else shape[axis], reduced=reduced)

    def extra(self, args) -> dict:
        return {}

    def kernel(self, args, params, wrt, axis=None):
        x, t = args["input"], args["target"]
        extra = self.extra(args)
        if axis is not None:  # a chain's row form: the feature axis last
            x, t = np.moveaxis(x, axis, -1), np.moveaxis(t, axis, -1)
            extra = {k: np.moveaxis(np.broadcast_to(v, args["input"].shape), axis, -1) for k, v in extra.items()}
        if wrt == "input":
            def loss(v):
                return self.loss(v, t, extra, params)
            derivative = self.d_input(x, t, extra, params)
            second = self.d2_input
            x0 = x
        else:
            def loss(v):
                return self.loss(x, v, extra, params)
            derivative = self.d_target(x, t, extra, params)
            second = self.d2_target
            x0 = t
        d2 = functools.cache(lambda: np.asarray(second(x, t, extra, params), dtype=x0.dtype) + np.zeros_like(x0))
        c = self._coef_value(args["input"].shape, params)
        if axis is None:
            coef = None if c is None else np.full(x0.shape, c, dtype=x0.dtype)
            return RowKernel(x0=x0[..., None], forward=lambda v: loss(v[..., 0]), blocks=lambda: derivative[..., None], coef=coef,
                             hvp=lambda u, t: u[..., None] * d2()[..., None] * t)
        if c is None:
            return RowKernel(x0=x0, forward=loss, blocks=lambda: diagonal_blocks(derivative), coef=None,
                             vjp=lambda u: u * derivative, jvp=lambda t: derivative * t, hvp=lambda u, t: u * d2() * t)
        return RowKernel(x0=x0, forward=lambda v: loss(v).sum(-1), blocks=lambda: derivative,
                         coef=np.full(x0.shape[:-1], c, dtype=x0.dtype), hvp=lambda u, t: u[..., None] * d2() * t)

    def torch_forward(self, args, params):
        import torch.nn.functional as F

        return getattr(F, self.name)(args["input"], args["target"], reduction=params["reduction"].value,
                                     **self.torch_extra(args, params))

    def torch_extra(self, args, params) -> dict:
        return {}


class MseLoss(PointwiseLoss):
    name = "mse_loss"
    summary = "squared error (x - t)^2 (torch.nn.functional.mse_loss)"
    formulas = ("l = (x - t)^2;  dl/dx = 2 (x - t);  dl/dt = -2 (x - t)", "mean: divide by the number of entries")
    second_formulas = ("d2 l / dx2 = d2 l / dt2 = 2 entry by entry: a diagonal Hessian (times 1/numel for mean)",)

    def loss(self, x, t, extra, params):
        return (x - t) ** 2

    def d_input(self, x, t, extra, params):
        return 2 * (x - t)

    def d_target(self, x, t, extra, params):
        return -2 * (x - t)

    def d2_input(self, x, t, extra, params):
        return 2.0


class L1Loss(PointwiseLoss):
    name = "l1_loss"
    summary = "absolute error |x - t| (torch.nn.functional.l1_loss)"
    formulas = ("l = |x - t|;  dl/dx = sign(x - t) (0 where x = t, torch's convention at the kink);  dl/dt = -sign(x - t)",
                "mean: divide by the number of entries")
    second_formulas = ("d2 l / dx2 = 0 away from the kink at x = t (torch's double backward gives 0 there too)",)

    def loss(self, x, t, extra, params):
        return np.abs(x - t)

    def d_input(self, x, t, extra, params):
        return np.sign(x - t)

    def d_target(self, x, t, extra, params):
        return -np.sign(x - t)

    def d2_input(self, x, t, extra, params):
        return 0.0

    def kinks(self, args, params):
        return args["input"] == args["target"]

    def notes(self, args, params, wrt):
        return kink_notes(self.kinks(args, params), "l1_loss", "x = t", "0", "0")


class SmoothL1Loss(PointwiseLoss):
    name = "smooth_l1_loss"
    summary = "quadratic below beta, linear above (torch.nn.functional.smooth_l1_loss)"
    params = (_REDUCTION, Param("beta", 1.0, "where the loss turns from quadratic to linear (>= 0)", kind=float))
    formulas = ("d = x - t;  l = 0.5 d^2 / beta if |d| < beta else |d| - 0.5 beta",
                "dl/dx = d / beta if |d| < beta else sign(d);  dl/dt = -dl/dx",
                "beta = 0 is l1_loss (with its kink at d = 0)")
    second_formulas = ("d2 l / dx2 = d2 l / dt2 = 1 / beta where |d| < beta, else 0: piecewise, with a jump at |d| = beta "
                       "(the first derivative has a kink there; beta = 0: 0 with l1_loss's kink)",)

    def check_extra(self, args, params):
        if params["beta"] < 0:
            raise UsageError(f"--beta: {params['beta']} is negative; smooth_l1_loss needs beta >= 0")
        return []

    def loss(self, x, t, extra, params):
        d, beta = x - t, params["beta"]
        if beta == 0:
            return np.abs(d)
        return np.where(np.abs(d) < beta, 0.5 * d**2 / beta, np.abs(d) - 0.5 * beta)

    def d_input(self, x, t, extra, params):
        d, beta = x - t, params["beta"]
        if beta == 0:
            return np.sign(d)
        return np.where(np.abs(d) < beta, d / beta, np.sign(d))

    def d_target(self, x, t, extra, params):
        return -self.d_input(x, t, extra, params)

    def d2_input(self, x, t, extra, params):
        beta = params["beta"]
        return np.zeros_like(x) if beta == 0 else (np.abs(x - t) < beta) / beta

    def kinks(self, args, params):
        return args["input"] == args["target"] if params["beta"] == 0 else None

    def notes(self, args, params, wrt):
        mask = self.kinks(args, params)
        return [] if mask is None else kink_notes(mask, "smooth_l1_loss (beta = 0)", "x = t", "0", "0")

    def torch_extra(self, args, params):
        return {"beta": params["beta"]}


class HuberLoss(PointwiseLoss):
    name = "huber_loss"
    summary = "quadratic below delta, delta-scaled linear above (torch.nn.functional.huber_loss)"
    params = (_REDUCTION, Param("delta", 1.0, "where the loss turns from quadratic to linear (> 0)", kind=float))
    formulas = ("d = x - t;  l = 0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta)",
                "dl/dx = d if |d| < delta else delta sign(d);  dl/dt = -dl/dx")
    second_formulas = ("d2 l / dx2 = d2 l / dt2 = 1 where |d| < delta, else 0: piecewise, with a jump at |d| = delta "
                       "(a kink of the first derivative)",)

    def check_extra(self, args, params):
        if not params["delta"] > 0:
            raise UsageError(f"--delta: {params['delta']} is not positive; huber_loss needs delta > 0")
        return []

    def loss(self, x, t, extra, params):
        d, delta = x - t, params["delta"]
        return np.where(np.abs(d) < delta, 0.5 * d**2, delta * (np.abs(d) - 0.5 * delta))

    def d_input(self, x, t, extra, params):
        d, delta = x - t, params["delta"]
        return np.where(np.abs(d) < delta, d, delta * np.sign(d))

    def d_target(self, x, t, extra, params):
        return -self.d_input(x, t, extra, params)

    def d2_input(self, x, t, extra, params):
        return (np.abs(x - t) < params["delta"]).astype(x.dtype)

    def torch_extra(self, args, params):
        return {"delta": params["delta"]}


SATURATED_LOGIT = 20.0  # 1 - sigmoid(20) = 2e-9: s (1 - s) keeps fewer than 8 digits beyond it


class BinaryCrossEntropyWithLogits(PointwiseLoss):
    name = "binary_cross_entropy_with_logits"
    summary = "sigmoid then binary cross entropy, computed stably (torch.nn.functional.binary_cross_entropy_with_logits)"
    arrays = (ArrayArg("input", "logits, any shape", required=True), _TARGET,
              ArrayArg("pos_weight", "weight of the positive term, broadcast against the input (usually (C,))"))
    formulas = ("p = pos_weight (1 if not given), s = sigmoid(x), softplus(x) = log(1 + exp(x))",
                "l = p t softplus(-x) + (1 - t) softplus(x)  (= -[p t log s + (1 - t) log(1 - s)])",
                "dl/dx = (1 - t) s - p t (1 - s);  dl/dt = p softplus(-x) - softplus(x)",
                "mean: divide by the number of entries")
    second_formulas = ("d2 l / dx2 = s (1 - s) ((1 - t) + p t) entry by entry (a diagonal Hessian, >= 0), "
                       "s (1 - s) computed as sigmoid(x) sigmoid(-x) (torch's double backward cancels at |x| > 30);  "
                       "d2 l / dt2 = 0 (linear in the target)",)

    def check_extra(self, args, params):
        if "pos_weight" in args:
            shape, x_shape = args["pos_weight"].shape, args["input"].shape
            try:
                wide = np.broadcast_shapes(shape, x_shape)
            except ValueError:
                wide = None
            if wide != x_shape:  # torch: the loss keeps the input's shape, and its backward raises
                why = ("does not broadcast against" if wide is None
                       else f"would widen the loss to {list(wide)}, which torch refuses, against")
                raise UsageError(f"--pos-weight: shape {list(shape)} {why} --input {list(x_shape)}; give a shape that "
                                 f"broadcasts to the input's, e.g. [{x_shape[-1] if x_shape else 1}]")
        return []

    def extra(self, args):
        return {"pos_weight": args["pos_weight"]} if "pos_weight" in args else {}

    def loss(self, x, t, extra, params):
        p = extra.get("pos_weight", 1.0)
        return p * t * softplus_np(-x) + (1 - t) * softplus_np(x)

    def d_input(self, x, t, extra, params):
        p = extra.get("pos_weight", 1.0)
        return (1 - t) * sigmoid_np(x) - p * t * sigmoid_np(-x)  # 1 - s as sigmoid(-x): no cancellation

    def d_target(self, x, t, extra, params):
        return extra.get("pos_weight", 1.0) * softplus_np(-x) - softplus_np(x)

    def d2_input(self, x, t, extra, params):
        return sigmoid_slope(x) * ((1 - t) + extra.get("pos_weight", 1.0) * t)

    def d2_target(self, x, t, extra, params):
        return 0.0  # linear in the target

    def torch_second_order_notes(self, args, params):
        # torch's classic double backward computes s (1 - s): its relative error is about eps e^|x| (1 at |x| = 40)
        large = int((np.abs(args["input"]) > SATURATED_LOGIT).sum())
        if not large:
            return []
        return [f"{large} logit{'s' if large > 1 else ''} beyond |x| = {SATURATED_LOGIT:g}: torch's double backward "
                "computes s (1 - s), which cancels there (relative error about eps e^|x|: 1.0 at |x| = 40), so "
                "autograd's second derivatives are the inaccurate side; analytic (sigmoid(x) sigmoid(-x)) and forward "
                "are exact"]

    def torch_extra(self, args, params):
        return {"pos_weight": args.get("pos_weight")}


class BinaryCrossEntropy(PointwiseLoss):
    name = "binary_cross_entropy"
    summary = "binary cross entropy of probabilities (torch.nn.functional.binary_cross_entropy)"
    arrays = (ArrayArg("input", "probabilities in [0, 1], any shape", required=True), _TARGET)
    formulas = ("l = -(t log x + (1 - t) log(1 - x)), each log clamped at -100 as torch",
                "dl/dx = (x - t) / max(x (1 - x), 1e-12)  (torch's backward formula; its 1e-12 is float32's, 9.99999996e-13)",
                "mean: divide by the number of entries")
    second_formulas = ("d2 l / dx2 = t / x^2 + (1 - t) / (1 - x)^2 = (x^2 - 2 x t + t) / (x^2 (1 - x)^2), entry by entry "
                       "(torch's double backward, with 1e-12 added to x and 1 - x)",)

    def check_extra(self, args, params):
        x = args["input"]
        if ((x < 0) | (x > 1)).any():
            index = [int(i) for i in np.argwhere((x < 0) | (x > 1))[0]]
            raise UsageError(f"--input: binary_cross_entropy needs probabilities in [0, 1]; {x[tuple(index)]} at {index}. "
                             "For logits use binary_cross_entropy_with_logits")
        return []

    def loss(self, x, t, extra, params):
        """torch's kernel, term for term: log(1 - x), not log1p(-x), which differs near 0."""
        with np.errstate(divide="ignore"):
            return (t - 1) * np.maximum(np.log(1 - x), -100) - t * np.maximum(np.log(x), -100)

    def d_input(self, x, t, extra, params):
        """torch's backward: (x - t) / max((1 - x) x, EPSILON) with EPSILON the float32
        constant 1e-12 (9.99999996e-13 in float64), so clamped entries read ±1.000000004e12."""
        return (x - t) / np.maximum((1 - x) * x, np.float32(1e-12).astype(x.dtype))

    def d2_input(self, x, t, extra, params):
        return (x * x - 2 * x * t + t) / ((x + 1e-12) ** 2 * (1 - x + 1e-12) ** 2)  # torch's double backward


class KlDiv(PointwiseLoss):
    name = "kl_div"
    summary = "Kullback-Leibler divergence of log-probabilities from a target (torch.nn.functional.kl_div)"
    arrays = (ArrayArg("input", "log-probabilities, any shape", required=True),
              ArrayArg("target", "probabilities (or log-probabilities with --log-target), the input's shape", required=True))
    params = (Param("reduction", Reduction.MEAN, "mean | batchmean | sum | none; batchmean is the true KL divergence",
                    kind=Reduction),
              Param("log_target", False, "the target holds log-probabilities", kind=bool))
    formulas = ("l = t (log t - x) (0 where t = 0);  with --log-target: l = exp(t) (t - x)",
                "dl/dx = -t;  with --log-target: dl/dx = -exp(t)",
                "batchmean: divide by input.size(0); mean: by the number of entries (torch warns: not the KL divergence)")
    second_formulas = ("d2 l / dx2 = 0 for both target forms: the loss is linear in the input (log-probabilities)",)

    def check_extra(self, args, params):
        if params["reduction"] == "batchmean" and args["input"].ndim == 0:
            raise UsageError("--reduction batchmean: needs an input with a batch dim; use sum for a scalar")
        return []

    def loss(self, x, t, extra, params):
        if params["log_target"]:
            return np.exp(t) * (t - x)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0) - t * x

    def d_input(self, x, t, extra, params):
        return -np.exp(t) if params["log_target"] else -t

    def d2_input(self, x, t, extra, params):
        return 0.0

    def notes(self, args, params, wrt):
        if params["reduction"] == "mean":
            return ["kl_div with --reduction mean divides by every entry, not by the batch: it is not the KL "
                    "divergence (torch warns the same); --reduction batchmean is"]
        return []

    def torch_forward(self, args, params):
        import warnings

        with warnings.catch_warnings():  # torch's warning about 'mean' is our note
            warnings.simplefilter("ignore", UserWarning)
            return super().torch_forward(args, params)

    def torch_extra(self, args, params):
        return {"log_target": params["log_target"]}
