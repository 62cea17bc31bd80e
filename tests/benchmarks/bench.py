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
    return [row(f"7 hessian blocks cross_entropy B=C={c}: analytic vs vmap(hessian) over rows", mine, base, 0.05,
                f"max |diff| {diff:.1e} (goal <= 1e-12)"),
            row(f"7b hessian blocks cross_entropy B=C={c}: analytic vs np.full of the result", mine, floor, 1.5)]


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


def mlp_curvature(repeats, batch=64):
    """hvp w.r.t. all 670k parameters (--wrt 'param:*', autograd) against torch.func's
    forward-over-reverse hvp, and --eig 1 w.r.t. fc2.weight (262k entries) by Lanczos."""
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

        base = best(lambda: torch.func.jvp(torch.func.grad(loss), (theta,), (vt,))[1], repeats)
        expected = torch.func.jvp(torch.func.grad(loss), (theta,), (vt,))[1].numpy()

        def ours():
            return gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:*", tangent=v, backend="autograd")

        diff = float(np.abs(ours().value - expected).max())
        mine = best(ours, repeats)
        start = time.perf_counter()
        res = gradcli.hessian(f"{path}:net", input=x, target=t, wrt="param:fc2.weight", eig=1)
        eig_seconds = time.perf_counter() - start
    s = res.spectrum
    return [row(f"8 hvp MLP ({theta.numel()} params, batch {batch}) w.r.t. all: autograd vs torch.func jvp(grad)",
                mine, base, 1.2, f"max |diff| {diff:.1e}"),
            (f"9 hessian --eig 1 MLP w.r.t. fc2.weight (262144 entries): Lanczos", f"{eig_seconds:.1f} s", "", "",
             "< 30 s", "yes" if eig_seconds < 30 else "NO",
             f"max {float(s.largest[0]):.4g}, min {float(s.smallest[0]):.4g}, residual {s.residual:.1e}, {s.hvps} hvps")]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    repeats = 3 if parser.parse_args().quick else 7
    rows = [startup(repeats), *blocks(repeats), fd(repeats), *full(repeats), memory(), *scaling(repeats),
            *hessian_blocks(repeats), *mlp_curvature(repeats)]
    header = ("measurement", "gradcli", "baseline", "ratio", "goal", "holds", "")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(f"gradcli {gradcli.__version__}, numpy {np.__version__}, {os.cpu_count()} cores")
    for r in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    main()
