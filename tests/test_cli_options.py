"""The command line's options: declared once, shown in panels, converted the same way
from a command line and from a suite entry, refused before any work when they cannot run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.checking.settings import CheckSettings
from gradcli.cli import app, params

runner = CliRunner()
BORDERS = {ord(c): " " for c in "│╭╮╰╯─"}


def panels(command: str) -> list[str]:
    """The help panels of ``command``, in order."""
    text = runner.invoke(app, [command, "--help"]).stdout
    return re.findall(r"╭─ (.+?) ─", text)


def test_every_check_setting_is_a_check_option_and_nothing_else_is_invented():
    options = {o.name for o in params.check_options()}
    assert set(CheckSettings.names()) <= options
    # and the check options that are not settings are the problem's, the output's or the files'
    others = options - set(CheckSettings.names())
    assert {"baseline", "save_baseline", "suite", "junit", "cotangent", "tangent", "wrt", "input"} <= others


@pytest.mark.parametrize("command", ["jacobian", "grad", "vjp", "jvp", "hessian", "hvp", "check"])
def test_help_groups_options_in_panels_in_reading_order(command):
    found = panels(command)
    assert found[:2] == ["Arguments", "Options"]  # FUNCTION, then --help
    expected = ["Inputs", "Differentiation", "Backend", "Options of softmax, log_softmax", "Options of the losses",
                "Output", "Limits"]
    assert [p for p in found if p in expected] == expected
    if command == "check":
        assert "Comparison" in found and "CI" in found


def test_a_functions_own_option_is_in_its_familys_panel_and_names_its_functions():
    text = runner.invoke(app, ["grad", "--help"]).stdout
    losses = text[text.index("Options of the losses"):text.index("Options of linear")]
    assert "--label-smoothing" in losses and "--class-weight" in losses
    assert "cross_entropy" in " ".join(losses.translate(BORDERS).split())
    assert "--dim" not in losses  # softmax's family owns --dim


def test_a_functions_option_on_another_function_is_refused_naming_who_takes_it():
    result = runner.invoke(app, ["grad", "mse_loss", "-x", "[1.0, 2.0]", "-t", "[0.0, 1.0]", "--label-smoothing",
                                 "0.1"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "--label-smoothing" in result.stderr and "mse_loss" in result.stderr


def test_modes_are_shown_as_their_values():
    doc = json.loads(runner.invoke(app, ["functions", "cross_entropy", "--json"]).stdout)
    assert "Reduction" not in json.dumps(doc)
    table = runner.invoke(app, ["functions"]).stdout
    assert "--reduction=mean" in table and "Reduction.MEAN" not in table


def test_plot_without_matplotlib_is_refused_before_anything_is_read(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    # the input does not exist: the refusal must come first, before any reading or work
    result = runner.invoke(app, ["jacobian", "softmax", "-x", str(tmp_path / "missing.npy"), "--plot",
                                 str(tmp_path / "p.png")])
    assert result.exit_code == 2 and result.stdout == ""
    assert "--plot" in result.stderr and "gradcli[plot]" in result.stderr and "missing" not in result.stderr
    assert list(tmp_path.iterdir()) == []


# --- a suite entry is data, converted by the option's declared type --------------------


def suite(tmp_path, body: str):
    path = tmp_path / "s.toml"
    path.write_text(body)
    return runner.invoke(app, ["check", "--suite", str(path), "--json"])


def test_a_suite_entry_that_looks_like_an_option_is_a_name_not_an_option(tmp_path):
    result = suite(tmp_path, '[[check]]\nfunction = "--help"\ninput = "[1.0, 2.0]"\n')
    assert result.exit_code == 2
    assert "Usage" not in result.stdout  # no help printed as if it were a command line
    doc = json.loads(result.stdout)
    assert doc[0]["exit_code"] == 2 and "unknown function '--help'" in doc[0]["error"]


@pytest.mark.parametrize("key, value, expected", [
    ("atol", '"lots"', "is not a number"),
    ("probes", "0", "in [1,"),
    ("mode", '"sometimes"', "one of auto, full, probe"),
    ("taylor", '"yes"', "true or false"),
    ("function", "3", "is not a text"),
])
def test_a_suite_value_of_the_wrong_type_is_refused_naming_the_entry_and_key(tmp_path, key, value, expected):
    entry = {"function": '"exp"', "input": '"[1.0, 2.0]"', key: value}
    body = "[[check]]\nname = \"e\"\n" + "".join(f"{k} = {v}\n" for k, v in entry.items())
    result = suite(tmp_path, body)
    assert result.exit_code == 2 and result.stdout == ""
    assert "check 'e'" in result.stderr and expected in result.stderr


def test_a_suite_entry_means_what_the_same_command_line_means(tmp_path):
    x = np.array([[0.3, -1.2, 2.0], [0.0, 0.5, -0.5]])
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "s.toml").write_text('[[check]]\nfunction = "cross_entropy"\ninput = "x.npy"\ntarget = [2, 0]\n'
                                     'label-smoothing = 0.2\nbackends = ["analytic", "fd"]\nreference = "analytic"\n'
                                     'atol = 1e-9\nno-timing = true\n')
    entry = json.loads(runner.invoke(app, ["check", "--suite", str(tmp_path / "s.toml"), "--json",
                                           "--no-timing"]).stdout)[0]
    line = runner.invoke(app, ["check", "cross_entropy", "-x", str(tmp_path / "x.npy"), "-t", "[2, 0]",
                               "--label-smoothing", "0.2", "--backends", "analytic,fd", "--reference", "analytic",
                               "--atol", "1e-9", "--json", "--no-timing"])
    single = json.loads(line.stdout)
    assert entry["exit_code"] == line.exit_code == 0
    assert {k: v for k, v in entry.items() if k not in ("name", "exit_code")} == single
