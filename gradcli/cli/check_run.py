"""One check, from its typed options to its report: the problem loaded, every
backend run against the reference, the baseline compared or fingerprinted; its exit
code, its JSON document and its rich renderable. Shared by ``check`` and ``--suite``."""

from __future__ import annotations

from dataclasses import replace

from ..core.errors import ExitCode, UsageError
from ..core.options import Quantity
from .inputs import load
from .options import VECTOR, CheckOptions
from .output import DelayedProgress


def check_report(check: CheckOptions):
    """Run one check (one result per ``--wrt`` argument): ``(report, baseline comparison
    or None, fingerprint to save or None)``."""
    from ..checking import baseline
    from ..checking.model import run_checks
    from ..io.files import check_output_path
    from ..problem.wrt import expand, is_list, names_input, retarget

    inputs, output, quantity = check.inputs, check.output, check.settings.quantity
    many = is_list(inputs.wrt)
    tangent = check.tangent
    if quantity in (Quantity.JVP, Quantity.HVP) and tangent is None and not many:
        tangent = "randn"  # a random direction, as JAX's check_grads (seeded by --seed); a --wrt list's entries
        # get theirs in run_checks
    if output.path and not str(output.path).lower().endswith(".json"):
        raise UsageError("--output: check writes its report as .json; give PATH.json")
    if output.plot:  # check compares backends: there is no one value to draw
        raise UsageError("--plot: draws a computed value, which check does not keep; use e.g. "
                         "gradcli jacobian FUNCTION ... --plot PATH.png")
    if check.save_baseline:
        check_output_path(check.save_baseline, "--save-baseline", (".json",))
    # (--save-baseline may name the --baseline it refreshes; load() compares every output with every input:
    # the arrays, the FUNCTION's file, the baseline)
    vector = VECTOR.get(quantity or Quantity.GRAD)
    spec = {"cotangent": check.cotangent, "tangent": tangent}.get(vector)
    got = load(replace(inputs, wrt="input") if many else inputs, output, vectors={vector: spec} if vector else {},
               also_written={"--save-baseline": check.save_baseline}, also_read={"--baseline": check.baseline},
               differentiates_input=names_input(inputs.wrt) if many else None)
    problems = retarget(got.problem, expand(got.problem.function, inputs.wrt)) if many else [got.problem]
    # the baseline is read and checked before the work, which it would otherwise follow
    old_baseline = baseline.load(check.baseline, max_bytes=inputs.max_memory) if check.baseline else None
    report = run_checks(problems, check.settings, options=replace(check.backend, progress=DelayedProgress()),
                        max_memory=inputs.max_memory, allow_nonfinite=inputs.allow_nonfinite, **got.vectors)
    comparison = saved = None
    if check.baseline or check.save_baseline:
        fingerprint = baseline.fingerprint(problems, backend=report.reference, seed=inputs.seed,
                                           max_memory=inputs.max_memory)
        if check.baseline:
            comparison = baseline.compare(check.baseline, old_baseline, fingerprint)
        if check.save_baseline:
            saved = fingerprint
    return report, comparison, saved


def check_code(report, comparison) -> ExitCode:
    """3 when nothing but the reference ran, 1 on a mismatch or a moved baseline, else 0."""
    if report.ok is None:
        return ExitCode.BACKEND
    return ExitCode.OK if report.ok and (comparison is None or comparison.ok) else ExitCode.MISMATCH


def check_document(report, comparison, timing: bool) -> dict:
    from ..render.models import model_to_dict

    doc = model_to_dict(report, timing=timing)
    if comparison is not None:
        from ..render.ci import baseline_to_dict

        doc["baseline"] = baseline_to_dict(comparison)
        doc["ok"] = doc["ok"] and comparison.ok if doc["ok"] is not None else None
    return doc


def dumps_check(report, comparison, timing: bool) -> str:
    from ..render.json import dumps

    return dumps(check_document(report, comparison, timing))


def render_check(report, comparison, timing: bool):
    from rich.console import Group
    from rich.text import Text

    from ..render.models import render_model

    if comparison is None:
        return render_model(report, timing=timing)
    from ..render.ci import render_baseline

    return Group(render_model(report, timing=timing), Text(), render_baseline(comparison))
