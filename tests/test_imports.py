"""Start-up promises: `import gradcli`, --help, --version and the NumPy
backends on built-ins never import torch (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from gradcli.__main__ import main
sys.argv = ["gradcli", *{args!r}]
try:
    main()
except SystemExit as exit:
    code = exit.code
print("TORCH" if "torch" in sys.modules else "NO-TORCH", code, file=sys.stderr)
"""


def torch_imported(args) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE.format(args=list(args))], capture_output=True, text=True)
    last = proc.stderr.strip().splitlines()[-1]
    return last.startswith("TORCH"), last


def test_import_gradcli_leaves_torch_unimported():
    code = "import sys, gradcli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("args", [
    ["--help"],
    ["--version"],
    ["jacobian", "--help"],
    ["functions"],
    ["functions", "cross_entropy"],
    ["jacobian", "softmax", "-x", "randn:3,4"],
    ["jacobian", "softmax", "-x", "randn:3,4", "--backend", "fd", "--json"],
    ["grad", "cross_entropy", "-x", "randn:3,4", "-t", "[0, 1, 3]", "--label-smoothing", "0.1"],
    ["jvp", "log_softmax", "-x", "randn:3,4", "--tangent", "randn", "-b", "fd"],
    ["vjp", "nll_loss", "-x", "randn:3,4", "-t", "[0, 1, 3]", "--reduction", "none"],
])
def test_no_torch_for_help_version_and_numpy_backends(args):
    imported, line = torch_imported(args)
    assert not imported, line
    assert line.endswith(" 0") or line.endswith(" None"), line


def test_autograd_backend_does_import_torch():
    imported, line = torch_imported(["jacobian", "softmax", "-x", "randn:3,4", "-b", "autograd"])
    assert imported, line


def test_python_dash_m_runs_the_same_program():
    proc = subprocess.run([sys.executable, "-m", "gradcli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("gradcli ")
