"""``check --suite FILE.toml``: every entry converted to the same typed options as a
command line (:func:`gradcli.cli.params.from_toml`: values are data, never argv), all
validated before any runs, then run in this process (:mod:`gradcli.checking.suite`);
one summary, the failing reports, JUnit XML, and the suite's exit code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import ExitCode, UsageError
from ..core.options import Format
from . import params
from .check_run import check_code, check_document, check_report, dumps_check, render_check
from .options import CheckOptions, check_options, refuse_empty
from .output import emit

# what the command line may give beside --suite; every other option belongs in the entries
SUITE_OPTIONS = ("suite", "junit", "json", "format", "no_timing", "traceback", "function", "baseline", "save_baseline")


def suite_command(values: Mapping[str, Any]) -> int:
    from ..checking.suite import PATH_KEYS, load_suite, run_suite, suite_exit_code
    from ..io.files import check_output_path, write_bytes, write_text
    from ..render.ci import junit_xml, plain_text, render_summary

    if values.get("function"):
        raise UsageError("--suite: the file names the functions; drop FUNCTION")
    for option in ("baseline", "save_baseline"):
        if values.get(option):
            raise UsageError(f"--{option.replace('_', '-')}: with --suite, give it in the entry it belongs to "
                             f"({option.replace('_', '-')} = \"FILE.json\")")
    options = {o.name: o for o in params.check_options()}
    for name, option in options.items():  # a per-check option on the command line would apply to no entry
        given = values.get(name)
        if name not in SUITE_OPTIONS and given not in (None, [], ()) and given != option.default:
            raise UsageError(f"{option.flag}: with --suite, each [[check]] takes its own options: write "
                             f"{name.replace('_', '-')} = ... in the entries (the command line takes only "
                             "--junit, --json, --format and --no-timing)")
    from ..catalogue import array_arguments

    suite = values["suite"]
    path_keys = set(PATH_KEYS) | set(array_arguments()) | {"cotangent", "tangent"}
    known = (set(options) - {"suite", "junit"}) | {"function"}
    entries = load_suite(suite, known | {"suite", "junit"}, path_keys)
    parsed = {entry.name: entry_options(entry, options, suite) for entry in entries}  # all valid before any runs
    junit = check_output_path(values["junit"], "--junit", (".xml",)) if values.get("junit") else None
    _refuse_overlaps(parsed, suite, junit)
    timing = not values["no_timing"]
    saves, reports = [], []

    def run(entry):
        check = parsed[entry.name]
        report, comparison, saved = check_report(check)
        if saved is not None:
            saves.append((check.save_baseline, saved))
        if check.output.path:  # the entry's report, as `check -o` writes it
            reports.append((check.output.path, dumps_check(report, comparison, timing and check.output.timing)))
        return report, comparison, check_code(report, comparison)

    outcomes = run_suite(entries, run)
    if values["json"] or values["format"] is Format.JSON:
        documents = [{"name": o.name, "exit_code": int(o.exit_code),
                      **(check_document(o.report, o.extra, timing) if o.report is not None
                         else {"ok": None, "error": o.error})} for o in outcomes]
        emit(json.dumps(documents, indent=2, allow_nan=False) + "\n")
    else:
        from rich.console import Group
        from rich.text import Text

        parts = [render_summary(outcomes, timing=timing)]
        for o in outcomes:
            if o.exit_code == ExitCode.MISMATCH:
                parts += [Text(), Text(f"── {o.name} ──", style="bold"), render_check(o.report, o.extra, timing)]
            elif o.error is not None:
                parts += [Text(), Text(f"── {o.name}: {o.error}", style="bold red")]
        emit(Group(*parts))

    def report_text(outcome) -> str:
        return plain_text(render_check(outcome.report, outcome.extra, timing))

    if junit is not None:
        write_bytes(junit, junit_xml(outcomes, Path(suite).stem, report_text), "--junit")
    from ..checking.baseline import dumps

    for path, fingerprint in saves:
        write_text(check_output_path(path, "--save-baseline", (".json",)), dumps(fingerprint), "--save-baseline")
    for path, document in reports:
        write_text(check_output_path(path, "--output", (".json",)), document)
    return int(suite_exit_code(outcomes))


def entry_options(entry, options: Mapping[str, params.Opt], suite: str) -> CheckOptions:
    """An entry's TOML values as the typed options of the same command line: each value
    converted by its option's declared type, the rest at their defaults."""
    where = f"--suite: {suite}: check {entry.name!r}"
    values: dict[str, Any] = {name: option.default for name, option in options.items()}
    for key, value in entry.options.items():
        if key == "function":
            if not isinstance(value, str):
                raise UsageError(f"{where}: function = {value!r} is not a text; write e.g. function = \"softmax\"")
            values["function"] = value
        else:
            values[key] = params.from_toml(options[key], value, where)
    try:
        refuse_empty(values)
        return check_options(values)
    except UsageError as err:
        raise UsageError(f"{where}: {err.cli_message()}") from None


def _refuse_overlaps(parsed: Mapping[str, CheckOptions], suite: str, junit) -> None:
    """No file the suite writes (``--junit``, each entry's ``output``, ``save-baseline``
    and ``plot``) may be one it reads (the suite file, each entry's FUNCTION file,
    arrays and ``baseline``) or another it writes, across entries too: one entry's
    output naming another's baseline would replace it. An entry's ``save-baseline``
    may name its own ``baseline`` (a refresh). Refused before any entry runs."""
    from ..io.arrays import file_of
    from ..io.files import refuse_same_file
    from ..problem.function import function_file

    writes: dict[str, Any] = {"--junit": junit}
    reads: dict[str, Any] = {"--suite": suite}
    allowed = set()
    for name, check in parsed.items():
        where = f"check {name!r}"
        inputs = check.inputs
        writes.update({f"{where} output": check.output.path, f"{where} save-baseline": check.save_baseline,
                       f"{where} plot": check.output.plot})
        reads.update({f"{where} function": function_file(inputs.function), f"{where} baseline": check.baseline,
                      **{f"{where} {key}": file_of(spec) for key, spec in inputs.arrays.items()},
                      **{f"{where} arg {arg.partition('=')[0]}": file_of(arg.partition("=")[2]) for arg in inputs.args},
                      **{f"{where} {key}": file_of(spec) for key, spec in (("cotangent", check.cotangent),
                                                                             ("tangent", check.tangent)) if spec}})
        allowed.add((f"{where} save-baseline", f"{where} baseline"))
    try:
        refuse_same_file(writes, reads, frozenset(allowed))
    except UsageError as err:
        raise UsageError(f"--suite: {suite}: {err.cli_message()}") from None
