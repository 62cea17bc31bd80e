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
from gradcli.functions import lookup

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


# --- per sample (issue 14): each measurement in a fresh process, for its peak memory -----------

PER_SAMPLE = r"""
import json, resource, sys, time
import numpy as np, torch
import gradcli
from gradcli.functions import lookup

def rss():  # current resident set, bytes
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def high_water():  # this image's peak resident set, bytes (ru_maxrss would carry the forking parent's over exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

def best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); value = fn(); times.append(time.perf_counter() - start)
    return min(times), value

which, repeats = sys.argv[1], int(sys.argv[2])
root = sys.argv[3]
if which.startswith("cnn"):
    x = np.random.default_rng(0).standard_normal((64, 3, 32, 32))
    spec = root + "/sample_inputs/cnn.py:net"
    model = lookup(spec).module.double()
    xt = torch.tensor(x)
    if which == "cnn-ours":
        run = lambda: gradcli.jacobian(spec, input=x, layout="blocks", backend="autograd").value
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
seconds, value = best(run, repeats)
np.save(sys.argv[4], value if not isinstance(value, dict) else np.concatenate([v.reshape(-1) for v in value.values()]))
print(json.dumps({"seconds": seconds, "peak": peak}))
"""


def _measure(which, repeats, out):
    import json

    proc = subprocess.run([sys.executable, "-c", PER_SAMPLE, which, str(repeats), str(ROOT), str(out)], check=True,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def per_sample(repeats):
    rows = []
    for name, ours_key, base_key, goal, mem_goal in (
            ("7 per-sample blocks CNN (64,3,32,32) f64: autograd vs vmap(jacrev)", "cnn-ours", "cnn-base", 0.3, 1.0),
            ("8 per-sample grads MLP 784-512-512-10 B=64 f64: vs vmap(grad)", "grads-ours", "grads-base", 1.0, None),
            ("9 per-sample norms MLP B=64 f64: --norms vs vmap(grad) + norms", "norms-ours", "norms-base", 0.3, 0.1)):
        with tempfile.TemporaryDirectory() as tmp:
            ours = _measure(ours_key, repeats, Path(tmp) / "ours.npy")
            base = _measure(base_key, repeats, Path(tmp) / "base.npy")
            diff = float(np.abs(np.load(Path(tmp) / "ours.npy") - np.load(Path(tmp) / "base.npy")).max())
            mem = ours["peak"] / max(base["peak"], 1)
            extra = f"max |diff| {diff:.1e}; peak +{ours['peak'] / 2**20:.0f} vs +{base['peak'] / 2**20:.0f} MiB"
            if mem_goal is not None:
                extra += f" (x{mem:.2f}, goal <= {mem_goal}: {'yes' if mem <= mem_goal else 'NO'})"
            rows.append(row(name, ours["seconds"], base["seconds"], goal, extra))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", choices=["per-sample"], help="only these rows")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    if args.only == "per-sample":
        rows = per_sample(repeats)
    else:
        rows = [startup(repeats), *blocks(repeats), fd(repeats), *full(repeats), memory(), *scaling(repeats),
                *per_sample(repeats)]
    header = ("measurement", "gradcli", "baseline", "ratio", "goal", "holds", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"gradcli {gradcli.__version__}, numpy {np.__version__}, {os.cpu_count()} cores")
    for r in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
