"""``check --suite FILE.toml``: many checks in one process, one verdict.

A suite file holds ``[[check]]`` tables, each with the same option names as
the command line (``function``, ``input``, ``target``, ``wrt``, ``backends``,
``dtype``, ``atol``, ``baseline``, ...; dashes or underscores), and an
optional ``name``::

    [[check]]
    name = "softmax blocks"
    function = "softmax"
    input = "logits.npy"          # relative paths: from the suite file's folder
    backends = ["analytic", "fd"]

Every entry is validated before any runs (an unknown key, a missing
function: exit 2 naming the entry and the key). Then each runs in turn; one
that cannot run does not stop the others. The suite's exit code: 2 when an
entry is invalid, else 3 when one could not run, else 1 when one failed,
else 0.
"""

from __future__ import annotations

import re
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import ExitCode, GradcliError, UsageError
from ..io.arrays import open_regular

# A value naming a file: PATH.ext, optionally followed by :KEY (npz member) or :NAME (a .py callable).
_PATH = re.compile(r"^(?P<path>[^:\[\]{}]+\.(?:npy|npz|json|pt|pt2|py|toml))(?P<rest>:[A-Za-z_][\w.]*)?$")
MAX_SUITE_BYTES = 16 << 20  # about 200,000 checks
PATH_KEYS = ("function", "baseline", "save_baseline", "output", "plot", "arg")


@dataclass(frozen=True)
class Entry:
    """One ``[[check]]`` table: its name and its options (keys with underscores)."""

    name: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """What one entry gave: a report (exit 0 or 1), or an error (exit 2 or 3)."""

    name: str
    exit_code: ExitCode
    seconds: float
    report: Any = None  # the check's report (modelcheck.ModelReport)
    extra: Any = None  # what the runner adds (a baseline comparison)
    error: str | None = None


def load_suite(path: str, known: set[str], path_keys: set[str]) -> list[Entry]:
    """The entries of suite file ``path``; ``known``: the option names a check takes;
    ``path_keys``: the options whose values may name files (resolved from the file's folder)."""
    file = Path(path)
    try:
        # A regular file only (a FIFO blocked forever at open), never more than MAX_SUITE_BYTES
        with open_regular(file, "--suite", "give the suite as a .toml file") as handle:
            data = handle.read(MAX_SUITE_BYTES + 1)
        if len(data) > MAX_SUITE_BYTES:
            raise UsageError(f"--suite: {path} is over {MAX_SUITE_BYTES >> 20} MiB; split it into several suites")
        document = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--suite: {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--suite: cannot read {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--suite: {path} is not valid TOML: {err}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively: a[[[[...]]]] exhausts the stack
        raise UsageError(f"--suite: {path} is nested too deeply to be a suite; write each check as a flat "
                         "[[check]] table") from None
    extra = sorted(set(document) - {"check"})
    if extra:
        raise UsageError(f"--suite: {path}: unknown top-level key {extra[0]!r}; write each check as a [[check]] table")
    tables = document.get("check")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"--suite: {path} has no [[check]] tables; see `gradcli check --help`")
    entries, seen = [], {}
    for number, table in enumerate(tables, 1):
        options = {str(key).replace("-", "_"): value for key, value in table.items()}
        name = options.pop("name", None)
        label = f"check {number}" + (f" ({name!r})" if name else "")
        if "function" not in options:
            raise UsageError(f"--suite: {path}: {label} has no 'function' key")
        for key in options:
            if key not in known:
                raise UsageError(f"--suite: {path}: {label}: unknown key {key!r}; use the check options' names "
                                 "(input, target, wrt, backends, dtype, atol, baseline, ...)")
            if key in ("suite", "junit"):
                raise UsageError(f"--suite: {path}: {label}: {key!r} belongs on the command line, not in an entry")
        base = name = str(name or options["function"])
        while name in seen:  # unique, also against a name written as "exp #2": entries are run by name
            seen[base] += 1
            name = f"{base} #{seen[base]}"
        seen.setdefault(base, 1)
        seen.setdefault(name, 1)
        entries.append(Entry(name, {k: _resolve(v, file.parent) if k in path_keys else v for k, v in options.items()}))
    return entries


def _resolve(value: Any, folder: Path) -> Any:
    """A relative file path, resolved from the suite file's folder; other values as they are.
    ``arg = ["mask=m.npy"]`` (each ``NAME=ARRAY``): each array's path."""
    if isinstance(value, list) and all(isinstance(item, str) and "=" in item for item in value):
        return [f"{name}={_resolve(spec, folder)}" for name, _, spec in (item.partition("=") for item in value)]
    if not isinstance(value, str):
        return value
    match = _PATH.match(value)
    if not match or Path(match["path"]).is_absolute():
        return value
    return str(folder / match["path"]) + (match["rest"] or "")


def run_suite(entries: list[Entry], run: Callable[[Entry], tuple[Any, Any, ExitCode]]) -> list[Outcome]:
    """Run every entry; ``run(entry) -> (report, extra, exit code)``. Errors are recorded, not raised."""
    outcomes = []
    for entry in entries:
        start = time.perf_counter()
        try:
            report, extra, code = run(entry)
        except GradcliError as err:
            outcomes.append(Outcome(entry.name, err.exit_code, time.perf_counter() - start, error=err.cli_message()))
            continue
        error = "nothing but the reference ran: every other backend was skipped" if code == ExitCode.BACKEND else None
        outcomes.append(Outcome(entry.name, code, time.perf_counter() - start, report, extra, error))
    return outcomes


def suite_exit_code(outcomes: list[Outcome]) -> ExitCode:
    codes = {o.exit_code for o in outcomes}
    for code in (ExitCode.USAGE, ExitCode.BACKEND, ExitCode.MISMATCH):
        if code in codes:
            return code
    return ExitCode.OK
