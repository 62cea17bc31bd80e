"""The core's promises (issue 11): validated once, no hidden state in the
options, results immutable, the bugs the restructure fixed, and the
behaviours a mutation of the code used to survive."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close, exact_tol
from typer.testing import CliRunner

import gradcli
from gradcli.cli import app
from gradcli.core.compare import compare
from gradcli.catalogue import catalogue
from gradcli.problem.function import lookup
from gradcli.problem.problem import build_problem
from gradcli.core.rowform import RowLayout, blocks_to_full, off_block_max

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --- structure notes ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(25))
def test_softmax_full_jacobian_is_always_reported_block_diagonal(seed):
    """It was "NOT block-diagonal" on ~1 run in 5: two sums of squares compared
    within one rounding step. The off-block entries themselves are 0."""
    x = np.random.default_rng(seed).standard_normal((5, 4)) * 3
    res = gradcli.jacobian("softmax", input=x, layout="full", backend="analytic")
    assert any(n.startswith("block-diagonal across batch rows (verified") for n in res.structure), res.structure
    assert not any("NOT" in n for n in res.structure)


def test_off_block_entries_are_found_where_they_are():
    layout = RowLayout((3, 2), 1, 1, 2, reduced=False)
    blocks = np.random.default_rng(0).standard_normal((3, 2, 2))
    full = blocks_to_full(blocks, layout)
    assert off_block_max(full, layout) == 0.0
    full[0, 1, 2, 0] = 1e-9  # output row 0, input row 2
    assert off_block_max(full, layout) == 1e-9


# --- new built-ins through the table ----------------------------------------------------


@pytest.mark.parametrize("backend", ["analytic", "autograd", "forward", "fd"])
@pytest.mark.parametrize("params", [{}, {"beta": 2.0}, {"beta": 0.5, "threshold": 1.0}])
def test_softplus_matches_torch_with_beta_and_threshold(backend, params):
    x = np.array([-30.0, -2.0, -0.1, 0.3, 1.5, 2.5, 9.0, 30.0])
    xt = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.softplus(xt, **params)
    y.sum().backward()
    res = gradcli.jacobian("softplus", input=x, backend=backend, **params)
    np.testing.assert_allclose(res.output, y.detach().numpy(), rtol=1e-15, atol=0)
    assert_close(res.value, xt.grad.numpy(), 1e-8 if backend == "fd" else exact_tol(np.float64), backend)


@pytest.mark.parametrize("backend", ["analytic", "fd"])
def test_gelu_is_torchs_exact_form_in_both_tails(backend):
    x = np.array([-40.0, -8.0, -1.0, 0.0, 0.7, 6.0, 40.0])
    xt = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.gelu(xt)
    y.sum().backward()
    res = gradcli.jacobian("gelu", input=x, backend=backend)
    # torch's 0.5 x (1 + erf(x / sqrt 2)) cancels in the far left tail (2 % off at x = -8,
    # 5e-15 absolute); gradcli's normal CDF does not: equal to float64 eps at unit scale.
    assert_close(res.output, y.detach().numpy(), 1e-14, "value")
    assert_close(res.value, xt.grad.numpy(), 1e-8 if backend == "fd" else 1e-14, backend)


def test_every_catalogue_option_is_a_cli_option_with_its_help():
    """The CLI is generated from the catalogue: a Param added to a function
    appears in every computing command's --help with its own text."""
    text = invoke("jacobian", "--help").stdout
    for function in catalogue().values():
        for p in function.params:
            assert p.option in text, (function.name, p.option)
        for a in function.arrays:
            assert a.option in text, (function.name, a.option)
    assert "softplus: the sharpness beta" in " ".join(text.split())


def test_scipy_is_a_runtime_dependency():
    """gelu and expr:erf evaluate the normal CDF with scipy: it must install
    with gradcli itself, not only with the test extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("scipy") for dep in project["dependencies"])
    res = gradcli.jacobian("expr:erf(x)", input=np.array([0.0, 1.0]), backend="analytic")
    np.testing.assert_allclose(res.value, 2 / np.sqrt(np.pi) * np.exp(-np.array([0.0, 1.0]) ** 2), rtol=1e-15)


# --- chains that cannot be one ----------------------------------------------------------


@pytest.mark.parametrize("function", ["sample_inputs/convnet.py:net,cross_entropy", "tanh,sample_inputs/custom_square.py:square"])
def test_a_chain_with_user_code_is_refused_with_the_fix(function, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = invoke("jacobian", function, "-x", "randn:2,4")
    assert result.exit_code == 2, result.stderr
    assert "cannot be a stage of a chain" in result.stderr and result.stdout == ""


def test_two_linear_stages_are_refused_not_a_key_error():
    result = invoke("grad", "linear,tanh,linear,mse_loss", "-x", "randn:3,4", "--weight", "randn:4,4", "-t", "randn:3,4")
    assert result.exit_code == 2, result.stderr
    assert "--weight" in result.stderr and ".py model" in result.stderr


# --- hidden state, immutability ---------------------------------------------------------


def test_params_hold_only_the_functions_options():
    problem = build_problem("linear,cross_entropy", {"input": np.ones((2, 3)), "weight": np.ones((4, 3)),
                                                     "target": np.array([0, 3])}, wrt="weight")
    assert set(problem.params) == {p.name for p in problem.function.params}
    with pytest.raises(TypeError):
        problem.params["dim"] = 0  # read-only


def test_problem_and_result_arrays_are_read_only():
    res = gradcli.jacobian("softmax", input=np.ones((2, 3)))
    for array in (res.value, res.output):
        with pytest.raises(ValueError):
            array[...] = 0
    problem = build_problem("softmax", {"input": np.ones((2, 3))})
    with pytest.raises(ValueError):
        problem.args["input"][0, 0] = 1.0


def test_a_chain_binds_each_stage_once(monkeypatch):
    """One analytic grad of linear,cross_entropy builds each stage's kernel once
    (it was 7 times for Linear)."""
    from gradcli.catalogue import linear

    calls = []
    original = linear.Linear.kernel
    monkeypatch.setattr(linear.Linear, "kernel", lambda self, *a, **k: calls.append(a[2]) or original(self, *a, **k))
    gradcli.grad("linear,cross_entropy", input=np.ones((2, 3)), weight=np.ones((4, 3)), target=np.array([0, 3]),
                 wrt="weight", backend="analytic")
    assert sorted(calls) == ["input", "weight"]  # the activation (input) once, the derivative (weight) once


# --- pinned behaviours ------------------------------------------------------------------------


@pytest.mark.parametrize("function,extra", [("softmax", []), ("cross_entropy", ["-t", "[0, 2, 1, 3, 0]", "--reduction", "none"])])
@pytest.mark.parametrize("rows", ["1", "0,3", "2:5"])
def test_rows_give_exactly_those_rows_of_the_whole(function, extra, rows):
    x = json.dumps(np.random.default_rng(3).standard_normal((5, 4)).tolist())
    whole = json.loads(invoke("jacobian", function, "-x", x, *extra, "--json").stdout)
    part = json.loads(invoke("jacobian", function, "-x", x, *extra, "--rows", rows, "--json").stdout)
    index = np.arange(5)[slice(*map(int, rows.split(":")))] if ":" in rows else [int(r) for r in rows.split(",")]
    np.testing.assert_array_equal(np.array(part["value"]), np.array(whole["value"])[index])
    np.testing.assert_array_equal(np.array(part["output"]), np.array(whole["output"])[index])


@pytest.mark.parametrize("factor,ok", [(0.99, True), (1.01, False)])
def test_compare_tolerance_is_atol_plus_rtol_times_reference(factor, ok):
    reference = np.array([2.0, -4.0])
    limit = 1e-8 + 1e-6 * np.abs(reference)
    got = compare("x", reference + factor * limit, reference, 1e-8, 1e-6, seconds=0.0, top=3)
    assert got.ok is ok and got.mismatches == (0 if ok else 2)


def test_check_points_at_the_reference_when_fd_is_sure(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = invoke("check", "sample_inputs/custom_square.py:square", "-x", "[0.5, 2.0, -1.0, 3.0]", "--json")
    assert result.exit_code == 1, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("suspect autograd" in n for n in notes), notes


def test_verify_blocks_counts_the_samples_it_checked(monkeypatch):
    monkeypatch.chdir(ROOT)
    for batch, checked in ((2, "0 and 1"), (3, "0, 1 and 2"), (6, "0, 3 and 5")):
        result = invoke("jacobian", "sample_inputs/convnet.py:net", "-x", f"randn:{batch},1,6,6", "--layout", "blocks",
                        "--verify-blocks", "--json")
        assert result.exit_code == 0, result.stderr
        notes = json.loads(result.stdout)["notes"]
        assert any(f"checked from samples {checked}" in n for n in notes), notes


# --- vjp, jvp and gradients never form a row's C x C block ------------------------------------


def peak_rss_mib(args) -> float:
    """Peak resident memory of one gradcli run in a fresh process: VmHWM of its
    own address space (ru_maxrss would carry over the forking test process's)."""
    code = ("import re, sys\nfrom gradcli.__main__ import main\nsys.argv = ['gradcli', *%r]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "kib = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1])\n"
            "print(kib / 1024, file=sys.stderr)" % (list(args),))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return float(proc.stderr.strip().splitlines()[-1])


def test_softmax_vjp_of_a_wide_row_stays_small():
    """One 6000-wide row: its block alone would be 275 MiB."""
    base = peak_rss_mib(["vjp", "softmax", "-x", "randn:1,10", "--json"])
    wide = peak_rss_mib(["vjp", "softmax", "-x", "randn:1,6000", "--max-memory", "1MiB", "--json"])
    assert wide - base < 60, (base, wide)


def test_cross_entropy_gradient_at_a_vocabulary_is_exact_and_small():
    """N=4, C=32000 (a language model's vocabulary): O(N C), never C x C."""
    x = np.random.default_rng(0).standard_normal((4, 32000))
    t = np.array([1, 2, 3, 4])
    res = gradcli.grad("cross_entropy", input=x, target=t, backend="analytic", label_smoothing=0.1)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(xt, torch.tensor(t), label_smoothing=0.1).backward()
    np.testing.assert_allclose(res.value, xt.grad.numpy(), rtol=1e-12, atol=1e-18)
    assert peak_rss_mib(["grad", "cross_entropy", "-x", "randn:4,32000", "-t", "[1,2,3,4]", "--json"]) < 400


def test_chain_vjp_composes_row_operators_and_matches_torch():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 5)), rng.standard_normal((7, 5))
    v = rng.standard_normal((3, 7))
    res = gradcli.vjp("linear,tanh,softmax", input=x, weight=w, cotangent=v, backend="analytic")
    xt = torch.tensor(x, requires_grad=True)
    torch.softmax(torch.tanh(xt @ torch.tensor(w).T), -1).backward(torch.tensor(v))
    np.testing.assert_allclose(res.value, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_library_errors_name_the_parameter_and_the_cli_its_option():
    with pytest.raises(gradcli.UsageError, match=r"^tangent: jvp needs a direction") as refused:
        gradcli.jvp("softmax", input=np.ones((2, 3)))
    assert refused.value.param == "tangent"
    assert refused.value.cli_message().startswith("--tangent: jvp needs a direction")
    result = invoke("jvp", "softmax", "-x", "randn:2,3")
    assert result.exit_code == 2 and result.stderr.startswith("gradcli: error: --tangent: jvp needs a direction")
    with pytest.raises(gradcli.UsageError, match=r"^class_weight: shape \[2\]"):
        gradcli.grad("cross_entropy", input=np.ones((2, 3)), target=np.array([0, 1]), class_weight=np.ones(2))


def test_a_large_full_jacobian_reads_its_notes_off_the_blocks():
    """Past 2^20 entries the full Jacobian (scattered from blocks by every
    backend) is not scanned again: the notes come from its blocks, and the
    fraction of zeros is still exact."""
    x = np.random.default_rng(4).standard_normal((6, 200))
    res = gradcli.jacobian("softmax", input=x, layout="full", backend="analytic")
    assert res.value.size > 2**20
    assert res.structure[0].startswith("block-diagonal across batch rows (scattered from the per-row blocks")
    zeros = 1 - np.count_nonzero(res.value) / res.value.size
    assert f"{zeros:.1%} of the entries shown are exactly 0" in res.structure


def test_the_callers_arrays_are_neither_copied_nor_frozen():
    """An input already in the working dtype is read through a read-only view:
    no copy of a large input, and the caller's own array stays writable."""
    x = np.random.default_rng(5).standard_normal((3, 4))
    problem = build_problem("softmax", {"input": x})
    assert np.shares_memory(problem.args["input"], x) and not problem.args["input"].flags.writeable
    assert x.flags.writeable
    x32 = x.astype(np.float32)
    assert not np.shares_memory(build_problem("softmax", {"input": x32}).args["input"], x32)  # converted: a copy


def test_autograd_full_jacobian_in_chunks_holds_the_result_once():
    """jacobian --wrt param:fc1.weight of the MLP, batch 16: a (16, 10, 512, 784) float64 result of
    490 MiB under --max-memory 700MiB, so the rows come in chunks. jacrev(chunk_size=) concatenated
    its chunks at the end, holding the result twice (about 1,100 MiB above a small run, over the
    limit); each chunk is now written into the one result, and the run stays within the limit."""
    net = str(ROOT / "sample_inputs" / "mlp.py") + ":net"
    base = peak_rss_mib(["jacobian", net, "-x", "randn:4,784", "--wrt", "param:fc3.bias", "--json", "--no-value"])
    big = peak_rss_mib(["jacobian", net, "-x", "randn:16,784", "--wrt", "param:fc1.weight", "--json", "--no-value",
                        "--max-memory", "700MiB"])
    assert big - base < 700, (base, big)


@pytest.mark.parametrize("max_memory", ["6MiB", "64MiB"])
def test_autograd_full_jacobian_in_chunks_is_jacrevs(max_memory):
    """Under a --max-memory that takes the 40 output rows in chunks (1 a call, then 27), the rows
    written chunk by chunk are torch.func.jacrev's, exactly."""
    from gradcli.problem.function import lookup

    x = np.random.default_rng(0).standard_normal((4, 784))
    spec = str(ROOT / "sample_inputs" / "mlp.py") + ":net"
    net = lookup(spec).module.double()
    expected = torch.func.jacrev(lambda w: torch.func.functional_call(net, {"fc3.weight": w}, (torch.tensor(x),)))(
        net.fc3.weight.detach()).detach().numpy()
    res = gradcli.jacobian(spec, input=x, wrt="param:fc3.weight", max_memory=max_memory, backend="autograd")
    assert res.shape == expected.shape
    np.testing.assert_array_equal(res.value, expected)
