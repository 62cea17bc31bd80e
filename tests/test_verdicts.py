"""check's verdict and exit code (SPEC §2): every backend must agree, one wrong
backend or one wrong tensor fails the check, a backend that cannot run is
skipped, and each tolerance holds exactly where it is stated — just inside a
bound passes, just outside fails (0.99x and 1.01x).

The function under test is a custom ``autograd.Function``, ``f(x) = x^3 / 3``
entry by entry, whose backward and jvp are ``f'`` times factors we choose, so
the difference between backends is known exactly."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from gradcli.cli import app
from gradcli.core.compare import INCONCLUSIVE_SHARE

runner = CliRunner()

CUBE = textwrap.dedent('''
    import torch

    BACK = {back!r}  # the backward is BACK f'(x)
    FWD = {fwd!r}  # the jvp is FWD f'(x)


    class Cube(torch.autograd.Function):
        """f(x) = x^3 / 3 entry by entry, f'(x) = x^2."""

        generate_vmap_rule = {vmap!r}

        @staticmethod
        def forward(x):
            return x ** 3 / 3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * (x * x * BACK)

        @staticmethod
        def jvp(ctx, t):
            (x,) = ctx.saved_tensors
            return t * (x * x * FWD)


    def cube(x):
        return Cube.apply(x)


    def cube_sum(x):
        return Cube.apply(x).sum()


    class Boom(torch.nn.Module):
        def forward(self, x):
            raise ValueError("boom")


    boom = Boom()
''')
X = [1.0, 2.0, -3.0]


@pytest.fixture()
def cube(tmp_path):
    """``cube(back=1.0, fwd=1.0, vmap=True, name="cube")`` -> the FUNCTION argument of a variant."""

    def make(back=1.0, fwd=1.0, vmap=True, name="cube"):
        path = tmp_path / f"cube_{back}_{fwd}_{vmap}.py".replace("-", "m")
        path.write_text(CUBE.format(back=back, fwd=fwd, vmap=vmap))
        return f"{path}:{name}"

    return make


def check(*args):
    """``(exit code, JSON document or None, stderr)`` of ``gradcli check ... --json``."""
    result = runner.invoke(app, ["check", *map(str, args), "--json", "--no-timing"])
    doc = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, doc, result.stderr


def verdicts(doc) -> dict:
    return {b["name"]: b["ok"] for b in doc["backends"]}


# --- every backend, not any --------------------------------------------------------------


@pytest.mark.parametrize("back, fwd, wrong", [(1.001, 1.0, "autograd"), (1.0, 1.001, "forward")])
def test_exactly_one_wrong_backend_fails_the_check(cube, back, fwd, wrong):
    """Against fd, one backend right and one 0.1% off: the check fails (exit 1), naming the wrong one."""
    code, doc, err = check(cube(back, fwd), "-x", json.dumps(X), "--reference", "fd",
                           "--backends", "autograd,forward")
    assert code == 1, err
    assert doc["ok"] is False
    assert verdicts(doc) == {"autograd": wrong != "autograd", "forward": wrong != "forward"}


def test_every_backend_right_passes(cube):
    code, doc, err = check(cube(), "-x", json.dumps(X), "--reference", "fd", "--backends", "autograd,forward")
    assert code == 0, err
    assert doc["ok"] is True and verdicts(doc) == {"autograd": True, "forward": True}


def test_a_backend_that_cannot_run_is_skipped_not_failed(cube):
    """Without a vmap rule, torch's forward mode over the Function fails: forward is skipped
    (ok null, with the reason) and the verdict rests on the others."""
    code, doc, err = check(cube(vmap=False), "-x", json.dumps(X))
    assert code == 0, err
    assert doc["ok"] is True
    got = {b["name"]: b for b in doc["backends"]}
    assert got["forward"]["ok"] is None and "vmap" in got["forward"]["skipped"]
    assert got["fd"]["ok"] is True
    # nothing but the reference ran: exit 3, not a pass
    code, doc, err = check(cube(vmap=False), "-x", json.dumps(X), "--backends", "autograd,forward")
    assert code == 3 and doc["ok"] is None


def test_a_skipped_backend_does_not_hide_a_wrong_one(cube):
    code, doc, _ = check(cube(back=1.001, vmap=False), "-x", json.dumps(X), "--reference", "fd")
    assert code == 1 and doc["ok"] is False
    assert verdicts(doc) == {"autograd": False, "forward": None}


# --- tolerances: inside at 0.99x, outside at 1.01x -----------------------------------------------


def _bounds(back):
    """The largest entry-wise difference between the backward (``back f'``) and the jvp (``f'``)
    at X: absolute, and relative to the reference (the jvp)."""
    ref = np.square(X)
    diff = np.abs(back * ref - ref)
    return float(diff.max()), float((diff / ref).max())


@pytest.mark.parametrize("back", [1 + 1e-4, 0.5, 2.0])
def test_rtol_is_relative_to_the_reference_and_holds_at_its_bound(cube, back):
    """|value - reference| <= rtol |reference|: rtol 1% above the relative error passes, 1% below fails
    (a backward half or twice the truth: relative to the reference, not to the backend's value)."""
    _, rel = _bounds(back)
    args = [cube(back), "-x", json.dumps(X), "--backends", "autograd,forward", "--reference", "forward",
            "--atol", "0"]
    code, doc, err = check(*args, "--rtol", repr(rel / 0.99))
    assert code == 0, (err, doc and doc["backends"])
    code, doc, err = check(*args, "--rtol", repr(rel / 1.01))
    assert code == 1, err
    assert doc["backends"][0]["mismatches"] >= 1


def test_atol_holds_at_its_bound(cube):
    """With rtol 0, atol alone decides: 1% above the largest difference passes, 1% below fails."""
    worst, _ = _bounds(1 + 1e-4)
    args = [cube(1 + 1e-4), "-x", json.dumps(X), "--backends", "autograd,forward", "--reference", "forward",
            "--rtol", "0"]
    assert check(*args, "--atol", repr(worst / 0.99))[0] == 0
    code, doc, _ = check(*args, "--atol", repr(worst / 1.01))
    assert code == 1 and doc["backends"][0]["mismatches"] == 1  # only the largest entry (x = -3) is out


@pytest.mark.parametrize("dtype, atol, rtol", [("float64", 1e-8, 1e-6), ("float32", 1e-3, 1e-3)])
def test_default_tolerances_are_the_dtypes_and_hold_at_their_bound(cube, dtype, atol, rtol):
    """The defaults SPEC §5 prints (float64: atol 1e-8, rtol 1e-6; float32: 1e-3, 1e-3), and at
    entries of size 1e4 (where atol is negligible) a relative error of 0.99 rtol passes, 1.01 rtol fails."""
    x = json.dumps([100.0, -100.0])
    for factor, expected in ((0.99, 0), (1.01, 1)):
        code, doc, err = check(cube(1 + factor * rtol), "-x", x, "--backends", "autograd,forward",
                               "--reference", "forward", "--dtype", dtype)
        assert (doc["atol"], doc["rtol"]) == (atol, rtol)
        assert code == expected, (factor, err, doc["backends"])


@pytest.mark.parametrize("side", ["backend", "reference"])
def test_fds_error_bar_is_three_times_its_estimate_on_either_side(cube, tmp_path, side):
    """fd and autograd pass an entry when |fd - autograd| <= atol + 3 x fd's own error estimate
    (rtol 0), fd being checked or being the reference: with atol 1% under the largest
    |fd - autograd| - 3 error it fails, 1% over it passes. The backward is off by 1e-10 relative,
    a few times fd's estimate, so the bar decides."""
    function = cube(1 + 1e-10)
    out = tmp_path / "fd.npz"
    result = runner.invoke(app, ["jacobian", function, "-x", json.dumps(X), "-b", "fd", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    with np.load(out) as saved:
        fd, error = saved["value"], saved["error"]
    backward = np.diag(np.square(X) * (1 + 1e-10))  # autograd's Jacobian, exactly
    margin = float((np.abs(fd - backward) - 3 * error).max())
    assert 0.1 * float(np.abs(fd - backward).max()) < margin  # the bar matters, and does not swallow the error
    backends = ["--backends", "fd", "--reference", "autograd"] if side == "backend" else \
        ["--backends", "autograd", "--reference", "fd"]
    args = [function, "-x", json.dumps(X), *backends, "--rtol", "0"]
    assert check(*args, "--atol", repr(margin / 1.01))[0] == 1
    assert check(*args, "--atol", repr(margin * 1.01))[0] == 0


RELU = textwrap.dedent('''
    import torch


    def relu2(x):
        return 2 * torch.relu(x)


    def relu2_sum(x):
        return 2 * torch.relu(x).sum()
''')


@pytest.mark.parametrize("reference, backends", [("autograd", "fd"), ("fd", "autograd")])
@pytest.mark.parametrize("name, mode", [("relu2", "full"), ("relu2_sum", "probe")])
def test_a_kink_fd_cannot_judge_is_reported_not_counted_whichever_side_fd_is(tmp_path, reference, backends, name,
                                                                               mode):
    """relu at 0 in user code (no declared kink): torch says 0, fd's steps see both slopes and do
    not converge. The entry is reported as non-smooth, not counted, with fd as the checked backend
    and with fd as the reference. In probe mode every probe crosses the kink, but fd's first
    difference is one-sided, and along a probe that leaves relu's flat side it agrees with torch's
    convention: the verdict follows the rule of issue 24 — fd that could not judge most probes is
    inconclusive (ok null; with no other backend nothing was compared: exit 3), else ok."""
    (tmp_path / "relu.py").write_text(RELU)
    code, doc, err = check(f"{tmp_path / 'relu.py'}:{name}", "-x", "[0.0, 1.0, -2.0]", "--mode", mode,
                           "--reference", reference, "--backends", backends)
    (row,) = doc["backends"]
    assert row["mismatches"] == 0 and row["kink_entries"] >= 1
    if mode == "full":
        assert code == 0 and row["ok"] is True, (err, doc and doc["backends"])
    elif row["kink_entries"] > INCONCLUSIVE_SHARE * doc["probes"]:
        assert code == 3 and row["ok"] is None and "could not judge" in row["inconclusive"], (err, doc["backends"])
    else:
        assert code == 0 and row["ok"] is True and not row.get("inconclusive"), (err, doc["backends"])


# --- model checks: one wrong tensor of several -----------------------------------------------------

TWO = textwrap.dedent('''
    import torch


    class HalfBias(torch.autograd.Function):
        """x + b with the bias gradient halved: only the bias is wrong."""

        @staticmethod
        def forward(x, b):
            return x + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return g, 0.5 * g.sum(0)


    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(3, 2)
            self.shift = torch.nn.Parameter(torch.tensor([0.5, -0.25]))

        def forward(self, x, t):
            return torch.nn.functional.cross_entropy(HalfBias.apply(self.fc(x), self.shift), t)


    net = Net()
''')


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_one_wrong_tensor_among_several_fails_the_model_check(tmp_path, mode):
    (tmp_path / "two.py").write_text(TWO)
    code, doc, err = check(f"{tmp_path / 'two.py'}:net", "-x", "randn:4,3", "-t", "[0, 1, 1, 0]",
                           "--wrt", "param:*", "--mode", mode, "--backends", "autograd,fd", "--no-locate")
    assert code == 1, err
    assert doc["ok"] is False
    assert {r["wrt"]: r["ok"] for r in doc["results"]} == \
        {"param:fc.weight": True, "param:fc.bias": True, "param:shift": False}


# --- the Taylor test, baselines and suites -----------------------------------------------------------


def test_a_failed_taylor_test_fails_the_check_alone(cube):
    """--taylor with the reference alone: the remainder test is the verdict."""
    args = ["-x", "randn:6", "--taylor", "--backends", "autograd"]
    code, doc, err = check(cube(1.2, name="cube_sum"), *args)
    assert code == 1, err
    assert doc["ok"] is False
    code, doc, err = check(cube(name="cube_sum"), *args)
    assert code == 0, err


def test_a_moved_baseline_fails_a_check_whose_backends_agree(cube, tmp_path):
    base = tmp_path / "base.json"
    code, _, err = check(cube(), "-x", json.dumps(X), "--save-baseline", base)
    assert code == 0, err
    code, doc, err = check(cube(1.0 + 1e-6, 1.0 + 1e-6), "-x", json.dumps(X), "--backends", "autograd,forward",
                           "--baseline", base)
    assert verdicts(doc) == {"forward": True}  # the backends agree with each other ...
    assert code == 1 and doc["ok"] is False and doc["baseline"]["ok"] is False  # ... but not with the baseline


SUITE_ENTRIES = {
    "passes": 'function = "tanh"\ninput = "randn:3"\n',
    "fails": 'function = "{cube}"\ninput = "[1.0, 2.0]"\nreference = "fd"\nbackends = ["autograd", "fd"]\n',
    "cannot run": 'function = "{boom}"\ninput = "randn:3"\n',
}


@pytest.mark.parametrize("entries, code", [
    (("passes",), 0), (("passes", "fails"), 1), (("fails", "cannot run"), 3), (("cannot run", "fails"), 3),
    (("passes", "cannot run"), 3),
])
def test_a_suites_exit_code_is_its_worst_entrys(cube, tmp_path, entries, code):
    """2 (an invalid entry) outranks 3 (one could not run), which outranks 1 (one failed), then 0."""
    names = {"cube": cube(1.01).replace("\\", "/"), "boom": cube(name="boom").replace("\\", "/")}
    text = "".join(f'[[check]]\nname = "{e}"\n' + SUITE_ENTRIES[e].format(**names) + "\n" for e in entries)
    suite = tmp_path / "suite.toml"
    suite.write_text(text)
    result = runner.invoke(app, ["check", "--suite", str(suite), "--json"])
    assert result.exit_code == code, result.stderr
    assert [d["name"] for d in json.loads(result.stdout)] == list(entries)  # every entry ran
    suite.write_text(text + '[[check]]\nfunction = "tanh"\n')  # an invalid entry: no input
    assert runner.invoke(app, ["check", "--suite", str(suite)]).exit_code == 2


def test_probe_modes_rtol_is_relative_to_the_gradients_size_and_holds_at_its_bound(cube):
    """Probe k agrees when |value - reference| <= atol + rtol max(|vT J u_k|, ||vT J||): ||vT J||
    keeps a probe that cancels to near 0 from failing on rounding. The gradient is 15 ones
    (||vT J|| = sqrt(15)); with one probe whose vT J u is smaller than that (a seed is picked
    where it is), the jvp 0.1% off and atol 0, rtol 1% either side of the bound decides."""
    delta, n = 1e-3, 15
    args = [cube(fwd=1 + delta, name="cube_sum"), "-x", f"ones:{n}", "--mode", "probe", "--probes", "1",
            "--backends", "forward", "--reference", "autograd", "--atol", "0"]
    size = n ** 0.5
    for seed in range(20):
        code, doc, err = check(*args, "--rtol", "0", "--seed", seed)
        assert code == 1, err
        (probe,) = doc["top"]
        if abs(probe["reference"]) < size:
            break
    assert abs(probe["reference"]) < size
    bound = abs(probe["value"] - probe["reference"]) / size
    assert check(*args, "--seed", seed, "--rtol", repr(bound / 1.01))[0] == 1
    assert check(*args, "--seed", seed, "--rtol", repr(bound / 0.99))[0] == 0


# --- fd that could not judge (compare.judged): inconclusive, never ok, never hiding a mismatch -----------------

def _fd_against(reference, value, kinks):
    from gradcli.core.compare import compare, judged

    kinks = np.asarray(kinks)
    return judged(compare("fd", np.asarray(value, float), np.asarray(reference, float), 1e-8, 1e-6, seconds=0.0,
                          top=3, kinks=kinks), kinks)


def test_entries_fd_flags_where_it_agrees_are_judged():
    """Three of four entries flagged non-smooth, but fd's value there equals the reference (a zero
    gradient on a relu's zeros): judged, and ok."""
    c = _fd_against([0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 2.0], [True, True, True, False])
    assert c.ok is True and c.inconclusive is None


def test_most_entries_unjudged_is_inconclusive_but_a_mismatch_elsewhere_stands():
    """Three of four entries flagged and off the reference: fd could not judge them (inconclusive);
    with the fourth, unflagged, entry off by 1 as well, the check fails: a mismatch is never hidden."""
    unjudged = _fd_against([1.0, 1.0, 1.0, 2.0], [0.5, 0.5, 0.5, 2.0], [True, True, True, False])
    assert unjudged.ok is None and "could not judge 75%" in unjudged.inconclusive
    wrong = _fd_against([1.0, 1.0, 1.0, 2.0], [0.5, 0.5, 0.5, 3.0], [True, True, True, False])
    assert wrong.ok is False and wrong.inconclusive is None
