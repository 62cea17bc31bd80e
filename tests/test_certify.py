"""`certify` (issue 26, SPEC §7): every property of a custom Function or op, one row each.

The bugs of issue 26's table, and more, are planted in tests/certify_cases/bugs.py
and ops.py: each test shows that the rows that fail are exactly the ones naming
that bug, and that each failing row's printed reproducer, run as printed, fails
while the bug is there (and passes on the correct Function it was made from).
tests/certify_cases/clean.py holds correct Functions that are sensitive to
float32 and bfloat16: they certify with no failure. Every run skips compile
(torch.compile's own cost) except the one slow test of that row.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import gradcli
from gradcli.certify.registry import NAMES, select
from gradcli.core.errors import BackendError, UsageError
from gradcli.render.certify import certify_junit, certify_to_dict, render_certify
from gradcli.render.json import dumps

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "tests" / "certify_cases"
SOFTPLUS = f"{ROOT / 'sample_inputs' / 'certify_softplus.py'}:Softplus"  # a correct Function with a jvp (CASES / it: it)
LARGE = "[[100.0, 1.0, -2.0, 7.5], [0.5, -30.0, 3.0, 0.001]]"  # x = 100: where exp overflows float32


@functools.cache
def certified(name: str, x: str = "randn:5,4", args: tuple = (), **options):
    """One certification per case for the whole module (compile skipped)."""
    options.setdefault("skip", "compile")
    return gradcli.certify(str(CASES / name), x, args=dict(args), **options)


def failing(report) -> set[str]:
    return {r.property for r in report.rows if r.status.value == "fail"}


# The planted bugs: (case, -x, --arg, the rows that must fail (and no other), the correct case it was made from)
PLANTED = [
    ("bugs.py:ContiguousAssumed", "randn:5,4", (), {"non-contiguous"}, "bugs.py:_Sine"),
    ("bugs.py:KeepsInput", "randn:5,4", (), {"inputs-untouched"}, "bugs.py:_Sine"),
    ("bugs.py:MutatesGrad", "randn:5,4", (), {"grad-output-untouched"}, "bugs.py:_Sine"),
    ("bugs.py:NaiveSigmoid", LARGE, (), {"dtypes:float32", "dtypes:bfloat16"}, "clean.py:SigmoidFromOutput"),
    ("bugs.py:DetachedBackward", "randn:5,4", (), {"double-backward"}, "bugs.py:_Sine"),
    ("bugs.py:OldStyle", "randn:5,4", (), {"torch-func"}, "bugs.py:_Sine"),
    ("ops.py:sine_wrong_backward", "randn:5,4", (), {"gradient"}, "ops.py:sine"),
    ("bugs.py:WrongGradDtype", "randn:5,4", (), {"gradient-metadata"}, "bugs.py:_Sine"),
    ("bugs.py:Nondeterministic", "randn:5,4", (), {"determinism"}, "bugs.py:_Sine"),
    ("ops.py:sine_wrong_fake", "randn:5,4", (), {"opcheck:test_faketensor", "opcheck:test_aot_dispatch_dynamic"},
     "ops.py:sine"),
    ("bugs.py:LinearNoAutocast", "randn:4,3", (("w", "randn:3,5"),), {"autocast"}, "clean.py:Linear"),
]


@pytest.mark.parametrize("case, x, args, expected, _", PLANTED, ids=[p[0].split(":")[1] for p in PLANTED])
def test_each_planted_bug_fails_its_own_rows_and_no_other(case, x, args, expected, _):
    report = certified(case, x, args)
    assert failing(report) == expected, [(r.property, r.detail) for r in report.rows if r.status.value == "fail"]
    assert report.ok is False and report.exit_code == 1
    for row in report.failing:
        assert row.where, row
        assert row.reproducer and row.reproducer.startswith("python -c "), row


def test_gradcheck_style_defaults_miss_what_certify_names():
    """The premise, measured: torch's gradcheck passes the contiguity and ctx.x bugs that certify fails."""
    import torch

    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    for name, row in (("ContiguousAssumed", "non-contiguous"), ("KeepsInput", "inputs-untouched")):
        assert torch.autograd.gradcheck(getattr(_module("bugs.py"), name).apply, (x,))
        assert failing(certified(f"bugs.py:{name}")) == {row}


def _module(file: str):
    import runpy

    return type("M", (), runpy.run_path(str(CASES / file)))


def test_failures_say_how_large_and_where():
    row = certified("bugs.py:ContiguousAssumed").row("non-contiguous")
    assert "transposed" in row.detail and row.max_error > 0.1 and "x[" in row.where
    row = certified("bugs.py:KeepsInput").row("inputs-untouched")
    assert "save_for_backward" in row.detail and row.max_error > 0.01
    row = certified("bugs.py:NaiveSigmoid", LARGE).row("dtypes:float32")
    assert "nan" in row.detail and "x = 100" in row.detail and row.where.endswith("x[0, 0]")
    row = certified("ops.py:sine_wrong_backward").row("gradient")
    assert "Taylor" in row.detail and row.where.startswith("x[")
    row = certified("bugs.py:WrongGradDtype").row("gradient-metadata")
    assert "torch.float32" in row.detail and "torch.float64" in row.detail


def test_nan_in_float32_is_found_from_small_arguments_too():
    """exp overflows float32 past 88.7: the dtypes row also runs at the arguments scaled to largest |entry| 100."""
    report = certified("bugs.py:NaiveSigmoid", "randn:5,4")
    assert failing(report) == {"dtypes:float32", "dtypes:bfloat16"}
    assert "largest |entry| 100" in report.row("dtypes:float32").where


# --- the reproducers, run as printed ------------------------------------------------------------------------

DRIVER = r"""
import json, sys, traceback
results = []
for code in json.load(sys.stdin):
    try:
        exec(compile(code, "<reproducer>", "exec"), {"__name__": "__main__"})
        results.append(None)
    except BaseException as err:
        results.append(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
print(json.dumps(results))
"""


def run_reproducers(commands: list[str]) -> list[str | None]:
    """Each command's code, as the shell would pass it to ``python -c``, run in one interpreter
    (one torch import for all); per command None (it ran through) or the exception it raised."""
    codes = []
    for command in commands:
        argv = shlex.split(command)
        assert argv[:2] == ["python", "-c"] and len(argv) == 3, command
        codes.append(argv[2])
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(codes), capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_reproducer_fails_on_the_bug_and_passes_on_the_correct_function():
    commands, fixed = [], []
    for case, x, args, _, correct in PLANTED:
        for row in certified(case, x, args).failing:
            commands.append(row.reproducer)
            # the same command on the Function the bug was planted in: the bug gone, the command passes
            file, name = case.split(":")
            good_file, good_name = correct.split(":")
            fixed.append(row.reproducer.replace(f'/{file}")["{name}"]', f'/{good_file}")["{good_name}"]'))
    results = run_reproducers(commands + fixed)
    bugs, corrected = results[: len(commands)], results[len(commands):]
    assert all(r is not None for r in bugs), list(zip(commands, bugs))
    assert all(r is None for r in corrected), [(c, r) for c, r in zip(fixed, corrected) if r is not None]
    kinds = {r.split(":")[0] for r in bugs}
    assert kinds <= {"AssertionError", "GradcheckError", "OpCheckError", "RuntimeError"}, kinds


def test_a_reproducer_runs_in_the_shell_exactly_as_printed():
    command = certified("bugs.py:ContiguousAssumed").row("non-contiguous").reproducer
    argv = shlex.split(command)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(" ".join([shlex.quote(sys.executable)] + [shlex.quote(a) for a in argv[1:]]), shell=True,
                          capture_output=True, text=True, cwd="/", env=env, timeout=300)
    assert done.returncode == 1 and "AssertionError" in done.stderr, done.stderr[-1000:]


# --- the clean set ---------------------------------------------------------------------------------------------

CLEAN = [SOFTPLUS, "clean.py:LogSumExp", "clean.py:LayerNorm", "clean.py:SigmoidFromOutput",
         "clean.py:OnceDifferentiable", "clean.py:TanhNoJvp", "clean.py:SinCos", "clean.py:plain", "ops.py:sine",
         "ops.py:sine_packet", "bugs.py:_Sine"]


@pytest.mark.parametrize("case", CLEAN, ids=[c.rsplit(":")[-1] for c in CLEAN])
@pytest.mark.parametrize("x", ["randn:6,5", LARGE], ids=["randn", "large"])
def test_clean_functions_certify_in_float32_and_bfloat16(case, x):
    report = certified(case, x)
    assert not failing(report), [(r.property, r.detail) for r in report.failing]
    assert report.ok is True and report.exit_code == 0
    for dtype in ("float32", "bfloat16"):  # judged, not skipped
        assert report.row(f"dtypes:{dtype}").status.value == "ok", report.row(f"dtypes:{dtype}")


@pytest.mark.parametrize("case, args", [("clean.py:ScaledTanh", (("w", "randn:4,3"),)),
                                        ("clean.py:Linear", (("w", "randn:3,5"),))])
def test_clean_functions_of_two_arguments(case, args):
    report = certified(case, "randn:4,3", args)
    assert not failing(report), [(r.property, r.detail) for r in report.failing]
    assert report.shapes[1][0] == "w"


def test_skips_say_why():
    once = certified("clean.py:OnceDifferentiable")
    assert once.row("double-backward").status.value == "skip"
    assert "once_differentiable" in once.row("double-backward").detail
    no_jvp = certified("clean.py:TanhNoJvp")
    assert no_jvp.row("forward-mode").detail == "no forward-mode formula: the Function defines no jvp"
    assert "no vmap rule" in no_jvp.row("batched").detail and "vmap(grad) not run" in no_jvp.row("torch-func").detail
    assert certified(SOFTPLUS).row("forward-mode").status.value == "ok"  # it defines one
    op = certified("ops.py:sine")
    assert op.row("torch-func").status.value == "skip" and "setup_context" in op.row("torch-func").detail
    assert [r.property for r in op.rows if r.family == "opcheck"] == [
        "opcheck:test_schema", "opcheck:test_autograd_registration", "opcheck:test_faketensor",
        "opcheck:test_aot_dispatch_dynamic"]
    assert all(r.status.value == "ok" for r in op.rows if r.family == "opcheck")
    assert "outputs alone" in certified("clean.py:SinCos").row("zero-grad-output").detail


def test_the_old_style_function_fails_torch_func_only_as_users_see_it():
    row = certified("bugs.py:OldStyle").row("torch-func")
    assert "setup_context" in row.detail
    assert certified("bugs.py:OldStyle").row("batched").status.value == "skip"


# --- the library -----------------------------------------------------------------------------------------------

def test_library_takes_objects_and_tensors_and_is_callable_again():
    import torch

    softplus = _module(SOFTPLUS.split(":")[0]).Softplus
    x = torch.randn(4, 3, dtype=torch.float64)
    first = gradcli.certify(softplus, input=x, properties="gradient,non-contiguous")
    again = gradcli.certify(softplus, x, properties=["gradient"])  # gradcli.certify is still callable
    assert [r.property for r in first.rows] == ["gradient", "non-contiguous"] and first.ok
    assert [r.property for r in again.rows] == ["gradient"]
    plain = gradcli.certify(lambda t: torch.sin(t) * 2, np.linspace(-1, 1, 6), properties="gradient,gradient-metadata")
    assert plain.row("gradient-metadata").status.value == "skip" and plain.ok
    # a library object from a file has runnable reproducers; one without a file gives the body with what it expects
    bug = gradcli.certify(_module("bugs.py").ContiguousAssumed, x, properties="non-contiguous")
    assert bug.row("non-contiguous").reproducer.startswith("(f: your function, X: its positional arguments")


def test_reference_measures_the_dtypes_and_float64():
    reference = str(CASES / "reference.py:sigmoid")
    good = gradcli.certify(str(CASES / "clean.py:SigmoidFromOutput"), LARGE, properties="dtypes", reference=reference)
    assert [r.status.value for r in good.rows] == ["ok", "ok", "ok"]
    assert "the reference" in good.row("dtypes:float32").detail
    report = gradcli.certify(str(CASES / "bugs.py:NaiveSigmoid"), LARGE, properties="dtypes", reference=reference)
    assert failing(report) == {"dtypes:float32", "dtypes:bfloat16"}
    wrong = gradcli.certify(str(CASES / "clean.py:TanhNoJvp"), "randn:3,4", properties="dtypes",
                            reference=str(CASES / "reference.py:sigmoid"), dtypes="float64")
    assert failing(wrong) == {"dtypes:float64"}


def test_selection_and_options():
    assert [p.name for p in select("dtypes,gradient")] == ["gradient", "dtypes"]  # the table's order
    assert "compile" not in [p.name for p in select(None, "compile")]
    with pytest.raises(UsageError, match="unknown property 'gradiant'; did you mean gradient"):
        select("gradiant")
    with pytest.raises(UsageError, match="every property is skipped"):
        select("gradient", "gradient")
    case = str(CASES / "bugs.py:_Sine")
    with pytest.raises(UsageError, match="dtypes: 'float8'"):
        gradcli.certify(case, "randn:3", dtypes="float32,float8")
    with pytest.raises(UsageError, match="runs"):
        gradcli.certify(case, "randn:3", runs=0)
    with pytest.raises(UsageError, match="input: missing"):
        gradcli.certify(case)
    with pytest.raises(UsageError, match="arg w: .* has no parameter 'w'"):
        gradcli.certify(case, "randn:3", args={"w": "randn:3"})
    with pytest.raises(UsageError, match="arg w: .*needs w"):
        gradcli.certify(str(CASES / "clean.py:ScaledTanh"), "randn:3")
    with pytest.raises(UsageError, match="non-finite"):
        gradcli.certify(case, "[1.0, NaN]")
    with pytest.raises(UsageError, match="max-memory|max_memory"):
        gradcli.certify(case, "randn:1000,1000", max_memory="32MiB")


def test_a_function_that_cannot_run_is_exit_3_and_all_skipped_is_exit_3():
    with pytest.raises(BackendError, match="raised at the given arguments"):
        gradcli.certify(str(CASES / "clean.py:ScaledTanh"), "randn:3,4", args={"w": "randn:5"})
    nothing = certified("clean.py:TanhNoJvp", "randn:5,4", (), properties="forward-mode")
    assert nothing.ok is None and nothing.exit_code == 3


def test_runs_and_nondet_tol():
    loose = certified("bugs.py:Nondeterministic", "randn:5,4", (), properties="determinism", nondet_tol=1e-12)
    assert loose.row("determinism").status.value == "ok"
    one = certified("bugs.py:Nondeterministic", "randn:5,4", (), properties="determinism", runs=1)
    assert one.row("determinism").status.value == "skip"


def test_check_now_loads_a_function_class_and_a_custom_op():
    """The user-code loader calls an autograd.Function through .apply (it used to instantiate the class)."""
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert gradcli.check(str(CASES / "bugs.py:_Sine"), input=x).ok
    # (forward mode left out: torch 2.13's forward mode gives a custom op a zero tangent, silently)
    assert gradcli.check(str(CASES / "ops.py:sine"), input=x, backends=["fd"]).ok
    assert gradcli.check(str(CASES / "ops.py:sine_wrong_backward"), input=x, backends=["fd"]).ok is False


# --- renderers ---------------------------------------------------------------------------------------------------

def test_table_json_and_junit():
    report = certified("bugs.py:ContiguousAssumed")
    out = StringIO()
    Console(file=out, width=160, color_system=None, soft_wrap=True).print(render_certify(report, timing=False))
    text = out.getvalue()
    assert "non-contiguous" in text and "FAIL" in text and "FAILED: non-contiguous" in text
    assert report.row("non-contiguous").reproducer in text.replace("\n", "")  # one line, never wrapped
    doc = json.loads(dumps(certify_to_dict(report)))
    assert doc["ok"] is False and doc["exit_code"] == 1 and len(doc["rows"]) == len(report.rows)
    failed = [r for r in doc["rows"] if r["status"] == "fail"]
    assert [r["property"] for r in failed] == ["non-contiguous"] and failed[0]["reproducer"]
    nan = certify_to_dict(certified("bugs.py:NaiveSigmoid", LARGE))
    assert json.loads(dumps(nan))["rows"][11]["max_error"] is None  # inf: strict JSON has no Infinity
    suite = ET.fromstring(certify_junit(report)).find("testsuite")
    assert suite.get("tests") == str(len(report.rows)) and suite.get("failures") == "1"
    assert suite.get("skipped") == str(sum(r.status.value == "skip" for r in report.rows))
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert cases["non-contiguous"].find("failure") is not None
    assert "reproduce: python -c" in cases["non-contiguous"].find("failure").text
    assert cases["forward-mode"].find("skipped") is not None


def test_every_property_is_registered_once_and_documented():
    assert len(NAMES) == len(set(NAMES)) == 16
    page = (ROOT / "docs" / "certify.md").read_text()
    assert all(f"`{name}`" in page for name in NAMES)
    from gradcli.cli.certify import OPTIONS  # the help lists them by hand (importing the table would be slow)

    listed = next(o for o in OPTIONS if o.name == "properties").help.split(": ", 1)[1]
    assert listed == ", ".join(NAMES)


@pytest.mark.slow
def test_compile_row_checks_the_compiled_gradient_against_fd():
    good = gradcli.certify(str(CASES / SOFTPLUS), "randn:5,4", properties="compile")
    assert good.row("compile").status.value == "ok", good.row("compile")
    bad = gradcli.certify(str(CASES / "ops.py:sine_wrong_backward"), "randn:5,4", properties="compile")
    assert bad.row("compile").status.value == "fail" and "fd" in bad.row("compile").detail


# --- the command line --------------------------------------------------------------------------------------------

def test_cli_exit_codes_json_and_junit(tmp_path):
    from typer.testing import CliRunner

    from gradcli.cli import app

    runner = CliRunner()
    junit = tmp_path / "certify.xml"
    done = runner.invoke(app, ["certify", str(CASES / "bugs.py:KeepsInput"), "-x", "randn:4,3", "--skip", "compile",
                               "--json", "--junit", str(junit)])
    assert done.exit_code == 1, done.output
    doc = json.loads(done.stdout)
    assert [r["property"] for r in doc["rows"] if r["status"] == "fail"] == ["inputs-untouched"]
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "1"
    table = runner.invoke(app, ["certify", str(CASES / SOFTPLUS), "-x", "randn:4,3", "--properties",
                                "gradient,forward-mode", "--no-timing"])
    assert table.exit_code == 0 and "certified: 2 ok, 0 failed, 0 skipped" in table.stdout
    nothing = runner.invoke(app, ["certify", str(CASES / "clean.py:TanhNoJvp"), "-x", "randn:3",
                                  "--properties", "forward-mode"])
    assert nothing.exit_code == 3 and "NOTHING COULD RUN" in nothing.stdout
    bad = runner.invoke(app, ["certify", str(CASES / "bugs.py:_Sine"), "-x", "randn:3", "--skip", "gradiant"])
    assert bad.exit_code == 2 and bad.stdout == "" and "--skip: unknown property 'gradiant'" in bad.stderr
    missing = runner.invoke(app, ["certify", str(CASES / "bugs.py:_Sine")])
    assert missing.exit_code == 2 and "--input: missing" in missing.stderr
    crash = runner.invoke(app, ["certify", str(CASES / "clean.py:ScaledTanh"), "-x", "randn:3,4", "--arg", "w=randn:5"])
    assert crash.exit_code == 3 and "(at clean.py:" in crash.stderr and crash.stdout == ""
    assert not (tmp_path / "never.xml").exists()


def test_assert_certified_for_pytest():
    from gradcli.testing import assert_certified

    assert assert_certified(str(CASES / SOFTPLUS), "randn:4,3", properties="gradient,non-contiguous").ok
    with pytest.raises(AssertionError, match="failing properties") as caught:
        assert_certified(str(CASES / "bugs.py:MutatesGrad"), "randn:4,3", properties="grad-output-untouched")
    assert "grad-output-untouched: python -c '" in str(caught.value)


def test_a_parameter_with_a_number_default_takes_a_number():
    """--arg alpha=1.5 for forward(x, alpha=2.5) passes the number 1.5 (not a tensor to differentiate)."""
    report = gradcli.certify(str(CASES / "clean.py:Scaled"), "randn:3,4", args={"alpha": "1.5"},
                             properties="gradient,torch-func")
    assert report.ok and report.shapes == (("x", (3, 4)),)


# --- verdict rules, each planted (the mutation harness's certify class) -------------------------------------------

def test_a_wrong_jvp_fails_forward_mode_and_the_right_one_passes():
    import torch

    wrong = _module("bugs.py").WrongJvp
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # torch's own forward mode shows the planted factor: J u is 1.5 cos(x) u, not cos(x) u
    import torch.autograd.forward_ad as fwad

    u = torch.ones_like(x)
    with fwad.dual_level():
        tangent = fwad.unpack_dual(wrong.apply(fwad.make_dual(x, u))).tangent
    assert torch.allclose(tangent, 1.5 * torch.cos(x))
    report = certified("bugs.py:WrongJvp", "randn:4,3", (), properties="gradient,forward-mode")
    assert failing(report) == {"forward-mode"} and report.exit_code == 1
    assert certified(SOFTPLUS).row("forward-mode").status.value == "ok"


def test_a_property_whose_check_raises_in_your_code_fails_naming_it():
    """A backward that raises on a zero grad_output fails zero-grad-output (it is no skip: nothing says why)."""
    report = certified("bugs.py:RefusesZeroGrad", "randn:3,4", (), properties="gradient,zero-grad-output")
    row = report.row("zero-grad-output")
    assert row.status.value == "fail" and "grad_output is all zeros" in row.detail
    assert report.row("gradient").status.value == "ok" and report.exit_code == 1


def test_two_runs_are_compared():
    """--runs 2: the second backward pass is compared with the first (seeded with --seed + 1 + run)."""
    import torch

    # the planted bug's summation order differs between the two runs' seeds (1 and 2): torch says so
    orders = [torch.randperm(3, generator=torch.Generator().manual_seed(s)).tolist() for s in (1, 2)]
    assert orders[0] != orders[1]
    two = certified("bugs.py:Nondeterministic", "randn:5,4", (), properties="determinism", runs=2)
    assert two.row("determinism").status.value == "fail" and "pass 2 of 2" in two.row("determinism").detail


def test_a_precision_bug_a_few_hundred_times_the_stick_fails_float32():
    """log(1 + x) for log1p at x ~ 1e-3: float32 rounds 1 + x to eps, a few hundred times eps log1p(x).
    The premise from torch: the error is far beyond FACTOR (16) roundings of the largest value,
    and torch's log1p in float32 is within a few."""
    import torch

    from gradcli.certify.precision import FACTOR

    x = 1e-3 * torch.linspace(0.5, 1.0, 12, dtype=torch.float64).reshape(3, 4)
    x32 = x.float()
    truth = torch.log1p(x32.double())
    eps = torch.finfo(torch.float32).eps
    naive = (torch.log(1 + x32).double() - truth).abs().max().item()
    right = (torch.log1p(x32).double() - truth).abs().max().item()
    assert naive > 4 * FACTOR * eps * truth.abs().max().item() and right < 4 * eps * truth.abs().max().item()
    report = gradcli.certify(lambda t: torch.log(1 + t), x, properties="dtypes", dtypes="float32",
                             reference=torch.log1p)
    assert failing(report) == {"dtypes:float32"}, report.rows
    fixed = gradcli.certify(torch.log1p, x, properties="dtypes", dtypes="float32", reference=torch.log1p)
    assert fixed.row("dtypes:float32").status.value == "ok"


def test_a_correct_function_that_overflows_float32_as_torch_does_passes():
    """exp at the arguments scaled to 100 overflows float32 (torch.exp gives inf too, where the float64
    value is finite): the same inf as the truth rounded to float32, so no failure."""
    import torch

    assert torch.isinf(torch.exp(torch.tensor(100.0))) and torch.isfinite(torch.exp(torch.tensor(100.0).double()))
    report = certified("clean.py:Exp", "randn:5,4", (), properties="dtypes", dtypes="float32")
    assert "also at the arguments" in report.row("dtypes:float32").detail  # (the scaled run took place)
    assert report.row("dtypes:float32").status.value == "ok", report.row("dtypes:float32")


def test_a_nan_where_the_reference_is_finite_fails_float64():
    """sin(x)/x for sinc is NaN at x = 0, where the reference is 1: a difference, never a match."""
    import math

    import torch

    x = torch.tensor([[0.0, 0.5, -1.0], [2.0, 0.25, 3.0]], dtype=torch.float64)
    assert torch.isnan(torch.sin(x) / x)[0, 0] and torch.sinc(x / math.pi)[0, 0] == 1
    report = gradcli.certify(lambda t: torch.sin(t) / t, x, properties="dtypes", dtypes="float64",
                             reference=lambda t: torch.sinc(t / math.pi))
    assert failing(report) == {"dtypes:float64"}
