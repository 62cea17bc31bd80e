"""``expr:EXPRESSION``: an elementwise expression in ``x``, computed as torch would.

The text is parsed with Python's ``ast`` into a tree that is checked node by
node (only ``x``, numbers, ``pi``, ``e``, ``+ - * / **`` and the functions in
``FUNCTIONS``): no ``eval``, no attribute access, no names beyond the list.

- Constants (sub-expressions without ``x``: ``log(2)``, ``2**1000/2**1000``)
  are folded once, at parse time, in float64 with the same NumPy operations,
  as Python numbers reach torch. Each step must be a finite real float64
  number (``10**1000``, ``(-8)**0.5``, ``0**-1``, ``1/0``, ``log(0)``,
  ``exp(1000)`` are refused, naming the constant); under ``--dtype float32``
  the folded constants must also fit float32 (:meth:`Expression.check_dtype`).
- The rest is evaluated *as written*, operation by operation, with NumPy or
  torch: nothing is simplified away, so ``x/x`` at 0 or ``exp(log(x))`` at -1
  is nan, as in torch. ``sigmoid`` and ``softplus`` are torch's stable
  ``torch.sigmoid`` and ``F.softplus`` (which returns ``x`` above 20).
- The NumPy derivative is reverse mode over the same tree with torch's own
  backward formulas (``derivatives.yaml``), e.g. ``d(a/b)`` sends ``g/b`` to
  ``a`` and ``-g (a/b)/b`` to ``b``, and ``x**c`` sends 0 when ``c == 0``: inf
  and nan land exactly where torch autograd puts them.

sympy only writes the derivative for ``--explain``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import UsageError
from .numerics import sigmoid_np, softplus_torch

MAX_LENGTH = 500
FUNCTIONS = ("exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "abs",
             "erf", "sigmoid", "softplus")
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
SOFTPLUS_THRESHOLD = 20.0  # torch's F.softplus default: x itself above it


@dataclass(frozen=True)
class Node:
    """One operation of the tree. ``op``: "x", "const", "neg", a binary operator,
    or a function name. ``value`` (constants): the folded float64 number;
    ``text``: the constant as the user wrote it."""

    op: str
    args: tuple["Node", ...] = ()
    value: float = 0.0
    text: str = ""

    @property
    def has_x(self) -> bool:
        return self.op != "const"


@dataclass(frozen=True)
class Expression:
    """A parsed ``expr:`` text: ``root`` is the tree, ``text`` what the user wrote."""

    text: str
    root: Node

    def constants(self) -> list[Node]:
        found, stack = [], [self.root]
        while stack:
            node = stack.pop()
            found += [node] if node.op == "const" else []
            stack += node.args
        return found

    def check_dtype(self, dtype: np.dtype) -> None:
        """Refuse a folded constant that overflows the working dtype (float32)."""
        big = float(np.finfo(dtype).max)
        for node in self.constants():
            if abs(node.value) > big:
                raise UsageError(f"FUNCTION: expr:{self.text}: the constant {node.text} = {node.value:.4g} overflows "
                                 f"{dtype}; use --dtype float64 or a smaller constant")

    def numpy_value(self, x: np.ndarray) -> np.ndarray:
        return _broadcast(_forward(self.root, x, _NUMPY, {}), x)

    def torch_value(self, x):
        return _broadcast(_forward(self.root, x, _torch_functions(), {}), x)

    def numpy_derivative(self, x: np.ndarray) -> np.ndarray:
        """``f'(x)`` elementwise: reverse mode from ``g = 1`` with torch's backward formulas."""
        return self.numpy_vjp(x, np.ones_like(x))

    def numpy_vjp(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        """``g f'(x)`` elementwise, as torch's reverse mode computes it from the
        cotangent ``g`` (shaped like ``x``, or a stack of such: leading axes):
        for ``g = 0``, nan only where a formula makes ``0 * inf`` or ``0 / 0``,
        as in torch."""
        values: dict[int, np.ndarray] = {}
        _forward(self.root, x, _NUMPY, values)
        grads: list[np.ndarray] = []
        _backward(self.root, g, values, grads)
        return sum(grads, np.zeros(np.broadcast_shapes(np.shape(g), np.shape(x)), dtype=x.dtype))  # x.grad's sum

    def sympy_derivative(self) -> str:
        """The derivative as sympy writes it (simplified: for reading only)."""
        import sympy

        x = sympy.Symbol("x", real=True)
        return str(sympy.diff(_to_sympy(self.root, x, sympy), x))

    def _second(self):
        """``f''`` as a sympy expression in the real symbol x. abs(x)'' is
        2 DiracDelta(x): zero away from the kink, where torch's double backward
        says 0 too."""
        import sympy

        x = sympy.Symbol("x", real=True)
        second = sympy.diff(_to_sympy(self.root, x, sympy), x, 2)
        return x, second.replace(sympy.DiracDelta, lambda *args: sympy.Integer(0))

    def sympy_second(self) -> str:
        return str(self._second()[1])

    def numpy_second_derivative(self, x: np.ndarray) -> np.ndarray:
        """``f''(x)`` elementwise, from sympy's second derivative of the tree. The
        tree was validated node by node (only x, numbers and FUNCTIONS), so the
        NumPy function sympy generates from it calls nothing else."""
        import sympy

        symbol, second = self._second()
        evaluate = sympy.lambdify(symbol, second, modules=[{"erf": _np_erf, "sign": np.sign}, "numpy"])
        return _broadcast(np.asarray(evaluate(x), dtype=np.float64).astype(x.dtype, copy=False), x)


def parse(text: str) -> Expression:
    """``text`` -> an :class:`Expression`; UsageError if not allowed."""
    if len(text) > MAX_LENGTH:
        raise UsageError(f"FUNCTION: expr: is longer than {MAX_LENGTH} characters")
    if "^" in text:
        raise UsageError("FUNCTION: expr: use ** for powers, not ^")
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        raise UsageError(f"FUNCTION: expr:{text} is not a valid expression ({err.msg}); e.g. expr:(x+1)**2") from None
    return Expression(text, _convert(tree.body, _Context(text, source)))


@dataclass(frozen=True)
class _Context:
    text: str
    source: str

    def refuse(self, what: str) -> UsageError:
        return UsageError(f"FUNCTION: expr:{self.text}: {what} is not allowed; use x, numbers, + - * / ** and "
                          f"{', '.join(FUNCTIONS)}")


def _convert(node, ctx: _Context) -> Node:
    """Check an ast node and build the tree; fold constant sub-expressions."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            return _constant(np.float64(node.value), node, ctx)
        except OverflowError:  # an integer literal beyond float64
            raise _bad_constant(node, ctx, "overflows float64") from None
    if isinstance(node, ast.Name):
        if node.id == "x":
            return Node("x")
        if node.id in ("pi", "e"):
            return _constant(np.float64(getattr(math, node.id)), node, ctx)
        raise ctx.refuse(f"the name {node.id!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _convert(node.operand, ctx)
        if isinstance(node.op, ast.UAdd):
            return operand
        return _fold(node, ctx, lambda v: -v, operand) if not operand.has_x else Node("neg", (operand,))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        op = _BINOPS[type(node.op)]
        left, right = _convert(node.left, ctx), _convert(node.right, ctx)
        if left.has_x or right.has_x:
            return Node(op, (left, right))
        return _fold(node, ctx, lambda a, b: _binary(op, a, b, False), left, right)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if len(node.args) != 1 or node.keywords:
            raise ctx.refuse(f"{node.func.id} with other than one argument")
        arg = _convert(node.args[0], ctx)
        name = node.func.id
        if arg.has_x:
            return Node(name, (arg,))
        return _fold(node, ctx, _NUMPY[name], arg)
    kind = type(node).__name__
    if isinstance(node, ast.Call):
        kind = f"calling {ast.unparse(node.func)!r}"
    elif isinstance(node, ast.Attribute):
        kind = f"attribute access ({ast.unparse(node)!r})"
    elif isinstance(node, ast.Lambda):
        kind = "lambda"
    raise ctx.refuse(kind)


def _fold(node, ctx: _Context, compute, *args: Node) -> Node:
    """The constant ``compute(*args)`` in float64, or a refusal naming it."""
    with np.errstate(all="ignore"):
        value = compute(*[np.float64(a.value) for a in args])
    return _constant(value, node, ctx)


def _constant(value, node, ctx: _Context) -> Node:
    if not np.isfinite(value):
        raise _bad_constant(node, ctx, f"is {value} in float64 (complex, infinite or undefined)")
    return Node("const", value=float(value), text=ast.get_source_segment(ctx.source, node) or ast.unparse(node))


def _bad_constant(node, ctx: _Context, why: str) -> UsageError:
    piece = ast.get_source_segment(ctx.source, node) or ast.unparse(node)
    return UsageError(f"FUNCTION: expr:{ctx.text}: the constant {piece} {why}; constants must be finite real numbers")


# --- evaluation as written ---------------------------------------------------------


def _np_softplus(x):
    """torch's F.softplus(x) (beta 1, threshold 20): x itself above the threshold."""
    return softplus_torch(x, 1.0, SOFTPLUS_THRESHOLD)


def _np_erf(x):
    from scipy.special import erf

    return erf(x)


# Each function of FUNCTIONS in NumPy and in torch: the same operation as torch computes it.
_NUMPY = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos, "tan": np.tan,
          "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "asin": np.arcsin, "acos": np.arccos,
          "atan": np.arctan, "abs": np.abs, "erf": _np_erf, "sigmoid": sigmoid_np, "softplus": _np_softplus}


def _torch_functions() -> dict:
    import torch
    import torch.nn.functional as F

    return {**{name: getattr(torch, name) for name in FUNCTIONS if name != "softplus"}, "softplus": F.softplus}


def _forward(node: Node, x, functions: dict, values: dict):
    """The value of ``node`` at ``x``, computed as torch's Python operators do
    (``c / t`` is ``reciprocal(t) * c``, ``c ** t`` is ``pow(c, t)``); every
    value is kept in ``values`` (by node id) for the backward pass."""
    if node.op == "x":
        out = x
    elif node.op == "const":
        out = node.value
    elif node.op == "neg":
        out = -_forward(node.args[0], x, functions, values)
    elif node.op in functions:
        out = functions[node.op](_forward(node.args[0], x, functions, values))
    else:
        a, b = (_forward(arg, x, functions, values) for arg in node.args)
        out = _binary(node.op, a, b, not node.args[0].has_x)
    values[id(node)] = out
    return out


def _binary(op: str, a, b, constant_over_tensor: bool):
    """``a op b`` as torch's Python operators compute it: ``c / t`` is ``t.reciprocal() * c``."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return (1 / b) * a if constant_over_tensor else a / b
    return a**b


def _broadcast(value, x):
    """A constant expression still gives one value per entry (and stays in torch's graph)."""
    return value + 0 * x if not hasattr(value, "shape") or value.shape != x.shape else value


def _backward(node: Node, g, values: dict, grads: list) -> None:
    """Send the cotangent ``g`` of ``node`` to its inputs with torch's backward
    formulas; the cotangents reaching ``x`` are appended to ``grads``."""
    if node.op == "const":
        return
    if node.op == "x":
        grads.append(g)
        return
    out = values[id(node)]
    if node.op == "neg":
        _backward(node.args[0], -g, values, grads)
        return
    if len(node.args) == 1:
        _backward(node.args[0], _unary_grad(node.op, g, values[id(node.args[0])], out), values, grads)
        return
    (left, right), (a, b) = node.args, (values[id(node.args[0])], values[id(node.args[1])])
    for child, grad in zip(node.args, _binary_grads(node.op, left, right, a, b, out, g)):
        if child.has_x:
            _backward(child, grad, values, grads)


def _unary_grad(name: str, g, v, out):
    """The cotangent of a function's argument ``v`` (``out`` = its value), in
    the order torch's backward computes it (so 0 * inf is nan where torch's is)."""
    if name == "exp":
        return g * out
    if name == "log":
        return g / v
    if name == "sqrt":
        return g / (2 * out)
    if name == "sin":
        return g * np.cos(v)
    if name == "cos":
        return g * -np.sin(v)
    if name == "tan":
        return g * (1 + out**2)
    if name == "sinh":
        return g * np.cosh(v)
    if name == "cosh":
        return g * np.sinh(v)
    if name == "tanh":
        return g * (1 - out * out)
    if name in ("asin", "acos"):
        r = 1 / np.sqrt(-v * v + 1)  # torch: (-x*x + 1).rsqrt()
        return g * (r if name == "asin" else -r)
    if name == "atan":
        return g / (v * v + 1)
    if name == "abs":
        return g * np.sign(v)
    if name == "erf":
        return 2 / math.sqrt(math.pi) * np.exp(-(v**2)) * g
    if name == "sigmoid":
        return g * (1 - out) * out
    # softplus: torch's softplus_backward, g z / (z + 1) with z = exp(x) up to the threshold, then g
    z = np.exp(np.minimum(v, SOFTPLUS_THRESHOLD))
    return np.where(v > SOFTPLUS_THRESHOLD, g, g * z / (z + 1))


def _binary_grads(op: str, left: Node, right: Node, a, b, out, g):
    """Cotangents of the two operands of ``a op b`` (torch's formulas; a
    constant operand gets none, as a tensor without requires_grad)."""
    if op == "+":
        return g, g
    if op == "-":
        return g, -g
    if op == "*":
        return g * b, g * a
    if op == "/":
        if not left.has_x:  # c / t = reciprocal(t) * c: reciprocal's backward is -g r^2
            r = 1 / b
            return None, -(g * a) * (r * r)
        return g / b, -g * ((a / b) / b)
    # **
    if not right.has_x:  # pow(t, c): zeros when c == 0, else g c t^(c-1)
        return (np.zeros_like(g) if b == 0 else g * (b * a ** (b - 1))), None
    if not left.has_x:  # pow(c, t): g * (out log c), 0 where c == 0 and t >= 0
        log_c = math.log(a) if a > 0 else (-math.inf if a == 0 else math.nan)
        return None, g * (np.where(b >= 0, 0.0, out * log_c) if a == 0 else out * log_c)
    with np.errstate(all="ignore"):
        d_base = np.where(b == 0, 0.0, g * (b * a ** (b - 1)))
        d_exponent = g * np.where((a == 0) & (b >= 0), 0.0, out * np.log(a))
    return d_base, d_exponent


def _to_sympy(node: Node, x, sp):
    if node.op == "x":
        return x
    if node.op == "const":
        return sp.Integer(int(node.value)) if node.value.is_integer() else sp.Float(node.value, 15)
    args = [_to_sympy(a, x, sp) for a in node.args]
    if node.op == "neg":
        return -args[0]
    if len(args) == 2:
        return _binary(node.op, *args, False)
    if node.op == "sigmoid":
        return 1 / (1 + sp.exp(-args[0]))
    if node.op == "softplus":
        return sp.log(1 + sp.exp(args[0]))
    return getattr(sp, "Abs" if node.op == "abs" else node.op)(args[0])
