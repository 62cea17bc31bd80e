"""Every ``console`` block of the README and of the pages under docs/ is a command a
user can paste: ``sh`` splits it exactly as written (so quoting mistakes fail), it
runs, and its output must be what the page shows. ``pytest --update-goldens``
rewrites each page's outputs from these runs, file by file.

A command shown on two pages (the README's abridged story and its guide's full
output) runs once: the runs are cached by command."""

from __future__ import annotations

import functools
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
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```console\n\$ (?P<command>gradcli [^\n]*)\n(?P<output>.*?)```", re.DOTALL)


def shell_words(command: str) -> list[str]:
    """The arguments ``sh`` passes for ``command`` as pasted (a quoting mistake
    is a syntax error or a different argument list here)."""
    shell = f"gradcli() {{ {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"; }}; {command}"
    done = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return json.loads(done.stdout)


@functools.cache
def run(command: str):
    """The command's arguments as the shell gives them, run in-process from the
    project root with timing dropped (the pages show none); once per command."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return runner.invoke(app, [*shell_words(command), "--no-timing"])
    finally:
        os.chdir(cwd)


def blocks(page: Path) -> list[re.Match]:
    return list(BLOCK.finditer(page.read_text()))


EXAMPLES = [(page, index, match["command"]) for page in PAGES for index, match in enumerate(blocks(page))]


def test_the_readme_shows_a_command_per_story_and_the_guides_the_rest():
    assert len(blocks(README)) >= 9  # stories 1-9 of docs/spec.md §1
    assert len(EXAMPLES) - len(blocks(README)) >= 20


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_console_block_is_a_tested_command(page):
    """A ``console`` block that the pattern misses (indented in a list, not
    ``$ gradcli``) would look tested and not be: every one must match."""
    opened = re.findall(r"^[ \t]*```console[ \t]*$", page.read_text(), re.M)
    assert len(opened) == len(blocks(page)), f"{page.name}: a console block that is not `$ gradcli ...` at column 0"


def _abridge(actual: str, shown: str) -> str:
    """A block may leave the middle out with a line ``...``: keep as many
    lines of ``actual`` before and after it as the block shows."""
    lines = shown.splitlines(keepends=True)
    if "...\n" not in lines:
        return actual
    cut = lines.index("...\n")
    head, tail = cut, len(lines) - cut - 1
    got = actual.splitlines(keepends=True)
    return "".join(got[:head] + ["...\n"] + (got[len(got) - tail:] if tail else []))


def expected_exit(shown: str) -> int:
    """A block showing an error shows standard error (exit 2); one showing a failed
    check (MISMATCH, a FAIL row) exit 1; anything else exit 0."""
    if shown.startswith("gradcli: error"):
        return 2
    return 1 if "MISMATCH" in shown or re.search(r"\bFAIL\b", shown) else 0


@pytest.mark.parametrize("page, index, command", EXAMPLES,
                         ids=[f"{page.relative_to(ROOT)}:{index}:{command[8:60]}" for page, index, command in EXAMPLES])
def test_an_example_runs_as_written_and_shows_its_output(page, index, command, request):
    match = blocks(page)[index]
    assert match["command"] == command
    result = run(command)
    shown = match["output"]
    code = expected_exit(shown)
    assert result.exit_code == code, result.stderr
    assert "Traceback" not in result.stderr
    actual = _abridge(result.stderr if code == 2 else result.stdout, shown)
    if request.config.getoption("--update-goldens"):
        text = page.read_text()
        match = blocks(page)[index]
        page.write_text(text[: match.start("output")] + actual + text[match.end("output"):])
        return
    assert same_but_rounding_noise(actual, shown), (
        f"{page.relative_to(ROOT)}: the output of `{command}` changed; if intended, run pytest tests/test_readme.py --update-goldens")


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
