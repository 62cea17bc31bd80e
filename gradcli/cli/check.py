"""``check``: every backend against a reference, one report, exit 1 on a mismatch or
a moved baseline; with ``--suite``, :mod:`gradcli.cli.suite`."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from ..core.errors import UsageError
from . import params
from .check_run import check_code, check_report, dumps_check, render_check
from .main import app
from .options import CheckOptions, check_options, refuse_empty
from .output import emit, stdout_then_files


def check_command(check: CheckOptions) -> int:
    """Every backend against a reference; exit 1 on a mismatch (or a moved baseline)."""
    from ..checking.baseline import dumps
    from ..io.files import check_output_path, pending_write

    report, comparison, saved = check_report(check)
    document = dumps_check(report, comparison, check.output.timing)
    output = document if check.output.as_json else render_check(report, comparison, check.output.timing)
    pending = []
    if check.output.path:
        pending.append(pending_write(check_output_path(check.output.path), lambda h: h.write(document.encode())))
    if saved is not None:
        text = dumps(saved).encode()
        pending.append(pending_write(check_output_path(check.save_baseline, "--save-baseline", (".json",)),
                                     lambda handle: handle.write(text), "--save-baseline"))
    stdout_then_files(lambda: emit(output), pending)
    return int(check_code(report, comparison))


def _check(**values: Any) -> int:
    refuse_empty(values)
    if values.get("suite"):
        from .suite import suite_command

        return suite_command(values)
    if values.get("junit"):
        raise UsageError("--junit: goes with --suite FILE.toml")
    if not values.get("function"):
        raise UsageError("FUNCTION: missing; name the function to check, or give --suite FILE.toml")
    return check_command(check_options(values))


# check runs several backends (--backends), never one (--backend).
_check.__signature__ = params.signature(params.function_argument(optional=True), params.check_options())
_check.__doc__ = escape("Compare backends: every applicable backend against a reference, entry by entry; exit 1 on a "
                  "mismatch. With --suite FILE.toml, every check the file lists, one summary, one exit code."
                  "\n\nExample: gradcli check cross_entropy -x randn:4,5 -t '[0, 1, 4, 2]' --label-smoothing 0.1"
                  "\n\nYour model: gradcli check model.py:loss -x images.npy -t labels.json --wrt 'param:*'"
                  "\n\nExample: gradcli check --suite checks.toml --junit report.xml")
app.command("check")(_check)
