"""`check` for models (issue 15): several --wrt arguments and globs, probe and full
mode, the Taylor test, localisation of the wrong module, parameter and entries,
and SPEC §2's verdict rules (ok null for skipped backends, exit 2 / exit 3).

Bugs are planted in named submodules of a small network written to a temporary
file: an activation whose backward is wrong on part of its input, a custom
Linear whose weight gradient is scaled by 1.01, a custom Linear whose bias
gradient is the batch mean instead of the sum.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

import gradcli
from gradcli.cli import app

runner = CliRunner()

MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    BUG = {bug!r}


    class HalfWrongTanh(torch.autograd.Function):
        """tanh; the backward is 1.5 times too large where the input is above 0.3 (the act bug)."""

        @staticmethod
        def forward(x):
            return torch.tanh(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], output)

        @staticmethod
        def backward(ctx, grad):
            x, y = ctx.saved_tensors
            slope = 1 - y * y
            return grad * (torch.where(x > 0.3, 1.5 * slope, slope) if BUG == "act" else slope)


    class Act(nn.Module):
        def forward(self, x):
            return HalfWrongTanh.apply(x)


    class LinearFn(torch.autograd.Function):
        @staticmethod
        def forward(x, weight, bias):
            return x @ weight.T + bias

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], inputs[1])

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            grad_weight = grad.T @ x
            grad_bias = grad.sum(0)
            if BUG == "weight":
                grad_weight = 1.01 * grad_weight
            if BUG == "bias":
                grad_bias = grad.mean(0)
            return grad @ weight, grad_weight, grad_bias


    class CustomLinear(nn.Linear):
        def forward(self, x):
            return LinearFn.apply(x, self.weight, self.bias)


    class Block(nn.Module):
        def __init__(self, n_in, n_out, custom):
            super().__init__()
            self.fc = CustomLinear(n_in, n_out) if custom else nn.Linear(n_in, n_out)
            self.act = Act() if custom else nn.Tanh()

        def forward(self, x):
            return self.act(self.fc(x))


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(6, 8, False), Block(8, 8, True)])
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return self.head(x)


    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = Net()

        def forward(self, input, target):
            return nn.functional.cross_entropy(self.net(input), target)


    loss = Loss()
''')
ARGS = ["-x", "randn:5,6", "-t", "randint:3:5"]


def model_file(tmp_path, bug=None):
    path = tmp_path / f"model_{bug or 'ok'}.py"
    path.write_text(MODEL.format(bug=bug))
    return f"{path}:loss"


def check_json(*args):
    result = runner.invoke(app, ["check", *args, "--json"])
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def failing(doc):
    return {r["wrt"] for r in doc["results"] if r["ok"] is False}


def blamed(doc):
    return [(m["path"], m["class"]) for m in doc["modules"] if m["blamed"]]


# (bug, the wrong module, the parameters whose gradient is wrong)
PLANTED = [
    ("act", ("net.blocks.1.act", "Act"),
     {"param:net.blocks.0.fc.weight", "param:net.blocks.0.fc.bias", "param:net.blocks.1.fc.weight",
      "param:net.blocks.1.fc.bias"}),
    ("weight", ("net.blocks.1.fc", "CustomLinear"), {"param:net.blocks.1.fc.weight"}),
    ("bias", ("net.blocks.1.fc", "CustomLinear"), {"param:net.blocks.1.fc.bias"}),
]


@pytest.mark.parametrize("mode", ["probe", "full"])
@pytest.mark.parametrize("bug, module, wrong", PLANTED, ids=[p[0] for p in PLANTED])
def test_a_planted_bug_names_its_module_and_parameters(tmp_path, bug, module, wrong, mode):
    result, doc = check_json(model_file(tmp_path, bug), *ARGS, "--wrt", "param:*", "--mode", mode)
    assert result.exit_code == 1, result.stderr
    assert doc["ok"] is False and doc["mode"] == mode
    assert failing(doc) == wrong  # every other parameter passes: the head, and the first block for a Linear bug
    assert blamed(doc) == [module]  # its containers (net.blocks.1, net.blocks, net) fail too, but are not blamed
    found = next(m for m in doc["modules"] if m["blamed"])
    assert found["file"].endswith(".py") and found["line"] > 0
    source = open(found["file"]).read().splitlines()
    assert source[found["line"] - 1].startswith(f"class {module[1]}")
    containers = {m["path"]: m for m in doc["modules"]}
    assert containers["net.blocks.1"]["ok"] is False and not containers["net.blocks.1"]["blamed"]


def test_the_same_model_without_a_bug_passes_in_both_modes(tmp_path):
    path = model_file(tmp_path)
    for mode in ("probe", "full"):
        result, doc = check_json(path, *ARGS, "--wrt", "param:*", "--mode", mode)
        assert result.exit_code == 0, (mode, result.stdout, result.stderr)
        assert doc["ok"] is True and len(doc["results"]) == 6 and "modules" not in doc


def test_group_testing_lists_the_worst_entries_with_both_values(tmp_path):
    """A weight gradient scaled by 1.01 everywhere: the listed entries carry fd's value and
    autograd's, 1.01 times it, within fd's error bar."""
    result, doc = check_json(model_file(tmp_path, "weight"), *ARGS, "--wrt", "param:net.blocks.1.fc.weight",
                             "--mode", "probe", "--top", "3")
    assert result.exit_code == 1
    assert len(doc["top"]) == 3
    for e in doc["top"]:
        assert len(e["index"]) == 2 and 0 <= e["index"][0] < 8 and 0 <= e["index"][1] < 8
        assert e["reference"] == pytest.approx(1.01 * e["value"], rel=1e-6)
    assert any("group testing" in n for n in doc["notes"])
    worst = abs(doc["top"][0]["reference"] - doc["top"][0]["value"])
    assert all(abs(e["reference"] - e["value"]) <= worst * (1 + 1e-9) for e in doc["top"])


def test_no_locate_skips_localisation(tmp_path):
    result, doc = check_json(model_file(tmp_path, "act"), *ARGS, "--wrt", "param:*", "--no-locate")
    assert result.exit_code == 1 and "modules" not in doc


def test_wrt_globs_and_lists(tmp_path):
    path = model_file(tmp_path)
    result, doc = check_json(path, *ARGS, "--wrt", "param:net.blocks.0.*")
    assert result.exit_code == 0, result.stderr
    assert doc["wrt"] == ["param:net.blocks.0.fc.weight", "param:net.blocks.0.fc.bias"]
    assert [r["shape"] for r in doc["results"]] == [[8, 6], [8]]
    result, doc = check_json(path, *ARGS, "--wrt", "input,param:net.head.*,input")
    assert doc["wrt"] == ["input", "param:net.head.weight", "param:net.head.bias"]
    result = runner.invoke(app, ["check", path, *ARGS, "--wrt", "param:nothing.*"])
    assert result.exit_code == 2 and "matches no parameter" in result.stderr and "net.head.weight" in result.stderr
    assert result.stdout == ""
    result = runner.invoke(app, ["check", "softmax", "-x", "randn:2,3", "--wrt", "input,*"])
    assert result.exit_code == 2 and "globs match module parameters" in result.stderr


def test_built_ins_take_lists_too():
    x = np.random.default_rng(1).standard_normal((4, 3))
    w = np.random.default_rng(2).standard_normal((5, 3))
    b = np.random.default_rng(3).standard_normal(5)
    t = np.array([0, 4, 2, 1])
    for mode in ("full", "probe"):
        report = gradcli.check("linear,cross_entropy", input=x, weight=w, bias=b, target=t, wrt="input,weight,bias",
                               mode=mode)
        assert report.ok is True and report.mode == mode
        assert [r.wrt for r in report.results] == ["input", "weight", "bias"]
        # forward mode runs in probe mode only when named (its start-up costs more than the whole probe check)
        assert {c.name for c in report.backends} == ({"forward", "analytic", "fd"} if mode == "full" else {"analytic", "fd"})
    report = gradcli.check("linear,cross_entropy", input=x, weight=w, bias=b, target=t, wrt="weight,bias",
                           mode="probe", backends=["autograd", "forward", "fd"])
    assert report.ok is True and {c.name for c in report.backends} == {"forward", "fd"}


def test_probe_values_are_the_directional_derivatives_torch_gives(tmp_path):
    """A joint probe's value is the sum over the arguments of g_a · u_ka for torch's own
    gradients g_a (each argument's share kept apart), and fd's directional differences
    along the joint directions agree with it within fd's error bar."""
    import torch

    from gradcli.checking import probe
    from gradcli.problem.function import lookup
    from gradcli.checking.model import merged
    from gradcli.problem.problem import build_problem
    from gradcli.problem.wrt import retarget

    fn = lookup(model_file(tmp_path))
    x = np.random.default_rng(0).standard_normal((5, 6))
    t = np.array([0, 2, 1, 1, 0])
    base = build_problem(fn, {"input": x, "target": t})
    names = ["input", "param:net.head.weight"]
    whole = merged(retarget(base, names))
    scales = {"input": 0.5, "param:net.head.weight": 0.25}
    probes = probe.make_probes({n: whole.args[n].shape for n in names}, (), 3, seed=7, dtype=np.float64, scales=scales)
    # signs times each argument's entry size relative to the largest: one argument alone keeps ±1
    assert set(np.unique(probes.u["input"])) == {-1.0, 1.0} and probes.step == 0.5
    assert set(np.unique(probes.u["param:net.head.weight"])) == {-0.5, 0.5}
    f = probe.TorchFunction(whole, names)
    got = probe.autograd_values(f, probes)
    xt = torch.tensor(x, requires_grad=True)
    out = fn.module(xt, torch.tensor(t))
    out.backward()
    shares = {"input": probes.u["input"].reshape(3, -1) @ xt.grad.numpy().reshape(-1),
              "param:net.head.weight": probes.u["param:net.head.weight"].reshape(3, -1)
              @ fn.module.net.head.weight.grad.numpy().reshape(-1)}
    for n in names:
        np.testing.assert_allclose(got.parts[n], shares[n], rtol=1e-12)
    np.testing.assert_allclose(got.values, shares["input"] + shares["param:net.head.weight"], rtol=1e-12)
    fd = probe.fd_values(f, probes)
    assert fd.values.shape == (3,)
    assert np.all(np.abs(fd.values - got.values) <= 3 * fd.error + 1e-9)
    assert np.all(fd.error < 1e-6)
    with pytest.raises(gradcli.core.errors.BackendError, match="forward mode"):  # its custom Functions have no jvp
        probe.forward_values(f, probes)


def test_each_probe_has_its_own_cotangent_and_one_vjp_each(tmp_path):
    """A non-scalar output: probe k's value is v_k^T J u_k with v_k its own cotangent (fresh per
    probe), as torch.autograd.grad with grad_outputs v_k gives; forward mode agrees."""
    import torch

    from gradcli.checking import probe
    from gradcli.problem.function import lookup
    from gradcli.problem.problem import build_problem

    (tmp_path / "two.py").write_text("import torch\n\ndef f(x):\n    return torch.tanh(x) * x.sum()\n")
    fn = lookup(f"{tmp_path}/two.py:f")
    x = np.random.default_rng(3).standard_normal((4, 3))
    problem = build_problem(fn, {"input": x})
    probes = probe.make_probes({"input": (4, 3)}, (4, 3), 5, seed=2, dtype=np.float64)
    assert probes.v.shape == (5, 4, 3) and not np.allclose(probes.v[0], probes.v[1])
    f = probe.TorchFunction(problem, ["input"])
    got = probe.autograd_values(f, probes)
    xt = torch.tensor(x, requires_grad=True)
    y = torch.tanh(xt) * xt.sum()
    for k in range(5):
        (g,) = torch.autograd.grad(y, xt, torch.tensor(probes.v[k]), retain_graph=True)
        assert got.values[k] == pytest.approx(float((g * torch.tensor(probes.u["input"][k])).sum()), rel=1e-12)
    np.testing.assert_allclose(probe.forward_values(f, probes).values, got.values, rtol=1e-10)


def test_probes_are_seeded_per_argument():
    from gradcli.checking.probe import make_probes

    a = make_probes({"input": (3, 4), "weight": (20,)}, (3,), 4, seed=1, dtype=np.float64)
    b = make_probes({"weight": (20,)}, (3,), 4, seed=1, dtype=np.float64)
    c = make_probes({"weight": (20,)}, (3,), 4, seed=2, dtype=np.float64)
    np.testing.assert_array_equal(a.u["weight"], b.u["weight"])  # adding an argument changes no other's directions
    assert set(np.unique(a.u["input"])) == {-1.0, 1.0}
    assert not np.array_equal(b.u["weight"], c.u["weight"])  # --seed changes them
    assert a.v.shape == (4, 3) and make_probes({"x": (2,)}, (), 2, seed=1, dtype=np.float64).v is None


# --- the Taylor test ----------------------------------------------------------------

SMOOTH = textwrap.dedent('''
    import torch
    from torch import nn

    BUG = {bug!r}


    class Square(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * (2.2 if BUG else 2.0) * x


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = nn.Linear(6, 4)

        def forward(self, input, target):
            return (torch.tanh(Square.apply(self.fc(input))) - target).square().mean()


    model = Model()
''')


def test_taylor_order_two_for_a_right_float32_model_in_20_seeds(tmp_path):
    path = tmp_path / "smooth.py"
    path.write_text(SMOOTH.format(bug=False))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x, t = rng.standard_normal((5, 6)), rng.standard_normal((5, 4))
        report = gradcli.check(f"{path}:model", input=x, target=t, wrt="input,param:*", dtype="float32",
                               mode="probe", taylor=True, seed=seed, fd_dtype="same")
        test = report.taylor  # along the joint probes over the input and every parameter
        assert report.ok is True, (seed, test.orders)
        assert test.ok is not False and test.order is not None and test.order > 1.75
        assert all(r.ok is True and r.jointly for r in report.results)


def test_taylor_order_one_for_a_wrong_float32_backward(tmp_path):
    path = tmp_path / "smooth_bug.py"
    path.write_text(SMOOTH.format(bug=True))
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 6)), rng.standard_normal((5, 4))
    report = gradcli.check(f"{path}:model", input=x, target=t, wrt="param:fc.weight", dtype="float32",
                           mode="probe", taylor=True, backends=["autograd"], locate=False)
    (r,) = report.results
    assert report.ok is False and r.taylor.ok is False and r.taylor.order < 1.35, r.taylor.orders
    result, doc = check_json(f"{path}:model", "-x", "randn:5,6", "-t", "randn:5,4", "--wrt", "param:fc.weight",
                             "--dtype", "float32", "--taylor", "--backends", "autograd,fd", "--fd-dtype", "same")
    assert result.exit_code == 1
    assert doc["taylor"]["ok"] is False and doc["taylor"]["order"] < 1.35 and len(doc["taylor"]["orders"]) == 4


# --- verdict rules (SPEC §2) -------------------------------------------------------------


def test_backends_naming_only_the_reference_is_a_usage_error(tmp_path):
    for args in (["softmax", "-x", "randn:2,3", "--backends", "autograd"],
                 ["softmax", "-x", "randn:2,3", "--backends", "analytic", "--reference", "analytic"],
                 [model_file(tmp_path), *ARGS, "--wrt", "param:*", "--backends", "autograd"]):
        result = runner.invoke(app, ["check", *args])
        assert result.exit_code == 2, (args, result.stdout)
        assert "--backends" in result.stderr and "only the reference" in result.stderr and result.stdout == ""


CUSTOM = textwrap.dedent('''
    import torch


    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 3 * x * x * grad


    def cube(x):
        return Cube.apply(x)
''')


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_nothing_but_the_reference_ran_is_exit_3_with_ok_null(tmp_path, mode):
    """forward mode cannot run an old-style autograd.Function: the only other backend named is
    skipped, so nothing was compared — exit 3, never 'all backends agree'."""
    path = tmp_path / "cube.py"
    path.write_text(CUSTOM)
    result, doc = check_json(f"{path}:cube", "-x", "[0.5, 2.0]", "--backends", "autograd,forward", "--mode", mode)
    assert result.exit_code == 3, result.stdout
    assert doc["ok"] is None
    (forward,) = doc["backends"]
    assert forward["ok"] is None and forward["skipped"]
    table = runner.invoke(app, ["check", f"{path}:cube", "-x", "[0.5, 2.0]", "--backends", "autograd,forward",
                                "--mode", mode])
    assert table.exit_code == 3 and "NOTHING COMPARED" in table.stdout and "all backends agree" not in table.stdout
    report = gradcli.check(f"{path}:cube", input=np.array([0.5, 2.0]), backends=["autograd", "forward"], mode=mode)
    assert report.ok is None


def test_skipped_next_to_a_backend_that_ran_is_null_and_the_verdict_stands(tmp_path):
    path = tmp_path / "cube.py"
    path.write_text(CUSTOM)
    result, doc = check_json(f"{path}:cube", "-x", "[0.5, 2.0]")
    assert result.exit_code == 0 and doc["ok"] is True
    by_name = {b["name"]: b for b in doc["backends"]}
    assert by_name["forward"]["ok"] is None and "autograd.Function" in by_name["forward"]["skipped"]
    assert by_name["fd"]["ok"] is True


def test_relu_at_its_kink_is_non_smooth_not_a_mismatch(tmp_path):
    """Every probe crosses a kink: fd reports them non-smooth, never as mismatches, and having judged
    none of them it is inconclusive (issue 24: not "ok"), so with no other backend nothing was
    compared (exit 3); forward mode, where it runs, gives the verdict."""
    path = tmp_path / "relu.py"
    path.write_text("import torch\n\ndef f(x):\n    return torch.relu(x).sum()\n")
    result, doc = check_json(f"{path}:f", "-x", "[0.0, 0.0, 1.0, -1.0, 0.0]", "--mode", "probe",
                             "--backends", "autograd,fd")
    assert result.exit_code == 3, result.stdout
    fd = doc["backends"][0]
    assert fd["mismatches"] == 0 and fd["kink_entries"] >= 1 and fd["ok"] is None and "could not judge" in fd["inconclusive"]
    assert any("non-smooth" in n for n in doc["notes"])
    result, doc = check_json(f"{path}:f", "-x", "[0.0, 0.0, 1.0, -1.0, 0.0]", "--mode", "probe",
                             "--backends", "autograd,forward,fd")
    assert result.exit_code == 0 and doc["ok"] is True, result.stdout


def test_a_mismatch_says_which_side_is_believed(tmp_path):
    result, doc = check_json(model_file(tmp_path, "bias"), *ARGS, "--wrt", "param:net.blocks.1.fc.bias",
                             "--mode", "probe")
    assert result.exit_code == 1
    assert any("fd is believed" in n and "error bar" in n for n in doc["notes"])


def test_the_table_lists_failing_arguments_first_and_summarises(tmp_path, monkeypatch):
    import gradcli.render.models as models

    monkeypatch.setattr(models, "MAX_ROWS", 4)
    result = runner.invoke(app, ["check", model_file(tmp_path, "weight"), *ARGS, "--wrt", "param:*", "--no-timing"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.strip().startswith("param:")]
    assert rows[0].strip().startswith("param:net.blocks.1.fc.weight")  # the failing argument first
    assert any(r.strip().startswith("param:net.blocks.1.fc.weight") and "MISMATCH" in r for r in rows)
    assert any("more arguments, all ok" in line for line in lines)
    assert "WRONG: net.blocks.1.fc (CustomLinear" in result.stdout


def test_check_help_names_no_option_it_lacks():
    result = runner.invoke(app, ["check", "--help"])
    for option in ("--mode", "--probes", "--taylor", "--locate"):
        assert option in result.stdout
    assert "--verify-blocks" not in result.stdout


def test_per_sample_note_in_check_names_no_missing_option(tmp_path):
    path = tmp_path / "net.py"
    path.write_text("import torch\n\ndef f(x):\n    return torch.tanh(x) * 2\n")
    result, doc = check_json(f"{path}:f", "-x", "randn:3,2", "--layout", "blocks", "--quantity", "jacobian")
    assert result.exit_code == 0, result.stderr
    # check has no --verify-blocks: a note may only point at the command that has it
    notes = [n for n in doc["notes"] if "--verify-blocks" in n and not n.startswith("--verify-blocks:")]
    assert all("gradcli jacobian --layout blocks --verify-blocks" in n for n in notes), notes


@pytest.mark.parametrize("args, message", [
    (["--taylor", "--mode", "full"], "--taylor"),
    (["--mode", "probe", "--quantity", "jvp"], "--mode probe"),
    (["--probes", "0"], "--probes"),
    (["--wrt", "input,,param:*"], "empty name"),
])
def test_check_mode_usage_errors(tmp_path, args, message):
    result = runner.invoke(app, ["check", model_file(tmp_path), *ARGS, *args])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert message in result.stderr and result.stdout == ""


def test_probe_mode_runs_forward_mode_through_attention(tmp_path):
    """A TransformerEncoderLayer (the CPU flash attention kernel has no forward-mode
    formula): probe mode's forward backend runs it by the math kernel and agrees, rather
    than being skipped with a reason that blamed a custom autograd.Function."""
    (tmp_path / "attention.py").write_text(textwrap.dedent('''
        import torch

        torch.manual_seed(0)
        net = torch.nn.TransformerEncoderLayer(4, 1, dim_feedforward=8, dropout=0.0, batch_first=True).eval()
    '''))
    report = gradcli.check(f"{tmp_path}/attention.py:net", input=np.random.default_rng(1).standard_normal((2, 3, 4)),
                           mode="probe", backends=["autograd", "forward", "fd"])
    forward = [c for c in report.backends if c.name == "forward"]
    assert report.ok and forward and forward[0].ok


PAD = """
import torch
from torch import nn


class PadLoss(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(6, 3, padding_idx=0)
        self.emb.weight.data[0] = torch.randn(3)  # a pad row that is not zero (loaded weights)
        self.fc = nn.Linear(3, 2)

    def forward(self, ids, y):
        return nn.functional.cross_entropy(self.fc(self.emb(ids).mean(1)), y)


loss = PadLoss()
"""


def test_embedding_padding_row_mismatch_is_explained_as_torch_by_design(tmp_path):
    """torch zeroes the gradient of Embedding's padding row by design: with the pad index in the
    input, check fails (autograd is not the derivative there) and a note says why, naming the
    module and the way to check the row; without the index, the model passes and no note."""
    (tmp_path / "pad.py").write_text(PAD)
    failed = runner.invoke(app, ["check", f"{tmp_path}/pad.py:loss", "-x", "[[0,1,2],[3,0,4]]", "-t", "[0,1]",
                                 "--wrt", "param:*"], terminal_width=200)
    assert failed.exit_code == 1, failed.output
    assert "emb is nn.Embedding(padding_idx=0)" in failed.stdout and "by design" in failed.stdout
    passed = runner.invoke(app, ["check", f"{tmp_path}/pad.py:loss", "-x", "[[5,1,2],[3,5,4]]", "-t", "[0,1]",
                                 "--wrt", "param:*"], terminal_width=200)
    assert passed.exit_code == 0 and "padding_idx" not in passed.stdout, passed.output
