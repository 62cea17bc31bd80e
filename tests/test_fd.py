"""fd's adaptive steps, its error estimate and its non-smooth entries, against
exact torch derivatives: the hard inputs of issue 12 one by one, and a
property over random scales, offsets, functions and dtypes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import gradcli
from gradcli.cli import app

runner = CliRunner()
F = torch.nn.functional

# expr: texts and the same function in torch.
EXPR = {
    "abs(x)": torch.abs,
    "sin(x)": torch.sin,
    "sqrt(x)": torch.sqrt,
    "x**3 - x": lambda x: x**3 - x,
    "exp(-x**2)": lambda x: torch.exp(-x**2),
    "log(1 + x**2)": lambda x: torch.log(1 + x**2),
    "tanh(2*x) + 0.5*x": lambda x: torch.tanh(2 * x) + 0.5 * x,
}


def torch_function(name: str, arrays: dict):
    """``name`` as a torch function of the input, the other arrays fixed."""
    if name.startswith("expr:"):
        return EXPR[name[5:]]
    target = arrays.get("target")
    target = None if target is None else torch.tensor(target)
    return {
        "softmax": lambda x: torch.softmax(x, -1),
        "log_softmax": lambda x: torch.log_softmax(x, -1),
        "cross_entropy": lambda x: F.cross_entropy(x, target),
        "tanh": torch.tanh, "sigmoid": torch.sigmoid, "exp": torch.exp, "log": torch.log, "relu": torch.relu,
        "mse_loss": lambda x: F.mse_loss(x, target),
        "binary_cross_entropy": lambda x: F.binary_cross_entropy(x, target, reduction="sum"),
    }[name]


def exact(name: str, arrays: dict) -> np.ndarray:
    """The full Jacobian by torch autograd in float64, at the input as given
    (a float32 input is the float32 number it holds)."""
    x = torch.tensor(np.asarray(arrays["input"], dtype=np.float64))
    return torch.autograd.functional.jacobian(torch_function(name, arrays), x).numpy()


def fd(name: str, arrays: dict, **kw):
    params = {"reduction": "sum"} if name == "binary_cross_entropy" else {}
    quantity = gradcli.grad if name in ("cross_entropy", "mse_loss", "binary_cross_entropy") else gradcli.jacobian
    if quantity is gradcli.jacobian:
        kw.setdefault("layout", "full")
    return quantity(name, backend="fd", **arrays, **params, **kw)


def true_error(res, expected):
    return np.abs(res.value.astype(np.float64).reshape(expected.shape) - expected)


def assert_bounded_or_flagged(res, expected):
    """Every entry: fd's estimate bounds its true error, or it is flagged non-smooth."""
    err = true_error(res, expected)
    flagged = res.nonsmooth.reshape(expected.shape)
    bounded = err <= res.error.astype(np.float64).reshape(expected.shape)
    assert (bounded | flagged).all(), (err[~bounded], res.error.reshape(expected.shape)[~bounded])


OFFSET = np.random.default_rng(0).standard_normal((4, 6))

# The table of issue 12: smooth inputs, each accurate, bounded and not flagged.
SMOOTH = [
    ("softmax", {"input": OFFSET + 1e4}),
    ("softmax", {"input": OFFSET + 1e3}),
    ("cross_entropy", {"input": OFFSET + 1e3, "target": np.array([1, 0, 5, 2])}),
    ("relu", {"input": np.array([1e-4, -2e-4, 0.5, 3.0])}),
    ("expr:sin(x)", {"input": np.array([1e4, -1e4 + 0.3])}),
    ("log", {"input": np.array([1e-4, 2e-3])}),
    ("expr:sqrt(x)", {"input": np.array([1e-6, 3e-6])}),
    ("binary_cross_entropy", {"input": np.array([1e-7, 1e-4, 0.5, 1 - 1e-4, 1 - 1e-7]),
                              "target": np.array([0.3, 1.0, 0.0, 0.2, 0.9])}),
]


@pytest.mark.parametrize("name, arrays", SMOOTH, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SMOOTH)])
def test_hard_smooth_inputs_are_accurate_and_bounded(name, arrays):
    expected = exact(name, arrays)
    res = fd(name, arrays)
    err = true_error(res, expected)
    assert not res.nonsmooth.any()
    assert err.max() <= 1e-7 * np.abs(expected).max()
    assert_bounded_or_flagged(res, expected)
    # The note names the steps actually used (the old one reported max |x|).
    steps = next(n for n in res.notes if n.startswith("fd: step"))
    assert "1e+04" not in steps and "adaptive" in steps


def test_offset_logits_take_small_steps_not_steps_scaled_by_x():
    res = fd("softmax", {"input": OFFSET + 1e4})
    note = next(n for n in res.notes if n.startswith("fd: step"))
    largest = float(re.findall(r"[0-9.e+-]+", note.split("(")[0])[-1])
    assert largest < 1.0  # the old rule stepped by eps^(1/5) * 1e4 = 7.4


@pytest.mark.parametrize("x", [np.array([1e-8, -1e-8]), np.array([2e-8, -3e-8, 1.0])])
def test_abs_near_its_kink_is_exact_or_flagged_never_blamed_on_autograd(x):
    """Steps shrink below the distance to the kink (1e-8): the differences are
    then exactly the slope, with an estimate that bounds them; check agrees
    with autograd instead of suspecting it."""
    expected = exact("expr:abs(x)", {"input": x})
    res = fd("expr:abs(x)", {"input": x})
    assert_bounded_or_flagged(res, expected)
    assert ((true_error(res, expected) == 0) | res.nonsmooth).all()
    report = gradcli.check("expr:abs(x)", input=x)
    assert report.ok and not any("suspect" in n for n in report.notes)


@pytest.mark.parametrize("name, x", [("relu", [0.0, 1.0, -2.0]), ("expr:abs(x)", [0.0, 0.5]),
                                     ("expr:sqrt(x)", [0.0, 4.0])])
def test_kinks_and_domain_edges_at_the_point_are_flagged(name, x):
    """relu and abs at 0 (the differences see a kink at every step), sqrt at
    0 (no finite point on the left, no converging one-sided tableau)."""
    arrays = {"input": np.array(x)}
    res = fd(name, arrays)
    flagged = np.zeros((len(x), len(x)), dtype=bool)
    flagged[0, 0] = True
    np.testing.assert_array_equal(res.nonsmooth, flagged)
    assert any("1 entry non-smooth" in n and "[0]" in n for n in res.notes)
    expected = exact(name, arrays)
    if np.isfinite(expected).all():  # sqrt'(0) is inf
        assert_bounded_or_flagged(res, expected)


def test_float32_estimate_includes_the_rounding_to_float32():
    x = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    expected = exact("softmax", {"input": x})
    res = fd("softmax", {"input": x}, dtype="float32")
    assert res.value.dtype == np.float32
    assert_bounded_or_flagged(res, expected)
    # The float32 rounding dominates the estimate: at least eps32 |value| per entry.
    assert (res.error >= np.finfo(np.float32).eps * np.abs(res.value) * 0.99).all()
    same = fd("softmax", {"input": x}, dtype="float32", fd_dtype="same")
    assert_bounded_or_flagged(same, expected)


@pytest.mark.parametrize("method", ["central", "forward"])
@pytest.mark.parametrize("step", [None, 1e-3])
def test_fixed_methods_and_steps_keep_a_bounding_estimate(method, step):
    x = np.random.default_rng(2).standard_normal((3, 5)) * 2
    expected = exact("softmax", {"input": x})
    res = fd("softmax", {"input": x}, fd_method=method, fd_step=step)
    assert_bounded_or_flagged(res, expected)
    assert not res.nonsmooth.any()
    assert any(n.startswith("fd: step") and "fixed" in n for n in res.notes)


def test_fixed_richardson_step_is_used_as_given():
    x = np.array([0.3, -1.2, 2.0])
    res = fd("tanh", {"input": x}, fd_step=1e-2)
    assert_bounded_or_flagged(res, exact("tanh", {"input": x}))
    assert any("step 0.01 (fixed)" in n for n in res.notes)


def test_check_reports_fd_non_smooth_entries_instead_of_a_mismatch(tmp_path):
    """User code has no kink catalogue: relu at exactly 0 is found by fd's
    steps, reported as non-smooth, and not counted against autograd."""
    (tmp_path / "m.py").write_text("import torch\n\ndef f(x):\n    return torch.relu(x)\n")
    x = np.array([0.0, 1.0, -1.0])
    report = gradcli.check(f"{tmp_path / 'm.py'}:f", input=x, backends=["fd"])
    fd_row = report.backends[0]
    assert report.ok and fd_row.mismatches == 0 and fd_row.kink_entries == 1
    notes = [n for result in report.results for n in result.notes]  # (one result per argument)
    assert any("non-smooth" in n for n in notes)
    assert not any("suspect" in n for n in notes)


CONV = '''
import torch
from torch import nn

torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 10 * 10, 5)).double().eval()
'''


def test_per_sample_blocks_of_user_code_keep_fd_error_shaped_like_the_value(tmp_path):
    """Issue 13: per-sample blocks of a multi-dimensional input; fd's error and
    mask are shaped like the value (they were (B, K, prod(in)))."""
    (tmp_path / "conv.py").write_text(CONV)
    x = np.random.default_rng(3).standard_normal((6, 3, 10, 10))
    np.save(tmp_path / "x.npy", x)
    res = gradcli.jacobian(f"{tmp_path / 'conv.py'}:net", input=x, backend="fd", layout="blocks")
    assert res.value.shape == res.error.shape == res.nonsmooth.shape == (6, 5, 3, 10, 10)
    out = tmp_path / "J.npz"
    result = runner.invoke(app, ["jacobian", f"{tmp_path / 'conv.py'}:net", "-x", str(tmp_path / "x.npy"),
                                 "--layout", "blocks", "-b", "fd", "-o", str(out)])
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    assert saved["error"].shape == saved["value"].shape == saved["nonsmooth"].shape == (6, 5, 3, 10, 10)
    report = runner.invoke(app, ["check", f"{tmp_path / 'conv.py'}:net", "-x", str(tmp_path / "x.npy"),
                                 "--layout", "blocks", "--backends", "fd", "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["ok"] is True


def test_cli_names_the_non_smooth_entries():
    result = runner.invoke(app, ["jacobian", "relu", "-x", "[1e-4, -2e-4, 0.0, 3]", "-b", "fd", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["value"] == [1.0, 0.0, 0.5, 1.0]
    assert any("1 entry non-smooth" in n and "[2]" in n for n in doc["notes"])


# --- the property: over scales, offsets, functions and dtypes -------------------------------------

FUNCTIONS = ["softmax", "log_softmax", "cross_entropy", "tanh", "sigmoid", "exp", "log", "mse_loss",
             "expr:sin(x)", "expr:x**3 - x", "expr:exp(-x**2)", "expr:tanh(2*x) + 0.5*x"]


@st.composite
def problems(draw):
    name = draw(st.sampled_from(FUNCTIONS))
    scale = 10.0 ** draw(st.floats(-6, 4))
    offset = draw(st.sampled_from([0.0, 1.0, -1.0])) * 10.0 ** draw(st.floats(-3, 4))
    dtype = draw(st.sampled_from(["float64", "float32"]))
    shape = (draw(st.integers(1, 3)), draw(st.integers(2, 5)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = offset + scale * rng.standard_normal(shape)
    if name == "log":
        x = np.abs(x) + 1e-300
    if name in ("exp", "expr:x**3 - x"):
        x = np.clip(x, -80, 80)  # finite in float32 too
    if name == "expr:exp(-x**2)":
        x = np.clip(x, -9, 9)
    if name == "cross_entropy":
        # Offsets of any size, spreads up to 5: beyond, a row saturates and its loss log(1 + e) is e rounded to
        # nothing at every point (the catalogue's log-sum-exp), so fd sees 0 and nothing tells it otherwise.
        x = offset + np.minimum(scale, 5.0) * rng.standard_normal(shape)
    arrays = {"input": x.astype(dtype)}
    if name == "cross_entropy":
        arrays["target"] = rng.integers(0, shape[1], shape[0])
    if name == "mse_loss":
        arrays["target"] = (offset + scale * rng.standard_normal(shape)).astype(dtype)
    return name, arrays, dtype


@settings(max_examples=60)
@given(problems())
def test_estimate_bounds_the_true_error_or_the_entry_is_flagged(problem):
    name, arrays, dtype = problem
    expected = exact(name, arrays)
    res = fd(name, arrays, dtype=dtype)
    assert_bounded_or_flagged(res, expected)
    scale = np.abs(expected).max()
    output = float(np.abs(res.output).max())
    # Smooth functions in float64: within 1e-7 of the Jacobian's scale, wherever the derivative is resolved
    # at all (not a saturated sigmoid whose 1 - 1e-13 hides its slope, say).
    if dtype == "float64" and scale >= 1e-3 * output / (1 + np.abs(arrays["input"]).max()):
        err = true_error(res, expected)
        assert not res.nonsmooth.any()
        assert err.max() <= 1e-7 * scale


# --- user code that rounds inside: a float32 or bfloat16 cast ---------------------------------------

CASTS = '''
import torch
import torch.nn.functional as F

def squared(x):
    return (x.float() ** 2).double()

def mixed(x):
    return torch.tanh(x.float() * 1.7).double() * x

def brain(x):
    return torch.exp(x.to(torch.bfloat16)).double()

def loss(x, t):
    return F.cross_entropy(x.float(), t)
'''


@pytest.mark.parametrize("name", ["squared", "mixed", "brain"])
def test_code_that_rounds_inside_gets_error_bars_for_its_own_precision(tmp_path, name):
    """A float64 problem whose code casts to float32 (or bfloat16) inside: fd's
    steps and estimate follow the precision the code resolves (measured), so
    the estimate bounds the true error (it was 1e-8 against errors of 0.03,
    the steps shrunk into the float32 rounding), and a note says why."""
    (tmp_path / "casts.py").write_text(CASTS)
    x = np.random.default_rng(1).standard_normal((3, 4))
    res = gradcli.jacobian(f"{tmp_path / 'casts.py'}:{name}", input=x, backend="fd", layout="full")
    namespace: dict = {}
    exec(CASTS, namespace)
    expected = torch.autograd.functional.jacobian(namespace[name], torch.tensor(x)).numpy()
    assert_bounded_or_flagged(res, expected)
    assert not res.nonsmooth.any()
    assert any("rounds inside" in n for n in res.notes)


def test_check_of_a_right_float32_loss_in_float64_passes(tmp_path):
    """The mixed-precision idiom F.cross_entropy(logits.float(), t): a right
    backward passes (fd within its bar; it was a MISMATCH blaming autograd)."""
    (tmp_path / "casts.py").write_text(CASTS)
    x, t = np.random.default_rng(2).standard_normal((4, 5)), np.array([0, 3, 1, 4])
    report = gradcli.check(f"{tmp_path / 'casts.py'}:loss", input=x, target=t, backends=["fd"])
    assert report.ok, report.results[0].top
    assert not any("suspect" in n for n in report.results[0].notes)


@pytest.mark.parametrize("scale", [1e-3, 1.0])
def test_float64_code_is_not_taken_for_code_that_rounds_inside(tmp_path, scale):
    """A value far larger than its change (logsumexp of small logits: 1.6
    against 1e-3) rounds the smallest probes in float64 too: that is the
    rounding fd's model already has, not a coarser precision (it widened
    the steps and the bars)."""
    (tmp_path / "m.py").write_text("import torch\n\ndef lse(x):\n    return torch.logsumexp(x, -1)\n")
    x = scale * np.random.default_rng(5).standard_normal((4, 5))
    res = gradcli.jacobian(f"{tmp_path / 'm.py'}:lse", input=x, backend="fd", layout="full")
    expected = torch.autograd.functional.jacobian(lambda v: torch.logsumexp(v, -1), torch.tensor(x)).numpy()
    assert not any("rounds inside" in n for n in res.notes)
    assert true_error(res, expected).max() <= 1e-9 * np.abs(expected).max()
    assert_bounded_or_flagged(res, expected)


# --- second differences (hessian, hvp) -------------------------------------------------------------

HARD_SECOND = [
    ("sin(1000*x)", np.random.default_rng(0).standard_normal(5), "float64"),  # coarse levels agreed by chance
    ("1/x", np.array([1e-3, 1.0]), "float64"),  # every level's step crossed the pole at 0
    ("tanh(x)", np.array([0.5, 3.0, 10.0, 1e-4]), "float32"),  # the float32 rounding of the value
    ("x**4", np.array([1e3, -1e3, 1e-3, 1.0]), "float32"),
]


@pytest.mark.parametrize("expr, x, dtype", HARD_SECOND, ids=[c[0] for c in HARD_SECOND])
def test_second_differences_bound_their_error_or_are_flagged(expr, x, dtype):
    """fd's Hessian estimate bounds its true error, or the entry is marked
    non-smooth: it was 1e-3 against an error of 2e5 (sin(1000 x)), 2e7 against
    2e9 (1/x at 1e-3), and missed float32's rounding of the value."""
    x = x.astype(dtype)
    res = gradcli.hessian(f"expr:{expr}", input=x, backend="fd", dtype=dtype, layout="diag")
    f = EXPR.get(expr) or {"sin(1000*x)": lambda v: torch.sin(1000 * v), "1/x": lambda v: 1 / v,
                           "tanh(x)": torch.tanh, "x**4": lambda v: v ** 4}[expr]
    exact = np.diagonal(torch.autograd.functional.hessian(lambda v: f(v).sum(), torch.tensor(x, dtype=torch.float64)).numpy())
    err = np.abs(res.value.astype(np.float64) - exact)
    flagged = np.zeros(x.shape, bool) if res.nonsmooth is None else res.nonsmooth
    assert ((err <= res.error.astype(np.float64)) | flagged).all(), (err, res.error, flagged)
    assert flagged.sum() <= 1


def test_second_differences_at_offset_logits_bound_their_error():
    """Logits offset by 1e4: the steps land exactly on the float64 grid there (a
    rounded point moved by half a spacing, 160 times the estimate)."""
    rng = np.random.default_rng(0)
    rng.standard_normal(15)
    for _ in range(2):
        rng.standard_normal((3, 5)), rng.integers(0, 5, 3)
    x, t = 1e4 + rng.standard_normal((3, 5)), rng.integers(0, 5, 3)
    exact = gradcli.hessian("cross_entropy", input=x, target=t, backend="analytic").value
    fd = gradcli.hessian("cross_entropy", input=x, target=t, backend="fd")
    assert np.all(np.abs(fd.value - exact) <= fd.error) and fd.error.max() < 1e-8


def test_check_of_a_right_hessian_of_a_fast_function_passes():
    """check --quantity hessian: fd no longer reports sin(1000 x)'s right Hessian as wrong."""
    x = np.random.default_rng(0).standard_normal(5)
    report = gradcli.check("expr:sin(1000*x)", input=x, quantity="hessian", backends=["fd"])
    assert report.ok, report.results[0].top


def test_expressions_that_cancel_as_written_get_bars_for_their_rounding():
    """expr: is computed as written, so (exp(x) - 1 - x) / x**2 at 1e-4 loses
    eight digits to cancellation, which the model eps |f| does not see: fd
    measures the precision the expression resolves, as for user code (its bar
    was 2.5e-5 against an error of 8.6e-5)."""
    x = np.array([1e-3, 1e-4, 1e-2, -1e-3])
    res = gradcli.jacobian("expr:(exp(x)-1-x)/x**2", input=x, backend="fd")
    exact = 1 / 6 + x / 12 + x**2 / 40 + x**3 / 180  # the series of d/dx sum_k x^(k-2) / k!
    err = np.abs(res.value - exact)
    assert ((err <= res.error) | res.nonsmooth).all(), (err, res.error)
    x = np.array([1e-8, 1e-4, 1e-2], dtype=np.float32)
    res = gradcli.jacobian("expr:sqrt(x**2+1)-1", input=x, backend="fd", dtype="float32")
    exact = x.astype(np.float64) / np.sqrt(x.astype(np.float64) ** 2 + 1)
    err = np.abs(res.value.astype(np.float64) - exact)
    assert ((err <= res.error) | res.nonsmooth).all(), (err, res.error)


def test_a_fast_function_is_not_taken_for_code_that_rounds_inside():
    """sin(1000 x) at x = 32: a change of 1e-3 of x looks linear by chance
    (aliased); taken as the reference, it made fd believe the expression
    rounds to 2e-4 and difference at steps of 0.19, with a bar of 1.6 against
    an error of 740."""
    x = 32.0952 + 1e-6 * np.random.default_rng(3).standard_normal(6)
    res = gradcli.jacobian("expr:sin(1000*x)", input=x, backend="fd")
    exact = 1000 * np.cos(1000 * x)
    assert not any("rounds inside" in n for n in res.notes)
    err = np.abs(res.value - exact)
    assert ((err <= res.error) | res.nonsmooth).all(), (err, res.error)


def test_second_differences_count_noise_the_model_misses():
    """log(1 + x^2) rounds 1 + x^2 inside: at the rounding level the difference
    between levels is counted whole (a sample of the noise), where the model
    eps |f| gave a bar of 2.8e-9 against an error of 4.3e-9."""
    x = np.array([0.43439924672586183, -0.6431109648707265, 0.21317697916713052, 0.3839347123045428,
                  -0.14518006685120804])
    res = gradcli.hessian("expr:log(1+x**2)", input=x, backend="fd", layout="diag")
    exact = 2 * (1 - x**2) / (1 + x**2) ** 2
    flagged = np.zeros(x.shape, bool) if res.nonsmooth is None else res.nonsmooth
    assert ((np.abs(res.value - exact) <= res.error) | flagged).all(), (np.abs(res.value - exact), res.error)
