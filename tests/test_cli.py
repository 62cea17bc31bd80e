"""The CLI through typer's CliRunner: JSON checked against torch, exit codes,
help text, output files. Plus the console entry point's short usage errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import reference as ref
from conftest import assert_close, exact_tol, fd_tol
from gradcli.cli import app

runner = CliRunner()
X = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.2, -0.3, 0.9], [0.0, 0.0, 0.0, 0.0]]
Y = [3, 0, 1]


def run_json(*args, input=None):
    result = runner.invoke(app, [*args, "--json"], input=input)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("command", ["jacobian", "grad", "vjp", "jvp", "check", "functions"])
def test_every_command_has_help_with_an_example(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: gradcli" in result.stdout


def test_root_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    for command in ["jacobian", "grad", "vjp", "jvp", "functions"]:
        assert command in result.stdout


@pytest.mark.parametrize("backend", ["analytic", "fd", "autograd", "forward"])
def test_jacobian_json_blocks_and_full_match_torch(backend):
    full = ref.full_jacobian("softmax", {"input": np.array(X)}, {})
    doc = run_json("jacobian", "softmax", "-x", json.dumps(X), "--backend", backend)
    keys = ["schema", "command", "function", "params", "wrt", "backend", "dtype", "input_shape", "output_shape",
            "layout", "shape", "value", "output", "nonfinite"]
    assert list(doc)[: len(keys)] == keys and doc["notes"] and "seconds" in doc
    assert doc["schema"] == "gradcli/1" and doc["backend"] == backend and doc["params"] == {"dim": -1}
    assert doc["layout"] == "blocks" and doc["shape"] == [3, 4, 4]
    tolerance = fd_tol("float64") if backend == "fd" else exact_tol("float64")
    assert_close(doc["value"], ref.blocks_from_full(full, (3, 4), 1, 1), tolerance)
    doc = run_json("jacobian", "softmax", "-x", json.dumps(X), "--backend", backend, "--layout", "full")
    assert doc["layout"] == "full" and doc["shape"] == [3, 4, 3, 4]
    assert_close(doc["value"], full, tolerance)


@pytest.mark.parametrize("extra, params", [
    ([], {}),
    (["--reduction", "sum", "--label-smoothing", "0.1"], {"reduction": "sum", "label_smoothing": 0.1}),
    (["--class-weight", "[1, 2, 0.5, 1]", "--ignore-index", "0"], {"ignore_index": 0}),
])
def test_grad_cross_entropy_json_matches_torch(extra, params):
    arrays = {"input": np.array(X), "target": np.array(Y)}
    if "--class-weight" in extra:
        arrays["class_weight"] = np.array([1, 2, 0.5, 1.0])
    doc = run_json("grad", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), *extra)
    assert doc["command"] == "grad" and doc["output_shape"] == [] and doc["shape"] == [3, 4]
    assert_close(doc["value"], ref.backward("cross_entropy", arrays, params), exact_tol("float64"))
    assert_close(doc["output"], ref.output("cross_entropy", arrays, params), exact_tol("float64"))


def test_vjp_jvp_and_wrt_target_match_torch(tmp_path):
    p = np.array([[0.1, 0.2, 0.3, 0.4]] * 3)
    np.save(tmp_path / "p.npy", p)
    arrays = {"input": np.array(X), "target": p}
    doc = run_json("grad", "cross_entropy", "-x", json.dumps(X), "-t", str(tmp_path / "p.npy"), "--wrt", "target")
    assert doc["wrt"] == "target" and doc["wrt_shape"] == [3, 4]
    assert_close(doc["value"], ref.backward("cross_entropy", arrays, {}, wrt="target"), exact_tol("float64"))
    v = [[1.0, 0.0, 0.0, 2.0]] * 3
    doc = run_json("vjp", "log_softmax", "-x", json.dumps(X), "--cotangent", json.dumps(v), "-b", "autograd")
    assert_close(doc["value"], ref.backward("log_softmax", {"input": np.array(X)}, {}, cotangent=np.array(v)), 1e-12)
    doc = run_json("jvp", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), "--reduction", "none",
                   "--tangent", json.dumps(v), "-b", "forward")
    assert doc["shape"] == [3]
    assert_close(doc["value"], ref.jvp("cross_entropy", {"input": np.array(X), "target": np.array(Y)},
                                       {"reduction": "none"}, np.array(v)), 1e-12)


def test_stdin_and_generators_with_seed():
    doc = run_json("jacobian", "softmax", "-x", "-", input="[[1, 2, 3]]")
    assert doc["input_shape"] == [1, 3] and any("integer values converted" in n for n in doc["notes"])
    a = run_json("jvp", "softmax", "-x", "randn:2,3", "--tangent", "randn", "--seed", "3", "--no-timing")
    b = run_json("jvp", "softmax", "-x", "randn:2,3", "--tangent", "randn", "--seed", "3", "--no-timing")
    assert a == b and "seconds" not in a


def test_table_output_shows_blocks_and_notes():
    result = runner.invoke(app, ["jacobian", "softmax", "-x", json.dumps(X), "--explain"])
    assert result.exit_code == 0
    out = result.stdout
    assert "jacobian of softmax w.r.t. input" in out and "analytic" in out
    assert "row 0" in out and "row 2" in out and "row 3" not in out
    assert "diag(s) - s s^T" in out and "sum to 0" in out
    full = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:2,3", "--layout", "full"]).stdout
    assert "[0, 0, :, :]" in full and "[1, 2, :, :]" in full and "[2, 0, :, :]" not in full


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".json"])
def test_output_files(tmp_path, suffix):
    path = tmp_path / f"J{suffix}"
    result = runner.invoke(app, ["jacobian", "softmax", "-x", json.dumps(X), "-o", str(path)])
    assert result.exit_code == 0 and path.exists()
    expected = ref.blocks_from_full(ref.full_jacobian("softmax", {"input": np.array(X)}, {}), (3, 4), 1, 1)
    if suffix == ".npy":
        value = np.load(path)
    elif suffix == ".npz":
        value = np.load(path)["value"]
    else:
        value = np.array(json.loads(path.read_text())["value"])
    assert_close(value, expected, 1e-12)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


BAD = [
    (["jacobian", "nosuch", "-x", "[1.0]"], 2, "did you mean|unknown function"),
    (["jacobian", "softmx", "-x", "[1.0]"], 2, "did you mean softmax"),
    (["jacobian", "softmax"], 2, "--input: missing"),
    (["jacobian", "softmax", "-x", "missing.npy"], 2, "file not found"),
    (["jacobian", "softmax", "-x", "[[1, 2], [3]]"], 2, "ragged"),
    (["jacobian", "softmax", "-x", "[true]"], 2, "boolean"),
    (["jacobian", "softmax", "-x", "[1.0, NaN]"], 2, r"non-finite value nan at index \[1\]"),
    (["jacobian", "softmax", "-x", "[[1.0, 2.0]]", "--dim", "5"], 2, "--dim: 5 is out of range"),
    (["grad", "softmax", "-x", "[1.0, 2.0]"], 2, "not one number.*--reduction"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", "[3, 0, 9]"], 2, "class index 9 .* out of range"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", "[3, 0]"], 2, "do not match --input"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), "--wrt", "target"], 2, "integer class indices"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), "--label-smoothing", "1.5"], 2,
     "--label-smoothing: 1.5 is outside"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), "--class-weight", "[1, 2]"], 2, "--class-weight"),
    (["grad", "nll_loss", "-x", json.dumps(X), "-t", "[0.5, 0.2, 0.1]"], 2, "needs integer class indices"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", "[[0.5, 0.5]]"], 2, "probabilities"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--reduction", "sum"], 2, "softmax takes no such option"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--class-weight", "[1.0]"], 2, "softmax takes no such array"),
    (["jacobian", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), "--layout", "blocks"], 2, "has no blocks here"),
    (["jacobian", "softmax", "-x", "randn:64,64", "--layout", "full", "--max-memory", "4MiB"], 2, "--layout blocks"),
    (["vjp", "softmax", "-x", json.dumps(X), "--cotangent", "[1.0, 2.0]"], 2, "--cotangent: shape"),
    (["jvp", "softmax", "-x", json.dumps(X)], 2, "--tangent"),
    (["jacobian", "softmax", "-x", json.dumps(X), "-o", "nofolder/J.npy"], 2, "does not exist"),
    (["jacobian", "softmax", "-x", json.dumps(X), "-o", "J.txt"], 2, "unknown extension"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--fd-step", "-1", "-b", "fd"], 2, "--fd-step"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--max-memory", "lots"], 2, "--max-memory"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--device", "cuda", "-b", "autograd"], 3, "CUDA|cuda"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--layout", "diagonal"], 2, "layout"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--backend", "jax"], 2, "backend"),
    (["jacobian", "softmax", "-x", json.dumps(X), "--dtype", "float16"], 2, "dtype"),
    (["grad", "cross_entropy", "-x", json.dumps(X), "-t", json.dumps(Y), "--reduction", "avg"], 2, "reduction"),
]


@pytest.mark.parametrize("args, code, message", BAD, ids=[" ".join(a[:2]) + f" #{i}" for i, (a, _, _) in enumerate(BAD)])
def test_bad_input_exit_code_and_message(args, code, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_gradcli_errors_are_one_or_two_lines():
    for args, _, _ in BAD:
        result = runner.invoke(app, args)
        if result.stderr.startswith("gradcli: error:"):
            assert 1 <= len(result.stderr.strip().splitlines()) <= 2, result.stderr


def test_traceback_flag_shows_the_traceback():
    result = runner.invoke(app, ["grad", "softmax", "-x", "[1.0]", "--traceback"])
    assert result.exit_code != 0 and result.exception is not None


def test_console_script_usage_errors_are_short():
    proc = subprocess.run([sys.executable, "-m", "gradcli", "jacobian", "softmax", "--layout", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("gradcli: error:") and len(proc.stderr.strip().splitlines()) <= 2


def test_functions_command():
    result = runner.invoke(app, ["functions"])
    for name in ["softmax", "log_softmax", "cross_entropy", "nll_loss"]:
        assert name in result.stdout
    doc = run_json("functions", "cross_entropy")
    (entry,) = doc["functions"]
    assert entry["name"] == "cross_entropy" and any("softmax(z) - onehot(y)" in f for f in entry["formulas"])
    assert runner.invoke(app, ["functions", "nosuch"]).exit_code == 2


def test_a_run_builds_only_the_command_it_names_and_help_sees_them_all():
    """Start-up converts only the named command's parameters; `--help`, a bare `gradcli` and
    a name that is not a command get the whole group (whose error lists the commands)."""
    import typer

    from gradcli.__main__ import _click_command

    every = set(typer.main.get_command(app).commands)
    assert set(_click_command(typer, app, ["grad", "softplus"]).commands) == {"grad"}
    for args in (["--help"], [], ["grads"], ["--version"]):
        assert set(_click_command(typer, app, args).commands) == every, args
