"""`gradcli check`: a wrong custom backward is caught and located; the whole
cross_entropy option space passes in float64 and float32; the JSON schema."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app
from gradcli.core.compare import compare, default_tolerance

runner = CliRunner()

SAMPLE = Path(__file__).resolve().parents[1] / "sample_inputs" / "custom_square.py"
BUG = "torch.where(x > 1, 3 * x, 2 * x)"


def write_custom(tmp_path, backward: str):
    """The sample's custom autograd.Function with the backward replaced."""
    text = SAMPLE.read_text()
    assert BUG in text
    path = tmp_path / "custom.py"
    path.write_text(text.replace(BUG, backward))
    return path


def test_a_wrong_backward_exits_1_and_points_at_the_wrong_entries(tmp_path):
    path = write_custom(tmp_path, BUG)  # wrong where x > 1
    x = [0.5, 2.0, -1.0, 3.0, 1.5]
    result = runner.invoke(app, ["check", f"{path}:square", "-x", json.dumps(x), "--json"])
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and doc["reference"] == "autograd"
    fd = next(b for b in doc["backends"] if b["name"] == "fd")
    assert not fd["ok"] and fd["mismatches"] == 3
    wrong = {(i, i) for i, v in enumerate(x) if v > 1}
    assert {tuple(e["index"]) for e in doc["top"]} == wrong
    for e in doc["top"]:
        i = e["index"][0]
        assert e["reference"] == pytest.approx(3 * x[i]) and e["value"] == pytest.approx(2 * x[i], abs=1e-9)
    forward = next(b for b in doc["backends"] if b["name"] == "forward")
    assert "skipped" in forward and "autograd.Function" in forward["skipped"]
    table = runner.invoke(app, ["check", f"{path}:square", "-x", json.dumps(x)])
    assert table.exit_code == 1 and "MISMATCH" in table.stdout and "[3, 3]" in table.stdout


def test_the_fixed_backward_exits_0(tmp_path):
    path = write_custom(tmp_path, "2 * x")
    result = runner.invoke(app, ["check", f"{path}:square", "-x", "randn:6", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


CE_OPTIONS = list(itertools.product(["mean", "sum", "none"], ["0", "0.2"], [False, True], ["index", "prob"]))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction, smoothing, weighted, target", CE_OPTIONS)
def test_check_cross_entropy_over_its_option_space(dtype, reduction, smoothing, weighted, target):
    rng = np.random.default_rng(len(reduction) + int(weighted))
    x = rng.standard_normal((4, 3, 2)) * 2
    if target == "index":
        t = rng.integers(0, 3, size=(4, 2)).tolist()
        t[0][0] = -100
    else:
        p = rng.random((4, 3, 2))
        t = (p / p.sum(axis=1, keepdims=True)).tolist()
    args = ["check", "cross_entropy", "-x", json.dumps(x.tolist()), "-t", json.dumps(t), "--reduction", reduction,
            "--label-smoothing", smoothing, "--dtype", dtype, "--json"]
    if weighted:
        args += ["--class-weight", "[0.5, 2.0, 1.0]"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    atol, rtol = default_tolerance(np.dtype(dtype))
    for key in ["schema", "command", "function", "quantity", "reference", "atol", "rtol", "ok", "backends", "top"]:
        assert key in doc
    assert doc["atol"] == atol and doc["rtol"] == rtol and doc["ok"] is True and doc["top"] == []
    assert doc["quantity"] == ("jacobian" if reduction == "none" else "grad")
    assert {b["name"] for b in doc["backends"]} == {"forward", "analytic", "fd"}
    for b in doc["backends"]:
        for key in ["name", "ok", "max_abs", "max_rel", "worst_index", "mismatches", "seconds"]:
            assert key in b
    assert "error_estimate" in next(b for b in doc["backends"] if b["name"] == "fd")


@pytest.mark.parametrize("quantity", ["jacobian", "grad", "vjp", "jvp"])
def test_check_every_quantity(quantity):
    args = ["check", "log_softmax,nll_loss", "-x", "randn:3,4", "-t", "[0, 3, 1]", "--quantity", quantity, "--json"]
    if quantity in ("jacobian", "vjp", "jvp"):
        args += ["--reduction", "none"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["quantity"] == quantity


def test_kinks_are_reported_not_failed():
    result = runner.invoke(app, ["check", "relu", "-x", "[0.0, 1.0, -2.0]", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    fd = next(b for b in doc["backends"] if b["name"] == "fd")
    assert fd["kink_entries"] == 1 and fd["mismatches"] == 0
    assert any("kink" in n for n in doc["notes"])


def test_tight_tolerance_leaves_fd_its_error_bar_and_backends_reference_options():
    """fd cannot be closer than its own error bar: with atol and rtol 0 it agrees
    within 3x its estimate (a note says so), and fails beyond it."""
    result = runner.invoke(app, ["check", "softmax", "-x", "randn:3,4", "--backends", "analytic,fd", "--reference", "analytic",
                                 "--atol", "1e-20", "--rtol", "0", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["reference"] == "analytic" and [b["name"] for b in doc["backends"]] == ["fd"]
    assert doc["backends"][0]["max_abs"] > 0 and any("fd's error bar" in n for n in doc["notes"])
    reference, error = np.array([1.0, 2.0, 3.0]), np.array([1e-9, 1e-9, 1e-9])
    c = compare("fd", reference + [2e-9, 3e-9, 4e-9], reference, 0.0, 0.0, seconds=0, top=5, error=error)
    assert c.mismatches == 1 and c.worst_index == (2,) and c.coarse == 3


def test_structure_notes_say_why_the_vjp_with_ones_is_zero():
    result = runner.invoke(app, ["check", "softmax", "-x", "randn:5,4", "--json"])
    notes = json.loads(result.stdout)["notes"]
    assert any("block-diagonal" in n for n in notes)
    assert any("columns sum to 0" in n and "vjp with ones" in n for n in notes)
    assert any("symmetric" in n for n in notes)
    full = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:3,4", "--layout", "full", "--json"])
    assert any("verified" in n for n in json.loads(full.stdout)["structure"])


@pytest.mark.parametrize("args, message", [
    (["--backends", "analytic,jax"], "unknown backend 'jax'"),
    (["--reference", "nope"], "unknown backend"),
    (["--atol", "-1"], ">= 0"),
    (["-o", "report.npy"], ".json"),
])
def test_check_usage_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["check", "softmax", "-x", "randn:2,3", *args])
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_check_writes_its_report(tmp_path):
    path = tmp_path / "report.json"
    result = runner.invoke(app, ["check", "softmax", "-x", "randn:2,3", "-o", str(path)])
    assert result.exit_code == 0 and json.loads(path.read_text())["ok"] is True


def test_compare_counts_nan_and_tolerance():
    c = compare("x", np.array([1.0, np.nan, 2.0 + 1e-3]), np.array([1.0, np.nan, 2.0]), 1e-8, 1e-6, seconds=0, top=5)
    assert c.mismatches == 1 and c.worst_index == (2,) and not c.ok
    c = compare("x", np.array([1.0, 0.0]), np.array([1.0, np.nan]), 1e-8, 1e-6, seconds=0, top=5)
    assert c.mismatches == 1


def test_library_check_as_the_spec_shows():
    import gradcli

    x, t = np.random.default_rng(0).standard_normal((3, 4)), np.array([0, 1, 3])
    report = gradcli.check("cross_entropy", input=x, target=t)
    assert report.ok and {c.name for c in report.backends} == {"forward", "analytic", "fd"}
    report = gradcli.check("softmax", input=x, backends=["fd"], reference="analytic", atol=0.0, rtol=1e-12)
    assert report.ok and report.backends[0].coarse > 0  # fd within its own error bar, and a note says so


def test_the_no_modules_note_of_a_plain_function_only_when_locate_is_asked_for():
    """custom_square's wrong backward fails the Hessian check; square is a function, not an
    nn.Module: by default nothing is said about modules, --locate says why none were checked."""
    square = f"{Path(__file__).resolve().parents[1] / 'sample_inputs' / 'custom_square.py'}:square"
    args = ["check", square, "-x", "[1.0, -2.0, 3.0]", "--quantity", "hessian", "--json"]
    quiet, asked = runner.invoke(app, args), runner.invoke(app, [*args, "--locate"])
    assert quiet.exit_code == asked.exit_code == 1
    assert not any("localisation" in n for n in json.loads(quiet.stdout)["notes"])
    assert any("needs a torch.nn.Module" in n for n in json.loads(asked.stdout)["notes"])
    assert json.loads(runner.invoke(app, [*args, "--no-locate"]).stdout)["notes"] == json.loads(quiet.stdout)["notes"]


MIXED = '''
import torch
import torch.nn.functional as F


class Scaled(torch.autograd.Function):
    """tanh whose backward is {factor} times too large."""

    @staticmethod
    def forward(x):
        return torch.tanh(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y) * {factor}


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = torch.nn.Linear(20, 64), torch.nn.Linear(64, 5)

    def forward(self, x, t):
        return F.cross_entropy(self.fc2(Scaled.apply(self.fc1(x))).float(), t)  # the mixed-precision idiom


net = Net()
'''


@pytest.mark.parametrize("factor, ok", [(1.0, True), (1.2, False)])
def test_probe_check_of_a_float32_loss_judges_the_backward_not_the_rounding(tmp_path, factor, ok):
    """fd along probes measures the precision the code computes in (a .float()
    before the loss): a right backward passes (fd's steps shrank into float32's
    rounding, gave 0 and failed every parameter), a backward 20% off fails."""
    import gradcli

    (tmp_path / "mixed.py").write_text(MIXED.replace("{factor}", str(factor)))
    rng = np.random.default_rng(0)
    report = gradcli.check(f"{tmp_path / 'mixed.py'}:net", input=rng.standard_normal((8, 20)),
                           target=rng.integers(0, 5, 8), wrt="param:*", mode="probe", locate=False)
    assert report.ok is ok, [(r.wrt, r.top) for r in report.results]
    if not ok:  # the parameters in front of the wrong backward fail, the last layer's pass
        assert set(report.failing) == {"param:fc1.weight", "param:fc1.bias"}
