"""Per-sample blocks of user code are trusted only where samples do not
interact: ``--verify-blocks`` finds a cross-sample derivative as small as 100
eps of the sample's own (the tolerance), and never flags rounding. The coupling
``out[i] = x[i] + c sum_j x[j]`` has cross-sample derivative ``c`` against
``1 + c`` on the sample itself, so c at 0.99x and 1.01x of the tolerance
lands on either side of it."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app

runner = CliRunner()
EPS = float(np.finfo(np.float64).eps)
TOLERANCE = 100 * EPS  # a cross-sample derivative within 100 eps of the sample's own is rounding

COUPLED = textwrap.dedent('''
    import torch

    C = {c!r}


    def coupled(x):
        """Each sample plus C times the batch sum: samples interact through C alone."""
        return x + C * x.sum(0, keepdim=True)
''')


def jacobian(tmp_path, c, *args):
    path = tmp_path / f"coupled_{c!r}.py"
    path.write_text(COUPLED.format(c=c))
    result = runner.invoke(app, ["jacobian", f"{path}:coupled", "-x", "randn:5,3", "--json", "--no-timing", *args])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


@pytest.mark.parametrize("factor, interact", [(0.99, False), (1.01, True), (1e4, True)])
def test_blocks_are_refused_exactly_when_samples_interact_beyond_rounding(tmp_path, factor, interact):
    c = factor * TOLERANCE / (1 - factor * TOLERANCE)  # c / (1 + c) = factor x the tolerance
    result, doc = jacobian(tmp_path, c, "--layout", "blocks")
    if interact:
        assert result.exit_code == 2 and "interact" in result.stderr, result.stderr
        assert doc is None
    else:
        assert result.exit_code == 0, result.stderr
        assert doc["layout"] == "blocks" and doc["shape"] == [5, 3, 3]
    result, doc = jacobian(tmp_path, c)  # auto: blocks where they are the whole Jacobian, else full
    assert result.exit_code == 0, result.stderr
    assert doc["layout"] == ("full" if interact else "blocks")
