"""Table output: golden files for each story, layout and command (fixed width,
no colour), refreshed only by `pytest --update-goldens`; heatmap, plot, colour
rules and stdout discipline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


import pytest
from typer.testing import CliRunner

from gradcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = Path(__file__).parent / "goldens"
S = "sample_inputs/"
LOGITS, TARGETS = S + "logits.npy", S + "targets.json"

CASES = {
    # Story 1: integer targets are constants; per-sample rows; forward mode; soft targets.
    "story1_jacobian_ce_none_blocks": ["jacobian", "cross_entropy", "-x", LOGITS, "-t", TARGETS, "--reduction", "none", "--explain"],
    "story1_jvp_ce_forward": ["jvp", "cross_entropy", "-x", LOGITS, "-t", TARGETS, "--tangent", "randn", "-b", "forward"],
    "story1_grad_ce_wrt_soft_target": ["grad", "cross_entropy", "-x", LOGITS, "-t", S + "soft_targets.json", "--wrt", "target"],
    # Story 2: cross_entropy vs nll_loss, and a Linear layer's weight.
    "story2_grad_ce_explain": ["grad", "cross_entropy", "-x", LOGITS, "-t", TARGETS, "--explain"],
    "story2_grad_nll": ["grad", "nll_loss", "-x", LOGITS, "-t", TARGETS],
    "story2_grad_linear_ce_weight": ["grad", "linear,cross_entropy", "-x", LOGITS, "--weight", S + "linear_weight.npy",
                                     "--bias", S + "linear_bias.json", "-t", "[2, 0, 1, 1, 2]", "--wrt", "weight", "--explain"],
    # Story 3: per-sample Jacobians of a network.
    "story3_convnet_blocks": ["jacobian", S + "convnet.py:net", "-x", S + "images.npy", "--layout", "blocks", "--explain"],
    # Story 4: softmax blocks, the full block-diagonal Jacobian, the zero vjp.
    "story4_softmax_blocks_explain": ["jacobian", "softmax", "-x", LOGITS, "--explain"],
    "story4_softmax_full": ["jacobian", "softmax", "-x", "[[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]]", "--layout", "full", "--explain"],
    "story4_softmax_vjp_ones": ["vjp", "softmax", "-x", "[[1.0, 2.0, 3.0], [0.5, 0.5, 0.0]]", "--explain"],
    # Story 5: an elementwise function: full, diag, vjp.
    "story5_expr_full": ["jacobian", "expr:(x+1)**2", "-x", "eye:2", "--layout", "full", "--explain"],
    "story5_expr_diag": ["jacobian", "expr:(x+1)**2", "-x", "eye:2", "--explain"],
    "story5_expr_vjp": ["vjp", "expr:(x+1)**2", "-x", "eye:2", "--explain"],
    # A large array, summarised; fd with its error estimate; check.
    "summarised_full": ["jacobian", "softmax", "-x", "randn:6,5", "--layout", "full"],
    "fd_blocks": ["jacobian", "log_softmax", "-x", "randn:2,3", "-b", "fd"],
    "check_cross_entropy": ["check", "cross_entropy", "-x", LOGITS, "-t", TARGETS, "--label-smoothing", "0.1"],
    "functions": ["functions"],
}


ROUNDOFF = re.compile(r"-?\d\.\d+e-(1[3-9]|[2-9]\d)")


def without_roundoff(text: str) -> str:
    """Errors at round-off level (|x| < 1e-12) and the index where they peak depend
    on the machine's SIMD kernels, not on gradcli: a golden shows them as ≈0 and [·]."""
    lines = []
    for line in text.splitlines(keepends=True):
        if ROUNDOFF.search(line):
            line = re.sub(r"\[[\d, ]+\]", "[·]", ROUNDOFF.sub("≈0", line))
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize("name", list(CASES))
def test_golden_table_output(name, request, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = CASES[name] + ([] if name == "functions" else ["--no-timing"])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    golden = GOLDENS / f"{name}.txt"
    text = f"$ gradcli {' '.join(CASES[name])}\n{result.stdout}"
    if name.startswith("check"):
        text = without_roundoff(text)
    if request.config.getoption("--update-goldens"):
        golden.write_text(text)
    assert golden.exists(), f"no golden for {name}: run pytest --update-goldens"
    assert text == golden.read_text(), f"{name}: table output changed; if intended, run pytest --update-goldens"


def test_heatmap_colours_cells_on_a_terminal():
    from io import StringIO

    import numpy as np
    from rich.console import Console

    import gradcli
    from gradcli.render.table import render_result

    res = gradcli.jacobian("softmax", input=np.array([[1.0, 2.0, 3.0]]))
    out = StringIO()
    Console(file=out, width=100, color_system="truecolor", force_terminal=True).print(render_result(res, heatmap=True))
    assert "\x1b[" in out.getvalue() and "48;2;255" in out.getvalue()  # a red (positive) background
    plain = StringIO()
    Console(file=plain, width=100, color_system=None).print(render_result(res, heatmap=True))
    assert "\x1b[" not in plain.getvalue()


def test_no_color_and_pipes_get_no_escape_codes():
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "gradcli", "jacobian", "softmax", "-x", "randn:2,3", "--heatmap"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "\x1b[" not in proc.stdout


def test_json_mode_prints_only_the_document():
    proc = subprocess.run([sys.executable, "-m", "gradcli", "jacobian", "softmax", "-x", "randn:2,3", "--json", "-b", "fd"],
                          capture_output=True, text=True)
    json.loads(proc.stdout)
    assert proc.stdout.count("\n") == 1


def test_plot_writes_a_png_of_the_expected_size(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    for args, size in [(["jacobian", "softmax", "-x", "randn:3,4"], (960, 280)),
                       (["jacobian", "softmax", "-x", "randn:2,3", "--layout", "full"], None),
                       (["grad", "cross_entropy", "-x", "randn:3,4", "-t", "[0, 1, 2]"], None)]:
        path = tmp_path / "j.png"
        result = CliRunner().invoke(app, [*args, "--plot", str(path)])
        assert result.exit_code == 0, result.stderr
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 200 and image.size[1] > 200
            if size:
                assert image.size == size
        path.unlink()


def test_plot_path_is_checked_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["jacobian", "softmax", "-x", "randn:2,3", "--plot", str(tmp_path / "j.jpg")])
    assert result.exit_code == 2 and ".png" in result.stderr and result.stdout == ""
