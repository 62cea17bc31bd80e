"""The mutation harness (``make mutants``, ``tests/mutants/run.py``): every
mutation's code is found exactly once by its text; a run reports killed and
surviving mutations; and it works on a copy, so neither a run nor an
interrupted one changes the tree it was started from.

The runs here use a tiny stand-in project (a ``gradcli`` package of a few
lines and one test), so they take a second, not the full list's minutes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "mutants" / "run.py"
CLASSES = {"formulas", "second-order", "fd", "verdicts", "localisation", "baselines", "memory", "files", "per-sample",
           "security", "certify", "health", "joint-probes", "inconclusive", "hostile"}


def harness(*args, env=None, **kw):
    return subprocess.run([sys.executable, str(HARNESS), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, **kw)


def test_every_mutation_names_one_place_in_the_package():
    """Each snippet occurs exactly once in gradcli/**/*.py: a module moved keeps it, code edited
    away from it fails here first (update the mutation in tests/mutants/mutations.toml)."""
    checked = harness("--check")
    assert checked.returncode == 0, checked.stderr
    listed = harness("--list")
    assert listed.returncode == 0, listed.stderr
    summary = listed.stdout.strip().splitlines()[-1]
    count = int(summary.split()[0])
    assert count >= 40, summary
    assert CLASSES <= {line.split("[", 1)[1].split("]", 1)[0] for line in listed.stdout.splitlines() if "[" in line}


PROJECT = {
    "gradcli/__init__.py": "HALF = 0.5  # unused by the tests\n\n\ndef double(x):\n    return 2 * x\n",
    "tests/test_double.py": textwrap.dedent('''
        import os
        import time

        from gradcli import double


        def test_double():
            marker = os.environ.get("MUTANTS_MARKER")
            if marker:  # the interruption test: say we are running, then take our time
                with open(marker, "w") as handle:
                    handle.write(str(os.getpid()))
                time.sleep(60)
            assert double(3) == 6
    '''),
}
MUTATIONS = textwrap.dedent('''
    [[mutation]]
    name = "triple"
    class = "formulas"
    what = "double triples"
    original = "return 2 * x"
    mutated = "return 3 * x"
    tests = ["tests/test_double.py"]

    [[mutation]]
    name = "half"
    class = "formulas"
    what = "a constant no test reads"
    original = "HALF = 0.5"
    mutated = "HALF = 0.25"
    tests = ["tests/test_double.py"]

    [[mutation]]
    name = "same"
    class = "formulas"
    what = "an equivalent change"
    original = "# unused by the tests"
    mutated = "# read by no test"
    tests = ["tests/test_double.py"]
    equivalent = "a comment"
''')


@pytest.fixture()
def project(tmp_path):
    root = tmp_path / "project"
    for rel, text in PROJECT.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "mutations.toml").write_text(MUTATIONS)
    return root


def fingerprint(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def isolated(tmp_path) -> dict:
    """An environment whose temporary folder is ours to inspect afterwards."""
    scratch = tmp_path / "tmp"
    scratch.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANTS_MARKER")}
    env["TMPDIR"] = str(scratch)
    return env


def test_a_run_reports_killed_survived_and_equivalent_mutations(project, tmp_path):
    before = fingerprint(project)
    env = isolated(tmp_path)
    run = harness("--root", project, "--file", tmp_path / "mutations.toml", env=env)
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("killed") and "triple" in line for line in lines), run.stdout
    assert any(line.startswith("survived") and "half" in line for line in lines), run.stdout
    assert "1 of 2 killed" in run.stdout
    assert "survived:\n  half [formulas, gradcli/__init__.py]" in run.stdout
    assert "equivalent (not run, 1):\n  same: a comment" in run.stdout
    only = harness("--root", project, "--file", tmp_path / "mutations.toml", "--only", "triple", "--no-baseline",
                   env=env)
    assert only.returncode == 0 and "1 of 1 killed" in only.stdout, only.stdout + only.stderr
    assert fingerprint(project) == before  # the tree was only read
    assert list((tmp_path / "tmp").iterdir()) == []  # and every copy is gone


def test_tests_that_fail_without_a_mutation_stop_the_run(project, tmp_path):
    """Else every mutation they are named for would read as killed."""
    test = project / "tests" / "test_double.py"
    test.write_text(test.read_text().replace("== 6", "== 7"))
    run = harness("--root", project, "--file", tmp_path / "mutations.toml", env=isolated(tmp_path))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "tests that fail without any mutation" in run.stderr and "tests/test_double.py" in run.stderr
    assert "killed" not in run.stdout


def test_a_snippet_found_twice_or_not_at_all_is_an_error(project, tmp_path):
    text = MUTATIONS.replace('original = "HALF = 0.5"', 'original = "x"')
    (tmp_path / "bad.toml").write_text(text.replace('original = "return 2 * x"', 'original = "return 4 * x"'))
    run = harness("--root", project, "--file", tmp_path / "bad.toml", "--check")
    assert run.returncode == 2
    assert "triple: its original snippet is in no gradcli/**/*.py file" in run.stderr
    assert "half: its original snippet occurs" in run.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_leaves_the_tree_unchanged_and_no_copies(project, tmp_path, signum):
    """Ctrl-C or SIGTERM while a mutant's tests run: the harness ends them, removes its copies and
    exits 130; the tree it copied is as it was (the mutation was applied to the copy alone)."""
    before = fingerprint(project)
    env = isolated(tmp_path)
    marker = tmp_path / "running"
    env["MUTANTS_MARKER"] = str(marker)
    proc = subprocess.Popen([sys.executable, str(HARNESS), "--root", str(project), "--file",
                             str(tmp_path / "mutations.toml"), "--only", "triple", "--no-baseline"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the mutant's tests never started"
        child = int(marker.read_text())
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert fingerprint(project) == before
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(ProcessLookupError):  # the sleeping test process was ended, not left behind
        os.kill(child, 0)
