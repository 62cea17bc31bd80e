"""Second derivatives with every option set (``reference.FIXED``):
the analytic Hessian (full, auto layout) and hvp against ``torch.func.hessian``
and ``torch.autograd.functional.hvp`` (``test_hessian.check_second_order``),
and ``check --quantity hessian|hvp`` passing where the closed form is right."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gradcli.cli import app
from reference import FIXED as CASES
from test_hessian import check_second_order

runner = CliRunner()


@pytest.mark.parametrize("name", list(CASES))
def test_every_options_second_derivative_matches_torch(name):
    check_second_order(CASES[name], "float64", "analytic", seed=7)


LOSSES = [
    ["binary_cross_entropy_with_logits", "-x", "randn:3,2", "-t", "rand:3,2", "--pos-weight", "[0.5, 3.0]"],
    ["cross_entropy", "-x", "randn:4,3", "-t", "[0, 2, 1, 1]", "--class-weight", "[0.2, 1.0, 3.0]",
     "--label-smoothing", "0.1", "--ignore-index", "1"],
    ["smooth_l1_loss", "-x", "[0.1, 2.0]", "-t", "[0.0, 0.0]", "--beta", "0.5"],
]
CHECKS = [(args, q) for args in LOSSES for q in ("hessian", "hvp")] + \
    [(["softplus", "-x", "[-1.0, 0.2, 0.9]", "--beta", "3"], "hessian")]  # (a vector output has no hvp)


@pytest.mark.parametrize("args, quantity", CHECKS)
def test_check_second_order_with_options_passes_against_autograd(args, quantity):
    """What a user runs to trust a Hessian: every backend agrees with autograd (exit 0)."""
    result = runner.invoke(app, ["check", *args, "--quantity", quantity, "--json", "--no-timing"])
    assert result.exit_code == 0, (result.stderr, result.stdout[-2000:])
    assert json.loads(result.stdout)["ok"] is True
