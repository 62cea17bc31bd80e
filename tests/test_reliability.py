"""Reliability: a catalogue of bad inputs (with test_cli's), interrupts that
leave no partial file, determinism, streaming large results, and fuzzing the
array loader."""

from __future__ import annotations

import json
import pickle
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from gradcli.io.arrays import load_array
from gradcli.cli import app
from gradcli.core.errors import UsageError

runner = CliRunner()
X = json.dumps([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture
def bad_files(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps(Evil()))
    np.save(tmp_path / "good.npy", np.ones((50, 50)))
    (tmp_path / "truncated.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:300])
    np.savez(tmp_path / "batch.npz", logits=np.ones((2, 3)))
    (tmp_path / "malformed.json").write_text("[[1, 2], [3, 4]")
    (tmp_path / "strings.json").write_text('[["a", "b"]]')
    (tmp_path / "nested.json").write_text('{"data": {"x": 1}}')
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "folder.npy").mkdir()
    return tmp_path


CASES = [
    (["jacobian", "softmax", "-x", "{d}/objects.npy"], 2, "pickle"),
    (["jacobian", "softmax", "-x", "{d}/pickle.pt"], 2, "weights_only"),
    (["jacobian", "softmax", "-x", "{d}/truncated.npy"], 2, "truncated|not a valid"),
    (["jacobian", "softmax", "-x", "{d}/batch.npz:nope"], 2, "no array 'nope'"),
    (["jacobian", "softmax", "-x", "{d}/malformed.json"], 2, "not valid JSON"),
    (["jacobian", "softmax", "-x", "{d}/strings.json"], 2, "string"),
    (["jacobian", "softmax", "-x", "{d}/nested.json"], 2, "object"),
    (["jacobian", "softmax", "-x", "{d}/empty.json"], 2, "empty"),
    (["jacobian", "softmax", "-x", "{d}/folder.npy"], 2, "is a folder, not a file"),
    (["jacobian", "softmax", "-x", "''"], 2, "not valid JSON|empty value"),
    (["grad", "cross_entropy", "-x", X, "-t", "[0, -3]"], 2, "class index -3"),
    (["grad", "cross_entropy", "-x", X, "-t", "[[0.2, 0.8, 0.0], [NaN, 0.5, 0.5]]"], 2, r"--target: non-finite value nan at index \[1, 0\]"),
    (["grad", "cross_entropy", "-x", X, "-t", "[0, 1]", "--class-weight", "[1, Infinity, 1]"], 2, "--class-weight: non-finite"),
    (["grad", "cross_entropy", "-x", X, "-t", "[[0.2, 0.8, 0.0], [0.3, 0.2, 0.5]]", "--ignore-index", "1"], 2, "ignore_index"),
    (["grad", "cross_entropy", "-x", X, "-t", "[0, 1]", "--reduction", "batchmean"], 2, "--reduction"),
    (["grad", "mse_loss", "-x", X, "-t", "[1.0, 2.0]"], 2, "--target: shape"),
    (["jvp", "softmax", "-x", X, "--tangent", "[1.0]"], 2, "--tangent: shape"),
    (["jacobian", "softmax", "-x", X, "--rows", "7"], 2, "--rows: row 7 is out of range for 2 rows"),
    (["grad", "cross_entropy", "-x", X, "-t", "[0, 1]", "--rows", "0"], 2, "--rows: needs"),
    (["jacobian", "softmax", "-x", X, "--wrt", "weight"], 2, "--wrt: 'weight' is not an argument"),
    (["jacobian", "softmax", "-x", X, "--wrt", "param:fc.weight"], 2, "not a torch.nn.Module"),
    (["grad", "binary_cross_entropy", "-x", "[0.5, 1.5]", "-t", "[0.0, 1.0]", "--reduction", "sum"], 2, "in \\[0, 1\\]"),
    (["grad", "smooth_l1_loss", "-x", "[0.5]", "-t", "[0.0]", "--beta", "-1"], 2, "--beta"),
    (["grad", "huber_loss", "-x", "[0.5]", "-t", "[0.0]", "--delta", "0"], 2, "--delta"),
    (["grad", "kl_div", "-x", "0.5", "-t", "0.2", "--reduction", "batchmean"], 2, "batchmean"),
    (["jacobian", "linear", "-x", X, "--weight", "[[1.0, 2.0]]"], 2, "--weight: shape"),
    (["jacobian", "linear", "-x", X, "--weight", "[[1.0, 2.0, 3.0]]", "--bias", "[1.0, 2.0]"], 2, "--bias: shape"),
    (["grad", "mse_loss", "-x", X, "-t", X, "--log-target"], 2, "--log-target: mse_loss takes no such option"),
    (["jacobian", "softmax", "-x", "-", "-t", "-"], 2, "only one option can read standard input"),
    (["jacobian", "softmax", "-x", X, "--precision", "-1"], 2, "precision"),
    (["jacobian", "softmax", "-x", X, "--seed", "abc"], 2, "seed"),
    (["jacobian", "softmax", "-x", X, "--fd-method", "backward"], 2, "fd-method"),
    (["check", "softmax", "-x", X, "--top", "-1"], 2, "top"),
    (["jacobian", "softmax", "-x", 'randn:100000,100000'], 2, "over --max-memory"),
    (["jacobian", "softmax", "-x", '{"data": [true], "dtype": "bool"}'], 2, "unknown dtype"),
    (["jacobian", "softmax", "-x", X, "--plot", "{d}/missing/j.png"], 2, "--plot: folder"),
    (["jacobian", "expr:x.__class__", "-x", X], 2, "not allowed"),
    (["jacobian", "expr:__import__('os')", "-x", X], 2, "not allowed"),
    (["jacobian", "linear,softmx", "-x", X], 2, "did you mean softmax"),
]


@pytest.mark.parametrize("args, code, message", CASES, ids=[f"{i}-{a[1]}" for i, (a, _, _) in enumerate(CASES)])
def test_bad_input_is_answered_cleanly(bad_files, monkeypatch, args, code, message):
    monkeypatch.chdir(bad_files)
    before = set(bad_files.iterdir())
    args = [a.replace("{d}", str(bad_files)) for a in args]
    if "--plot" not in args and args[0] != "check":
        args += ["-o", str(bad_files / "result.npy")]
    result = runner.invoke(app, args, input="[1.0]")
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert set(bad_files.iterdir()) == before  # no output file, no temporary file


def test_the_catalogue_has_forty_cases():
    from test_cli import BAD

    assert len(CASES) + len(BAD) >= 40


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_leaves_no_partial_file_and_exits_130(tmp_path, sig):
    out = tmp_path / "out.npy"
    # (fd's own arrays for these 100M entries are 2.6 GB: over the default --max-memory of 2GiB)
    proc = subprocess.Popen([sys.executable, "-m", "gradcli", "jacobian", "softmax", "-x", "randn:384,512", "-b", "fd",
                             "--max-memory", "4GiB", "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(2.5)
    assert proc.poll() is None, "the run finished before it could be interrupted: make it longer"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stdout == "" and "interrupted" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["analytic", "fd", "autograd", "forward"])
def test_same_command_same_bytes(backend):
    args = [sys.executable, "-m", "gradcli", "grad", "cross_entropy", "-x", "randn:4,5", "-t", "randint:5:4",
            "--label-smoothing", "0.1", "-b", backend, "--json", "--no-timing"]
    first = subprocess.run(args, capture_output=True, check=True).stdout
    assert first == subprocess.run(args, capture_output=True, check=True).stdout


def test_a_full_jacobian_over_max_memory_streams_into_the_npy_file(tmp_path):
    out = tmp_path / "J.npy"
    result = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:32,16", "--layout", "full", "-o", str(out),
                                 "--max-memory", "1MiB"])
    assert result.exit_code == 0, result.stderr
    full = np.load(out)
    blocks = np.load(out, mmap_mode="r")
    assert full.shape == (32, 16, 32, 16) and blocks.shape == full.shape
    expected = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:32,16", "--json"])
    expected = np.array(json.loads(expected.stdout)["value"])
    for i in range(32):
        np.testing.assert_allclose(full[i, :, i, :], expected[i], atol=1e-15)
    assert np.count_nonzero(full) == np.count_nonzero(expected)
    assert [p.name for p in tmp_path.iterdir()] == ["J.npy"]
    refused = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:32,16", "--layout", "full", "--max-memory", "1MiB"])
    assert refused.exit_code == 2 and "-o J.npy" in refused.stderr


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=20,
)


@given(spec=st.text(max_size=60))
def test_any_text_as_an_array_spec_is_an_array_or_a_usage_error(spec):
    try:
        array = load_array(spec, "--input", max_bytes=2**20)
    except UsageError as err:
        assert err.param == "input" and err.cli_message().startswith("--input")
    else:
        assert array.dtype.kind in "iuf" and array.size > 0


@given(value=json_values)
def test_any_json_as_an_array_spec_is_an_array_or_a_usage_error(value):
    try:
        array = load_array(json.dumps(value), "--input")
    except UsageError as err:
        assert err.param == "input" and err.cli_message().startswith("--input")
    else:
        assert array.dtype.kind in "iuf" and array.size > 0


@given(data=st.binary(max_size=200))
def test_any_bytes_on_stdin_are_an_array_or_a_usage_error(data):
    import io

    try:
        load_array("-", "--input", stdin=io.BytesIO(data))
    except UsageError:
        pass


@pytest.mark.parametrize("backend", ["analytic", "autograd", "fd"])
def test_allow_nonfinite_propagates_and_counts(backend):
    args = ["jacobian", "softmax", "-x", "[[1.0, NaN, 2.0], [0.0, 1.0, 2.0]]", "--allow-nonfinite", "-b", backend]
    doc = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    # every null the document writes is counted: the value's 9, the output's row, fd's estimate (issue 24)
    assert doc["nonfinite"] == json.dumps(doc).count("null") >= 12 and doc["value"][0][0] == [None, None, None]
    assert all(v is not None for row in doc["value"][1] for v in row)
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "9 of 18 entries are NaN or infinite" in table.stdout


def test_fd_counts_its_own_arrays_against_max_memory():
    """fd holds, per entry of its blocks, a value, an error estimate and two flags
    beside the result: the 128 MiB of softmax blocks over 256 x 256 logits need
    416 MiB in all, so --max-memory 160MiB stops before any work (the run went
    ahead, as the result alone fits, and peaked 395 MiB above its start)."""
    result = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:256,256", "-b", "fd", "--max-memory", "160MiB",
                                 "--no-value", "--json"])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert "--max-memory: fd's own arrays" in result.stderr and "416.0 MiB" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    fits = runner.invoke(app, ["jacobian", "softmax", "-x", "randn:256,256", "-b", "fd", "--max-memory", "512MiB",
                               "--rows", "0:4", "--no-value", "--json"])
    assert fits.exit_code == 0, fits.output
