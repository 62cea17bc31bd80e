"""Localisation after a mismatch: the wrong submodule is blamed and its
containers are not, and a wrong entry a few times out of tolerance is still
named — by the module check and by group testing — at the tolerance the
user gives (--atol with --rtol 0, so the bound is known exactly).

The model's ``Inner`` module adds ``DELTA`` to entry (2, 3) of its weight's
gradient in its backward; everything else is right."""

from __future__ import annotations

import json
import textwrap

import pytest
from typer.testing import CliRunner

from gradcli.cli import app

runner = CliRunner()

MODEL = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn

    DELTA = {delta!r}


    class AddToOne(torch.autograd.Function):
        """The identity; its backward adds DELTA to entry (2, 3) of the gradient."""

        @staticmethod
        def forward(ctx, w):
            return w.clone()

        @staticmethod
        def backward(ctx, g):
            g = g.clone()
            g[2, 3] += DELTA
            return g


    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 5)

        def forward(self, x):
            return torch.tanh(F.linear(x, AddToOne.apply(self.fc.weight), self.fc.bias))


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()
            self.out = nn.Linear(5, 4)

        def forward(self, x):
            return self.out(self.inner(x))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.first = nn.Linear(6, 6)
            self.block = Block()

        def forward(self, x, t):
            return F.cross_entropy(self.block(torch.tanh(self.first(x))), t)


    net = Net()
''')
# Probe mode: K directions per tensor (full mode's entry-by-entry fd adds seconds and nothing here).
ARGS = ["-x", "randn:5,6", "-t", "[0, 3, 1, 2, 1]", "--wrt", "param:*", "--backends", "autograd,fd", "--mode", "probe",
        "--json", "--no-timing"]
DELTA = 1e-3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("localisation") / "net.py"
    path.write_text(MODEL.format(delta=DELTA))
    return f"{path}:net"


@pytest.fixture(scope="module")
def default(model):
    """The check at the default tolerances: ``(exit code, document)``."""
    return check(model)


def check(model, *args):
    result = runner.invoke(app, ["check", model, *ARGS, *map(str, args)])
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def findings(doc) -> dict:
    return {m["path"]: m for m in doc["modules"] or ()}


def test_the_wrong_module_is_blamed_and_its_containers_are_not(default):
    code, doc = default
    assert code == 1
    found = findings(doc)
    assert not found["block.inner"]["ok"] and not found["block"]["ok"]  # the container fails too ...
    assert [m["path"] for m in doc["modules"] if m["blamed"]] == ["block.inner"]  # ... but only Inner is to blame
    assert found["block.out"]["ok"] and found["first"]["ok"]


@pytest.mark.parametrize("excess, blamed", [(3.0, True), (1.01, True), (0.99, False)])
def test_a_module_is_blamed_exactly_when_its_difference_is_out_of_tolerance(model, default, excess, blamed):
    """With --rtol 0 a submodule's tolerance is atol + 3 x fd's error estimate: atol set so that
    Inner's |autograd - fd| is ``excess`` times it."""
    inner = findings(default[1])["block.inner"]
    diff = abs(inner["value"] - inner["reference"])
    atol = diff / excess - 3 * inner["error_estimate"]
    assert atol > 0
    _, doc = check(model, "--rtol", "0", "--atol", repr(atol))
    assert doc["ok"] is False  # (the entry itself is out of tolerance: localisation runs)
    assert findings(doc)["block.inner"]["blamed"] is blamed
    assert findings(doc)["block.inner"]["ok"] is not blamed


@pytest.mark.parametrize("excess", [3.0, 1.5])
def test_group_testing_names_an_entry_a_few_times_out_of_tolerance(model, excess):
    """In probe mode the wrong tensor's entries are found by halving: every half holding entry
    (2, 3) differs from fd by DELTA, so with atol = DELTA / excess (rtol 0) the search goes down
    to that entry and lists it, with fd's value and the reference's."""
    code, doc = check(model, "--rtol", "0", "--atol", repr(DELTA / excess))
    assert code == 1
    weight = next(r for r in doc["results"] if r["wrt"] == "param:block.inner.fc.weight")
    assert weight["ok"] is False
    assert any("located by group testing" in n for n in weight["notes"])
    top = weight["top"][0]
    assert top["index"] == [2, 3]
    assert abs(abs(top["value"] - top["reference"]) - DELTA) <= 1e-3 * DELTA
    assert [r["wrt"] for r in doc["results"] if r["ok"] is False] == ["param:block.inner.fc.weight"]
