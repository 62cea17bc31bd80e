"""gradcli against the torch and scipy baselines, side by side in one process.

    make bench            (or: python tests/benchmarks/bench.py [--quick])

Prints one row per measurement: gradcli's time, the baseline's, their ratio,
the goal, and whether it holds. Timing lives here, never in a test's
assertion. Each time is the best of several repeats (the least disturbed by
the other core's work).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import gradcli
from gradcli.problem.function import lookup

ROOT = Path(__file__).resolve().parents[2]


def best(fn, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def softmax_blocks_exact(x):
    s = np.exp(x - x.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return s[..., :, None] * np.eye(x.shape[-1]) - s[..., :, None] * s[..., None, :]


def row(name, ours, base, goal, extra=""):
    ratio = ours / base if base else float("nan")
    ok = "yes" if ratio <= goal else "NO"
    return (name, f"{ours * 1e3:.1f} ms", f"{base * 1e3:.1f} ms", f"{ratio:.3f}", f"<= {goal}", ok, extra)


def startup(repeats):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, np.random.default_rng(0).standard_normal((5, 4)))
        ours = best(lambda: subprocess.run([sys.executable, "-m", "gradcli", "jacobian", "softmax", "-x", str(path),
                                            "-b", "analytic", "--json"], check=True, capture_output=True), repeats)
        base = best(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True, capture_output=True), repeats)
    return row("1 start-up: jacobian softmax (analytic) vs python -c 'import torch'", ours, base, 0.2)


def blocks(repeats, b=256, c=256):
    import torch

    x = np.random.default_rng(1).standard_normal((b, c))
    xt = torch.tensor(x)
    f = torch.func.vmap(torch.func.jacrev(lambda v: torch.softmax(v, -1)))
    ref = f(xt).numpy()
    ours_value = gradcli.jacobian("softmax", input=x, backend="analytic", layout="blocks").value
    diff = float(np.abs(ours_value - ref).max())
    ours = best(lambda: gradcli.jacobian("softmax", input=x, backend="analytic", layout="blocks"), repeats)
    base = best(lambda: f(xt), repeats)
    floor = best(lambda: np.full((b, c, c), 0.5), repeats)
    return [row(f"2 blocks softmax B=C={c}: analytic vs vmap(jacrev)", ours, base, 0.5, f"max |diff| {diff:.1e}"),
            row(f"2b blocks softmax B=C={c}: analytic vs memory floor (np.full of the result)", ours, floor, 1.5)]


def fd(repeats, b=64, c=128):
    from scipy.differentiate import jacobian as scipy_jacobian

    x = np.random.default_rng(2).standard_normal((b, c))

    def softmax_columns(v):  # scipy evaluates f on (c, k) arrays: the softmax runs along axis 0
        e = np.exp(v - v.max(axis=0, keepdims=True))
        return e / e.sum(axis=0, keepdims=True)

    res = gradcli.jacobian("softmax", input=x, backend="fd", layout="blocks")
    err = float(np.abs(res.value - softmax_blocks_exact(x)).max())
    ours = best(lambda: gradcli.jacobian("softmax", input=x, backend="fd", layout="blocks"), repeats)
    base = best(lambda: [scipy_jacobian(softmax_columns, x[i]) for i in range(b)], max(1, repeats // 3))
    return row(f"3 fd blocks softmax B={b} C={c}: fd vs scipy.differentiate.jacobian per row", ours, base, 0.1,
               f"max |err| {err:.1e} (goal <= 1e-11)")


def fd_estimates():
    """fd's per-entry error estimate against its true error (torch autograd in
    float64) on issue 12's hard inputs: the fraction of entries it bounds
    (non-smooth entries are flagged, not counted) and the ratio true / estimate."""
    import torch

    rng = np.random.default_rng(4)
    logits = rng.standard_normal((8, 16))
    cases = [("softmax", {"input": logits + 1e4}, lambda x: torch.softmax(x, -1)),
             ("softmax", {"input": logits + 1e3}, lambda x: torch.softmax(x, -1)),
             ("log_softmax", {"input": 30 * logits}, lambda x: torch.log_softmax(x, -1)),
             ("cross_entropy", {"input": logits + 1e3, "target": rng.integers(0, 16, 8)}, None),
             ("relu", {"input": np.array([1e-4, -2e-4, 0.5, 3.0, 0.0])}, torch.relu),
             ("expr:abs(x)", {"input": np.array([1e-8, -1e-8, 0.0])}, torch.abs),
             ("expr:sin(x)", {"input": 1e4 + rng.standard_normal(16)}, torch.sin),
             ("log", {"input": np.array([1e-4, 2e-3, 1e-6, 5.0])}, torch.log),
             ("expr:sqrt(x)", {"input": np.array([1e-6, 3e-6, 1.0])}, torch.sqrt),
             ("tanh", {"input": 1e-6 * rng.standard_normal(16)}, torch.tanh),
             ("softmax", {"input": logits.astype(np.float32)}, lambda x: torch.softmax(x, -1))]
    huge = np.concatenate([m * np.array([1.0, -1.0, 1.7, -3.3]) for m in (1e13, 1e20, 1e100, 1e300)])
    cases += [(name, {"input": np.abs(huge) if name == "log" else huge}, fn)  # issue 24: |x| up to 1e300
              for name, fn in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("exp", torch.exp),
                               ("log", torch.log), ("softplus", torch.nn.functional.softplus))]
    ratios, flagged = [], 0
    for name, arrays, fn in cases:
        if fn is None:
            target = torch.tensor(arrays["target"])
            fn = lambda x, target=target: torch.nn.functional.cross_entropy(x, target)  # noqa: E731
        dtype = "float32" if arrays["input"].dtype == np.float32 else "float64"
        run = gradcli.grad if name == "cross_entropy" else gradcli.jacobian
        res = run(name, backend="fd", dtype=dtype, **({} if run is gradcli.grad else {"layout": "full"}), **arrays)
        exact = torch.autograd.functional.jacobian(fn, torch.tensor(arrays["input"], dtype=torch.float64)).numpy()
        smooth = ~res.nonsmooth & np.isfinite(exact)
        flagged += int(res.nonsmooth.sum())
        true = np.abs(res.value.astype(np.float64) - exact)[smooth]
        ratio = true / np.maximum(res.error.astype(np.float64)[smooth], np.finfo(np.float64).tiny)
        if os.environ.get("BENCH_DEBUG") and (ratio > 1).any():
            print(name, arrays["input"].ravel()[:4], ratio.max(), true[ratio > 1], res.error[smooth][ratio > 1])
        ratios.append(ratio)
    ratios = np.concatenate(ratios)
    bounded = float(np.mean(ratios <= 1))
    ratios = ratios[ratios > 0]  # structural zeros of the full Jacobians are exact: the median is over the rest
    ok = "yes" if bounded >= 0.999 else "NO"
    return (f"3b fd estimate vs true error, {len(cases)} hard inputs ({ratios.size} entries)", f"bounded {bounded:.2%}",
            "", "", ">= 99.9%", ok,
            f"true/estimate median {np.median(ratios):.1e}, max {ratios.max():.2g}; {flagged} non-smooth flagged")


def fd_second_estimates():
    """fd's second-order error estimate (hessian -b fd, full layout) against its true error
    (torch.func jacfwd(jacrev) in float64) on saturated softmax-family rows (issue 24): the
    fraction of entries with a finite Hessian that it bounds, and the ratio true / estimate."""
    import torch

    F = torch.nn.functional
    rng = np.random.default_rng(5)
    ratios, total = [], 0
    for shift in (0, 30, 100, 1000):
        for scale in (1, 20, 100):
            x = scale * rng.standard_normal((3, 5)) + shift
            t = rng.integers(0, 5, 3)
            for name, v, fn in (("cross_entropy", x, lambda v: F.cross_entropy(v, torch.tensor(t))),
                                ("softmax", x[:2], lambda v: torch.softmax(v, -1)),
                                ("log_softmax", x[:2], lambda v: torch.log_softmax(v, -1))):
                kw = {"input": v, **({"target": t} if name == "cross_entropy" else {})}
                res = gradcli.hessian(name, backend="fd", layout="full", **kw)
                exact = torch.func.jacfwd(torch.func.jacrev(fn))(torch.tensor(v)).numpy().reshape(res.value.shape)
                finite = np.isfinite(exact)
                total += int(finite.sum())
                true = np.abs(res.value - exact)[finite]
                ratios.append(np.where(true == 0, 0.0, true / np.maximum(res.error[finite], np.finfo(float).tiny)))
    ratios = np.concatenate(ratios)
    bounded = float(np.mean(ratios <= 1))
    nonzero = ratios[ratios > 0]
    return (f"3c fd second-order estimate vs true error, saturated softmax family ({total} entries)",
            f"bounded {bounded:.2%}", "", "", ">= 99.9%", "yes" if bounded >= 0.999 else "NO",
            f"true/estimate median {np.median(nonzero):.1e}, max {nonzero.max():.2g}")


def full(repeats, b=48, c=96):
    import torch

    x = np.random.default_rng(3).standard_normal((b, c))
    xt = torch.tensor(x)
    ours = best(lambda: gradcli.jacobian("softmax", input=x, backend="autograd", layout="full"), repeats)
    base = best(lambda: torch.autograd.functional.jacobian(lambda v: torch.softmax(v, -1), xt, vectorize=True), repeats)
    floor = best(lambda: np.zeros((b, c, b, c)).fill(0.0), repeats)
    return [row(f"4 full softmax B={b} C={c}: autograd vs autograd.functional.jacobian(vectorize)", ours, base, 0.2),
            row(f"4b full softmax B={b} C={c}: autograd vs zero-fill floor", ours, floor, 1e9, "(floor, no goal)")]


def memory(b=64, c=128):
    size = b * c * b * c * 8
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "J.npy"
        code = ("import resource, subprocess, sys; "
                f"subprocess.run([sys.executable, '-m', 'gradcli', 'jacobian', 'softmax', '-x', 'randn:{b},{c}', "
                f"'--layout', 'full', '-o', {str(out)!r}], check=True, stdout=subprocess.DEVNULL); "
                "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        peak_kib = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        baseline = int(subprocess.run([sys.executable, "-c", "import resource, subprocess, sys; subprocess.run([sys.executable, "
                                       "'-m', 'gradcli', '--version'], stdout=subprocess.DEVNULL); "
                                       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"],
                                      check=True, capture_output=True, text=True).stdout)
        written = out.stat().st_size if out.exists() else 0
    extra_mib = (peak_kib * 1024 - size) / 2**20
    ok = "yes" if extra_mib <= 250 else "NO"
    return (f"5 memory: full B={b} C={c} ({size / 2**20:.0f} MiB) -o J.npy", f"{peak_kib / 1024:.0f} MiB peak",
            f"{baseline / 1024:.0f} MiB (--version)", f"+{extra_mib:.0f} MiB", "<= +250 MiB", ok,
            f"file {written / 2**20:.0f} MiB")


def vocabulary(repeats, n=64, c=32000):
    """A language model's vocabulary: the gradient is O(N C); no C x C block is formed."""
    import torch

    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((n, c)), rng.integers(0, c, n)
    xt, tt = torch.tensor(x), torch.tensor(t)

    def torch_grad():
        v = xt.detach().requires_grad_(True)
        torch.nn.functional.cross_entropy(v, tt).backward()
        return v.grad

    diff = float(np.abs(gradcli.grad("cross_entropy", input=x, target=t, backend="analytic").value
                        - torch_grad().numpy()).max())
    ours = best(lambda: gradcli.grad("cross_entropy", input=x, target=t, backend="analytic"), repeats)
    base = best(torch_grad, repeats)
    return row(f"7 grad cross_entropy N={n} C={c}: analytic vs torch autograd", ours, base, 1.5, f"max |diff| {diff:.1e}")


SUITE_CHECKS = [  # each a [[check]] table; the same options on a command line
    {"function": "softmax", "input": "randn:4,5"}, {"function": "log_softmax", "input": "randn:4,5"},
    {"function": "tanh", "input": "randn:6"}, {"function": "sigmoid", "input": "randn:6"},
    {"function": "gelu", "input": "randn:6"}, {"function": "softplus", "input": "randn:6"},
    {"function": "cross_entropy", "input": "randn:4,5", "target": "[0, 1, 4, 2]"},
    {"function": "cross_entropy", "input": "randn:4,5", "target": "[0, 1, 4, 2]", "label-smoothing": 0.1},
    {"function": "nll_loss", "input": "randn:4,5", "target": "[0, 1, 4, 2]"},
    {"function": "mse_loss", "input": "randn:4,5", "target": "randn:4,5"},
    {"function": "huber_loss", "input": "randn:4,5", "target": "randn:4,5"},
    {"function": "smooth_l1_loss", "input": "randn:4,5", "target": "randn:4,5"},
    {"function": "binary_cross_entropy_with_logits", "input": "randn:4,5", "target": "rand:4,5"},
    {"function": "kl_div", "input": "randn:4,5", "target": "rand:4,5", "reduction": "batchmean"},
    {"function": "linear,cross_entropy", "input": "randn:4,3", "weight": "randn:5,3", "target": "[0, 1, 4, 2]",
     "wrt": "weight"},
    {"function": "linear,softmax", "input": "randn:4,3", "weight": "randn:5,3"},
    {"function": "expr:(x+1)**2", "input": "randn:5"}, {"function": "exp", "input": "randn:5"},
    {"function": "SAMPLE/convnet.py:net", "input": "SAMPLE/images.npy", "quantity": "vjp"},
    {"function": "SAMPLE/convnet.py:net", "input": "SAMPLE/images.npy", "wrt": "param:fc.bias", "quantity": "vjp"},
]


def suite(repeats):
    """20 checks (built-ins and a small model): one --suite process vs one process each."""
    import json

    sample = str(ROOT / "sample_inputs")
    checks = [{k: v.replace("SAMPLE", sample) if isinstance(v, str) else v for k, v in c.items()} for c in SUITE_CHECKS]
    text = "\n".join("[[check]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in c.items()) for c in checks)
    argvs = [[c["function"], *[a for k, v in c.items() if k != "function" for a in (f"--{k}", str(v))]] for c in checks]
    command = [sys.executable, "-m", "gradcli", "check"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checks.toml"
        path.write_text(text)
        ours = best(lambda: subprocess.run(command + ["--suite", str(path)], capture_output=True, check=True),
                    max(1, repeats // 3))
        base = best(lambda: [subprocess.run(command + argv, capture_output=True, check=True) for argv in argvs], 1)
    return row(f"8 suite of {len(checks)} checks: one --suite process vs {len(checks)} gradcli check processes",
               ours, base, 0.15)


def child_peak_mib(args, env=None) -> float:
    """Peak RSS (MiB) of ``python -m gradcli ARGS`` run in a child, its standard output discarded."""
    code = ("import resource, subprocess, sys; "
            f"subprocess.run([sys.executable, '-m', 'gradcli', *{list(args)!r}], check=True, stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    return int(done.stdout) / 1024


def json_memory(b=4, c=1024, before=None):
    """--json of a 128 MiB full Jacobian: the document is streamed, so the peak is
    the result plus a constant (goal: <= result + 150 MiB). ``before``: a folder
    holding an older gradcli, measured the same way for comparison."""
    size = b * c * b * c * 8 / 2**20
    args = ["jacobian", "softmax", "-x", f"randn:{b},{c}", "--layout", "full", "--json", "--max-memory", "4GiB"]
    peak = child_peak_mib(args)
    extra = peak - size
    was = ""
    if before is not None:
        old = child_peak_mib(args, env={**os.environ, "PYTHONPATH": str(before)})
        was = f"before: {old:.0f} MiB peak (+{old - size:.0f} MiB)"
    return (f"9 memory: --json of a full softmax Jacobian B={b} C={c} ({size:.0f} MiB)", f"{peak:.0f} MiB peak", "",
            f"+{extra:.0f} MiB", "<= +150 MiB", "yes" if extra <= 150 else "NO", was)


def scaling(repeats):
    rows = []
    for c in (64, 128, 256, 512):
        x = np.random.default_rng(c).standard_normal((64, c))
        tb = best(lambda x=x: gradcli.jacobian("softmax", input=x, backend="analytic", layout="blocks"), repeats)
        tf = best(lambda x=x: gradcli.jacobian("softmax", input=x, backend="fd", layout="blocks"), max(1, repeats // 2))
        rows.append((c, tb, tf))
    out = []
    for (c, tb, tf), prev in zip(rows, [None] + rows[:-1]):
        growth = "" if prev is None else f"x{tb / prev[1]:.1f} / x{tf / prev[2]:.1f} (C^2: x4)"
        out.append((f"6 scaling B=64 C={c}: blocks / fd", f"{tb * 1e3:.1f} ms", f"{tf * 1e3:.1f} ms", "", "", "", growth))
    return out


MLP_SETUP = """
import json, sys, time
import numpy as np
import torch
sys.path.insert(0, {samples!r})
import gradcli, mlp
rng = np.random.default_rng(0)
x, t = rng.standard_normal((32, 784)), rng.integers(0, 10, 32)
model = mlp._seeded(mlp.MLPLoss).double()
names = [n for n, _ in model.named_parameters()]
tensors = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
xt, tt = torch.tensor(x), torch.tensor(t)
loss = lambda *params: torch.func.functional_call(model, dict(zip(names, params)), (xt, tt))
calls = {{
    "ours": lambda: gradcli.check({path!r}, input=x, target=t, wrt="param:*"),
    "gradcheck": lambda: torch.autograd.gradcheck(loss, tensors, fast_mode=True),
}}
first = sys.argv[1]
start = time.perf_counter()
result = calls[first]()
doc = {{"first": time.perf_counter() - start}}
if first == "ours":
    assert result.ok is True and result.mode == "probe" and len(result.results) == 6, result
    # warm: both sides in this process, interleaved (the order reversed every other round), best of the rounds
    calls["gradcheck"]()
    wall, cpu = {{k: [] for k in calls}}, {{k: [] for k in calls}}
    for r in range(int(sys.argv[2])):
        for k in (calls if r % 2 == 0 else reversed(list(calls))):
            start, cpu_start = time.perf_counter(), time.process_time()
            calls[k]()
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(time.process_time() - cpu_start)
    doc.update(wall={{k: min(v) for k, v in wall.items()}}, cpu={{k: min(v) for k, v in cpu.items()}},
               median=float(np.median(np.divide(wall["ours"], wall["gradcheck"]))))
print(json.dumps(doc))
"""


def load_note() -> str:
    """The machine's load while measuring (it is shared): the 1-minute load average over the cores."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def model_check(repeats):
    """Issues 15 and 25: every parameter of the 670k-parameter MLP (784-512-512-10 + cross_entropy, B=32,
    float64): gradcli.check(..., wrt="param:*") in probe mode (joint probes) against
    torch.autograd.gradcheck(fast_mode=True) over the same six tensors. The first call runs in a fresh process
    for each side (torch imported before the clock starts; the sides' processes alternate): what a CI job
    pays. The warm cost: both sides in one process, interleaved over rounds, the best of each, with CPU
    time. Then the CLI end to end, a planted bug found, and row 10d: a tiny transformers ViT."""
    import json

    code = MLP_SETUP.format(samples=str(ROOT / "sample_inputs"), path=f"{ROOT / 'sample_inputs' / 'mlp.py'}:loss")
    rounds = 3 * max(1, repeats)

    def fresh(which):
        done = subprocess.run([sys.executable, "-c", code, which, str(rounds)], check=True, capture_output=True,
                              text=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    runs = [(fresh("ours"), fresh("gradcheck")) for _ in range(max(1, repeats))]
    ours_first, base_first = (min(r[i]["first"] for r in runs) for i in (0, 1))
    warm = min((r[0] for r in runs), key=lambda d: d["wall"]["ours"] / d["wall"]["gradcheck"])
    cpu = warm["cpu"]["ours"] / warm["cpu"]["gradcheck"]
    rows = [row("10 check all 670k MLP parameters, first call: gradcli.check (probe, K=4) vs gradcheck(fast_mode)",
                ours_first, base_first, 1.0, "6 tensors, a verdict each; fresh processes, alternating"),
            row("10a the same, warm (later calls in the process)", warm["wall"]["ours"], warm["wall"]["gradcheck"], 1.0,
                f"interleaved, best of {rounds} rounds (median ratio {warm['median']:.3f}); CPU time "
                f"{warm['cpu']['ours'] * 1e3:.1f} vs {warm['cpu']['gradcheck'] * 1e3:.1f} ms ({cpu:.3f}); joint "
                f"probes: 1 vjp + K=4 one-sided differences in all; gradcheck: 1 vjp + 2 evaluations per tensor; "
                f"{load_note()}")]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_import = f"{time.perf_counter() - start:.2f} s"  # context: the start-up no CLI run can avoid
    cli = [sys.executable, "-m", "gradcli", "check", "sample_inputs/mlp.py:loss", "-x", "randn:32,784", "-t",
           "randint:10:32", "--wrt", "param:*", "--json"]
    start = time.perf_counter()
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True)
    end_to_end = time.perf_counter() - start
    rows.append((f"10b CLI end to end (torch import included), exit {done.returncode}", f"{end_to_end:.2f} s",
                 torch_import, "", "< 10 s", "yes" if end_to_end < 10 and done.returncode == 0 else "NO",
                 "baseline: python -c 'import torch'"))
    cli[4] = "sample_inputs/mlp_buggy.py:loss"
    start = time.perf_counter()
    done = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True)
    found = time.perf_counter() - start
    import json

    blamed = [m["path"] for m in json.loads(done.stdout).get("modules", []) if m["blamed"]] if done.stdout else []
    ok = found < 20 and done.returncode == 1 and blamed == ["act2"]
    rows.append((f"10c planted bug (mlp_buggy.py, act2) found, exit {done.returncode}, blamed {blamed}",
                 f"{found:.2f} s", torch_import, "", "< 20 s", "yes" if ok else "NO", "baseline: python -c 'import torch'"))
    rows.append(vit_check(repeats))
    return rows


VIT = """
import torch
from torch import nn
from transformers import ViTConfig, ViTForImageClassification


class Loss(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64, num_labels=10)
        self.m = ViTForImageClassification(config)

    def forward(self, pixel_values, labels):
        return nn.functional.cross_entropy(self.m(pixel_values).logits, labels)


loss = Loss()
"""


def vit_check(repeats, batch=8):
    """Issue 25: check w.r.t. every parameter (40 tensors, 24,234 entries) of a tiny transformers ViT
    (float64, B=8) against one forward and backward pass of it in torch, interleaved in this process.
    gradcli is given the file's name, as a user would (it loads the file and builds the model on every
    call); the extra column gives the function loaded once as well."""
    import importlib.util

    import torch

    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((batch, 3, 32, 32)), rng.integers(0, 10, batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "vit.py"
        path.write_text(VIT)
        spec = importlib.util.spec_from_file_location("bench_vit", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.loss.double()
        xt, tt = torch.tensor(x), torch.tensor(t)
        params = list(net.parameters())

        def base():
            torch.autograd.grad(net(xt, tt), params)

        loaded = lookup(f"{path}:loss")

        def ours():
            report = gradcli.check(f"{path}:loss", input=x, target=t, wrt="param:*")
            assert report.ok is True and report.mode == "probe" and len(report.results) == len(params), report
            return report

        def ours_loaded():
            return gradcli.check(loaded, input=x, target=t, wrt="param:*")

        rounds = 3 * max(1, repeats)
        (mine, theirs, mine_loaded), median = interleaved([ours, base, ours_loaded], rounds)
        (cpu_mine, cpu_theirs, cpu_loaded), _ = interleaved([ours, base, ours_loaded], rounds, clock=time.process_time)
    return row(f"10d check all {len(params)} tensors of a tiny ViT (transformers, {sum(p.numel() for p in params)} "
               f"params, B={batch}) vs one forward+backward", mine, theirs, 10.0,
               f"interleaved, best of {rounds} (median ratio {median:.2f}); CPU time {cpu_mine * 1e3:.1f} vs "
               f"{cpu_theirs * 1e3:.1f} ms ({cpu_mine / cpu_theirs:.2f}); the function loaded once: "
               f"{mine_loaded * 1e3:.1f} ms ({mine_loaded / theirs:.2f}, CPU {cpu_loaded / cpu_theirs:.2f}); "
               f"{load_note()}")


def hessian_blocks(repeats, b=256, c=256):
    """cross_entropy's Hessian blocks (reduction sum: block r is row r's own Hessian) against
    torch.func.vmap(torch.func.hessian) of the per-row loss, and against filling the result."""
    import torch

    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((b, c)), rng.integers(0, c, b)
    xt, tt = torch.tensor(x), torch.tensor(t)
    f = torch.func.vmap(torch.func.hessian(lambda z, y: torch.nn.functional.cross_entropy(z, y)))
    ref = f(xt, tt).numpy()

    def ours():
        return gradcli.hessian("cross_entropy", input=x, target=t, reduction="sum", backend="analytic", layout="blocks")

    diff = float(np.abs(ours().value - ref).max())
    mine = best(ours, repeats)
    base = best(lambda: f(xt, tt), max(1, repeats // 3))
    floor = best(lambda: np.full((b, c, c), 0.5), repeats)
    return [row(f"11 hessian blocks cross_entropy B=C={c}: analytic vs vmap(hessian) over rows", mine, base, 0.05,
                f"max |diff| {diff:.1e} (goal <= 1e-12)"),
            row(f"11b hessian blocks cross_entropy B=C={c}: analytic vs np.full of the result", mine, floor, 1.5)]


MLP = """
import torch

class MLP(torch.nn.Module):
    # 784 -> 512 -> 512 -> 10 with tanh: 669,706 parameters; fc2.weight has 512 x 512 = 262,144
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(784, 512)
        self.fc2 = torch.nn.Linear(512, 512)
        self.fc3 = torch.nn.Linear(512, 10)

    def forward(self, x, target):
        return torch.nn.functional.cross_entropy(self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x))))), target)

net = MLP()
"""


def interleaved(fns, rounds, clock=time.perf_counter):
    """The best time of each of ``fns`` over ``rounds`` rounds, each round calling every
    one once in an order reversed every other round, so that all sides meet the same
    load from the other core; and the median over rounds of ``fns[0]``'s time over ``fns[1]``'s."""
    for fn in fns:
        fn()  # warm-up: first-call costs (imports, allocator) belong to neither side
    times = [[] for _ in fns]
    for r in range(rounds):
        for i in (range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))):
            start = clock()
            fns[i]()
            times[i].append(clock() - start)
    return [min(t) for t in times], float(np.median(np.divide(times[0], times[1])))


def mlp_curvature(repeats, batch=64):
    """hvp w.r.t. all 670k parameters (--wrt 'param:*', autograd) against torch.func's
    forward-over-reverse hvp, and --eig 1 w.r.t. fc2.weight (262k entries) by Lanczos.

    Both sides get the same arrays, run in this process with the same torch threads,
    and are timed interleaved (:func:`interleaved`). Row 12 passes gradcli the function
    loaded once (``gradcli.problem.function.lookup``), as the baseline holds its ``net``; row 12b
    names the file, which gradcli then imports (and builds the model) on every call."""
    import importlib.util

    import torch

    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((batch, 784)), rng.integers(0, 10, batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.py"
        path.write_text(MLP)
        spec = importlib.util.spec_from_file_location("bench_mlp", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        net = module.net.double()
        params = {k: p.detach() for k, p in net.named_parameters()}
        names, shapes = list(params), [p.shape for p in params.values()]
        sizes = [p.numel() for p in params.values()]
        theta = torch.cat([p.reshape(-1) for p in params.values()])
        v = rng.standard_normal(theta.numel())
        xt, tt, vt = torch.tensor(x), torch.tensor(t), torch.tensor(v)

        def loss(th):
            split = [p.reshape(s) for p, s in zip(torch.split(th, sizes), shapes)]
            return torch.func.functional_call(net, dict(zip(names, split)), (xt, tt))

        def base():
            return torch.func.jvp(torch.func.grad(loss), (theta,), (vt,))[1]

        def by_hand():  # the floor of reverse over reverse: one forward, a backward with its graph, a second backward
            th = theta.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(loss(th), th, create_graph=True)
            return torch.autograd.grad(g, th, vt)[0]

        loaded = lookup(f"{path}:net")

        def ours():
            return gradcli.hvp(loaded, input=x, target=t, wrt="param:*", tangent=v, backend="autograd")

        def ours_file():
            return gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:*", tangent=v, backend="autograd")

        expected = base().numpy()
        scale = float(np.abs(expected).max())
        diff = max(float(np.abs(f().value - expected).max()) for f in (ours, ours_file))
        rounds = 3 * repeats
        (mine, theirs, hand), median = interleaved([ours, base, by_hand], rounds)
        (mine_file, theirs_file), median_file = interleaved([ours_file, base], rounds)
        # The same work on one thread, in CPU time: steadier when other processes share the cores
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            (cpu_mine, cpu_theirs), _ = interleaved([ours, base], rounds, clock=time.process_time)
        finally:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        res = gradcli.hessian(f"{path}:net", input=x, target=t, wrt="param:fc2.weight", eig=1)
        eig_seconds = time.perf_counter() - start
    s = res.spectrum
    return [row(f"12 hvp MLP ({theta.numel()} params, batch {batch}) w.r.t. all: autograd vs torch.func jvp(grad)",
                mine, theirs, 1.2, f"median of {rounds} interleaved rounds {median:.3f}; torch by hand "
                f"(double backward) {hand * 1e3:.1f} ms; 1 thread, CPU time: {cpu_mine * 1e3:.1f} vs "
                f"{cpu_theirs * 1e3:.1f} ms ({cpu_mine / cpu_theirs:.3f}); max |diff| {diff:.1e} (|Hv| <= "
                f"{scale:.1e}); {threads} torch threads, load average {os.getloadavg()[0]:.1f}"),
            row("12b the same, naming the file (gradcli imports it and builds the model on every call)",
                mine_file, theirs_file, 1.2, f"median of {rounds} interleaved rounds {median_file:.3f}"),
            (f"12a hessian --eig 1 MLP w.r.t. fc2.weight (262144 entries): Lanczos", f"{eig_seconds:.1f} s", "", "",
             "< 30 s", "yes" if eig_seconds < 30 else "NO",
             f"max {float(s.largest[0]):.4g}, min {float(s.smallest[0]):.4g}, residual {s.residual:.1e}, {s.hvps} hvps")]


# --- per sample (issue 14): each measurement in a fresh process, for its peak memory -----------

PER_SAMPLE = r"""
import json, resource, sys, time
import numpy as np, torch
import gradcli
from gradcli.problem.function import lookup

def rss():  # current resident set, bytes
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def high_water():  # this image's peak resident set, bytes (ru_maxrss would carry the forking parent's over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

def best(fn, repeats):
    times, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        value = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return min(times), min(cpu), value

which, repeats = sys.argv[1], int(sys.argv[2])
root = sys.argv[3]
if which.startswith("cnn"):
    dtype = "float32" if which.startswith("cnn32") else "float64"
    x = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(dtype)
    spec = root + "/sample_inputs/cnn.py:net"
    model = lookup(spec).module.to(getattr(torch, dtype))
    xt = torch.tensor(x)
    if which.endswith("-ours"):
        run = lambda: gradcli.jacobian(spec, input=x, layout="blocks", backend="autograd", dtype=dtype).value
    else:
        run = lambda: torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))(xt).detach().numpy()
else:
    x = np.random.default_rng(0).standard_normal((64, 784))
    y = np.random.default_rng(1).integers(0, 10, 64)
    spec = root + "/tests/benchmarks/mlp_loss.py:loss"
    model = lookup(spec).module.double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    one = lambda p, xb, yb: torch.func.functional_call(model, p, (xb[None], yb[None]))
    vg = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))
    xt, yt = torch.tensor(x), torch.tensor(y)
    if which == "grads-ours":
        run = lambda: gradcli.per_sample_grad(spec, input=x, target=y, wrt="param:*").grads
    elif which == "norms-ours":
        run = lambda: gradcli.per_sample_grad(spec, input=x, target=y, wrt="param:*", norms=True).norms
    elif which == "grads-base":
        run = lambda: {k: g.numpy() for k, g in vg(params, xt, yt).items()}
    else:
        run = lambda: torch.sqrt(sum(g.reshape(64, -1).square().sum(1) for g in vg(params, xt, yt).values())).numpy()
before = rss()
value = run()  # the first run alone sets the peak (later ones may reuse freed but unreturned pages)
peak = high_water() - before
seconds, cpu, value = best(run, repeats)
np.save(sys.argv[4], value if not isinstance(value, dict) else np.concatenate([v.reshape(-1) for v in value.values()]))
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak": peak, "threads": torch.get_num_threads()}))
"""


# glibc returns every freed block over its mmap threshold to the system, so a process that allocates
# large temporaries again and again first-touches fresh pages each time; these settings keep them.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**33),
                     "MALLOC_TOP_PAD_": str(2**28)}


def _measure(which, repeats, out, env=None):
    import json

    proc = subprocess.run([sys.executable, "-c", PER_SAMPLE, which, str(repeats), str(ROOT), str(out)], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cnn_one_thread(repeats, dtype):
    """Row 13's two sides on one torch thread in this process, interleaved: CPU time, the best of the rounds."""
    import torch

    x = np.random.default_rng(0).standard_normal((64, 3, 32, 32)).astype(dtype)
    spec = f"{ROOT}/sample_inputs/cnn.py:net"
    model = lookup(spec).module.to(getattr(torch, dtype))
    xt = torch.tensor(x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (ours, base), median = interleaved(
            [lambda: gradcli.jacobian(spec, input=x, layout="blocks", backend="autograd", dtype=dtype),
             lambda: torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))(xt)], 3 * repeats,
            clock=time.process_time)
    finally:
        torch.set_num_threads(threads)
    return f"1 thread, CPU time, interleaved: {ours * 1e3:.0f} vs {base * 1e3:.0f} ms ({ours / base:.3f})"


def per_sample(repeats):
    rows = []
    for name, ours_key, base_key, goal, mem_goal in (
            ("13 per-sample blocks CNN (64,3,32,32) f64: autograd vs vmap(jacrev)", "cnn-ours", "cnn-base", 0.5, 1.0),
            ("13c per-sample blocks CNN (64,3,32,32) f32: autograd vs vmap(jacrev)", "cnn32-ours", "cnn32-base", 0.4,
             None),
            ("13a per-sample grads MLP 784-512-512-10 B=64 f64: vs vmap(grad)", "grads-ours", "grads-base", 1.0, None),
            ("13b per-sample norms MLP B=64 f64: --norms vs vmap(grad) + norms", "norms-ours", "norms-base", 0.3, 0.1)):
        with tempfile.TemporaryDirectory() as tmp:
            # Fresh processes a side, alternating (repeats of them), so that a burst of load on the shared machine
            # does not fall on one side only: the fastest of each side's, the peak of its first.
            ours = _measure(ours_key, repeats, Path(tmp) / "ours.npy")
            base = _measure(base_key, repeats, Path(tmp) / "base.npy")
            for _ in range(max(1, repeats // 3)):
                for side, key in ((ours, ours_key), (base, base_key)):
                    again = _measure(key, repeats, Path(tmp) / f"{key}.npy")
                    side["seconds"], side["cpu"] = min(side["seconds"], again["seconds"]), min(side["cpu"], again["cpu"])
            if ours["threads"] != base["threads"]:  # like with like: the same torch thread pool on both sides
                raise RuntimeError(f"{name}: torch threads {ours['threads']} vs {base['threads']}")
            diff = float(np.abs(np.load(Path(tmp) / "ours.npy") - np.load(Path(tmp) / "base.npy")).max())
            mem = ours["peak"] / max(base["peak"], 1)
            extra = (f"max |diff| {diff:.1e}; CPU time {ours['cpu'] * 1e3:.0f} vs {base['cpu'] * 1e3:.0f} ms "
                     f"({ours['cpu'] / base['cpu']:.3f}); peak +{ours['peak'] / 2**20:.0f} vs "
                     f"+{base['peak'] / 2**20:.0f} MiB")
            if mem_goal is not None:
                extra += f" (x{mem:.2f}, goal <= {mem_goal}: {'yes' if mem <= mem_goal else 'NO'})"
            if ours_key.startswith("cnn"):  # the steadier measure on a shared machine: one thread, CPU time
                extra += f"; {cnn_one_thread(repeats, 'float32' if ours_key.startswith('cnn32') else 'float64')}"
            if ours_key == "cnn-ours":  # how much of the baseline's time is its allocator's page faults
                kept = {k: _measure(k, repeats, Path(tmp) / "kept.npy", KEEP_FREED_MEMORY)["seconds"]
                        for k in (ours_key, base_key)}
                extra += (f"; with glibc keeping freed memory (MALLOC_MMAP_THRESHOLD_): {kept[ours_key] * 1e3:.0f} vs "
                          f"{kept[base_key] * 1e3:.0f} ms ({kept[ours_key] / kept[base_key]:.2f})")
            rows.append(row(name, ours["seconds"], base["seconds"], goal, f"{extra}; {ours['threads']} torch threads, "
                                                                           f"{load_note()}"))
    return rows


# --- health (issue 27): one watched forward and backward against a plain one ------------------

HEALTH_MODELS = """
import torch
from torch import nn
import torch.nn.functional as F


class MLP(nn.Module):
    # 12 x (Linear 256 + LayerNorm + GELU), then a 10-class head: 37 modules called
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(256, 256), nn.LayerNorm(256), nn.GELU())
                                      for _ in range(12)])
        self.head = nn.Linear(256, 10)

    def forward(self, x, t):
        return F.cross_entropy(self.head(self.blocks(x)), t)


class CNN(nn.Module):
    # conv 3->16, 16->32 stride 2, 32->32 stride 2, each + ReLU, then a Linear to 10 classes
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x, t):
        return F.cross_entropy(self.fc(self.features(x).flatten(1)), t)


mlp, cnn = MLP(), CNN()
"""

HEALTH_SHAPES = {"mlp": (64, 256), "cnn": (64, 3, 32, 32)}
RETURN_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}  # (see health())

HEALTH_STEP = r"""
import json, sys, warnings
import numpy as np, torch
from gradcli.health.run import bind, examine

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

def high_water():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

path, name, side, shape = sys.argv[1], sys.argv[2], sys.argv[3], tuple(json.loads(sys.argv[4]))
rng = np.random.default_rng(0)
batch, _ = bind(f"{path}:{name}", input=rng.standard_normal(shape), target=rng.integers(0, 10, shape[0]))
model, x, t = batch.function.module, batch.tensors["input"], batch.tensors["target"]
params = [p for p in model.parameters()]
warnings.simplefilter("ignore")  # (detect_anomaly warns that it is on)

def plain():
    torch.autograd.grad(model(x, t), params)

def anomaly():
    with torch.autograd.detect_anomaly():
        torch.autograd.grad(model(x, t), params)

sides = {"plain": plain, "health": lambda: examine(batch), "anomaly": anomaly}
for warm in sides.values():  # once each: the process's first backward maps ~30 MiB of its own, on any side
    warm()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident set starts again from here
before = rss()
sides[side]()
print(json.dumps({"peak": high_water() - before}))
"""


def health_rows(repeats):
    """Issue 27: ``examine`` (one watched forward and backward, the flags, no origin to trace) against a
    plain ``loss = model(x, t); torch.autograd.grad(loss, params)`` of the same float32 batch, and
    ``torch.autograd.detect_anomaly`` around the plain step beside it. Times: interleaved rounds, the best
    of each side, with the default torch threads and in CPU time on one thread. Peak memory: in a fresh
    process per side, every side run once (the first backward of a process maps ~30 MiB of its own), then
    the side's resident-set peak above where it started (reset through /proc/self/clear_refs), with glibc
    returning every block of 64 KiB or more as it is freed (MALLOC_MMAP_THRESHOLD_), so that the peak is
    what the step holds, not what an earlier run left in the heap."""
    import json
    import warnings

    import torch

    from gradcli.health.run import bind, examine

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "health_models.py"
        path.write_text(HEALTH_MODELS)
        for name, label in (("mlp", "MLP 12x(Linear256+LayerNorm+GELU) B=64"), ("cnn", "CNN 3 convs B=64 3x32x32")):
            shape = HEALTH_SHAPES[name]
            rng = np.random.default_rng(0)
            batch, _ = bind(f"{path}:{name}", input=rng.standard_normal(shape), target=rng.integers(0, 10, shape[0]))
            model, x, t = batch.function.module, batch.tensors["input"], batch.tensors["target"]
            params = list(model.parameters())

            def plain():
                torch.autograd.grad(model(x, t), params)

            def ours():
                return examine(batch)

            def anomaly():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # (detect_anomaly warns that it is on)
                    with torch.autograd.detect_anomaly():
                        torch.autograd.grad(model(x, t), params)

            assert ours().flags == (), "a clean model raised a flag"
            rounds = 5 * repeats
            (mine, base, anomalous), median = interleaved([ours, plain, anomaly], rounds)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                (cpu_mine, cpu_base, cpu_anomalous), _ = interleaved([ours, plain, anomaly], rounds,
                                                                     clock=time.process_time)
            finally:
                torch.set_num_threads(threads)
            peaks = {}
            for side in ("plain", "health", "anomaly"):
                done = subprocess.run([sys.executable, "-c", HEALTH_STEP, str(path), name, side, json.dumps(shape)],
                                      check=True, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONPATH": str(ROOT), **RETURN_FREED_MEMORY})
                peaks[side] = json.loads(done.stdout.strip().splitlines()[-1])["peak"] / 2**20
            memory = peaks["health"] / max(peaks["plain"], 1e-9)
            rows.append(row(f"15{'ab'[name == 'cnn']} health {label} f32: watched step vs plain forward+backward",
                            mine, base, 1.3,
                            f"median of {rounds} interleaved rounds {median:.3f}; 1 thread, CPU time {cpu_mine * 1e3:.1f}"
                            f" vs {cpu_base * 1e3:.1f} ms ({cpu_mine / cpu_base:.3f}); peak +{peaks['health']:.1f} vs "
                            f"+{peaks['plain']:.1f} MiB (x{memory:.2f}, goal <= 1.2: {'yes' if memory <= 1.2 else 'NO'}); "
                            f"detect_anomaly {anomalous / base:.2f}x ({cpu_anomalous / cpu_base:.2f}x CPU, 1 thread; "
                            f"peak +{peaks['anomaly']:.1f} MiB); {threads} torch threads, load average "
                            f"{os.getloadavg()[0]:.1f}"))
    return rows


def certify_rows(repeats):
    """Issue 26: gradcli.certify of one clean Function (sample_inputs/certify_softplus.py:Softplus) on a (64, 64)
    float64 input with --skip compile, against torch.autograd.gradcheck + gradgradcheck with their defaults on the
    same input; and of a clean custom op (sample_inputs/certify_op.py:swish) against the same plus opcheck. In this
    process, torch imported and each side called once before timing (start-up excluded on both sides), the sides
    alternating; the best wall time of each, and the CPU-time ratio (time.process_time) beside it. Then the compile
    row's own time (torch.compile, a fresh compilation each call), which --skip compile leaves out."""
    import runpy

    import torch

    x = np.random.default_rng(5).standard_normal((64, 64))
    xt = torch.tensor(x, requires_grad=True)
    rows = []
    for label, file, name, opcheck in (("14 certify a clean Function (64, 64) f64, --skip compile: vs gradcheck + "
                                        "gradgradcheck", "certify_softplus.py", "Softplus", False),
                                       ("14a certify a clean custom op (64, 64) f64, --skip compile: vs gradcheck + "
                                        "gradgradcheck + opcheck", "certify_op.py", "swish", True)):
        spec = f"{ROOT / 'sample_inputs' / file}:{name}"
        subject = runpy.run_path(str(ROOT / "sample_inputs" / file))[name]
        fn = subject.apply if isinstance(subject, type) else subject

        def ours(spec=spec):
            report = gradcli.certify(spec, x, skip="compile")
            assert report.ok, [r for r in report.rows if r.status.value == "fail"]
            return report

        def base(fn=fn, opcheck=opcheck):
            torch.autograd.gradcheck(fn, (xt,))
            torch.autograd.gradgradcheck(fn, (xt,))
            if opcheck:
                torch.library.opcheck(fn, (xt,))

        wall, cpu = {ours: [], base: []}, {ours: [], base: []}
        ours(), base()  # first calls: imports and first-use costs belong to neither side
        for r in range(max(2, min(repeats, 3))):
            for side in (ours, base) if r % 2 == 0 else (base, ours):
                start, start_cpu = time.perf_counter(), time.process_time()
                side()
                wall[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
        report = ours()
        counts = {s: sum(r.status.value == s for r in report.rows) for s in ("ok", "fail", "skip")}
        cpu_ratio = min(cpu[ours]) / min(cpu[base])
        rows.append(row(label, min(wall[ours]), min(wall[base]), 1.0,
                        f"CPU time ratio {cpu_ratio:.3f}; rows {counts['ok']} ok, {counts['fail']} failed, "
                        f"{counts['skip']} skipped"))
    compiled = [gradcli.certify(f"{ROOT / 'sample_inputs' / 'certify_softplus.py'}:Softplus", x, properties="compile")
                for _ in range(2)]
    first, later = (c.row("compile").seconds for c in compiled)
    rows.append((f"14b the compile row alone (torch.compile of the Function, {compiled[0].row('compile').status.value})",
                 f"{first:.2f} s", "", "", "", "", f"first call in the process; {later * 1e3:.0f} ms the next (inductor's "
                 "caches); torch.compile's own cost, which --skip compile leaves out"))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--before", type=Path, help="a folder with an older gradcli package, for the memory rows")
    parser.add_argument("--only", choices=["model_check", "vit", "per-sample", "curvature", "certify", "health"],
                        help="only the rows of this group")
    options = parser.parse_args()
    repeats = 3 if options.quick else 7
    if options.only == "model_check":
        rows = model_check(repeats)
    elif options.only == "vit":  # row 10d
        rows = [vit_check(repeats)]
    elif options.only == "per-sample":
        rows = per_sample(repeats)
    elif options.only == "curvature":  # rows 12, 12b, 12a
        rows = mlp_curvature(repeats)
    elif options.only == "certify":  # rows 14, 14a, 14b
        rows = certify_rows(repeats)
    elif options.only == "health":  # rows 15a, 15b
        rows = health_rows(repeats)
    else:
        rows = [startup(repeats), *blocks(repeats), fd(repeats), fd_estimates(), fd_second_estimates(), *full(repeats), memory(),
                *scaling(repeats), vocabulary(repeats), suite(repeats), json_memory(before=options.before),
                *model_check(min(repeats, 3)), *hessian_blocks(repeats), *mlp_curvature(repeats),
                *per_sample(repeats), *certify_rows(repeats), *health_rows(repeats)]
    header = ("measurement", "gradcli", "baseline", "ratio", "goal", "holds", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"gradcli {gradcli.__version__}, numpy {np.__version__}, {os.cpu_count()} cores")
    for r in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
