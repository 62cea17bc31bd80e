"""The mutation harness: ``make mutants`` (or ``python3 tests/mutants/run.py``).

Each mutation in ``mutations.toml`` is a small, exact change to gradcli's
source: an ``original`` snippet, its ``mutated`` replacement, and the tests
meant to catch it. The snippet is found by its text, never by a file path:
it must occur exactly once in all of ``gradcli/**/*.py`` (so a mutation
survives modules being moved or renamed, and fails loudly when its code is
edited away).

Every mutation runs on a copy of the tree in a temporary folder (the files
``git ls-files`` lists, tracked and untracked but not ignored), with
``PYTHONPATH`` pointing at the copy and its tests run with ``-x``; the
working tree is only ever read, so an interruption (Ctrl-C, SIGTERM) can
leave nothing changed in it. First each distinct test selection runs once
without a mutation and must pass (``--no-baseline`` skips this): a test that
fails anyway would count as a kill. A mutation is *killed* when its tests fail,
*survived* when they pass; one whose code sits in a loop it no longer leaves
is killed by the timeout. A mutation that is truly equivalent carries
``equivalent = "why"`` and is reported apart, not run.

    python3 tests/mutants/run.py                 # every mutation, 2 at a time
    python3 tests/mutants/run.py --list          # names, classes, what each changes
    python3 tests/mutants/run.py --only NAME     # one (repeatable, or NAME,NAME)
    python3 tests/mutants/run.py --check         # only: does every snippet occur exactly once?

Exit 0 when every mutation run is killed, 1 when one survives (or its tests
could not run), 2 on a bad mutations file or a snippet not found once, 130
when interrupted.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PACKAGE = "gradcli"
FIELDS = {"name", "class", "what", "original", "mutated", "tests", "k", "equivalent"}
REQUIRED = ("name", "class", "what", "original", "mutated", "tests")
# Copied when the tree is not a git checkout (git unavailable, or an exported tarball).
FALLBACK = ("gradcli", "tests", "pyproject.toml", "README.md", "docs", "sample_inputs", "Makefile")


class HarnessError(Exception):
    """A bad mutations file or a snippet not found exactly once: exit 2."""


@dataclass
class Mutation:
    name: str
    cls: str
    what: str
    original: str
    mutated: str
    tests: list[str]
    k: str | None = None
    equivalent: str | None = None
    path: str = ""  # where the snippet was found, relative to the root (filled by locate)


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # killed | survived | timeout | error
    seconds: float
    detail: str = ""

    @property
    def killed(self) -> bool:
        return self.status in ("killed", "timeout")


@dataclass
class Children:
    """The pytest process groups running now, so that an interruption can end them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: set = field(default_factory=set)
    stopping: bool = False

    def kill_all(self) -> None:
        with self.lock:
            self.stopping = True
            for proc in list(self.running):
                _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- the mutations file ------------------------------------------------------------


def load(path: Path) -> list[Mutation]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise HarnessError(f"{path}: {err}") from None
    tables = document.get("mutation")
    if not isinstance(tables, list) or not tables:
        raise HarnessError(f"{path}: no [[mutation]] tables")
    mutations, seen = [], set()
    for number, table in enumerate(tables, 1):
        label = f"{path.name}: mutation {number} ({table.get('name', 'unnamed')})"
        unknown = set(table) - FIELDS
        if unknown:
            raise HarnessError(f"{label}: unknown field(s) {sorted(unknown)}; known: {sorted(FIELDS)}")
        missing = [key for key in REQUIRED if not table.get(key)]
        if missing:
            raise HarnessError(f"{label}: missing {missing}")
        if table["original"] == table["mutated"]:
            raise HarnessError(f"{label}: 'mutated' is the same as 'original'")
        if table["name"] in seen:
            raise HarnessError(f"{label}: the name is used twice")
        seen.add(table["name"])
        tests = table["tests"] if isinstance(table["tests"], list) else [table["tests"]]
        mutations.append(Mutation(table["name"], table["class"], table["what"], table["original"], table["mutated"],
                                  [str(t) for t in tests], table.get("k"), table.get("equivalent")))
    return mutations


def select(mutations: list[Mutation], only: list[str]) -> list[Mutation]:
    if not only:
        return mutations
    names = [n.strip() for item in only for n in item.split(",") if n.strip()]
    by_name = {m.name: m for m in mutations}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise HarnessError(f"--only: no mutation named {', '.join(unknown)}; see --list")
    return [by_name[n] for n in dict.fromkeys(names)]


# --- the copy of the tree ------------------------------------------------------------


def tree_files(root: Path) -> list[str]:
    """The files of the working tree (tracked and untracked, ignored ones left out), relative to ``root``."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-c", "-o", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
        files = [f for f in out.decode().split("\0") if f]
        if files:
            return [f for f in files if (root / f).is_file() and not (root / f).is_symlink()]
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for top in FALLBACK:
        path = root / top
        if path.is_file():
            found.append(top)
        elif path.is_dir():
            found += [str(p.relative_to(root)) for p in path.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")]
    return found


def copy_tree(root: Path, files: list[str], dest: Path) -> None:
    """Read-only on ``root``: every listed file copied under ``dest``."""
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, target)


def locate(mutations: list[Mutation], tree: Path) -> None:
    """Find each snippet in the package's sources: exactly once in all of them, or HarnessError."""
    sources = {str(p.relative_to(tree)): p.read_text(encoding="utf-8")
               for p in sorted((tree / PACKAGE).rglob("*.py"))}
    problems = []
    for m in mutations:
        where = [(rel, text.count(m.original)) for rel, text in sources.items() if m.original in text]
        total = sum(count for _, count in where)
        if total == 1:
            m.path = where[0][0]
        elif total == 0:
            problems.append(f"{m.name}: its original snippet is in no {PACKAGE}/**/*.py file (the code changed: "
                            f"update the mutation)\n    {_first_line(m.original)}")
        else:
            places = ", ".join(f"{rel} ({count}x)" for rel, count in where)
            problems.append(f"{m.name}: its original snippet occurs {total} times ({places}); make it longer so "
                            f"that it names one place\n    {_first_line(m.original)}")
    for m in mutations:
        for test in m.tests:
            if not (tree / test.split("::", 1)[0]).exists():
                problems.append(f"{m.name}: test {test} does not exist")
    if problems:
        raise HarnessError("\n".join(problems))


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0]
    return line if len(line) <= 100 else line[:97] + "..."


def apply(m: Mutation, tree: Path) -> None:
    path = tree / m.path
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace(m.original, m.mutated, 1), encoding="utf-8")


def environment(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no cached bytecode: each copy compiles what it runs
    env.pop("PYTEST_ADDOPTS", None)
    return env


def check_import(tree: Path) -> None:
    """The copy's package is the one imported there, not an installed one (else nothing would be mutated)."""
    out = subprocess.run([sys.executable, "-c", f"import {PACKAGE}; print({PACKAGE}.__file__)"], cwd=tree,
                         env=environment(tree), capture_output=True, text=True)
    found = Path(out.stdout.strip() or "?").resolve()
    if out.returncode != 0 or tree.resolve() not in found.parents:
        raise HarnessError(f"in the copy, `import {PACKAGE}` gives {out.stdout.strip() or out.stderr.strip()[-300:]}, "
                           f"not the copy's package under {tree}")


# --- running -----------------------------------------------------------------------------


def run_one(m: Mutation, base: Path, scratch: Path, timeout: float, children: Children, *, mutate: bool = True) -> Outcome:
    """``m``'s tests on a fresh copy of ``base``, with ``m`` applied (``mutate``) or not (the baseline:
    there "killed" means the tests fail on the code as it is)."""
    start = time.perf_counter()
    tree = scratch / f"{'m' if mutate else 'b'}-{re.sub(r'[^A-Za-z0-9_.-]', '_', m.name)}"
    log = scratch / f"{tree.name}.log"
    try:
        shutil.copytree(base, tree)
        if mutate:
            apply(m, tree)
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests]
        if m.k:
            command += ["-k", m.k]
        with open(log, "wb") as handle:
            with children.lock:
                if children.stopping:
                    raise KeyboardInterrupt
                proc = subprocess.Popen(command, cwd=tree, env=environment(tree), stdout=handle,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
                children.running.add(proc)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait()
                return Outcome(m, "timeout", time.perf_counter() - start, f"no answer in {timeout:.0f} s")
            finally:
                with children.lock:
                    children.running.discard(proc)
        output = log.read_text(encoding="utf-8", errors="replace")
        seconds = time.perf_counter() - start
        if code == 0:
            return Outcome(m, "survived", seconds, _last_line(output))
        if code in (1, 2):  # tests failed, or the mutated code broke their collection
            return Outcome(m, "killed", seconds, _failure(output))
        return Outcome(m, "error", seconds, f"pytest exit {code}: {_last_line(output)}")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        log.unlink(missing_ok=True)


def check_baseline(mutations: list[Mutation], base: Path, scratch: Path, timeout: float, children: Children,
                   pool) -> None:
    """Each distinct test selection passes on the unmutated copy; else HarnessError (a test failing
    anyway would count every mutation it is named for as killed)."""
    selections = {}
    for m in mutations:
        selections.setdefault((tuple(m.tests), m.k), m)
    futures = [pool.submit(run_one, m, base, scratch, timeout, children, mutate=False) for m in selections.values()]
    failing = [o for o in (f.result() for f in futures) if o.status != "survived"]
    if failing:
        raise HarnessError("tests that fail without any mutation (fix them first, or every mutation they are "
                           "named for would count as killed):\n" +
                           "\n".join(f"  {' '.join(o.mutation.tests)}{f' -k {o.mutation.k}' if o.mutation.k else ''}: "
                                     f"{o.status} {o.detail}" for o in failing))
    print(f"baseline: the {len(selections)} test selections pass without mutations", flush=True)


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return "by " + line.split(" ", 1)[1].split(" - ", 1)[0]
    return _last_line(output)


def report(outcome: Outcome, width: int) -> str:
    return f"{outcome.status:<8}  {outcome.mutation.name:<{width}}  {outcome.seconds:6.1f} s  {outcome.detail}"


def run(mutations: list[Mutation], root: Path, jobs: int, timeout: float, baseline: bool = True) -> int:
    active = [m for m in mutations if not m.equivalent]
    equivalent = [m for m in mutations if m.equivalent]
    children = Children()
    scratch = Path(tempfile.mkdtemp(prefix="gradcli-mutants-"))
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    pool = None
    try:
        base = scratch / "base"
        copy_tree(root, tree_files(root), base)
        locate(mutations, base)
        check_import(base)
        print(f"{len(active)} mutations, {jobs} at a time, each on a copy of the tree in {scratch}", flush=True)
        width = max((len(m.name) for m in active), default=10)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs))
        if baseline:
            check_baseline(active, base, scratch, timeout, children, pool)
        futures = [pool.submit(run_one, m, base, scratch, timeout, children) for m in active]
        for future in concurrent.futures.as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            print(report(outcome, width), flush=True)
    except KeyboardInterrupt:
        children.kill_all()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)
        print("\ninterrupted: the working tree was never written; the copies are removed", file=sys.stderr)
        return 130
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(scratch, ignore_errors=True)
    killed = [o for o in outcomes if o.killed]
    survivors = [o for o in outcomes if o.status == "survived"]
    errors = [o for o in outcomes if o.status == "error"]
    print(f"\n{len(killed)} of {len(active)} killed in {time.perf_counter() - started:.0f} s")
    for title, group in (("survived", survivors), ("could not run", errors)):
        if group:
            print(f"{title}:")
            for o in sorted(group, key=lambda o: o.mutation.name):
                print(f"  {o.mutation.name} [{o.mutation.cls}, {o.mutation.path}]: {o.mutation.what}")
    if equivalent:
        print(f"equivalent (not run, {len(equivalent)}):")
        for m in equivalent:
            print(f"  {m.name}: {m.equivalent}")
    return 0 if len(killed) == len(active) else 1


def list_mutations(mutations: list[Mutation]) -> None:
    width = max(len(m.name) for m in mutations)
    by_class: dict[str, int] = {}
    for m in mutations:
        by_class[m.cls] = by_class.get(m.cls, 0) + 1
        flag = "  (equivalent)" if m.equivalent else ""
        print(f"{m.name:<{width}}  [{m.cls}] {m.what}{flag}")
    print(f"\n{len(mutations)} mutations: " + ", ".join(f"{c} {n}" for c, n in sorted(by_class.items())))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--check", action="store_true",
                        help="only check that every snippet occurs exactly once (no tests run)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only this mutation (repeatable, or NAME,NAME)")
    parser.add_argument("--jobs", "-j", type=int, default=2, help="mutations run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one mutation's tests may take; past it the mutation counts as killed")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running each test selection once without mutations first")
    parser.add_argument("--file", type=Path, default=HERE / "mutations.toml", help="the mutations file")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to copy (default: this repository)")
    args = parser.parse_args(argv)

    def terminate(signum, frame):  # SIGTERM as Ctrl-C: the same clean-up
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        mutations = select(load(args.file), args.only)
        if args.list:
            list_mutations(mutations)
            return 0
        if args.check:
            with tempfile.TemporaryDirectory(prefix="gradcli-mutants-") as scratch:
                copy_tree(args.root, tree_files(args.root), Path(scratch))
                locate(mutations, Path(scratch))
            print(f"{len(mutations)} mutations: each snippet occurs exactly once in {PACKAGE}/**/*.py")
            return 0
        return run(mutations, args.root.resolve(), args.jobs, args.timeout, baseline=not args.no_baseline)
    except HarnessError as err:
        print(f"mutants: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
