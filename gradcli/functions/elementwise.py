"""Elementwise functions: sigmoid, tanh, relu, exp, log and ``expr:``.

Their Jacobian is diagonal: ``J[i..., j...] = f'(x[i...])`` where the indices
agree, else 0. Alone, each entry is its own row (``RowLayout.in_axis`` None,
blocks ``(*shape, 1)``, layout ``diag`` = ``f'(x)`` shaped like ``x``). Inside a
chain they take the chain's feature axis and give diagonal blocks.
"""

from __future__ import annotations

import numpy as np

from .base import ArrayArg, Function, RowKernel, RowLayout, Structure


def sigmoid_np(x: np.ndarray) -> np.ndarray:
    """Stable logistic: exp(-|x|) never overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def softplus_np(x: np.ndarray) -> np.ndarray:
    """Stable log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def diagonal_blocks(d: np.ndarray) -> np.ndarray:
    """``(*rows, C)`` derivatives -> ``(*rows, C, C)`` diagonal blocks.

    Off the diagonal, column j holds ``0 * d_j`` as torch's reverse mode
    computes it (jacrev's Jacobian of log at 0 is nan there, not 0)."""
    c = d.shape[-1]
    out = np.zeros(d.shape + (c,), dtype=d.dtype)
    if d.dtype.kind == "f":  # (a boolean mask of kinks stays boolean)
        with np.errstate(invalid="ignore"):
            out += (0 * d)[..., None, :]
    out.reshape(-1, c * c)[:, :: c + 1] = d.reshape(-1, c)
    return out


def elementwise_kernel(x: np.ndarray, f, df, axis: int | None) -> RowKernel:
    """The kernel of ``f`` at ``x``: one-feature rows, or rows along ``axis`` (a chain's)."""
    if axis is None:
        return RowKernel(x0=x[..., None], forward=lambda xr: f(xr[..., 0]), blocks=lambda: df(x)[..., None], coef=None)
    xr = np.moveaxis(x, axis, -1)
    return RowKernel(x0=xr, forward=f, blocks=lambda: diagonal_blocks(df(xr)), coef=None)


def elementwise_layout(shape, axis: int | None) -> RowLayout:
    if axis is None:
        return RowLayout(tuple(shape), None, None, 1, reduced=False)
    return RowLayout(tuple(shape), axis, axis, shape[axis], reduced=False)


class Elementwise(Function):
    """f applied to every entry. Subclasses give ``f``, ``df`` (NumPy) and ``torch_f``."""

    arrays = (ArrayArg("input", "any shape", required=True),)
    structure = Structure.DIAGONAL

    def f(self, x):
        raise NotImplementedError

    def df(self, x):
        raise NotImplementedError

    def torch_f(self, x):
        raise NotImplementedError

    def output_shape(self, args, params):
        return args["input"].shape

    def row_layout(self, args, params, wrt, axis=None):
        return elementwise_layout(args["input"].shape, axis)

    def kernel(self, args, params, wrt, axis=None):
        return elementwise_kernel(args["input"], self.f, self.df, axis)

    def torch_forward(self, args, params):
        return self.torch_f(args["input"])


class Sigmoid(Elementwise):
    name = "sigmoid"
    summary = "sigmoid(x) = 1 / (1 + exp(-x)), elementwise"
    formulas = ("s = sigmoid(x)", "ds/dx = s (1 - s), elementwise: a diagonal Jacobian")

    def f(self, x):
        return sigmoid_np(x)

    def df(self, x):
        s = sigmoid_np(x)
        return s * (1 - s)

    def torch_f(self, x):
        import torch

        return torch.sigmoid(x)


class Tanh(Elementwise):
    name = "tanh"
    summary = "tanh(x), elementwise"
    formulas = ("d tanh(x)/dx = 1 - tanh(x)^2, elementwise: a diagonal Jacobian",)

    def f(self, x):
        return np.tanh(x)

    def df(self, x):
        return 1 - np.tanh(x) ** 2

    def torch_f(self, x):
        import torch

        return torch.tanh(x)


class Relu(Elementwise):
    name = "relu"
    summary = "relu(x) = max(x, 0), elementwise"
    formulas = ("d relu(x)/dx = 1 where x > 0, else 0 (at x = 0 torch uses 0; relu has a kink there)",)

    def f(self, x):
        return np.maximum(x, 0)

    def df(self, x):
        return (x > 0).astype(x.dtype)

    def torch_f(self, x):
        import torch

        return torch.relu(x)

    def kinks(self, args, params):
        return args["input"] == 0

    def notes(self, args, params, wrt):
        return kink_notes(self.kinks(args, params), "relu", "x = 0", "0", "1/2")


class Exp(Elementwise):
    name = "exp"
    summary = "exp(x), elementwise"
    formulas = ("d exp(x)/dx = exp(x), elementwise: a diagonal Jacobian",)

    def f(self, x):
        return np.exp(x)

    def df(self, x):
        return np.exp(x)

    def torch_f(self, x):
        import torch

        return torch.exp(x)


class Log(Elementwise):
    name = "log"
    summary = "natural log(x), elementwise"
    formulas = ("d log(x)/dx = 1 / x, elementwise: a diagonal Jacobian",)

    def f(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(x)

    def df(self, x):
        with np.errstate(divide="ignore"):
            return 1 / x

    def torch_f(self, x):
        import torch

        return torch.log(x)

    def notes(self, args, params, wrt):
        bad = int((args["input"] <= 0).sum())
        return [f"log is undefined at {bad} entr(y/ies) <= 0: the value there is nan or -inf, as in torch"] if bad else []


class Expr(Elementwise):
    """``expr:TEXT``: parsed safely and computed as written, as torch would (see ``expr.py``)."""

    def __init__(self, text: str) -> None:
        from . import expr as expr_module

        self.text = text
        self.name = f"expr:{text}"
        self.expression = expr_module.parse(text)
        self.summary = f"the elementwise expression {text} in x"
        self.formulas = (f"f(x) = {text.strip()}",
                         f"df/dx = {self.expression.sympy_derivative()} (sympy's simplified form)",
                         "computed as written, with torch's chain rule: nan where any part of f is undefined, as in torch",
                         "elementwise: a diagonal Jacobian")

    def check(self, args, params):
        self.expression.check_dtype(args["input"].dtype)
        return []

    def f(self, x):
        with np.errstate(all="ignore"):
            return np.array(self.expression.numpy_value(x), dtype=x.dtype)

    def df(self, x):
        with np.errstate(all="ignore"):
            return np.asarray(self.expression.numpy_derivative(x), dtype=x.dtype)

    def torch_f(self, x):
        return self.expression.torch_value(x)


def kink_notes(on_kink: np.ndarray, name: str, where: str, torch_value: str, fd_value: str) -> list[str]:
    """A note naming the entries that sit where ``name`` is not differentiable."""
    count = int(on_kink.sum())
    if not count:
        return []
    first = [int(i) for i in np.argwhere(on_kink)[0]]
    return [f"{count} entr{'y sits' if count == 1 else 'ies sit'} on {name}'s kink at {where} (first at {first}): "
            f"torch's convention gives derivative {torch_value} there; central finite differences give {fd_value}"]
