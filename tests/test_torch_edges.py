"""Edge cases where gradcli once disagreed with torch (issue 12, items 1-10).

Every test computes torch's answer here, on the torch call written out
literally, and compares every backend that applies. nan positions must agree
exactly (``equal_nan``); tolerances come from the dtype (conftest).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import gradcli
from conftest import assert_close, exact_tol, tol
from gradcli.cli import app

runner = CliRunner()
EXACT = ["analytic", "autograd", "forward"]
ALL = EXACT + ["fd"]


def torch_diag(f, x: np.ndarray, dtype="float64"):
    """Value and elementwise derivative of ``f`` at ``x`` by torch autograd (reverse mode)."""
    xt = torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
    out = f(xt)
    (grad,) = torch.autograd.grad(out, xt, torch.ones_like(out), allow_unused=True)
    grad = torch.zeros_like(xt) if grad is None else grad
    return out.detach().numpy(), grad.numpy()


def gradcli_diag(text: str, x: np.ndarray, backend: str, dtype="float64"):
    res = gradcli.jacobian(f"expr:{text}", input=x, backend=backend, dtype=dtype, allow_nonfinite=True)
    assert res.layout.value == "diag"
    return res.output, res.value


def refused(args, *needles):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    return result.stderr


def run_json(*args):
    result = runner.invoke(app, [*args, "--json", "--no-timing"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --- 1. functions of constants --------------------------------------------------

CONSTANT_CALLS = {
    "log(x)/log(2)": lambda x: torch.log(x) / torch.log(torch.tensor(2.0, dtype=x.dtype)),
    "sin(1)*x": lambda x: torch.sin(torch.tensor(1.0, dtype=x.dtype)) * x,
    "x*tanh(1)": lambda x: x * torch.tanh(torch.tensor(1.0, dtype=x.dtype)),
    "exp(-1/2)*x**2 + sqrt(2)*pi": lambda x: torch.exp(torch.tensor(-0.5, dtype=x.dtype)) * x**2
    + torch.sqrt(torch.tensor(2.0, dtype=x.dtype)) * np.pi,
}


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("text", list(CONSTANT_CALLS))
def test_functions_of_constants_work_in_every_backend(text, dtype, backend):
    x = np.array([0.5, 1.5, 3.0])
    out, d = torch_diag(CONSTANT_CALLS[text], x, dtype)
    got_out, got_d = gradcli_diag(text, x, backend, dtype)
    assert_close(got_out, out, exact_tol(dtype), "value")
    assert_close(got_d, d, tol(backend, dtype), "derivative")


# --- 2. sigmoid and softplus far out ----------------------------------------------

FAR = np.array([-800.0, -40.0, -5.0, 0.0, 5.0, 19.5, 20.5, 40.0, 800.0])


@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("text, f", [("sigmoid(x)", torch.sigmoid), ("softplus(x)", F.softplus),
                                     ("softplus(-x) - sigmoid(2*x)", lambda x: F.softplus(-x) - torch.sigmoid(2 * x))])
def test_sigmoid_and_softplus_are_torchs_stable_forms(text, f, dtype, backend):
    out, d = torch_diag(f, FAR, dtype)
    got_out, got_d = gradcli_diag(text, FAR, backend, dtype)
    assert np.isfinite(got_out).all() and np.isfinite(got_d).all()
    assert_close(got_out, out, exact_tol(dtype), "value")
    assert_close(got_d, d, exact_tol(dtype), "derivative")


@pytest.mark.parametrize("text, f", [("sigmoid(x)", torch.sigmoid), ("softplus(x)", F.softplus)])
def test_sigmoid_and_softplus_far_out_by_fd(text, f):
    x = np.array([-800.0, -3.0, 0.5, 800.0])  # away from softplus's switch to x at 20
    out, d = torch_diag(f, x)
    got_out, got_d = gradcli_diag(text, x, "fd")
    assert_close(got_out, out, exact_tol("float64"), "value")
    assert_close(got_d, d, tol("fd", "float64"), "derivative")


# --- 3. the expression as written, no simplification -------------------------------

AS_WRITTEN = {
    "exp(log(x))": (lambda x: torch.exp(torch.log(x)), [-1.0, 0.0, 2.0]),
    "x/x": (lambda x: x / x, [0.0, 2.0]),
    "sqrt(x**2)": (lambda x: torch.sqrt(x**2), [0.0, -2.0, 3.0]),
    "log(x**2)/2 - log(abs(x))": (lambda x: torch.log(x**2) / 2 - torch.log(torch.abs(x)), [0.0, -2.0, 3.0]),
    "x*(1/x)": (lambda x: x * (1 / x), [0.0, 4.0]),
    "(x**0.5)**2": (lambda x: (x**0.5) ** 2, [-1.0, 0.0, 4.0]),
    "log(x)**0 + x**x": (lambda x: torch.log(x) ** 0 + x**x, [0.0, 0.5, 2.0]),
    "2**x + 0**x": (lambda x: 2**x + 0**x, [-1.0, 0.0, 1.5]),
}


@pytest.mark.parametrize("text, backend", [(t, b) for t in AS_WRITTEN for b in ["analytic", "autograd"]]
                         + [(t, b) for t in ["exp(log(x))", "x/x", "sqrt(x**2)"] for b in ["forward", "fd"]])
def test_expression_is_evaluated_and_differentiated_as_written(text, backend):
    """The derivative is torch's reverse mode: forward mode and fd differ at these
    points by their nature, so they are held to the value only."""
    f, x = AS_WRITTEN[text]
    x = np.array(x)
    out, d = torch_diag(f, x)
    got_out, got_d = gradcli_diag(text, x, backend)
    np.testing.assert_allclose(got_out, out, rtol=exact_tol("float64"), equal_nan=True)
    if backend in ("analytic", "autograd"):
        np.testing.assert_allclose(got_d, d, rtol=exact_tol("float64"), equal_nan=True)


# --- 4. constants: folded in float64, or refused -------------------------------------

LARGE = {"x+2**1000": lambda x: x + 2.0**1000,  # the value is 2**1000 whatever x: fd sees no change
         "x*2**1000/2**1000": lambda x: x * 2.0**1000 / 2.0**1000,
         "x*(1e300*1e-300)": lambda x: x * 1.0}


@pytest.mark.parametrize("text, backend", [(t, b) for t in LARGE for b in ALL if (t, b) != ("x+2**1000", "fd")])
def test_large_finite_constants_keep_the_derivative(text, backend):
    f = LARGE[text]
    x = np.array([-1.5, 0.25, 3.0])
    out, d = torch_diag(f, x)
    got_out, got_d = gradcli_diag(text, x, backend)
    assert_close(got_out, out, exact_tol("float64"), "value")
    np.testing.assert_allclose(d, 1.0)
    assert_close(got_d, d, tol(backend, "float64"), "derivative")


@pytest.mark.parametrize("text, constant", [("x+10**1000", "10**1000"), ("x+(-8)**0.5", "(-8)**0.5"),
                                            ("x+0**-1", "0**-1"), ("x**(1/0)", "1/0"), ("x+1e400", "1e400"),
                                            ("x*log(0)", "log(0)"), ("x+sqrt(-1)", "sqrt(-1)"),
                                            ("x*exp(1000)/exp(1000)", "exp(1000)")])
def test_non_finite_or_complex_constants_are_refused(text, constant):
    refused(["jacobian", f"expr:{text}", "-x", "[1.0, 2.0]"], "FUNCTION", constant)


def test_constant_that_overflows_float32_is_refused_in_float32():
    refused(["jacobian", "expr:x*2**1000/2**1000", "-x", "[1.0, 2.0]", "--dtype", "float32"], "FUNCTION", "2**1000",
            "--dtype float64")


# --- 5. a mean whose class weights sum to 0 ----------------------------------------

def _zero_weight_case():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    target = np.array([0, 1, -100, 1])  # every counted row has weight 0; one row ignored
    weight = np.array([0.0, 0.0, 2.0])
    return x, target, weight


def _torch_grad(name, x, target, weight, **kw):
    xt = torch.tensor(x, requires_grad=True)
    loss = getattr(F, name)(xt, torch.tensor(target), weight=torch.tensor(weight), **kw)
    loss.backward()
    return loss.item(), xt.grad.numpy()


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("name, kw", [("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.2}),
                                      ("nll_loss", {})])
def test_mean_over_zero_total_weight_is_nan_as_torch(name, kw, backend):
    x, target, weight = _zero_weight_case()
    value, grad = _torch_grad(name, x, target, weight, **kw)
    assert np.isnan(value) and np.isnan(grad).any() and (grad == 0).any()
    res = gradcli.grad(name, input=x, target=target, class_weight=weight, backend=backend, **kw)
    assert np.isnan(res.output)
    if backend == "forward":  # torch's forward mode has its own answer here: nan everywhere
        grad = torch.func.jacfwd(lambda z: getattr(F, name)(z, torch.tensor(target), weight=torch.tensor(weight), **kw))(
            torch.tensor(x)).numpy()
    if backend == "fd" and name == "nll_loss":
        # fd differences a nan value: nan wherever torch is nan, and in the rest of those rows
        assert np.isnan(res.value[np.isnan(grad)]).all() and (res.value[target == -100] == 0).all()
    else:
        np.testing.assert_array_equal(res.value, grad)


# --- 6. arrays that broadcast to more than the input --------------------------------

def test_pos_weight_broadcasting_beyond_the_input_is_refused():
    refused(["jacobian", "binary_cross_entropy_with_logits", "-x", "[0.5, -1, 2]", "-t", "[1.0, 0.0, 1.0]",
             "--pos-weight", "[[1, 2, 3], [0.5, 0.5, 0.5]]", "--reduction", "none"], "--pos-weight")
    with pytest.raises(gradcli.UsageError, match="^pos_weight: "):
        gradcli.grad("binary_cross_entropy_with_logits", input=np.zeros(3), target=np.ones(3),
                     pos_weight=np.ones((2, 3)))
    xt = torch.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError):
        F.binary_cross_entropy_with_logits(xt, torch.ones(3), pos_weight=torch.ones(2, 3)).backward()


# --- 7. --rows slices every argument with the batch axis ----------------------------

ROWS_CASES = {
    "bce pos_weight like the input": (["binary_cross_entropy_with_logits", "--reduction", "none"],
                                      {"target": "rand:4,3", "pos_weight": "rand:4,3"}),
    "bce pos_weight (1, C)": (["binary_cross_entropy_with_logits", "--reduction", "none"],
                              {"target": "rand:4,3", "pos_weight": "[[0.5, 2.0, 3.0]]"}),
    "bce pos_weight (C,)": (["binary_cross_entropy_with_logits", "--reduction", "none"],
                            {"target": "rand:4,3", "pos_weight": "[0.5, 2.0, 3.0]"}),
    "softmax": (["softmax"], {}),
    "cross_entropy none, class weights of the batch size": (
        ["cross_entropy", "--reduction", "none"], {"target": "[0, 2, 1, 3]", "class_weight": "[1.0, 2.0, 0.5, 4.0]"}),
}


@pytest.mark.parametrize("rows", ["1", "0,3", "1:3"])
@pytest.mark.parametrize("case", list(ROWS_CASES))
def test_rows_give_the_full_computations_rows(case, rows):
    head, arrays = ROWS_CASES[case]
    x = "randn:4,4" if head[0] == "cross_entropy" else "randn:4,3"
    args = ["jacobian", *head, "-x", x, "--seed", "5"]
    for name, spec in arrays.items():
        args += ["--" + name.replace("_", "-"), spec]
    full = run_json(*args)
    part = run_json(*args, "--rows", rows)
    index = np.arange(4)[slice(*[int(p) for p in rows.split(":")])] if ":" in rows else [int(r) for r in rows.split(",")]
    assert part["output_shape"] == [len(index)] + full["output_shape"][1:]
    np.testing.assert_array_equal(np.array(part["output"]), np.array(full["output"])[index])
    np.testing.assert_array_equal(np.array(part["value"]), np.array(full["value"])[index])


# --- 8. binary_cross_entropy where x (1 - x) is clamped ----------------------------

@pytest.mark.parametrize("backend", EXACT)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_binary_cross_entropy_clamp_is_torchs(backend, dtype):
    x = np.array([1e-13, 0.0, 1.0, 1 - 2.0**-20, 0.3, 1e-7])
    t = np.array([1.0, 1.0, 0.0, 0.0, 0.6, 0.0])
    tdtype = getattr(torch, dtype)
    xt = torch.tensor(x, dtype=tdtype, requires_grad=True)
    loss = F.binary_cross_entropy(xt, torch.tensor(t, dtype=tdtype), reduction="sum")
    loss.backward()
    res = gradcli.grad("binary_cross_entropy", input=x, target=t, reduction="sum", backend=backend, dtype=dtype)
    assert_close(res.output, loss.item(), exact_tol(dtype), "value")
    np.testing.assert_allclose(res.value, xt.grad.numpy(), rtol=4 * np.finfo(dtype).eps)
    if dtype == "float64":
        assert abs(res.value[0]) == pytest.approx(1.000000003996e12, rel=1e-12)


# --- 9. log at an exact 0: torch.func.jacrev's Jacobian in every layout ------------

@pytest.mark.parametrize("backend", ["autograd", "analytic"])
@pytest.mark.parametrize("function", ["log", "expr:log(x)", "softmax,expr:log(x)"])
def test_log_at_zero_gives_jacrevs_answer_in_every_layout(function, backend):
    x = np.array([[0.0, 1.0, 3.0], [2.0, 0.0, 0.5]])
    if function.startswith("softmax"):
        x = np.array([[-800.0, 1.0, 3.0], [2.0, 1.0, 0.5]])  # softmax underflows to an exact 0
        f = lambda z: torch.log(torch.softmax(z, -1))  # noqa: E731
    else:
        f = torch.log
    jac = torch.func.jacrev(f)(torch.tensor(x)).numpy()
    assert np.isnan(jac).any()
    full = gradcli.jacobian(function, input=x, layout="full", backend=backend).value
    np.testing.assert_allclose(full, jac, rtol=exact_tol("float64"), equal_nan=True)
    blocks = gradcli.jacobian(function, input=x, layout="blocks", backend=backend).value
    expected = np.stack([jac[r, :, r, :] for r in range(2)])
    np.testing.assert_allclose(blocks, expected, rtol=exact_tol("float64"), equal_nan=True)


# --- 10. a float32 file computed in float64 says so --------------------------------

def test_float32_input_upcast_says_so(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.array([[0.5, -1.0, 2.0]], dtype=np.float32))
    doc = run_json("jacobian", "softmax", "-x", str(path))
    assert doc["dtype"] == "float64"
    assert any("float32" in n and "--dtype float32" in n for n in doc["notes"]), doc["notes"]
    np.save(path, np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]], dtype=np.float32))
    assert any("--dtype float32" in n for n in run_json("jacobian", "softmax", "-x", str(path), "--rows", "1")["notes"])
    explicit = run_json("jacobian", "softmax", "-x", str(path), "--dtype", "float64")
    assert not any("--dtype float32" in n for n in explicit["notes"])
    as_float32 = run_json("jacobian", "softmax", "-x", str(path), "--dtype", "float32")
    assert as_float32["dtype"] == "float32" and not any("--dtype float32" in n for n in as_float32["notes"])
    np.save(path, np.array([[0.5, -1.0, 2.0]]))
    assert not any("--dtype float32" in n for n in run_json("jacobian", "softmax", "-x", str(path))["notes"])


# --- expr: random expressions against torch autograd of the same text ----------------

_TORCH_NAMES = {**{n: getattr(torch, n) for n in ("exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh",
                                                   "asin", "acos", "atan", "abs", "erf", "sigmoid")},
                "softplus": F.softplus}


def _torch_literal(text: str):
    """The expression as a torch function, by Python itself (test code, on texts the test wrote):
    functions of constants take 0-d tensors of x's dtype."""
    def fn(name):
        f = _TORCH_NAMES[name]
        return lambda v: f(v) if isinstance(v, torch.Tensor) else f(torch.tensor(float(v), dtype=torch.float64))
    namespace = {name: fn(name) for name in _TORCH_NAMES} | {"pi": np.pi, "e": np.e}

    def f(x):
        value = eval(text, {"__builtins__": {}}, {**namespace, "x": x})  # noqa: S307
        return value + 0 * x  # a constant text still gives one value per entry
    return f


@st.composite
def _expression(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(["x", "x", "x", "2", "0.5", "3", "pi", "1"]))
    kind = draw(st.sampled_from(["binary", "binary", "call", "neg"]))
    if kind == "call":
        return f"{draw(st.sampled_from(sorted(_TORCH_NAMES)))}({draw(_expression(depth - 1))})"
    if kind == "neg":
        return f"-({draw(_expression(depth - 1))})"
    op = draw(st.sampled_from(["+", "-", "*", "/", "**"]))
    right = draw(st.sampled_from(["2", "3", "0.5", "-1", "0", "x"])) if op == "**" else draw(_expression(depth - 1))
    return f"({draw(_expression(depth - 1))}){op}({right})"


@pytest.mark.parametrize("backend", ["analytic", "autograd"])
@given(text=_expression())
def test_random_expressions_match_torch_autograd_of_the_same_text(backend, text):
    """Value and derivative at points that include 0, ±1 and far-out values: every
    nan and inf where torch has one, the finite entries to rounding (absolute
    1e-12 for unit-scale cancellations such as 1 - tanh(y)**2, one ulp apart)."""
    x = np.array([-800.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 30.0])
    try:
        got = gradcli.jacobian(f"expr:{text}", input=x, backend=backend, allow_nonfinite=True)
    except gradcli.UsageError as err:  # a refused constant: Python's own value of it is not finite
        assert "the constant" in str(err)
        return
    with np.errstate(all="ignore"):
        out, d = torch_diag(_torch_literal(text), x)
    for mine, theirs, what in [(got.output, out, "value"), (got.value, d, "derivative")]:
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs), f"{what} nan of {text}")
        np.testing.assert_array_equal(np.isposinf(mine), np.isposinf(theirs), f"{what} +inf of {text}")
        finite = np.isfinite(theirs)
        np.testing.assert_allclose(mine[finite], theirs[finite], rtol=1e-9, atol=1e-12, err_msg=f"{what} of {text}")
