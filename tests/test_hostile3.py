"""Issue 24, the third hostile round: user code that mutates its arguments,
kinks blamed as wrong modules, memory beyond --max-memory, JSON that nulls
what it does not count, and (below) files, signals and processes. Where the
process itself matters the test runs gradcli in a child process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradcli

ROOT = Path(__file__).resolve().parent.parent


def gradcli_run(*args, env=None, timeout=300, **kw):
    """``python -m gradcli ARGS`` in a child process."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "gradcli", *map(str, args)], capture_output=True,
                          env=environment, timeout=timeout, **kw)


def text(proc) -> tuple[str, str]:
    return proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")


def assert_usage_error(proc, *words):
    """Exit 2, nothing on stdout, one or two lines on stderr naming ``words``, no traceback."""
    out, err = text(proc)
    assert proc.returncode == 2, (proc.returncode, err)
    assert out == "", out
    assert "Traceback" not in err and 1 <= len(err.strip().splitlines()) <= 2, err
    for word in words:
        assert word in err, (word, err)


# --- user code that changes its arguments in place ------------------------------------------

MUTATES = '''
import torch

def loss(x, t):
    t.mul_(2)  # in place, on every call
    return ((x - t) ** 2).sum()

def scaled(x, *, scale):
    scale.mul_(10)
    return (scale * x ** 2).sum()
'''


@pytest.mark.parametrize("backend", ["fd", "autograd", "forward"])
def test_every_call_gets_fresh_arguments(tmp_path, backend):
    """fd evaluated the code many times on tensors it kept: t.mul_(2) doubled the target at every call
    (an output of 1.3e14 for 109.4, a gradient off by 1e6). Each call now sees the arrays as given:
    every backend computes the function the code is on fresh inputs, 2 (x - 2t)."""
    (tmp_path / "m.py").write_text(MUTATES)
    x, t = np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.0])
    res = gradcli.grad(f"{tmp_path}/m.py:loss", input=x, target=t, backend=backend)
    np.testing.assert_allclose(res.output, ((x - 2 * t) ** 2).sum(), rtol=1e-12)
    np.testing.assert_allclose(res.value, 2 * (x - 2 * t), rtol=1e-9, atol=1e-9)
    res = gradcli.grad(f"{tmp_path}/m.py:scaled", input=x, arg={"scale": t}, backend=backend) \
        if False else None  # (--arg by name is exercised through the command line below)
    proc = gradcli_run("grad", f"{tmp_path}/m.py:scaled", "-x", "[1.0, 2.0, 3.0]", "--arg", "scale=[0.5, 1.5, 2.0]",
                       "-b", backend, "--json")
    doc = json.loads(proc.stdout)
    np.testing.assert_allclose(doc["value"], 2 * 10 * t * x, rtol=1e-9)


KINKS_EVERYWHERE = '''
import torch

def kinked(x):
    return torch.relu(x).sum()  # at x = 0 every entry sits on relu's kink: torch says 0, fd's steps 1/2
'''


def test_a_check_whose_fd_flags_most_entries_is_inconclusive_not_ok(tmp_path):
    """fd flagged every entry non-smooth, compared nothing, and check said ok (exit 0). It is now
    inconclusive for fd (ok null with the reason); with no other backend judging, nothing was
    compared (exit 3), and with forward judging, forward's verdict stands."""
    (tmp_path / "j.py").write_text(KINKS_EVERYWHERE)
    proc = gradcli_run("check", f"{tmp_path}/j.py:kinked", "-x", "zeros:6", "--backends", "autograd,fd", "--json")
    assert proc.returncode == 3, text(proc)
    doc = json.loads(proc.stdout)
    fd = next(b for b in doc["backends"] if b["name"] == "fd")
    assert doc["ok"] is None and fd["ok"] is None and "could not judge" in fd["inconclusive"]
    proc = gradcli_run("check", f"{tmp_path}/j.py:kinked", "-x", "zeros:6", "--json")
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"] is True, text(proc)
    assert {b["name"]: b["ok"] for b in doc["backends"]} == {"forward": True, "fd": None}


# --- localisation: a kink is not a wrong module ----------------------------------------------

RELU_ZEROS = '''
import torch
from torch import nn


class WrongSquare(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * g  # wrong: 2 x g


class Square(nn.Module):
    def forward(self, x):
        return WrongSquare.apply(x)


class Net(nn.Module):
    def __init__(self, rows_at_zero):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(4, 6)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)
        self.sq = Square()
        with torch.no_grad():
            self.fc1.weight[:rows_at_zero] = 0.0
            self.fc1.bias[:rows_at_zero] = 0.0  # these ReLU inputs are exactly 0 for every sample

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.sq(self.fc2(self.act(self.fc1(x)))), y)


def net(rows_at_zero=3):
    return Net(rows_at_zero)


def all_zero():
    return Net(6)
'''


@pytest.mark.parametrize("factory", ["net", "all_zero"])
def test_localisation_never_blames_a_relu_on_exact_zeros(tmp_path, factory):
    """The ReLU's input holds exact zeros: fd's one-sided slopes differ there and torch picks one, which
    blamed nn.ReLU as a wrong module (depending on the probe's signs). It is reported as non-smooth;
    the wrong module is still named."""
    (tmp_path / "r.py").write_text(RELU_ZEROS)
    for seed in (0, 1):
        report = gradcli.check(f"{tmp_path}/r.py:{factory}", input=np.random.default_rng(seed).standard_normal((5, 4)),
                               target=np.array([0, 1, 2, 0, 1]), wrt="param:*", seed=seed, backends=["autograd", "fd"])
        assert [m.path for m in report.blamed] == ["sq"], [(m.path, m.ok, m.nonsmooth) for m in report.modules]
        act = next(m for m in report.modules if m.path == "act")
        assert act.ok or act.nonsmooth


# --- memory: analytic row vjp/jvp over a large vocabulary -------------------------------------

PEAK = '''
import resource, runpy, sys
import numpy, gradcli.cli  # the start: Python, NumPy and gradcli's command line loaded
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.argv = ["gradcli", *sys.argv[1:]]
try:
    runpy.run_module("gradcli", run_name="__main__")
finally:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stderr.write(f"PEAK_KIB {peak - start}\\n")
'''


@pytest.mark.parametrize("args", [["vjp", "log_softmax", "-x", "randn:4,1000000"],
                                  ["jvp", "softmax", "-x", "randn:4,1000000", "--tangent", "randn"],
                                  ["vjp", "softmax", "-x", "randn:4,1000000"],
                                  ["jvp", "log_softmax", "-x", "randn:4,1000000", "--tangent", "randn"]])
def test_row_vjp_and_jvp_over_a_large_vocabulary_stay_within_max_memory(tmp_path, args):
    """Each temporary of softmax's row operations was as large as the input (431 MiB above the start
    under --max-memory 128MiB). Chunked by rows, the run holds its arguments, the vector, the result
    and the output, and a bounded working set: within the limit (peak RSS of the child, above its
    start). A limit below what it must hold is refused before the work, naming the limit that fits."""
    (tmp_path / "peak.py").write_text(PEAK)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(tmp_path / "peak.py"), *args, "--max-memory", "192MiB"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    peak_mib = int(proc.stderr.split("PEAK_KIB ")[1].split()[0]) / 1024
    assert peak_mib <= 192, peak_mib
    small = subprocess.run([sys.executable, "-m", "gradcli", *args, "--max-memory", "96MiB", "--json"],
                           capture_output=True, env=env, timeout=600)
    assert_usage_error(small, "--max-memory", "give --max-memory")


# --- JSON: what is written as null is counted -------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--no-value"]])
def test_nonfinite_counts_every_null_the_document_writes(extra):
    """log at 0: the output's -inf was written as null while "nonfinite": 0 counted the value alone."""
    proc = gradcli_run("vjp", "log", "-x", "[0.0, 1.0, 2.0]", "--cotangent", "[1.0, NaN, 1.0]", "--allow-nonfinite",
                       "--json", *extra)
    doc = json.loads(proc.stdout)
    nulls = json.dumps(doc).count("null")
    assert doc["nonfinite"] == nulls > 0, (doc["nonfinite"], nulls, doc)


# --- refusals: every suggestion is a command that would run -----------------------------------

REFUSED = [
    ["hessian", "cross_entropy", "-x", "randn:16,128", "-t", "randint:128:16", "--eig", "2", "--layout", "blocks",
     "--max-memory", "1MiB"],
    ["hessian", "cross_entropy", "-x", "randn:16,64", "-t", "randint:64:16", "--eig", "2", "--layout", "full",
     "--max-memory", "1MiB"],
    ["hessian", "cross_entropy", "-x", "randn:64,32", "-t", "randint:32:64", "--layout", "full", "--max-memory", "2MiB"],
    ["hessian", "softmax", "-x", "randn:32,32", "--max-memory", "2MiB"],
    ["jacobian", "softmax", "-x", "randn:64,64", "--layout", "full", "--max-memory", "2MiB"],
    ["jacobian", "softmax", "-x", "randn:128,32", "--layout", "full", "--max-memory", "1MiB"],
    ["jacobian", "log_softmax", "-x", "randn:128,128", "--max-memory", "1MiB"],
    ["vjp", "log_softmax", "-x", "randn:64,4096", "--max-memory", "4MiB"],
    ["hvp", "cross_entropy", "-x", "randn:128,1024", "-t", "randint:1024:128", "--tangent", "randn", "--max-memory",
     "2600KiB"],
]


def _follow(args: list[str], suggestion: str, folder: Path) -> list[str]:
    """The command a refusal's suggestion describes, built from the refused one."""
    def without(items, option):
        if option in items:
            i = items.index(option)
            return items[:i] + items[i + 2:]
        return items

    words = suggestion.split()
    if suggestion.startswith("`gradcli "):
        command = words[1].rstrip("`")
        rest = without(without(without(args[1:], "--eig"), "--layout"), "--tangent")
        return [command, *rest, *(["--tangent", "randn"] if command in ("jvp", "hvp") else [])]
    if words[0] in ("--layout", "--rows", "--max-memory"):
        return [*without(args, words[0]), words[0], words[1]]
    if words[0] == "--eig":
        rest = without(args, "--eig")
        return [*(without(rest, "--layout") if "without --layout" in suggestion else rest), "--eig", words[1]]
    if words[0] == "-o":
        return [*args, "-o", str(folder / "J.npy")]
    raise AssertionError(f"a suggestion this test does not know how to follow: {suggestion!r}")


@pytest.mark.parametrize("args", REFUSED, ids=lambda a: " ".join(a[:2] + a[-2:]))
def test_every_suggestion_of_a_refusal_runs(tmp_path, args):
    """`hessian ... --eig 2 --max-memory 64MiB` was refused with the advice to run "--eig K alone", the
    command refused. Each suggestion is now planned before it is offered: following any of them runs
    (--eig alone falls back to Lanczos when its blocks would not fit). (The limits here are small: the
    --max-memory a refusal names is what its run takes.)"""
    proc = gradcli_run(*args)
    assert_usage_error(proc, "--max-memory")
    stderr = text(proc)[1].replace("\n", " ")
    suggestions = stderr.split("; try ", 1)[1].strip().split(" or ") if "; try " in stderr else \
        [stderr.split("; give ", 1)[1].split(",")[0]]
    for suggestion in suggestions:
        follow = _follow(args, suggestion, tmp_path)
        ran = gradcli_run(*follow, "--json", "--no-value", timeout=600)
        assert ran.returncode == 0, (suggestion, follow, text(ran)[1])


def test_eig_alone_runs_by_lanczos_when_its_blocks_would_not_fit():
    proc = gradcli_run("hessian", "cross_entropy", "-x", "randn:32,256", "-t", "randint:256:32", "--eig", "1",
                       "--max-memory", "4MiB", "--json")
    assert proc.returncode == 0, text(proc)[1]
    doc = json.loads(proc.stdout)
    assert "Lanczos" in doc["eigenvalues"]["method"] and len(doc["value"]) == 2


# --- internal errors where exit 2 is due --------------------------------------------------------


def _baseline(tmp_path) -> dict:
    proc = gradcli_run("check", "softmax", "-x", "randn:2,3", "--save-baseline", tmp_path / "b.json")
    assert proc.returncode == 0, text(proc)
    return json.loads((tmp_path / "b.json").read_text())


@pytest.mark.parametrize("where", ["probes", "output"])
def test_a_baseline_with_a_400_digit_integer_is_exit_2(tmp_path, where):
    """A probe of 10^400 (JSON allows any integer): comparing it raised OverflowError, an internal error."""
    doc = _baseline(tmp_path)
    (doc["arguments"]["input"] if where == "probes" else doc["output"])["probes"][0] = int("9" * 400)
    (tmp_path / "big.json").write_text(json.dumps(doc))
    assert_usage_error(gradcli_run("check", "softmax", "-x", "randn:2,3", "--baseline", tmp_path / "big.json"),
                       "--baseline", "big.json")


def test_a_nested_tensor_file_is_exit_2(tmp_path):
    """torch.nested tensors load with weights_only=True and have no shape: reading one raised torch's
    own "Internal error" (exit 3), with its prototype warning on stderr."""
    import torch

    torch.save(torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)]), tmp_path / "n.pt")
    assert_usage_error(gradcli_run("jacobian", "tanh", "-x", tmp_path / "n.pt"), "--input", "nested tensor")


def test_deeply_nested_toml_in_a_suite_is_exit_2(tmp_path):
    """tomllib parses nesting recursively: a[[[[...]]]] raised RecursionError, an internal error."""
    (tmp_path / "deep.toml").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert_usage_error(gradcli_run("check", "--suite", tmp_path / "deep.toml"), "--suite", "nested too deeply")
    (tmp_path / "deep2.toml").write_text('[[check]]\nfunction = "softmax"\ninput = "randn:2,3"\nx = '
                                         + "{a=" * 5000 + "1" + "}" * 5000 + "\n")
    assert_usage_error(gradcli_run("check", "--suite", tmp_path / "deep2.toml"), "--suite", "nested too deeply")


@pytest.mark.parametrize("option", ["--suite", "--baseline"])
def test_a_fifo_as_suite_or_baseline_is_refused_not_waited_on(tmp_path, option):
    """open() of a FIFO without a writer blocks forever: the command hung until killed."""
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    args = ["check", "--suite", fifo] if option == "--suite" else ["check", "softmax", "-x", "randn:2,3", "--baseline", fifo]
    assert_usage_error(gradcli_run(*args, timeout=60), option, "not a regular file")


def _table_env(encoding: str) -> dict:
    return {"PYTHONIOENCODING": encoding, "LC_ALL": "C"}


@pytest.mark.parametrize("args", [["jacobian", "softmax", "-x", "randn:2,3", "--explain"],
                                  ["check", "softmax", "-x", "randn:2,3"],
                                  ["hessian", "cross_entropy", "-x", "randn:2,3", "-t", "[0, 1]", "--eig", "1"]])
def test_tables_under_an_ascii_stream_degrade_to_ascii(args):
    """The header's '·' and '→' raised UnicodeEncodeError under PYTHONIOENCODING=ascii (exit 3)."""
    proc = gradcli_run(*args, env=_table_env("ascii"))
    out, err = text(proc)
    assert proc.returncode == 0, err
    assert out.isascii() and " - " in out.splitlines()[0] and "->" in out or args[0] == "check", out[:300]


def test_a_file_name_that_is_not_utf8_is_shown_escaped_under_strict_utf8(tmp_path):
    """Surrogates that hold a name's undecodable bytes crashed the table under strict UTF-8."""
    name = os.fsdecode(b"m\xff\xfe.py")
    (tmp_path / name).write_text("def f(x):\n    return (x ** 2).sum()\n")
    proc = gradcli_run("grad", f"{tmp_path / name}:f", "-x", "randn:3", env=_table_env("utf-8:strict"))
    out, err = text(proc)
    assert proc.returncode == 0, err
    assert "\\udcff\\udcfe.py:f" in out
    proc = gradcli_run("grad", f"{tmp_path / name}:nope", "-x", "randn:3", env=_table_env("utf-8:strict"))
    assert_usage_error(proc, "\\udcff")


# --- output files that cannot be written ----------------------------------------------------------


def _file_limit(kib: int):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, kib * 1024))
    return limit


@pytest.mark.parametrize("args, name", [(["jacobian", "softmax", "-x", "randn:32,32", "--layout", "full"], "J.npy"),
                                        (["jacobian", "softmax", "-x", "randn:32,32"], "J.npz"),
                                        (["grad", "cross_entropy", "-x", "randn:64,64", "-t", "randint:64:64"], "g.json"),
                                        (["check", "softmax", "-x", "randn:32,32", "--json"], "r.json")])
def test_an_output_too_large_for_the_file_size_limit_is_exit_2_and_leaves_nothing(tmp_path, args, name):
    """ulimit -f: the write fails with EFBIG, which was exit 3 "internal error: OSError"."""
    proc = gradcli_run(*args, "-o", tmp_path / name, preexec_fn=_file_limit(1))
    assert_usage_error(proc, "--output", name, "File too large")
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_an_output_that_leads_to_a_device_is_refused_before_any_work(tmp_path):
    """out.npy -> /dev/full: the write failed (exit 3), and renaming a file over the link's target
    replaced the device node itself. Refused up front, naming -o. The link here leads to a FIFO of
    the test's own: any file that is not a regular one is refused the same way, and a regression
    must not be able to replace a device of the machine that runs the tests."""
    os.mkfifo(tmp_path / "device")
    (tmp_path / "out.npy").symlink_to(tmp_path / "device")
    proc = gradcli_run("jacobian", "softmax", "-x", "randn:4,4", "-o", tmp_path / "out.npy", timeout=60)
    assert_usage_error(proc, "--output", "device", "not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device", "out.npy"] and (tmp_path / "out.npy").is_symlink()
    assert stat.S_ISFIFO(os.stat(tmp_path / "device").st_mode)


# --- user code and the process -------------------------------------------------------------------

IGNORES = '''
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # at import
signal.signal(signal.SIGINT, signal.SIG_IGN)


def loop(x):
    while True:
        time.sleep(0.01)
'''


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_code_that_ignores_signals_at_import_is_still_stopped(tmp_path, sig):
    """SIG_IGN set at import and an endless loop later: only SIGKILL stopped it. gradcli's handlers
    are back after the import (and after every call), so SIGTERM and Ctrl-C stop it: exit 130."""
    import signal
    import time

    (tmp_path / "ign.py").write_text(IGNORES)
    child = subprocess.Popen([sys.executable, "-m", "gradcli", "grad", f"{tmp_path}/ign.py:loop", "-x", "randn:3",
                              "-b", "fd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        time.sleep(3)  # the import done, the loop running
        child.send_signal(getattr(signal, sig))
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130 and b"interrupted" in err, err
    assert out == b""


FORKS = '''
import atexit, os, sys

atexit.register(lambda: print("atexit print"))
atexit.register(lambda: os.write(1, b"atexit write\\n"))


def forked(x):
    os.fork()  # both processes return into gradcli
    return (x ** 2).sum()


def plain(x):
    return (x ** 2).sum()
'''


@pytest.mark.parametrize("name, backend", [("forked", "autograd"), ("forked", "fd"), ("plain", "autograd")])
def test_standard_output_holds_one_document(tmp_path, name, backend):
    """A fork's child came back into gradcli and printed a second result; an atexit print of the user's
    code ran after the JSON, on standard output. The child now ends where it comes back, and once the
    document is written standard output points at standard error."""
    (tmp_path / "f.py").write_text(FORKS)
    proc = gradcli_run("grad", f"{tmp_path}/f.py:{name}", "-x", "[1.0, 2.0]", "-b", backend, "--json")
    out, err = text(proc)
    assert proc.returncode == 0, err
    assert json.loads(out)["value"] == [2.0, 4.0] or backend == "fd"
    assert out.count('"schema"') == 1 and out.strip().endswith("}"), out
    assert "atexit print" in err and "atexit write" in err


# --- outputs that would replace inputs ---------------------------------------------------------------

MODEL = "def f(x):\n    return (x ** 2).sum()\n"


@pytest.mark.parametrize("args", [
    ["grad", "{d}/model.py:f", "-x", "[1.0, 2.0]", "-o", "{d}/link.npy"],
    ["check", "{d}/model.py:f", "-x", "[1.0, 2.0]", "-o", "{d}/link.json"],
    ["check", "{d}/model.py:f", "-x", "[1.0, 2.0]", "--save-baseline", "{d}/link.json"],
    ["jacobian", "{d}/model.py:f", "-x", "[1.0, 2.0]", "--plot", "{d}/link.png"],
    ["check", "--suite", "{d}/s.toml", "--junit", "{d}/suite.xml"],
])
def test_an_output_through_a_link_to_an_input_is_refused(tmp_path, args):
    """-o, --save-baseline and --junit through a symbolic link to the FUNCTION's .py file or to the
    suite file replaced it, exit 0."""
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "s.toml").write_text('[[check]]\nfunction = "softmax"\ninput = "randn:2,3"\n')
    for link, target in (("link.npy", "model.py"), ("link.json", "model.py"), ("link.png", "model.py"),
                         ("suite.xml", "s.toml")):
        (tmp_path / link).symlink_to(tmp_path / target)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.is_symlink()}
    proc = gradcli_run(*[a.format(d=tmp_path) for a in args])
    assert_usage_error(proc, "is also")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.is_symlink()} == before


@pytest.mark.parametrize("second", ['baseline = "b.json"', 'input = "x.npy"', 'function = "model.py:f"\ninput = "[1.0]"'])
def test_a_suite_entry_cannot_write_what_another_reads(tmp_path, second):
    """One entry's output naming another entry's baseline, input or code file replaced it; refused before
    any entry runs, naming both."""
    import numpy as np

    np.save(tmp_path / "x.npy", np.ones(3))
    (tmp_path / "model.py").write_text(MODEL)
    assert gradcli_run("check", "softmax", "-x", "randn:2,3", "--save-baseline", tmp_path / "b.json").returncode == 0
    target = {"baseline": "b.json", "input": "x.npy", "function": "model.py"}[second.split()[0]]
    first = f'[[check]]\nname = "one"\nfunction = "softmax"\ninput = "randn:2,3"\noutput = "{target.replace(".py", ".json") if target.endswith(".py") else target}"\n'
    if target.endswith(".py"):  # a name with an output's extension, linked to the code
        (tmp_path / "model.json").symlink_to(tmp_path / "model.py")
    rest = second if "function" in second else f'function = "softmax"\n{second}' if "baseline" in second else \
        f'function = "expr:x**2"\n{second}'
    (tmp_path / "s.toml").write_text(first + f'\n[[check]]\nname = "two"\n{rest}\n')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.is_symlink()}
    proc = gradcli_run("check", "--suite", tmp_path / "s.toml")
    assert_usage_error(proc, "check 'one' output", "is also check 'two'")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.is_symlink()} == before


@pytest.mark.parametrize("entry", ['function = "--help"\ninput = "randn:2,3"',
                                   'function = "softmax"\ninput = "--help"',
                                   'function = "softmax"\ninput = "randn:2,3"\nwrt = "--version"'])
def test_a_suite_entrys_values_are_data_never_options(tmp_path, entry):
    """function = "--help" printed help on stdout and the suite exited 0 having checked nothing."""
    (tmp_path / "s.toml").write_text(f"[[check]]\n{entry}\n")
    proc = gradcli_run("check", "--suite", tmp_path / "s.toml")
    out, err = text(proc)
    assert proc.returncode == 2, (out, err)
    assert "Usage:" not in out and "--help" not in out.split("──")[0] or "INVALID" in out, out
    assert "INVALID" in out or proc.stdout == b"", out
