"""The pytest plugin (SPEC §9): the ``gradients`` fixture's check, certify and
baseline, and ``--gradcli-update``, run in a pytest of their own (``pytester``)
on a small torch model whose backward can be made wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch  # noqa: F401  (imported before pytester's snapshot of sys.modules: its inner runs drop the modules
import gradcli.checking.model  # noqa: F401,E402  they import, and torch cannot be imported twice in one process)

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
MODEL = '''
import torch
from torch import nn

SCALE = {scale}  # 1.0: the true gradient; otherwise the backward of Scaled is wrong by this factor


class Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (1 - torch.tanh(x) ** 2) * SCALE


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 2)

    def forward(self, x, labels):
        return nn.functional.cross_entropy(self.fc(Scaled.apply(x)), labels)
'''
TESTS = '''
import numpy as np

X = np.random.default_rng(0).standard_normal((4, 3))
LABELS = np.array([0, 1, 1, 0])


def test_check(gradients):
    report = gradients.check("model.py:Net", input=X, args={{"labels": LABELS}}, wrt="input,param:*")
    assert report.ok


def test_baseline(gradients):
    gradients.baseline("net", "model.py:Net", input=X, args={{"labels": LABELS}}, wrt="{wrt}")


def test_certify(gradients):
    gradients.certify("model.py:Scaled", input=X, properties="gradient")


def test_bad_input(gradients):
    gradients.check("model.py:Net", input=X, args={{"labels": LABELS}}, wrt="param:nothing")
'''


@pytest.fixture
def project(pytester, monkeypatch):
    """A project with model.py and its tests; the plugin named with -p (entry points off, so an
    installed gradcli does not register it twice)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.syspath_prepend(str(ROOT))

    def write(scale: float = 1.0, wrt: str = "input") -> None:
        (pytester.path / "model.py").write_text(MODEL.format(scale=scale))
        (pytester.path / "test_model.py").write_text(TESTS.format(wrt=wrt))

    def run(*args: str):
        return pytester.runpytest("-p", "gradcli.pytest_plugin", "-p", "no:cacheprovider", *args)

    write()
    return pytester, write, run


def test_check_passes_a_right_backward_and_fails_a_wrong_one_with_the_report(project):
    pytester, write, run = project
    result = run("-k", "test_check")
    result.assert_outcomes(passed=1)
    write(scale=1.5)  # the backward of Scaled is 1.5x the derivative: the input's gradient is wrong
    result = run("-k", "test_check")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "gradcli check found a mismatch" in out and "MISMATCH" in out and "input" in out
    # gradcli's report, not a traceback of its internals
    assert "gradcli/checking" not in out and "pytest_plugin.py" not in out


def test_a_gradcli_error_fails_the_test_with_its_message(project):
    pytester, write, run = project
    result = run("-k", "test_bad_input")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "gradcli: " in out and "param:nothing" in out and "Traceback" not in out


def test_certify_passes_a_right_backward_and_fails_a_wrong_one_with_its_report(project):
    pytester, write, run = project
    try:
        import gradcli.certify  # noqa: F401
    except ImportError:  # a gradcli without certify: the test says so and is skipped
        result = run("-k", "test_certify", "-rs")
        result.assert_outcomes(skipped=1)
        assert "gradcli.certify is not importable" in result.stdout.str()
        return
    run("-k", "test_certify").assert_outcomes(passed=1)
    write(scale=1.5)
    result = run("-k", "test_certify")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "gradcli certify found a failing property" in out and "gradient" in out and "fail" in out
    assert "gradcli/certify" not in out


def test_baseline_is_saved_once_compared_after_and_rewritten_by_gradcli_update(project):
    pytester, write, run = project
    path = pytester.path / "tests" / "gradcli_baselines" / "net.json"
    first = run("-k", "test_baseline")
    first.assert_outcomes(failed=1)  # a new baseline is looked at and committed (as pytest-regressions)
    assert "saved the current one there" in first.stdout.str() and path.is_file()
    saved = json.loads(path.read_text())
    run("-k", "test_baseline").assert_outcomes(passed=1)
    write(scale=1.001)  # the input's gradient moves by 0.1 %
    moved = run("-k", "test_baseline")
    moved.assert_outcomes(failed=1)
    assert "gradients moved from the baseline" in moved.stdout.str() and "--gradcli-update" in moved.stdout.str()
    assert json.loads(path.read_text()) == saved  # not rewritten without --gradcli-update
    updated = run("-k", "test_baseline", "--gradcli-update")
    updated.assert_outcomes(failed=1)
    assert "rewrote" in updated.stdout.str() and json.loads(path.read_text()) != saved
    run("-k", "test_baseline").assert_outcomes(passed=1)


def test_the_plugin_is_registered_through_the_pytest11_entry_point():
    """What pytest itself reads: the installed package's pytest11 entry points (any Python
    the project supports; pyproject.toml's table is what installing wrote there)."""
    from importlib.metadata import entry_points

    registered = {e.name: e.value for e in entry_points(group="pytest11")}
    assert registered.get("gradcli") == "gradcli.pytest_plugin", registered
    import gradcli.pytest_plugin as plugin

    assert callable(plugin.pytest_addoption) and hasattr(plugin, "gradients")
