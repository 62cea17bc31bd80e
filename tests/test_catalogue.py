"""The catalogue's stories and guarantees: Linear layers (story 2), elementwise
expressions (story 5), kinks, expr: safety, and `gradcli functions`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import gradcli
from conftest import assert_close, tol
from gradcli.cli import app
from gradcli.catalogue import catalogue

CATALOGUE = catalogue()

runner = CliRunner()
BACKENDS = ["analytic", "fd", "autograd", "forward"]


def run_json(*args):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wrt", ["weight", "bias"])
@pytest.mark.parametrize("smoothing", ["0.0", "0.1"])
def test_story2_linear_cross_entropy_grad_equals_what_backward_accumulates(tmp_path, backend, wrt, smoothing):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, size=6)
    layer = torch.nn.Linear(4, 3).double()
    loss = torch.nn.functional.cross_entropy(layer(torch.tensor(x)), torch.tensor(y), label_smoothing=float(smoothing))
    loss.backward()
    expected = getattr(layer, wrt).grad.numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "W.npy", layer.weight.detach().numpy())
    np.save(tmp_path / "b.npy", layer.bias.detach().numpy())
    doc = run_json("grad", "linear,cross_entropy", "-x", str(tmp_path / "x.npy"), "--weight", str(tmp_path / "W.npy"),
                   "--bias", str(tmp_path / "b.npy"), "-t", json.dumps(y.tolist()), "--wrt", wrt, "-b", backend,
                   "--label-smoothing", smoothing)
    assert doc["backend"] == backend and doc["wrt"] == wrt and doc["shape"] == list(expected.shape)
    assert_close(doc["value"], expected, tol(backend, "float64"))
    assert_close(doc["output"], loss.item(), 1e-12)


def test_story2_nll_loss_on_raw_linear_outputs_picks_one_class_and_says_why():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)) * 3
    res = gradcli.grad("linear,nll_loss", input=x, weight=w, target=np.array([0, 4, 2, 2]), wrt="input")
    logits_grad = gradcli.vjp("nll_loss", input=x @ w.T, target=np.array([0, 4, 2, 2]), cotangent=1.0)
    assert (np.count_nonzero(logits_grad.value, axis=1) == 1).all()
    assert_close(res.value, logits_grad.value @ w, 1e-12)
    assert any("expects log-probabilities" in n for n in res.notes)


def test_story2_explain_shows_each_factor():
    result = runner.invoke(app, ["grad", "linear,cross_entropy", "-x", "randn:3,4", "--weight", "randn:2,4", "-t", "[0, 1, 1]",
                                 "--wrt", "weight", "--explain"])
    assert result.exit_code == 0
    assert "(softmax(z) - onehot(y)) / N" in result.stdout and "dL/dW = (dL/dy)^T x" in result.stdout
    assert "[linear]" in result.stdout and "[cross_entropy]" in result.stdout


def test_story5_elementwise_jacobian_and_vjp():
    doc = run_json("jacobian", "expr:(x+1)**2", "-x", "eye:2", "--layout", "full")
    assert doc["shape"] == [2, 2, 2, 2]
    J = np.array(doc["value"])
    x = np.eye(2)
    for i, j, m, n in np.ndindex(2, 2, 2, 2):
        assert J[i, j, m, n] == (2 * (x[i, j] + 1) if (i, j) == (m, n) else 0)
    vjp = run_json("vjp", "expr:(x+1)**2", "-x", "eye:2")
    assert vjp["value"] == [[4.0, 2.0], [2.0, 4.0]]
    assert np.array_equal(np.einsum("ij,ijmn->mn", np.ones((2, 2)), J), np.array(vjp["value"]))
    diag = run_json("jacobian", "expr:(x+1)**2", "-x", "eye:2")
    assert diag["layout"] == "diag" and diag["value"] == [[4.0, 2.0], [2.0, 4.0]]
    blocks = run_json("jacobian", "expr:(x+1)**2", "-x", "eye:2", "--layout", "blocks")
    assert blocks["shape"] == [2, 2, 2] and blocks["value"] == [[[4.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 4.0]]]


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "x.__class__", "(lambda: 1)()", "x[0]",
                                  "open('f')", "exec('1')", "y + 1", "x if x else 1"])
def test_expr_that_reaches_for_python_is_refused(text):
    result = runner.invoke(app, ["jacobian", f"expr:{text}", "-x", "[1.0, 2.0]"])
    assert result.exit_code == 2 and result.stdout == "" and "not allowed" in result.stderr


@pytest.mark.parametrize("backend", ["analytic", "autograd"])
def test_kinks_follow_torch_and_are_named(backend):
    x = np.array([[-1.0, 0.0, 2.0]])
    relu = gradcli.jacobian("relu", input=x, backend=backend)
    assert relu.value.tolist() == [[0.0, 0.0, 1.0]]
    assert any("kink" in n and "[0, 1]" in n for n in relu.notes)
    l1 = gradcli.grad("l1_loss", input=x, target=np.array([[0.0, 0.0, 1.0]]), reduction="sum", backend=backend)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.l1_loss(xt, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), reduction="sum").backward()
    assert l1.value.tolist() == xt.grad.tolist()
    assert any("kink" in n and "[0, 1]" in n for n in l1.notes)


def test_fd_at_a_kink_gives_the_average_slope():
    res = gradcli.jacobian("relu", input=np.array([0.0, 1.0]), backend="fd")
    assert_close(res.value, [0.5, 1.0], 1e-9)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_every_entry_shows_formulas_and_options(name):
    result = runner.invoke(app, ["functions", name])
    assert result.exit_code == 0
    assert CATALOGUE[name].formulas[0][:30] in result.stdout.replace("\n", " ") or CATALOGUE[name].formulas[0][:20] in result.stdout


def test_functions_lists_every_entry_with_structure():
    doc = run_json("functions")
    names = [f["name"] for f in doc["functions"]]
    assert names == list(CATALOGUE)
    assert {f["structure"] for f in doc["functions"]} == {"blocks", "diagonal"}


def test_chain_stage_errors_name_the_stage():
    result = runner.invoke(app, ["grad", "linear,cross_entropy", "-x", "randn:3,4", "--weight", "randn:2,4", "-t", "[0, 1, 5]"])
    assert result.exit_code == 2 and "stage 2 (cross_entropy)" in result.stderr and "out of range" in result.stderr


def test_reduced_stage_must_end_the_chain():
    result = runner.invoke(app, ["grad", "cross_entropy,exp", "-x", "randn:3,4", "-t", "[0, 1, 2]"])
    assert result.exit_code == 2 and "must be the last stage" in result.stderr


# --- multi_margin_loss: a loss added through the catalogue alone (its module, its registry line,
# its reference entry); every family test reads it from tests/reference.py -------------------


def test_functions_lists_multi_margin_losss_own_options_only():
    doc = run_json("functions", "multi_margin_loss")
    entry = doc["functions"][0] if "functions" in doc else doc
    options = {p["option"] for p in entry["params"]} | {a["option"] for a in entry["arrays"]}
    assert {"--p", "--margin", "--reduction", "--class-weight", "--input", "--target"} == options


@pytest.mark.parametrize("p, margin", [(1, 1.0), (2, 0.5)])
def test_multi_margin_loss_from_the_command_line_matches_torch(tmp_path, p, margin):
    rng = np.random.default_rng(3)
    x, y, w = rng.standard_normal((4, 5)), rng.integers(0, 5, size=4), rng.random(5) + 0.5
    xt = torch.tensor(x, requires_grad=True)
    loss = torch.nn.functional.multi_margin_loss(xt, torch.tensor(y), p=p, margin=margin, weight=torch.tensor(w))
    loss.backward()
    doc = run_json("grad", "multi_margin_loss", "-x", json.dumps(x.tolist()), "-t", json.dumps(y.tolist()),
                   "--class-weight", json.dumps(w.tolist()), "--p", str(p), "--margin", str(margin))
    assert doc["backend"] == "analytic"
    assert_close(doc["value"], xt.grad.numpy(), tol("analytic", "float64"))
    assert_close(doc["output"], loss.item(), tol("analytic", "float64"))


def test_multi_margin_loss_refusals_name_the_option_and_the_limit():
    base = ["grad", "multi_margin_loss", "-x", "randn:3,4", "-t", "[0, 1, 3]"]
    result = runner.invoke(app, [*base, "--p", "3"])
    assert result.exit_code == 2 and "--p" in result.stderr and "1 or 2" in result.stderr
    result = runner.invoke(app, [*base, "-b", "forward"])  # torch has no forward-mode formula for it
    assert result.exit_code == 3 and "multi_margin_loss" in result.stderr and result.stdout == ""
    result = runner.invoke(app, ["grad", "cross_entropy", "-x", "randn:3,4", "-t", "[0, 1, 3]", "--margin", "2"])
    assert result.exit_code == 2 and "multi_margin_loss takes it" in result.stderr


def test_check_of_multi_margin_loss_compares_what_runs_and_says_why_forward_cannot():
    result = runner.invoke(app, ["check", "multi_margin_loss", "-x", "randn:3,4", "-t", "[0, 1, 3]", "--p", "2",
                                 "--json"])
    doc = json.loads(result.stdout)
    assert result.exit_code == 0 and doc["ok"] is True
    by_name = {b["name"]: b for b in doc["backends"]}
    assert by_name["analytic"]["ok"] and by_name["fd"]["ok"]
    assert by_name["forward"]["ok"] is None and "multi_margin_loss" in by_name["forward"]["skipped"]
