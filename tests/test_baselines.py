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
CHECK = ["check", "cross_entropy", "-x", "randn:4,3", "-t", "[0, 2, 1, 1]", "--backends", "autograd,analytic",
         "--json", "--no-timing"]


def save(tmp_path, *extra):
    path = tmp_path / "base.json"
    result = runner.invoke(app, [*CHECK, *extra, "--save-baseline", str(path)])
    assert result.exit_code == 0, result.stderr
    return path


def compare(path, *extra):
    result = runner.invoke(app, [*CHECK, *extra, "--baseline", str(path)])
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
