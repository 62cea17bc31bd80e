"""Issue 24, the third hostile round: user code that mutates its arguments,
kinks blamed as wrong modules, memory beyond --max-memory, JSON that nulls
what it does not count, and (below) files, signals and processes. Where the
process itself matters the test runs gradcli in a child process."""

from __future__ import annotations

import json
import os
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
