"""Elementwise functions: a table of specs (sigmoid, tanh, relu, exp, log,
gelu, softplus), and ``expr:``.

Their Jacobian is diagonal: ``J[i..., j...] = f'(x[i...])`` where the indices
agree, else 0. Alone, each entry is its own row (``RowLayout.in_axis`` None,
blocks ``(*shape, 1)``, layout ``diag`` = ``f'(x)`` shaped like ``x``). Inside a
chain, or shown as blocks, they take a feature axis and give diagonal blocks.

A new elementwise function is one :class:`Spec` in ``SPECS`` (and its torch
reference in the tests): NumPy ``f``, ``df``, ``d2f`` of ``(x, params)``, the
torch call, the formulas, and where it has a kink.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..core.rowform import RowKernel, RowLayout, diagonal_blocks
from .base import ArrayArg, Function, Param, Structure
from .numerics import sigmoid_np, sigmoid_slope, softplus_torch

Array = np.ndarray
Params = Mapping[str, Any]


def _normal_pdf(x: Array) -> Array:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _normal_cdf(x: Array) -> Array:
    from scipy.special import ndtr  # exact to the last bit in both tails (a runtime dependency)

    return ndtr(x)


def _log(x: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(x)


def _reciprocal(x: Array, power: int = 1) -> Array:
    with np.errstate(divide="ignore"):
        return 1 / x**power


def _divide(a: Array, b: Array) -> Array:
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / b


def _softplus_d(x: Array, p: Params) -> Array:
    bx = p["beta"] * x
    return np.where(bx > p["threshold"], 1.0, sigmoid_np(bx)).astype(x.dtype)


def _softplus_d2(x: Array, p: Params) -> Array:
    bx = p["beta"] * x
    return np.where(bx > p["threshold"], 0.0, p["beta"] * sigmoid_slope(bx)).astype(x.dtype)


@dataclass(frozen=True)
class Kink:
    """Where an elementwise function is not differentiable, and what each side says there."""

    mask: Callable[[Array], Array]
    where: str
    torch_value: str
    fd_value: str


@dataclass(frozen=True)
class Spec:
    """One elementwise built-in. ``f``, ``df``, ``d2f``: NumPy, ``(x, params) -> like x``;
    ``torch_f(torch, x, params)``: the torch reference."""

    name: str
    summary: str
    formulas: tuple[str, ...]
    f: Callable[[Array, Params], Array]
    df: Callable[[Array, Params], Array]
    d2f: Callable[[Array, Params], Array]
    torch_f: Callable[..., Any]
    params: tuple[Param, ...] = ()
    kink: Kink | None = None
    domain: Callable[[Array], Array] | None = None  # mask of entries outside the domain (a note names them)
    # The backward as torch writes it, (g, x, params) -> g f'(x), where it differs from g * df (log's g / x is 0
    # for g = 0 at a subnormal x, where 1/x overflows): what reverse mode puts off the diagonal.
    vjp: Callable[[Array, Array, Params], Array] | None = None


SPECS = {spec.name: spec for spec in (
    Spec("sigmoid", "sigmoid(x) = 1 / (1 + exp(-x)), elementwise",
         ("s = sigmoid(x)", "ds/dx = s (1 - s);  d2s/dx2 = s (1 - s)(1 - 2s), elementwise: a diagonal Jacobian"),
         f=lambda x, p: sigmoid_np(x),
         df=lambda x, p: sigmoid_slope(x),  # s (1 - s) without the cancellation of 1 - s at large x
         d2f=lambda x, p: -sigmoid_slope(x) * np.tanh(x / 2),  # 1 - 2s = -tanh(x/2)
         torch_f=lambda torch, x, p: torch.sigmoid(x)),
    Spec("tanh", "tanh(x), elementwise",
         ("d tanh(x)/dx = 1 - tanh(x)^2;  d2/dx2 = -2 tanh(x) (1 - tanh(x)^2), elementwise: a diagonal Jacobian",),
         f=lambda x, p: np.tanh(x),
         df=lambda x, p: 1 - np.tanh(x) ** 2,
         d2f=lambda x, p: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2),
         torch_f=lambda torch, x, p: torch.tanh(x)),
    Spec("relu", "relu(x) = max(x, 0), elementwise",
         ("d relu(x)/dx = 1 where x > 0, else 0 (at x = 0 torch uses 0; relu has a kink there); d2/dx2 = 0",),
         f=lambda x, p: np.maximum(x, 0),
         df=lambda x, p: ~(x <= 0) * np.ones((), dtype=x.dtype),  # torch's threshold_backward: 1 at nan too
         d2f=lambda x, p: np.zeros_like(x),
         torch_f=lambda torch, x, p: torch.relu(x),
         kink=Kink(lambda x: x == 0, "x = 0", "0", "1/2")),
    Spec("exp", "exp(x), elementwise",
         ("d exp(x)/dx = exp(x) = d2 exp(x)/dx2, elementwise: a diagonal Jacobian",),
         f=lambda x, p: np.exp(x), df=lambda x, p: np.exp(x), d2f=lambda x, p: np.exp(x),
         torch_f=lambda torch, x, p: torch.exp(x)),
    Spec("log", "natural log(x), elementwise",
         ("d log(x)/dx = 1 / x;  d2/dx2 = -1 / x^2, elementwise: a diagonal Jacobian",),
         f=lambda x, p: _log(x), df=lambda x, p: _reciprocal(x), d2f=lambda x, p: -_reciprocal(x, 2),
         torch_f=lambda torch, x, p: torch.log(x), vjp=lambda g, x, p: _divide(g, x),
         domain=lambda x: x <= 0),
    Spec("gelu", "gelu(x) = x Phi(x), the exact (erf) form, elementwise (torch.nn.functional.gelu)",
         ("gelu(x) = x Phi(x), Phi the standard normal CDF, phi its density",
          "d gelu/dx = Phi(x) + x phi(x);  d2 gelu/dx2 = phi(x) (2 - x^2), elementwise: a diagonal Jacobian"),
         f=lambda x, p: x * _normal_cdf(x),
         df=lambda x, p: _normal_cdf(x) + x * _normal_pdf(x),
         d2f=lambda x, p: _normal_pdf(x) * (2 - x * x),
         torch_f=lambda torch, x, p: torch.nn.functional.gelu(x)),
    Spec("softplus", "softplus(x) = log(1 + exp(beta x)) / beta, linear above the threshold "
                     "(torch.nn.functional.softplus), elementwise",
         ("softplus(x) = log(1 + exp(beta x)) / beta where beta x <= threshold, else x (as torch)",
          "d/dx = sigmoid(beta x) (1 above the threshold);  d2/dx2 = beta s (1 - s), s = sigmoid(beta x) "
          "(0 above the threshold), elementwise: a diagonal Jacobian"),
         f=lambda x, p: softplus_torch(x, p["beta"], p["threshold"]), df=_softplus_d, d2f=_softplus_d2,
         torch_f=lambda torch, x, p: torch.nn.functional.softplus(x, beta=p["beta"], threshold=p["threshold"]),
         params=(Param("beta", 1.0, "softplus: the sharpness beta (torch's default 1)", kind=float),
                 Param("threshold", 20.0, "softplus: above beta x > threshold it is linear (torch's default 20)",
                       kind=float))),
)}


def elementwise_kernel(x: Array, f, df, axis: int | None, d2f=None, vjp=None) -> RowKernel:
    """The kernel of ``f`` at ``x``: one-feature rows, or rows along ``axis``
    (diagonal blocks; vjp and jvp multiply by ``f'`` without forming them).
    ``vjp(g, x)``: the backward as torch writes it, where it differs from ``g * df(x)``
    (the vjp of a zero cotangent is what fills the entries off the diagonal).
    Second order: entry k depends on x_k alone, so ``sum_k u_k (d2 f_k) t`` is ``u f'' t``."""
    if axis is None:
        d2 = functools.cache(lambda: d2f(x)[..., None])
        return RowKernel(x0=x[..., None], forward=lambda xr: f(xr[..., 0]), blocks=lambda: df(x)[..., None], coef=None,
                         vjp=None if vjp is None else (lambda u: vjp(u, x)[..., None]),
                         hvp=lambda u, t: u[..., None] * d2() * t)
    xr = np.moveaxis(x, axis, -1)
    d = df(xr)
    d2 = functools.cache(lambda: d2f(xr))
    row_vjp = (lambda u: u * d) if vjp is None else (lambda u: vjp(u, xr))
    return RowKernel(x0=xr, forward=f, blocks=lambda: diagonal_blocks(d, None if vjp is None else vjp(np.zeros_like(xr), xr)),
                     coef=None, vjp=row_vjp, jvp=lambda t: d * t, hvp=lambda u, t: u * d2() * t)


def elementwise_layout(shape, axis: int | None) -> RowLayout:
    layout = RowLayout(tuple(shape), None, None, 1, reduced=False)
    return layout if axis is None else layout.along_axis(axis)


class Elementwise(Function):
    """f applied to every entry, from a :class:`Spec` (or, for ``expr:``, from sympy)."""

    arrays = (ArrayArg("input", "any shape", required=True),)
    structure = Structure.DIAGONAL
    family = "the activations"
    second_formulas = ("second derivative: f''(x) entry by entry (above); the Hessian of sum(f(x)) is diagonal, "
                       "and each entry's Hessian has one non-zero, d2 f(x_i) / dx_i^2",)

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.name, self.summary, self.formulas, self.params = spec.name, spec.summary, spec.formulas, spec.params

    def f(self, x, params):
        return self.spec.f(x, params)

    def df(self, x, params):
        return self.spec.df(x, params)

    def d2f(self, x, params):
        return self.spec.d2f(x, params)

    def output_shape(self, args, params):
        return args["input"].shape

    def row_layout(self, args, params, wrt, axis=None):
        return elementwise_layout(args["input"].shape, axis)

    def kernel(self, args, params, wrt, axis=None):
        return elementwise_kernel(args["input"], lambda x: self.f(x, params), lambda x: self.df(x, params), axis,
                                  lambda x: self.d2f(x, params), self.vjp_formula(params))

    def vjp_formula(self, params):
        """``(g, x) -> g f'(x)`` as torch's backward writes it, or None for ``g * df``."""
        vjp = self.spec.vjp
        return None if vjp is None else (lambda g, x: vjp(g, x, params))

    def torch_forward(self, args, params):
        import torch

        return self.spec.torch_f(torch, args["input"], params)

    def kinks(self, args, params):
        return None if self.spec.kink is None else self.spec.kink.mask(args["input"])

    def notes(self, args, params, wrt):
        notes = []
        if self.spec.kink is not None:
            k = self.spec.kink
            notes += kink_notes(k.mask(args["input"]), self.name, k.where, k.torch_value, k.fd_value)
        if self.spec.domain is not None:
            bad = int(self.spec.domain(args["input"]).sum())
            if bad:
                notes.append(f"{self.name} is undefined at {bad} entr{'y' if bad == 1 else 'ies'} outside its domain: "
                             "the value there is nan or -inf, as in torch")
        return notes


ELEMENTWISE = {name: Elementwise(spec) for name, spec in SPECS.items()}


class Expr(Elementwise):
    """``expr:TEXT``: parsed safely and computed as written, as torch would (see ``expr.py``)."""

    def __init__(self, text: str) -> None:
        from . import expr as expr_module

        self.text = text
        self.name = f"expr:{text}"
        self.params = ()
        self.spec = None
        self.expression = expr_module.parse(text)
        self.summary = f"the elementwise expression {text} in x"
        self.formulas = (f"f(x) = {text.strip()}",
                         f"df/dx = {self.expression.sympy_derivative()} (sympy's simplified form)",
                         "computed as written, with torch's chain rule: nan where any part of f is undefined, as in torch",
                         "elementwise: a diagonal Jacobian")
        self.second_formulas = (f"d2f/dx2 = {self.expression.sympy_second()} (sympy), entry by entry: "
                                "a diagonal Hessian",)

    def check(self, args, params):
        self.expression.check_dtype(args["input"].dtype)
        return []

    def f(self, x, params):
        with np.errstate(all="ignore"):
            return np.array(self.expression.numpy_value(x), dtype=x.dtype)

    def df(self, x, params):
        with np.errstate(all="ignore"):
            return np.asarray(self.expression.numpy_derivative(x), dtype=x.dtype)

    def d2f(self, x, params):
        with np.errstate(all="ignore"):
            return np.asarray(self.expression.numpy_second_derivative(x), dtype=x.dtype)

    def torch_forward(self, args, params):
        return self.expression.torch_value(args["input"])

    def vjp_formula(self, params):
        def vjp(g, x):
            with np.errstate(all="ignore"):
                return np.asarray(self.expression.numpy_vjp(x, g), dtype=x.dtype)
        return vjp

    def kinks(self, args, params):
        return None

    def notes(self, args, params, wrt):
        return []


def kink_notes(on_kink: np.ndarray, name: str, where: str, torch_value: str, fd_value: str) -> list[str]:
    """A note naming the entries that sit where ``name`` is not differentiable."""
    count = int(on_kink.sum())
    if not count:
        return []
    first = [int(i) for i in np.argwhere(on_kink)[0]]
    return [f"{count} entr{'y sits' if count == 1 else 'ies sit'} on {name}'s kink at {where} (first at {first}): "
            f"torch's convention gives derivative {torch_value} there; central finite differences give {fd_value}"]
