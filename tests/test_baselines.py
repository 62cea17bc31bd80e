"""Gradient baselines (``--save-baseline`` / ``--baseline``): a value has moved
when ``|new - old| > 1000 eps(dtype) scale``, with the scale computed now, never
read from the file; a baseline saved with another seed or dtype is another
check. The saved probes are shifted by a known amount to pin the bound at
0.99x and 1.01x."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app

runner = CliRunner()
FACTOR = 1000  # the documented tolerance: 1000 eps of the probe's scale
INPUTS = ["-x", "randn:4,3", "-t", "[0, 2, 1, 1]"]


def command(*extra, inputs=INPUTS):
    return ["check", "cross_entropy", *inputs, "--backends", "autograd,analytic", "--json", "--no-timing", *extra]


def save(tmp_path, *extra, inputs=INPUTS):
    path = tmp_path / "base.json"
    result = runner.invoke(app, command(*extra, "--save-baseline", str(path), inputs=inputs))
    assert result.exit_code == 0, result.stderr
    return path


def compare(path, *extra, inputs=INPUTS):
    result = runner.invoke(app, command(*extra, "--baseline", str(path), inputs=inputs))
    assert result.exit_code in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    return result.exit_code, {e["name"]: e for e in doc["baseline"]["entries"]}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("what", ["input", "output"])
@pytest.mark.parametrize("factor, moved", [(0.99, False), (1.01, True)])
def test_a_probe_moved_by_its_tolerance_is_caught_and_one_just_within_is_not(tmp_path, dtype, what, factor, moved):
    path = save(tmp_path, "--dtype", dtype)
    document = json.loads(path.read_text())
    entry = document["output"] if what == "output" else document["arguments"][what]
    tolerance = FACTOR * float(np.finfo(dtype).eps) * entry["scale"]
    entry["probes"][1] += factor * tolerance
    path.write_text(json.dumps(document))
    code, entries = compare(path, "--dtype", dtype)
    assert code == (1 if moved else 0)
    assert entries[what]["moved"] is moved
    assert entries[what]["tolerance"] == pytest.approx(tolerance, rel=1e-12)


def test_a_scale_edited_in_the_file_does_not_widen_the_tolerance(tmp_path):
    path = save(tmp_path)
    document = json.loads(path.read_text())
    entry = document["arguments"]["input"]
    tolerance = FACTOR * float(np.finfo(np.float64).eps) * entry["scale"]
    entry["scale"] *= 1e6
    entry["probes"][0] += 2 * tolerance
    path.write_text(json.dumps(document))
    code, entries = compare(path)
    assert code == 1 and entries["input"]["moved"]


@pytest.mark.parametrize("option, saved, now", [("--seed", "0", "1"), ("--dtype", "float64", "float32")])
def test_a_baseline_saved_with_another_seed_or_dtype_is_another_check(tmp_path, option, saved, now):
    path = save(tmp_path, option, saved)
    code, entries = compare(path, option, now)
    key = option[2:]
    assert code == 1
    assert entries[key]["moved"] and "not the same check" in entries[key]["detail"]


def test_each_probe_is_stored_with_the_scale_of_its_rounding(tmp_path):
    """The scale of a gradient's probes is sum |g| (the size of the rounding a different summation
    order can put into u . g for u = +-1), from torch's gradient of the same loss."""
    import reference as ref

    x = np.random.default_rng(0).standard_normal((4, 3))
    np.save(tmp_path / "x.npy", x)
    path = save(tmp_path, inputs=["-x", str(tmp_path / "x.npy"), "-t", "[0, 2, 1, 1]"])
    g = ref.backward("cross_entropy", {"input": x, "target": np.array([0, 2, 1, 1])}, {})
    entry = json.loads(path.read_text())["arguments"]["input"]
    assert entry["shape"] == [4, 3] and len(entry["probes"]) == 4
    assert entry["scale"] == pytest.approx(float(np.abs(g).sum()), rel=1e-12)
    assert max(abs(p) for p in entry["probes"]) <= entry["scale"] * (1 + 1e-12)


def test_a_changed_shape_or_a_new_argument_is_a_moved_gradient(tmp_path):
    path = save(tmp_path)
    code, entries = compare(path, inputs=["-x", "randn:5,3", "-t", "[0, 2, 1, 1, 0]"])
    assert code == 1 and entries["input"]["moved"] and "shape [4, 3] is now [5, 3]" in entries["input"]["detail"]
    document = json.loads(path.read_text())
    document["arguments"] = {"target": document["arguments"].pop("input")}
    path.write_text(json.dumps(document))
    code, entries = compare(path)
    assert code == 1 and entries["input"]["moved"] and "not in the baseline" in entries["input"]["detail"]
