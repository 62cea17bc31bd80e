"""gradcli in CI (issue 17): suites in one process, JUnit XML, gradient
baselines across processes, the compile backend, and the pytest helpers."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()

MODELS = textwrap.dedent('''
    import torch

    class Net(torch.nn.Module):
        """A small classifier with a loss: forward(x, target)."""
        def __init__(self, bug=None):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(6, 5)
            self.out = torch.nn.Linear(5, 3)
            self.bug = bug

        def forward(self, x, target):
            w = self.fc.weight
            if self.bug is not None:
                w = Perturb.apply(w, self.bug)
            h = torch.tanh(torch.nn.functional.linear(x, w, self.fc.bias))
            return torch.nn.functional.cross_entropy(self.out(h), target)

    class Perturb(torch.autograd.Function):
        """Identity forward; the backward changes the gradient a little."""
        @staticmethod
        def forward(ctx, w, bug):
            ctx.bug = bug
            return w.clone()

        @staticmethod
        def backward(ctx, g):
            kind, amount = ctx.bug
            g = g.clone()
            if kind == "all":
                g = g * (1 + amount)
            else:
                g[2, 3] = g[2, 3] * (1 + amount)
            return g, None

    def net():
        return Net()

    def net_scaled():
        return Net(("all", 1e-6))

    def net_one_entry():
        return Net(("one", 1e-6))

    def boom(x):
        raise ValueError("boom")

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 2

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return torch.where(x > 1, 3 * x, 2 * x) * g

    def square(x):
        return Square.apply(x)
''')


@pytest.fixture()
def project(tmp_path):
    """A project folder: models, arrays, and a suite that names them by relative paths."""
    (tmp_path / "models.py").write_text(MODELS)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((4, 6)))
    (tmp_path / "t.json").write_text("[0, 2, 1, 1]")
    return tmp_path


def write_suite(folder: Path, text: str) -> Path:
    path = folder / "checks.toml"
    path.write_text(textwrap.dedent(text))
    return path


SUITE = '''
    [[check]]
    function = "softmax"
    input = "randn:3,4"
    backends = ["analytic", "fd"]

    [[check]]
    name = "model input"
    function = "models.py:net"
    input = "x.npy"
    target = "t.json"

    [[check]]
    name = "wrong backward"
    function = "models.py:square"
    input = "[0.5, 2.0, -1.0, 3.0]"

    [[check]]
    name = "raises"
    function = "models.py:boom"
    input = "randn:3"
'''


def run_suite(project, *extra, cwd=None):
    suite = write_suite(project, SUITE)
    return runner.invoke(app, ["check", "--suite", str(suite), "--no-timing", *extra])


def test_a_suite_runs_every_check_and_gives_one_verdict(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # relative paths come from the suite's folder, not the working one
    junit = project / "report.xml"
    result = run_suite(project, "--junit", str(junit))
    assert result.exit_code == 3, result.stderr  # one could not run: exit 3 outranks the mismatch
    lines = result.stdout.splitlines()
    verdicts = {name: next(line for line in lines if line.strip().startswith(name)) for name in
                ("softmax", "model input", "wrong backward", "raises")}
    assert " ok " in verdicts["softmax"] + " " and " ok " in verdicts["model input"] + " "
    assert "FAIL" in verdicts["wrong backward"] and "COULD NOT RUN" in verdicts["raises"]
    assert "2 passed, 1 failed, 1 errors" in result.stdout
    assert "── wrong backward ──" in result.stdout and "suspect autograd" in result.stdout  # the failing report follows
    tree = ET.parse(junit).getroot()
    suite = tree.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"softmax", "model input", "wrong backward", "raises"}
    assert cases["softmax"].find("failure") is None and cases["softmax"].find("error") is None
    assert "MISMATCH" in cases["wrong backward"].find("failure").text
    assert "boom" in cases["raises"].find("error").get("message")


def test_suite_json_is_a_list_of_the_checks_documents(project):
    result = run_suite(project, "--json")
    documents = json.loads(result.stdout)
    assert [d["name"] for d in documents] == ["softmax", "model input", "wrong backward", "raises"]
    assert [d["ok"] for d in documents] == [True, True, False, None]
    assert [d["exit_code"] for d in documents] == [0, 0, 1, 3]
    assert documents[0]["command"] == "check" and "backends" in documents[0]


def test_a_suite_of_passing_checks_exits_0_and_a_failing_one_1(project):
    ok = write_suite(project, '[[check]]\nfunction = "tanh"\ninput = "randn:3"\n')
    assert runner.invoke(app, ["check", "--suite", str(ok)]).exit_code == 0
    bad = write_suite(project, '[[check]]\nfunction = "tanh"\ninput = "randn:3"\n\n'
                               '[[check]]\nfunction = "models.py:square"\ninput = "[2.0]"\n')
    assert runner.invoke(app, ["check", "--suite", str(bad)]).exit_code == 1


@pytest.mark.parametrize("text,message", [
    ('[[check]]\nfunction = "tanh"\ninput = "randn:3"\nbackend = "fd"\n', "check 1: unknown key 'backend'"),
    ('[[check]]\ninput = "randn:3"\n', "check 1 has no 'function' key"),
    ('[[check]]\nfunction = "tanh"\ninput = "randn:3"\n\n[[check]]\nname = "b"\nfunction = "tanh"\ndtype = "float16"\n',
     "check 'b'"),
    ('[check\nfunction = 1', "not valid TOML"),
    ('title = "x"\n', "unknown top-level key 'title'"),
])
def test_an_invalid_suite_exits_2_before_any_check_runs(project, text, message):
    result = runner.invoke(app, ["check", "--suite", str(write_suite(project, text))])
    assert result.exit_code == 2, result.stdout
    assert message in result.stderr and result.stdout == ""


def test_junit_needs_a_suite_and_a_suite_needs_no_function(project):
    assert runner.invoke(app, ["check", "tanh", "-x", "randn:3", "--junit", "r.xml"]).exit_code == 2
    suite = write_suite(project, '[[check]]\nfunction = "tanh"\ninput = "randn:3"\n')
    assert runner.invoke(app, ["check", "tanh", "--suite", str(suite)]).exit_code == 2
    result = runner.invoke(app, ["check", "--suite", str(suite), "--baseline", str(project / "b.json")])
    assert result.exit_code == 2 and "in the entry it belongs to" in result.stderr


# --- baselines --------------------------------------------------------------------------


def gradcli_process(*args, cwd):
    return subprocess.run([sys.executable, "-m", "gradcli", *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_a_baseline_is_the_same_in_a_new_process_and_catches_a_moved_gradient(project, monkeypatch):
    """Saved in a new process, saved again here: the same bytes. Compared here (one process is
    enough to cross: each comparison below reads a file another process wrote)."""
    args = ["-x", "x.npy", "-t", "t.json", "--wrt", "param:fc.weight"]
    first = gradcli_process("check", "models.py:net", *args, "--save-baseline", "a.json", cwd=project)
    assert first.returncode == 0, first.stderr
    monkeypatch.chdir(project)
    second = runner.invoke(app, ["check", "models.py:net", *args, "--save-baseline", "b.json"])
    assert second.exit_code == 0, second.stderr
    assert (project / "a.json").read_text() == (project / "b.json").read_text()  # deterministic across processes

    same = runner.invoke(app, ["check", "models.py:net", *args, "--baseline", "a.json", "--json"])
    assert same.exit_code == 0, same.stderr
    assert json.loads(same.stdout)["baseline"]["ok"] is True

    for variant in ("net_scaled", "net_one_entry"):  # the whole gradient x (1 + 1e-6); one entry x (1 + 1e-6)
        moved = runner.invoke(app, ["check", f"models.py:{variant}", *args, "--baseline", "a.json", "--json"])
        assert moved.exit_code == 1, (variant, moved.stderr)
        doc = json.loads(moved.stdout)
        assert doc["ok"] is False
        entries = {e["name"]: e for e in doc["baseline"]["entries"]}
        assert entries["param:fc.weight"]["moved"] and not entries["output"]["moved"], (variant, entries)


def test_a_baseline_in_a_suite_entry(project):
    save = write_suite(project, '[[check]]\nfunction = "models.py:net"\ninput = "x.npy"\ntarget = "t.json"\n'
                                'wrt = "param:fc.weight"\nsave-baseline = "base.json"\n')
    assert runner.invoke(app, ["check", "--suite", str(save)]).exit_code == 0
    assert (project / "base.json").exists()
    same = write_suite(project, '[[check]]\nfunction = "models.py:net"\ninput = "x.npy"\ntarget = "t.json"\n'
                                'wrt = "param:fc.weight"\nbaseline = "base.json"\n')
    assert runner.invoke(app, ["check", "--suite", str(same)]).exit_code == 0
    compare = write_suite(project, '[[check]]\nfunction = "models.py:net_scaled"\ninput = "x.npy"\ntarget = "t.json"\n'
                                   'wrt = "param:fc.weight"\nbaseline = "base.json"\n')
    result = runner.invoke(app, ["check", "--suite", str(compare)])
    assert result.exit_code == 1 and "MOVED" in result.stdout and "param:fc.weight" in result.stdout


def test_a_missing_or_foreign_baseline_is_exit_2(project):
    result = runner.invoke(app, ["check", "tanh", "-x", "randn:3", "--baseline", str(project / "none.json")])
    assert result.exit_code == 2 and "--save-baseline" in result.stderr
    (project / "other.json").write_text('{"a": 1}')
    result = runner.invoke(app, ["check", "tanh", "-x", "randn:3", "--baseline", str(project / "other.json")])
    assert result.exit_code == 2 and "not a gradcli baseline" in result.stderr


# --- the pytest helpers -------------------------------------------------------------------


def test_assert_gradients_passes_a_correct_model_and_raises_with_the_table_on_a_bug(project, monkeypatch):
    from gradcli.testing import assert_gradients

    monkeypatch.chdir(project)
    x, t = np.load("x.npy"), np.array([0, 2, 1, 1])
    assert assert_gradients("models.py:net", input=x, target=t).ok
    with pytest.raises(AssertionError, match=r"(?s)MISMATCH.*\[3, 3\]"):
        assert_gradients("models.py:square", input=np.array([0.5, 2.0, -1.0, 3.0]))


def test_assert_matches_baseline_saves_once_then_compares(project, monkeypatch):
    from gradcli.testing import assert_matches_baseline

    monkeypatch.chdir(project)
    x, t = np.load("x.npy"), np.array([0, 2, 1, 1])
    with pytest.raises(AssertionError, match="saved the current one"):
        assert_matches_baseline("models.py:net", "fp.json", input=x, target=t, wrt="param:out.weight")
    assert assert_matches_baseline("models.py:net", "fp.json", input=x, target=t, wrt="param:out.weight").ok
    with pytest.raises(AssertionError, match="MOVED"):
        # out.weight's gradient flows through fc's tanh: the scaled fc.weight leaves it alone, the input does not
        assert_matches_baseline("models.py:net", "fp.json", input=x * 1.001, target=t, wrt="param:out.weight")


# --- the compile backend --------------------------------------------------------------------


@pytest.mark.slow
def test_compile_backend_agrees_with_autograd_or_is_skipped_with_a_reason(project):
    """torch.compile on CPU takes tens of seconds: one small check."""
    result = runner.invoke(app, ["check", "cross_entropy", "-x", "randn:3,4", "-t", "[0, 1, 3]",
                                 "--backends", "autograd,compile", "--json"])
    doc = json.loads(result.stdout)
    row = next(b for b in doc["backends"] if b["name"] == "compile")
    if "skipped" in row:
        assert row["skipped"].startswith("--backend compile:") and result.exit_code == 3, row
    else:
        assert row["ok"] is True and result.exit_code == 0, row


def test_compile_is_a_check_backend_only():
    result = runner.invoke(app, ["grad", "cross_entropy", "-x", "randn:3,4", "-t", "[0, 1, 3]", "-b", "compile"])
    assert result.exit_code == 2 and "gradcli check" in result.stderr


def test_the_sample_suite_gives_what_the_readme_shows(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, ["check", "--suite", "sample_inputs/checks.toml", "--no-timing", "--json"])
    assert result.exit_code == 1, result.stderr
    documents = json.loads(result.stdout)
    assert [d["ok"] for d in documents] == [True, True, True, True, False]
    assert documents[3]["quantity"] == "vjp"  # options with choices mean what they mean on the command line
