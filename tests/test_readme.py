"""Every ``console`` block of the README is a command a user can paste: ``sh``
splits it exactly as written (so quoting mistakes fail), it runs, and its
output must be what the README shows. ``pytest --update-goldens`` rewrites
the README's outputs from these runs."""

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

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()
README = ROOT / "README.md"
BLOCK = re.compile(r"```console\n\$ (?P<command>gradcli [^\n]*)\n(?P<output>.*?)```", re.DOTALL)


def shell_words(command: str) -> list[str]:
    """The arguments ``sh`` passes for ``command`` as pasted (a quoting mistake
    is a syntax error or a different argument list here)."""
    shell = f"gradcli() {{ {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"; }}; {command}"
    done = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return json.loads(done.stdout)


def run(command: str):
    """The command's arguments as the shell gives them, run in-process with
    timing dropped (the README shows none)."""
    return runner.invoke(app, [*shell_words(command), "--no-timing"])


def blocks() -> list[re.Match]:
    return list(BLOCK.finditer(README.read_text()))


def test_the_readme_has_examples():
    assert len(blocks()) >= 10


def _abridge(actual: str, shown: str) -> str:
    """A README block may leave the middle out with a line ``...``: keep as many
    lines of ``actual`` before and after it as the block shows."""
    lines = shown.splitlines(keepends=True)
    if "...\n" not in lines:
        return actual
    cut = lines.index("...\n")
    head, tail = cut, len(lines) - cut - 1
    got = actual.splitlines(keepends=True)
    return "".join(got[:head] + ["...\n"] + (got[len(got) - tail:] if tail else []))


@pytest.mark.parametrize("index", range(len(blocks())), ids=[m["command"][:60] for m in blocks()])
def test_a_readme_example_runs_as_written_and_shows_its_output(index, request, monkeypatch):
    monkeypatch.chdir(ROOT)
    match = blocks()[index]
    result = run(match["command"])
    shown = match["output"]
    # check finds the planted bug: exit 1; a block showing an error shows standard error, exit 2
    expected_code = 2 if shown.startswith("gradcli: error") else 1 if "MISMATCH" in shown else 0
    assert result.exit_code == expected_code, result.stderr
    assert "Traceback" not in result.stderr
    actual = _abridge(result.stderr if expected_code == 2 else result.stdout, shown)
    if request.config.getoption("--update-goldens"):
        text = README.read_text()
        match = blocks()[index]
        README.write_text(text[: match.start("output")] + actual + text[match.end("output"):])
        return
    assert same_but_rounding_noise(actual, shown), "README output changed; if intended, run pytest --update-goldens"


NOISE = 1e-12  # numbers this small are rounding noise of a float64 result (eigenvalues of a singular
# Hessian, Lanczos residuals): their digits differ between CPUs and BLAS builds


def same_but_rounding_noise(actual: str, shown: str) -> bool:
    """``actual == shown``, except that two numbers both under ``NOISE`` in magnitude match
    whatever their digits (and the spaces that align them)."""
    if actual == shown:
        return True
    got, want = actual.split(), shown.split()
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a != b and not (_tiny(a) and _tiny(b)):
            return False
    return True


def _tiny(word: str) -> bool:
    try:
        return abs(float(word.strip(",;:()[]"))) < NOISE
    except ValueError:
        return False


def test_demo_echoes_every_command_as_it_must_be_typed(tmp_path):
    """demo.sh runs each command with a stub that records its arguments; each
    echoed ``$ gradcli ...`` line, pasted into sh, must give the same arguments."""
    stub = tmp_path / "stub"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; print(\"ARGS\", json.dumps(sys.argv[1:]))' \"$@\"\n")
    stub.chmod(0o755)
    demo = subprocess.run(["sh", str(ROOT / "sample_inputs" / "demo.sh")], capture_output=True, text=True,
                          env={**os.environ, "GRADCLI": str(stub)}, timeout=60)
    # (its closing loop parses gradcli's JSON, which the stub does not print: only the echoed commands matter)
    lines = demo.stdout.splitlines()
    echoed = [(line[len("$ "):], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("$ gradcli ")]
    assert len(echoed) >= 10
    for command, ran in echoed:
        pasted = subprocess.run(["sh", "-c", f"gradcli() {{ {stub} \"$@\"; }}; {command}"], capture_output=True, text=True)
        assert pasted.stdout.strip() == ran, command
