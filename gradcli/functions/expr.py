"""``expr:EXPRESSION``: an elementwise expression in ``x``.

The text is parsed with Python's ``ast`` into a tree that is checked node by
node (only ``x``, numbers, ``+ - * / **``, and the functions in ``FUNCTIONS``)
and converted to a sympy expression by hand: no ``eval``, no attribute
access, no names beyond the list. sympy differentiates it; :func:`evaluate`
walks the sympy tree with NumPy or torch operations, so the same expression
runs in every backend.
"""

from __future__ import annotations

import ast

from ..errors import UsageError

MAX_LENGTH = 500
MAX_EXPONENT = 1000
FUNCTIONS = ("exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "asin", "acos", "atan", "abs",
             "erf", "sigmoid", "softplus")
_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}


def parse(text: str):
    """``text`` -> a sympy expression in the real symbol ``x``; UsageError if not allowed."""
    import sympy

    if len(text) > MAX_LENGTH:
        raise UsageError(f"FUNCTION: expr: is longer than {MAX_LENGTH} characters")
    if "^" in text:
        raise UsageError("FUNCTION: expr: use ** for powers, not ^")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise UsageError(f"FUNCTION: expr:{text} is not a valid expression ({err.msg}); e.g. expr:(x+1)**2") from None
    x = sympy.Symbol("x", real=True)
    return _convert(tree.body, x, sympy, text)


def _refuse(text: str, what: str):
    return UsageError(f"FUNCTION: expr:{text}: {what} is not allowed; use x, numbers, + - * / ** and "
                      f"{', '.join(FUNCTIONS)}")


def _convert(node, x, sp, text):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sp.Integer(node.value) if isinstance(node.value, int) else sp.Float(node.value)
    if isinstance(node, ast.Name):
        names = {"x": x, "pi": sp.pi, "e": sp.E}
        if node.id not in names:
            raise _refuse(text, f"the name {node.id!r}")
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _convert(node.operand, x, sp, text)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _convert(node.left, x, sp, text), _convert(node.right, x, sp, text)
        op = _BINOPS[type(node.op)]
        if op == "**":
            if right.is_number and abs(float(right)) > MAX_EXPONENT:
                raise _refuse(text, f"an exponent above {MAX_EXPONENT}")
            if left.is_number and right.is_number:
                return sp.Float(float(left) ** float(right)) if abs(float(left)) ** float(right) < 1e300 else sp.oo
            return left**right
        return {"+": left + right, "-": left - right, "*": left * right, "/": left / right}[op]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS:
        if len(node.args) != 1 or node.keywords:
            raise _refuse(text, f"{node.func.id} with other than one argument")
        arg = _convert(node.args[0], x, sp, text)
        name = node.func.id
        if name == "sigmoid":
            return 1 / (1 + sp.exp(-arg))
        if name == "softplus":
            return sp.log(1 + sp.exp(arg))
        return getattr(sp, "Abs" if name == "abs" else name)(arg)
    kind = type(node).__name__
    if isinstance(node, ast.Call):
        kind = f"calling {ast.unparse(node.func)!r}"
    elif isinstance(node, ast.Attribute):
        kind = f"attribute access ({ast.unparse(node)!r})"
    elif isinstance(node, ast.Lambda):
        kind = "lambda"
    raise _refuse(text, kind)


_NUMPY_FUNCS = {"exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan", "sinh": "sinh", "cosh": "cosh",
                "tanh": "tanh", "asin": "arcsin", "acos": "arccos", "atan": "arctan", "Abs": "abs", "sign": "sign"}
_TORCH_FUNCS = {"exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "tan": "tan", "sinh": "sinh", "cosh": "cosh",
                "tanh": "tanh", "asin": "asin", "acos": "acos", "atan": "atan", "Abs": "abs", "sign": "sign", "erf": "erf"}


def evaluate(expr, x, module):
    """Evaluate sympy ``expr`` at array ``x`` with ``module`` (numpy or torch),
    shaped like ``x`` (a constant expression is broadcast)."""
    value = _eval(expr, x, module)
    return value + 0 * x  # constants broadcast to x's shape (and stay in torch's graph)


def _eval(expr, x, module):
    if expr.is_Symbol:
        return x
    if expr.is_Number or expr.is_NumberSymbol:
        return float(expr)
    args = [_eval(a, x, module) for a in expr.args]
    if expr.is_Add:
        return _sum(args)
    if expr.is_Mul:
        return _prod(args)
    if expr.is_Pow:
        base, exponent = args
        return base**exponent
    name = type(expr).__name__
    if module.__name__ == "numpy":
        if name == "erf":
            from scipy.special import erf

            return erf(args[0])
        table = _NUMPY_FUNCS
    else:
        table = _TORCH_FUNCS
    if name not in table:
        raise UsageError(f"FUNCTION: expr: cannot evaluate {name} here")
    return getattr(module, table[name])(args[0])


def _sum(values):
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total


def _prod(values):
    total = values[0]
    for v in values[1:]:
        total = total * v
    return total
