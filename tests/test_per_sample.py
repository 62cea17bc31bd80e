"""Real networks, per sample (issue 14): training mode handled honestly,
diagnoses that name the cause, argument mapping (``forward(self, x, t)``,
``--arg``), layout auto for models, fast per-sample blocks within
``--max-memory``, per-sample gradients and their norms — all against torch
(``vmap(jacrev)``, ``vmap(grad(functional_call))``)."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import gradcli
from gradcli.compute.solve import solve
from gradcli.problem.problem import build_problem
from gradcli.cli import app

runner = CliRunner()
EPS = np.finfo(np.float64).eps

MODELS = '''
import torch
from torch import nn


class BnNet(nn.Module):
    """Batch norm in training mode: samples interact."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(4, 5)
        self.bn = nn.BatchNorm1d(5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.bn(self.fc(x))))


class DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(4, 6)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.drop(torch.tanh(self.fc(x))))


class Counter(nn.Module):
    """Updates a buffer in forward; its output does not depend on it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.register_buffer("calls", torch.zeros(()))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        self.calls += 1
        return torch.sin(self.fc(x))


class TwoInputs(nn.Module):
    """forward(self, x, t): arrays reach parameters by position, not by name."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x, t, mask=None):
        y = torch.tanh(self.fc(x)) * t
        return y if mask is None else y * mask


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def old_style(x):
    return Square.apply(x)


def mean_over_batch(x):
    return x - x.mean(0, keepdim=True)


bn = BnNet()
bn_eval = BnNet().eval()
drop = DropNet()
counter = Counter()
two = TwoInputs()
'''


def user_file(tmp_path_factory, name, text):
    """``text`` written to ``NAME.py`` in a fresh folder: ``(path, the module imported from it)``."""
    path = tmp_path_factory.mktemp(name) / f"{name}.py"
    path.write_text(textwrap.dedent(text))
    spec = importlib.util.spec_from_file_location(f"per_sample_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return user_file(tmp_path_factory, "models", MODELS)


def run(*args):
    return runner.invoke(app, [*args, "--json", "--no-timing"])


def run_json(*args):
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def refused(result, code: int, *words: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) <= 2, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def x_of(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --- 1. training mode, honestly ------------------------------------------------


def test_training_batch_norm_blocks_refused_naming_the_module(models):
    path, _ = models
    for verify in ("--verify-blocks", "--no-verify-blocks"):
        refused(run("jacobian", f"{path}:bn", "-x", "randn:6,4", "--layout", "blocks", verify), 2,
                "bn (BatchNorm1d)", ".eval()", "--layout full")


def test_training_batch_norm_full_is_the_training_mode_jacobian_and_buffers_are_restored(models):
    path, module = models
    x = x_of((6, 4))
    model = module.BnNet().double().train()
    expected = torch.autograd.functional.jacobian(model, torch.tensor(x)).numpy()  # batch statistics
    for backend, tol in (("autograd", 1e-12), ("forward", 1e-12), ("fd", 1e-7)):
        res = gradcli.jacobian(f"{path}:bn", input=x, backend=backend)
        assert res.layout.value == "full" and res.shape == (6, 3, 6, 4)
        np.testing.assert_allclose(res.value, expected, atol=tol, rtol=tol)
        assert any("TRAINING-mode" in n for n in res.notes)
        assert any("layout auto: full" in n and "bn (BatchNorm1d)" in n for n in res.notes)
    # gradcli's own instance: the running statistics are what the file made (never updated)
    problem = build_problem(f"{path}:bn", {"input": x})
    solve(problem, "jacobian", backend="forward")
    bn = problem.function.module.bn
    assert int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean, torch.zeros(5, dtype=torch.float64))


def test_eval_batch_norm_gives_per_sample_blocks(models):
    path, module = models
    x = x_of((5, 4))
    model = module.BnNet().double().eval()
    expected = torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))(torch.tensor(x)).detach().numpy()
    res = gradcli.jacobian(f"{path}:bn_eval", input=x)
    assert res.layout.value == "blocks" and res.per_sample
    np.testing.assert_allclose(res.value, expected, atol=1e-13, rtol=1e-12)
    assert any("samples do not interact" in n for n in res.notes)


def test_verify_blocks_refuses_code_whose_samples_interact(models):
    path, _ = models
    refused(run("jacobian", f"{path}:mean_over_batch", "-x", "randn:4,3", "--layout", "blocks"), 2,
            "samples interact", "cross-sample derivative")
    doc = run_json("jacobian", f"{path}:mean_over_batch", "-x", "randn:4,3")
    assert doc["layout"] == "full" and any("samples interact" in n for n in doc["notes"])
    x = x_of((4, 3))
    expected = torch.autograd.functional.jacobian(lambda v: v - v.mean(0, keepdim=True), torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(gradcli.jacobian(f"{path}:mean_over_batch", input=x).value, expected, atol=1e-15)


def dropout_reference(module, x, seed):
    """torch's Jacobian of the training-mode model with the mask torch.manual_seed(seed) draws."""
    model = module.DropNet().double().train()

    def f(v):
        torch.manual_seed(seed)
        return model(v)

    full = torch.autograd.functional.jacobian(f, torch.tensor(x)).numpy()  # (B, 3, B, 4)
    b = x.shape[0]
    return full[np.arange(b), :, np.arange(b)], full


@pytest.mark.parametrize("seed", [0, 5])
def test_dropout_one_mask_same_in_every_backend(models, seed):
    path, module = models
    x = x_of((5, 4), seed=1)
    blocks, _ = dropout_reference(module, x, seed)
    model = module.DropNet().double().eval()
    no_mask = torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))(torch.tensor(x)).detach().numpy()
    assert np.abs(blocks - no_mask).max() > 0.01  # the mask really changes the Jacobian
    for backend, tol in (("autograd", 1e-12), ("forward", 1e-12), ("fd", 1e-7)):
        doc = run_json("jacobian", f"{path}:drop", "-x", json.dumps(x.tolist()), "-b", backend, "--seed", str(seed))
        assert doc["layout"] == "blocks"
        np.testing.assert_allclose(np.array(doc["value"]), blocks, atol=tol, rtol=tol)
        assert any("ONE dropout mask" in n and f"manual_seed({seed})" in n for n in doc["notes"])
    report = run_json("check", f"{path}:drop", "-x", json.dumps(x.tolist()), "--seed", str(seed))
    assert report["ok"] and all(b["ok"] and not b.get("skipped") for b in report["backends"])


def test_buffer_update_is_named_and_restored(models):
    path, module = models
    refused(run("jacobian", f"{path}:counter", "-x", "randn:3,4", "-b", "forward"), 3,
            "the model (Counter)", "updates a buffer in place", "--backend autograd or fd")
    x = x_of((3, 4))
    model = module.Counter().double()
    expected = torch.func.vmap(torch.func.jacrev(lambda s: torch.sin(model.fc(s))))(torch.tensor(x)).detach().numpy()
    problem = build_problem(f"{path}:counter", {"input": x})
    for backend in ("autograd", "fd"):  # autograd falls back to classic backward passes
        res = solve(problem, "jacobian", backend=backend)
        np.testing.assert_allclose(res.value, expected, atol=1e-8 if backend == "fd" else 1e-13)
    assert float(problem.function.module.calls) == 0


def test_old_style_function_is_named(models):
    path, _ = models
    refused(run("jacobian", f"{path}:old_style", "-x", "randn:3,4", "-b", "forward"), 3,
            "old-style torch.autograd.Function Square", "--backend autograd or fd")


def test_missing_forward_mode_formula_names_the_op(tmp_path):
    (tmp_path / "f.py").write_text(textwrap.dedent("""
        import torch

        def f(x):
            logp = x.log_softmax(-1)[:, None].expand(6, 2, 4)
            return torch.nn.functional.ctc_loss(logp, torch.ones(2, 2, dtype=torch.long), [6, 6], [2, 2])
    """))
    refused(run("jvp", f"{tmp_path}/f.py:f", "-x", "randn:6,4", "--tangent", "randn", "-b", "forward"), 3,
            "no forward-mode formula for _ctc_loss", "use --backend autograd")


# --- 2. argument mapping ----------------------------------------------------------


def test_input_and_target_are_positional_whatever_their_names(models):
    path, module = models
    x, t = x_of((4, 4)), x_of((4, 3), seed=1)
    model = module.TwoInputs().double()
    expected = torch.func.vmap(torch.func.jacrev(lambda s, u: model(s[None], u[None])[0]))(
        torch.tensor(x), torch.tensor(t)).detach().numpy()
    doc = run_json("jacobian", f"{path}:two", "-x", json.dumps(x.tolist()), "-t", json.dumps(t.tolist()))
    assert doc["layout"] == "blocks"
    np.testing.assert_allclose(np.array(doc["value"]), expected, atol=1e-13)
    by_t = run_json("jacobian", f"{path}:two", "-x", json.dumps(x.tolist()), "-t", json.dumps(t.tolist()),
                    "--wrt", "target", "--layout", "full")
    expected_t = torch.autograd.functional.jacobian(lambda u: model(torch.tensor(x), u), torch.tensor(t)).detach().numpy()
    np.testing.assert_allclose(np.array(by_t["value"]), expected_t, atol=1e-13)


def test_arg_passes_other_parameters_by_name(models):
    path, module = models
    x, t = x_of((4, 4)), x_of((4, 3), seed=1)
    mask = (np.arange(12).reshape(4, 3) % 2).astype(int)
    model = module.TwoInputs().double()
    xt = torch.tensor(x, requires_grad=True)
    model(xt, torch.tensor(t), torch.tensor(mask)).sum().backward()
    doc = run_json("vjp", f"{path}:two", "-x", json.dumps(x.tolist()), "-t", json.dumps(t.tolist()),
                   "--arg", f"mask={json.dumps(mask.tolist())}")
    np.testing.assert_allclose(np.array(doc["value"]), xt.grad.numpy(), atol=1e-13)
    assert np.array(doc["output"])[mask == 0].max() == 0


@pytest.mark.parametrize("args, code, words", [
    (["--arg", "mas=ones:4,3"], 2, ["--arg mas", "has no parameter 'mas'", "--arg mask=ARRAY"]),
    (["--arg", "mask"], 2, ["not NAME=ARRAY"]),
    (["--arg", "target=ones:4,3"], 2, ["give it with --target"]),
    (["--arg", "mask=ones:4,3", "--arg", "mask=ones:4,3"], 2, ["given twice"]),
])
def test_arg_mistakes(models, args, code, words):
    path, _ = models
    refused(run("jacobian", f"{path}:two", "-x", "randn:4,4", "-t", "randn:4,3", *args), code, *words)


def test_missing_target_and_arg_on_a_builtin(models):
    path, _ = models
    refused(run("jacobian", f"{path}:two", "-x", "randn:4,4"), 2, "--target", "second argument, t")
    refused(run("jacobian", "softmax", "-x", "randn:4,4", "--arg", "mask=ones:4"), 2, "only user code")


def test_functions_shows_the_signature_and_mapping(models):
    path, _ = models
    result = runner.invoke(app, ["functions", f"{path}:two", "--json"])
    doc = json.loads(result.stdout)["functions"][0]
    assert doc["signature"] == "(x, t, mask=None)"
    assert doc["mapping"] == {"-x/--input": "x", "-t/--target or --arg t=ARRAY": "t", "--arg mask=ARRAY": "mask"}


def test_layout_auto_is_full_with_a_reason_when_the_output_drops_the_batch(tmp_path):
    (tmp_path / "f.py").write_text("def f(x):\n    return (x ** 2).sum(0)\n")
    doc = run_json("jacobian", f"{tmp_path}/f.py:f", "-x", "randn:3,4")
    assert doc["layout"] == "full" and doc["shape"] == [4, 3, 4]
    assert any("does not keep the input's batch dim" in n for n in doc["notes"])


# --- 3. memory-bounded torch backends ----------------------------------------------

LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
from gradcli.__main__ import main
sys.argv = ["gradcli", *sys.argv[1:]]
main()
"""


def limited(*args):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", LIMITED, *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_forward_mode_on_a_cifar_sized_net_under_8gb_exits_2_never_killed():
    from pathlib import Path

    net = Path(__file__).resolve().parents[1] / "sample_inputs" / "cnn.py"
    proc = limited("jacobian", f"{net}:net", "-x", "randn:32,3,32,32", "-b", "forward", "--max-memory", "24MiB")
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "activations measured" in proc.stderr and "--rows" in proc.stderr and "gradcli vjp" in proc.stderr
    assert "your code raised" not in proc.stderr


@pytest.mark.parametrize("backend", ["forward", "autograd"])
def test_chunks_sized_to_max_memory_give_the_same_blocks(tmp_path, backend):
    (tmp_path / "wide.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(24, 2048), nn.Tanh(), nn.Linear(2048, 16)).eval()
    """))
    x = x_of((16, 24))
    spec = importlib.util.spec_from_file_location("wide", tmp_path / "wide.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.net.double()
    expected = torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))(torch.tensor(x)).detach().numpy()
    np.save(tmp_path / "x.npy", x)
    # about 1.5 MiB of activations per pass: 8 MiB leaves room for a few directions per vmap call
    proc = limited("jacobian", f"{tmp_path}/wide.py:net", "-x", str(tmp_path / "x.npy"), "-b", backend,
                   "--max-memory", "8MiB", "-o", str(tmp_path / "J.npy"))
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "J.npy"), expected, atol=1e-14, rtol=1e-12)
    tight = limited("jacobian", f"{tmp_path}/wide.py:net", "-x", str(tmp_path / "x.npy"), "-b", backend,
                    "--max-memory", "1MiB")
    assert tight.returncode == 2 and "--max-memory" in tight.stderr and tight.stdout == ""


BATCHING = '''
import torch
from torch import nn


class ItemSquare(torch.autograd.Function):
    """A custom backward that vmap cannot batch (.item())."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        assert float(grad.abs().sum()) >= 0
        return 2 * x * grad


class Net(nn.Module):
    """(B, 2, 3, 5) images -> (B, 2, 4) per-sample outputs, through a conv and a custom square."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 2)
        self.fc = nn.Linear(3 * 2 * 4, 8)

    def forward(self, x):
        h = ItemSquare.apply(torch.tanh(self.conv(x)))
        return self.fc(h.flatten(1)).reshape(-1, 2, 4)


class FixedBatch(nn.Module):
    """Refuses any batch but five samples (as a model exported for one batch size does)."""

    def forward(self, x):
        assert x.shape[0] == 5, "exported for a batch of 5"
        return torch.sin(x) * x.sum(1, keepdim=True)


def rolled(x):
    """Each sample's output reads the previous sample: samples interact along the batch."""
    return x * torch.roll(x, 1, 0)


def rolled_by_two(x):
    """Each sample's output reads the sample two before it: the first and the last
    sample alone, as a batch of two, would not interact (a roll by two is no shift there)."""
    return torch.tanh(x) + 0.5 * torch.roll(x, 2, 0)


def interior(x):
    """Only the samples between the first and the last interact (through their mean)."""
    out = torch.tanh(x)
    return torch.cat([out[:1], out[1:-1] + x[1:-1].mean(0), out[-1:]])


def constant(x):
    """An output that does not depend on the input: nothing in it requires grad."""
    return torch.zeros(x.shape[0], 4, dtype=x.dtype)


def detached(x):
    """Depends on the input's values, not through autograd (torch's derivative: 0)."""
    return x.detach() * 2


net = Net().eval()
fixed = FixedBatch()
'''


@pytest.fixture(scope="module")
def batching(tmp_path_factory):
    return user_file(tmp_path_factory, "batching", BATCHING)


@pytest.mark.parametrize("passes", [1, 3, None])  # one plain pass per feature, batches of three, all at once
def test_autograd_blocks_are_vmap_jacrev_however_the_cotangents_are_batched(batching, monkeypatch, passes):
    """The sum-over-the-batch backward passes, batched by is_grads_batched or one by one (and
    falling back to one by one where vmap cannot batch the custom backward), give torch's blocks:
    with 8 output features in batches of about 3, the refused first batch must not skip features of the next."""
    from gradcli.backends import autograd
    from gradcli.usercode.activations import saved_bytes

    path, module = batching
    x = x_of((6, 2, 3, 5))
    model = module.Net().double().eval()
    measured = saved_bytes(torch, lambda: model(torch.tensor(x).requires_grad_()))[1]
    monkeypatch.setattr(autograd, "CACHE_BYTES", 2**40 if passes is None else passes * measured)
    full = torch.autograd.functional.jacobian(model, torch.tensor(x)).numpy()  # (6, 2, 4, 6, 2, 3, 5)
    expected = full.reshape(6, 8, 6, 30)[np.arange(6), :, np.arange(6)]
    assert np.abs(full.reshape(6, 8, 6, 30)).sum() == pytest.approx(np.abs(expected).sum())  # samples apart
    res = gradcli.jacobian(f"{path}:net", input=x, layout="blocks", backend="autograd")
    assert res.value.shape == (6, 2, 4, 2, 3, 5)  # (B, *out, *in), as vmap(jacrev) gives
    np.testing.assert_allclose(res.value.reshape(6, 8, 30), expected, atol=1e-14, rtol=1e-13)


@pytest.mark.parametrize("name", ["constant", "detached"])
def test_an_output_outside_the_graph_has_torchs_zero_derivative(batching, name):
    """No grad_fn on the output: blocks (checked or not), layout auto and the vjp are
    torch.func's zeros, where torch.autograd.grad raised 'element 0 of tensors does not require grad'."""
    path, module = batching
    x = x_of((3, 3))
    expected = torch.func.jacrev(getattr(module, name))(torch.tensor(x)).numpy()  # all zeros
    for extra in ({"layout": "blocks"}, {"layout": "blocks", "verify_blocks": False}, {}):
        res = gradcli.jacobian(f"{path}:{name}", input=x, backend="autograd", **extra)
        assert res.shape == (3, expected.shape[1], 3), res.notes
        np.testing.assert_array_equal(res.value, expected[np.arange(3), :, np.arange(3)])
    doc = run_json("vjp", f"{path}:{name}", "-x", "randn:3,3", "-b", "autograd")
    assert np.array_equal(doc["value"], np.zeros((3, 3)))


def test_blocks_check_falls_back_to_the_whole_batch_for_a_fixed_batch_model(batching):
    path, module = batching
    x = x_of((5, 4))
    expected = torch.func.jacrev(module.fixed)(torch.tensor(x)).numpy()  # (5, 4, 5, 4)
    res = gradcli.jacobian(f"{path}:fixed", input=x, layout="blocks", backend="autograd")
    np.testing.assert_allclose(res.value, expected[np.arange(5), :, np.arange(5)], atol=1e-14)
    assert any("checked from samples 0, 2 and 4" in n for n in res.notes), res.notes


def test_blocks_check_sees_an_interaction_along_the_batch(batching):
    path, _ = batching
    refused(run("jacobian", f"{path}:rolled", "-x", "randn:7,3", "--layout", "blocks"), 2,
            "samples interact", "cross-sample derivative")


@pytest.mark.parametrize("name", ["rolled_by_two", "interior"])
def test_blocks_check_sees_an_interaction_that_the_first_and_last_sample_hide(batching, name):
    """torch.roll(x, 2, 0) (sample i reads sample i - 2), and a mean over the samples between the
    first and the last: the first and last samples alone would not interact. The middle sample is
    checked too, and the small batch is trusted only when its outputs are the whole batch's (else
    the check runs on the whole batch): blocks are refused, and layout auto gives torch's full
    Jacobian."""
    path, module = batching
    refused(run("jacobian", f"{path}:{name}", "-x", "randn:7,3", "--layout", "blocks"), 2,
            "samples interact", "cross-sample derivative", "use --layout full for the whole Jacobian")
    x = x_of((7, 3))
    res = gradcli.jacobian(f"{path}:{name}", input=x, backend="autograd")
    expected = torch.autograd.functional.jacobian(getattr(module, name), torch.tensor(x)).numpy()
    assert res.shape == (7, 3, 7, 3), res.notes
    np.testing.assert_allclose(res.value, expected, atol=1e-14)


@pytest.mark.parametrize("rows", ["0,6", "0:3"])
def test_rows_refuse_samples_that_interact_through_no_argument(batching, rows):
    """--rows on torch.roll(x, 2, 0): the selected rows alone are another function (their outputs
    differ from the whole batch's), though no argument but the input is sliced: exit 2, not its Jacobian."""
    path, _ = batching
    result = run("jacobian", f"{path}:rolled_by_two", "-x", "randn:7,3", "--rows", rows)
    refused(result, 2, "--rows", "samples interact")
    assert result.stdout == ""


# --- 4. per-sample gradients and norms ------------------------------------------------

LOSSES = '''
import torch
from torch import nn


class Mlp(nn.Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        torch.manual_seed(4)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        self.reduction = reduction

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.net(x), y, reduction=self.reduction)


class Conv(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.fc(torch.tanh(self.conv(x)).flatten(1)), y)


class Normed(nn.Module):
    """A LayerNorm's parameters: no activation shortcut, the definition in chunks."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.fc = nn.Linear(6, 4)
        self.norm = nn.LayerNorm(4)

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.norm(self.fc(x)), y)


class Coupled(nn.Module):
    """The batch loss is not a sum of per-sample losses: the definition decides."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(7)
        self.fc = nn.Linear(6, 4)

    def forward(self, x, y):
        z = self.fc(x)
        return ((z - z.mean(0)) ** 2).sum() + nn.functional.cross_entropy(z, y)


class TrainBn(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.bn(self.fc(x)), y)


class Seq(nn.Module):
    """Linear layers on a sequence (B, T, F): T positions per sample, the batched-product shortcut."""

    def __init__(self, reduction="mean"):
        super().__init__()
        torch.manual_seed(8)
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 4, bias=False)
        self.reduction = reduction

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.fc2(torch.tanh(self.fc1(x))).mean(1), y, reduction=self.reduction)


class OffMean(Mlp):
    """The sum over B + 1: l_b = ce_b / 2 on a batch of one, so L = 2 / (B + 1) * sum_b l_b, a constant
    the check does not accept (one fitted to the value would pass any loss)."""

    def forward(self, x, y):
        return nn.functional.cross_entropy(self.net(x), y, reduction="sum") / (x.shape[0] + 1)


class SoftMax(Mlp):
    """A soft maximum of the per-sample losses: no constant c makes it c * sum_b l_b."""

    def forward(self, x, y):
        return torch.logsumexp(nn.functional.cross_entropy(self.net(x), y, reduction="none"), 0)


class HiddenCoupling(nn.Module):
    """Samples coupled without changing any value: z_b + z_b * (z_{b-1} - detached z_{b-1}) is z_b, but
    dL/dz_{b-1} gains a term in z_b; a batch of one couples each sample with itself instead. Either
    behind Linear layers (the shortcut) or a LayerNorm (the definition, parameters norm.*)."""

    def __init__(self, before_norm=False):
        super().__init__()
        torch.manual_seed(9)
        self.norm = nn.LayerNorm(6)
        self.fc1 = nn.Linear(6, 5)
        self.fc2 = nn.Linear(5, 4)
        self.before_norm = before_norm

    def couple(self, z):
        r = z.roll(1, 0)
        return z + z * (r - r.detach())

    def forward(self, x, y):
        z = self.norm(x)
        z = self.couple(z) if self.before_norm else z
        z = torch.tanh(self.fc1(z))
        z = z if self.before_norm else self.couple(z)
        return nn.functional.cross_entropy(self.fc2(z), y)


mlp = Mlp()
mlp_sum = Mlp("sum")
hidden_coupling = HiddenCoupling()
hidden_coupling_norm = HiddenCoupling(before_norm=True)
seq = Seq()
seq_sum = Seq("sum")
off_mean = OffMean()
softmax_of_losses = SoftMax()
conv = Conv()
normed = Normed()
coupled = Coupled()
train_bn = TrainBn()
'''


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    return user_file(tmp_path_factory, "losses", LOSSES)


def vmap_grad(model, x, y, dtype=torch.float64):
    """The definition: torch.func.vmap(grad(functional_call)) on batches of one."""
    model = model.to(dtype)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p, xb, yb):
        return torch.func.functional_call(model, p, (xb[None], yb[None]))

    grads = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, torch.tensor(x, dtype=dtype),
                                                                         torch.tensor(y))
    return {k: g.detach().numpy() for k, g in grads.items()}


def norms_of(grads):
    return np.sqrt(sum((g.reshape(g.shape[0], -1) ** 2).sum(1) for g in grads.values()))


CASES = [("mlp", (7, 6), "layer"), ("mlp_sum", (7, 6), "layer"), ("conv", (5, 2, 6, 6), "layer"),
         ("normed", (6, 6), "vmap"), ("seq", (5, 3, 5), "layer"), ("seq_sum", (5, 3, 5), "layer")]


@pytest.mark.parametrize("name, shape, method", CASES)
def test_per_sample_gradients_and_norms_equal_vmap_grad(losses, name, shape, method):
    path, module = losses
    x = x_of(shape, seed=3)
    y = np.arange(shape[0]) % 4
    expected = vmap_grad(getattr(module, name), x, y)
    res = gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*")
    assert set(res.grads) == set(expected) and res.wrt == tuple(f"param:{k}" for k in expected)
    for k, g in expected.items():
        assert res.grads[k].shape == (shape[0],) + res.shapes[k]
        np.testing.assert_allclose(res.grads[k], g, atol=1e-12, rtol=1e-10)
    assert ("vmap(grad" in res.method) == (method == "vmap")
    norms = gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*", norms=True, top=2)
    assert norms.grads is None and ("vmap(grad" in norms.method) == (method == "vmap")
    if name == "normed":  # the Linear layer by its activations, the LayerNorm by the definition
        assert "for fc.weight, fc.bias" in norms.method and "for norm.weight, norm.bias" in norms.method
    np.testing.assert_allclose(norms.norms, norms_of(expected), atol=1e-12, rtol=1e-10)
    assert [i for i, _ in norms.top] == list(np.argsort(-norms_of(expected), kind="stable")[:2])


def test_integer_valued_input_to_a_linear_model_under_wrt_param(losses):
    """An integer --input that is not differentiated stays integer (token ids); a Linear model
    refuses it (Long @ Double), so it is converted, with a note, and the gradients are torch's on
    the same values as floats (grad from the library and the CLI, --per-sample); it exited 3."""
    path, module = losses
    x = (np.arange(42).reshape(7, 6) % 5).astype(np.int64)
    y = np.arange(7) % 4
    expected = vmap_grad(module.mlp, x.astype(np.float64), y)
    model = module.mlp.double()
    loss = model(torch.tensor(x, dtype=torch.float64), torch.tensor(y))
    whole = torch.autograd.grad(loss, list(model.parameters()))
    res = gradcli.grad(f"{path}:mlp", input=x, target=y, wrt="param:net.0.weight")
    np.testing.assert_allclose(res.value, whole[0].numpy(), atol=1e-14)
    assert any("converted to float64" in n for n in res.notes), res.notes
    per = gradcli.per_sample_grad(f"{path}:mlp", input=x, target=y, wrt="param:*")
    for k, g in expected.items():
        np.testing.assert_allclose(per.grads[k], g, atol=1e-12, rtol=1e-10)
    doc = run_json("grad", f"{path}:mlp", "-x", json.dumps(x.tolist()), "-t", json.dumps(y.tolist()),
                   "--wrt", "param:net.2.bias")
    np.testing.assert_allclose(doc["value"], whole[3].numpy(), atol=1e-14)


def close_to(got, expected, dtype):
    """Equal up to a few hundred roundings of the dtype, relative to the largest entry."""
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(got, expected, rtol=300 * eps, atol=300 * eps * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("name, shape", [("mlp", (6, 6)), ("seq", (4, 3, 5)), ("conv", (3, 2, 6, 6))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_layer_shortcut_writes_each_gradient_in_the_working_dtype(losses, name, shape, dtype):
    """The shortcut's arrays (an outer product for one position, a batched product for several): the
    definition's values, in the working dtype, C-ordered, read-only, shaped (B, *param_shape)."""
    path, module = losses
    x, y = x_of(shape, seed=4), np.arange(shape[0]) % 4
    expected = vmap_grad(getattr(module, name), x, y, dtype=torch.float32 if dtype == np.float32 else torch.float64)
    res = gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*", dtype=np.dtype(dtype).name)
    assert "vmap(grad" not in res.method
    for k, g in expected.items():
        got = res.grads[k]
        assert got.dtype == dtype and got.shape == g.shape and got.flags.c_contiguous and not got.flags.writeable
        close_to(got, g, dtype)
    close_to(res.norms, norms_of(expected), dtype)


@given(name=st.sampled_from(["mlp", "mlp_sum", "seq", "seq_sum"]), batch=st.integers(1, 6),
       positions=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_layer_shortcut_is_the_definition_for_any_batch_positions_and_reduction(losses, name, batch, positions, seed):
    """Property: whatever the batch size (1 included: then a mean is a sum), the sequence length and
    the reduction, the shortcut's gradients and norms are vmap(grad(functional_call))'s."""
    path, module = losses
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 6) if name.startswith("mlp") else (batch, positions, 5))
    y = rng.integers(0, 4, batch)
    expected = vmap_grad(getattr(module, name), x, y)
    res = gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*")
    assert "vmap(grad" not in res.method
    for k, g in expected.items():
        close_to(res.grads[k], g, np.float64)
    close_to(res.norms, norms_of(expected), np.float64)


@pytest.mark.parametrize("name", ["mlp", "seq"])
def test_per_sample_gradients_are_the_same_for_a_mean_and_a_sum(losses, name):
    """On a batch of one a mean is the sum, so each sample's gradient does not depend on the reduction,
    although the batch gradients differ by the factor B (the shortcut divides it out)."""
    path, module = losses
    shape = (6, 6) if name == "mlp" else (6, 3, 5)
    x, y = x_of(shape, seed=9), np.arange(shape[0]) % 4
    mean = gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*")
    summed = gradcli.per_sample_grad(f"{path}:{name}_sum", input=x, target=y, wrt="param:*")
    expected = vmap_grad(getattr(module, name), x, y)
    for k, g in expected.items():
        close_to(mean.grads[k], g, np.float64)
        close_to(summed.grads[k], g, np.float64)


@pytest.mark.parametrize("name, words", [("off_mean", "sum to"), ("softmax_of_losses", "sum to"),
                                         ("coupled", "sum to"), ("hidden_coupling", "samples interact"),
                                         ("hidden_coupling_norm", "param:norm.")])
def test_samples_that_interact_are_refused_unless_unverified(losses, name, words):
    """A sum over B + 1 (a constant other than 1 and 1/B), a soft maximum of the per-sample losses, a
    coupling through the batch mean (the values show these), and couplings the values do not show: one
    the layer shortcut's premise catches (samples 0 and B-1 alone), one behind a LayerNorm that only the
    definition's sum check catches. Each is refused (exit 2 naming it); --no-verify-blocks gives each
    batch of one's gradient, the definition, and says it did not check."""
    path, module = losses
    x, y = x_of((5, 6), seed=11), np.arange(5) % 4
    for norms in (False, True):
        with pytest.raises(gradcli.UsageError, match="per_sample: ") as err:
            gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*", norms=norms)
        assert words in str(err.value) and "--no-verify-blocks" in str(err.value)
    expected = vmap_grad(getattr(module, name), x, y)
    for norms in (False, True):
        res = gradcli.per_sample_grad(f"{path}:{name}", input=x, target=y, wrt="param:*", norms=norms,
                                      verify_blocks=False)
        assert any("independence not checked (--no-verify-blocks)" in n for n in res.notes), res.notes
        close_to(res.norms, norms_of(expected), np.float64)
        if not norms:
            for k, g in expected.items():
                close_to(res.grads[k], g, np.float64)
    refused(run("grad", f"{path}:{name}", "-x", json.dumps(x.tolist()), "-t", json.dumps(y.tolist()),
                "--per-sample", "--wrt", "param:*"), 2, words)
    doc = run_json("grad", f"{path}:{name}", "-x", json.dumps(x.tolist()), "-t", json.dumps(y.tolist()),
                   "--per-sample", "--wrt", "param:*", "--no-verify-blocks")
    for entry in doc["results"]:
        np.testing.assert_allclose(np.array(entry["value"]), expected[entry["wrt"][6:]], atol=1e-12)


def test_the_layer_shortcut_is_refused_exactly_where_its_premise_fails(losses):
    """hidden_coupling couples after fc1: fc1's output gradient in the batch is not a batch of one's, so
    its shortcut would be wrong and is refused, naming the layer. hidden_coupling_norm couples in front
    of fc1: fc1's input differs by nothing in value, so the shortcut for fc1/fc2 alone is the definition
    (their a_b and e_b are a batch of one's), and is given."""
    path, module = losses
    x, y = x_of((5, 6), seed=12), np.arange(5) % 4
    for norms in (False, True):
        with pytest.raises(gradcli.UsageError, match="layer fc1's output gradient"):
            gradcli.per_sample_grad(f"{path}:hidden_coupling", input=x, target=y, wrt="param:fc*", norms=norms)
    expected = vmap_grad(module.hidden_coupling_norm, x, y)
    res = gradcli.per_sample_grad(f"{path}:hidden_coupling_norm", input=x, target=y, wrt="param:fc*")
    assert "vmap(grad" not in res.method
    for k in ("fc1.weight", "fc2.bias"):
        close_to(res.grads[k], expected[k], np.float64)


def test_per_sample_cli_globs_and_several_wrt(losses):
    path, module = losses
    x, y = x_of((5, 2, 6, 6), seed=2), [0, 1, 2, 3, 0]
    expected = vmap_grad(module.conv, x, np.array(y))
    doc = run_json("grad", f"{path}:conv", "-x", json.dumps(x.tolist()), "-t", json.dumps(y), "--per-sample",
                   "--wrt", "param:conv.*,param:fc.bias")
    assert doc["wrt"] == ["param:conv.weight", "param:conv.bias", "param:fc.bias"]
    for entry in doc["results"]:
        np.testing.assert_allclose(np.array(entry["value"]), expected[entry["wrt"][6:]], atol=1e-12)
    want = norms_of({k: expected[k] for k in ("conv.weight", "conv.bias", "fc.bias")})
    norms = run_json("grad", f"{path}:conv", "-x", json.dumps(x.tolist()), "-t", json.dumps(y), "--per-sample",
                     "--norms", "--wrt", "param:conv.*,param:fc.bias", "--top", "1")
    np.testing.assert_allclose(np.array(norms["value"]), want, atol=1e-12)
    assert norms["top"] == [{"sample": int(np.argmax(want)), "norm": pytest.approx(want.max(), rel=1e-12)}]


@pytest.mark.parametrize("args, words", [
    (["train_bn", "--per-sample", "--wrt", "param:*"], ["bn (BatchNorm1d)", ".eval()"]),
    (["mlp", "--norms", "--wrt", "param:*"], ["add --per-sample"]),
    (["mlp", "--per-sample", "--wrt", "input"], ["param:NAME"]),
    (["mlp", "--per-sample", "--wrt", "param:nothing.*"], ["no parameter matches", "net.0.weight"]),
    (["mlp", "--per-sample", "--wrt", "param:*", "--max-memory", "1KiB"], ["--norms"]),
])
def test_per_sample_refusals(losses, args, words):
    path, _ = losses
    name, *rest = args
    refused(run("grad", f"{path}:{name}", "-x", "randn:4,6", "-t", "[0, 1, 2, 3]", *rest), 2, *words)


# --- 5. discoverable -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["jacobian", "grad", "vjp", "jvp", "check"])
def test_help_names_every_function_form_with_a_user_code_example(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    text = " ".join(result.stdout.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())  # help panels' borders
    assert result.exit_code == 0
    for form in ("PATH.py:NAME", "PATH.pt (TorchScript)", "PATH.pt2 (torch.export)", "--wrt param:NAME", "--arg NAME=ARRAY",
                 "Your model: gradcli "):
        assert form in text, (command, form)


def test_auto_picks_the_mode_with_fewer_passes_and_falls_back(tmp_path):
    (tmp_path / "dec.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        torch.manual_seed(0)
        decoder = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 12)).eval()


        class Counting(nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = decoder
                self.register_buffer("calls", torch.zeros(()))

            def forward(self, z):
                self.calls += 1
                return self.inner(z)


        counting = Counting()
    """))
    z = x_of((5, 3))
    spec = importlib.util.spec_from_file_location("dec", tmp_path / "dec.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.decoder.double()
    expected = torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))(torch.tensor(z)).detach().numpy()
    res = gradcli.jacobian(f"{tmp_path}/dec.py:decoder", input=z)  # F = 3 inputs, K = 12 outputs per sample
    assert res.backend.value == "forward" and res.layout.value == "blocks"
    np.testing.assert_allclose(res.value, expected, atol=1e-14)
    res = gradcli.jacobian(f"{tmp_path}/dec.py:counting", input=z)  # forward mode refuses the buffer update
    assert res.backend.value == "autograd" and any("forward mode could not run" in n for n in res.notes)
    np.testing.assert_allclose(res.value, expected, atol=1e-14)
    by_bias = gradcli.jacobian(f"{tmp_path}/dec.py:decoder", input=z, wrt="param:0.bias")  # 16 entries < 60 outputs
    assert by_bias.backend.value == "forward" and by_bias.shape == (5, 12, 16)
    expected = torch.func.jacrev(lambda b: torch.func.functional_call(model, {"0.bias": b}, (torch.tensor(z),)))(
        model[0].bias.detach()).detach().numpy()
    np.testing.assert_allclose(by_bias.value, expected, atol=1e-14)


def test_per_sample_output_files(losses, tmp_path):
    path, module = losses
    x, y = x_of((4, 6), seed=5), [0, 1, 2, 3]
    expected = vmap_grad(module.mlp, x, np.array(y))
    for suffix in (".npz", ".npy"):
        out = tmp_path / f"grads{suffix}"
        result = runner.invoke(app, ["grad", f"{path}:mlp", "-x", json.dumps(x.tolist()), "-t", json.dumps(y),
                                     "--per-sample", "--wrt", "param:net.2.*", "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        want = norms_of({k: expected[k] for k in ("net.2.weight", "net.2.bias")})
        if suffix == ".npz":
            saved = np.load(out)
            np.testing.assert_allclose(saved["param:net.2.weight"], expected["net.2.weight"], atol=1e-12)
            np.testing.assert_allclose(saved["norms"], want, atol=1e-12)
        else:
            np.testing.assert_allclose(np.load(out), want, atol=1e-12)


SEQ_FIRST = '''
import torch
from torch import nn


class SeqFirst(nn.Module):
    """(T, B, F) in, as nn.GRU and nn.Transformer take by default; mixes along time."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 4)
        self.mix = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x, y):
        h = torch.tanh(self.mix(torch.tanh(self.proj(x)).permute(1, 2, 0)))
        return nn.functional.cross_entropy(self.fc(h.mean(-1)), y)


class BatchFirst(SeqFirst):
    def forward(self, x, y):
        return super().forward(x.transpose(0, 1), y)


seq_first, batch_first = SeqFirst(), BatchFirst()
'''


def test_per_sample_gradients_say_when_dim_0_may_not_be_the_batch(tmp_path_factory):
    """A time-major input: 'sample' t is x[t:t+1], a time step, and the per-sample losses do
    not add up to the batch's loss, so it is refused, saying dim 0 may not be the batch; the same
    model batch-first decomposes and matches vmap(grad(functional_call))."""
    path, module = user_file(tmp_path_factory, "seqfirst", SEQ_FIRST)
    x, y = np.random.default_rng(0).standard_normal((5, 3, 3)), np.array([0, 1, 1])
    with pytest.raises(gradcli.UsageError, match="dim 0 of --input is not the batch"):
        gradcli.per_sample_grad(f"{path}:seq_first", input=x, target=y, wrt="param:*")
    res = gradcli.per_sample_grad(f"{path}:batch_first", input=x.transpose(1, 0, 2), target=y, wrt="param:fc.weight")
    assert not any("dim 0" in n for n in res.notes)
    net = module.batch_first.double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    per = torch.func.vmap(torch.func.grad(lambda p, xb, yb: torch.func.functional_call(net, p, (xb[None], yb[None]))),
                          in_dims=(None, 0, 0))(params, torch.tensor(x.transpose(1, 0, 2)), torch.tensor(y))
    np.testing.assert_allclose(res.grads["fc.weight"], per["fc.weight"].numpy(), rtol=0, atol=EPS ** 0.6)


LSTM_LOSS = '''
import torch
from torch import nn


class LstmLoss(nn.Module):
    """An LSTM classifier (batch first): torch.func's vmap has no batching rule for aten::lstm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.rnn = nn.LSTM(3, 5, num_layers=2, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x, y):
        out, _ = self.rnn(x)
        return nn.functional.cross_entropy(self.fc(out[:, -1]), y)


loss = LstmLoss()
'''


def test_per_sample_gradients_of_code_vmap_cannot_batch_loop_over_samples(tmp_path_factory):
    """An LSTM: vmap(grad) fails inside torch (it exited 3, 'your code raised'), so the definition
    runs as a loop of classic backward passes on batches of one, checked like the vmapped one;
    every parameter equals torch's own loop, with and without --norms."""
    path, module = user_file(tmp_path_factory, "lstm", LSTM_LOSS)
    x, y = np.random.default_rng(2).standard_normal((4, 3, 3)), np.array([0, 1, 1, 0])
    net = module.loss.double()
    params = dict(net.named_parameters())
    expected = {n: [] for n in params}
    for i in range(4):
        one = net(torch.tensor(x[i:i + 1]), torch.tensor(y[i:i + 1]))
        for n, g in zip(params, torch.autograd.grad(one, list(params.values()))):
            expected[n].append(g.detach().numpy())
    expected = {n: np.stack(v) for n, v in expected.items()}
    res = gradcli.per_sample_grad(f"{path}:loss", input=x, target=y, wrt="param:*")
    assert "loop of backward passes on batches of one" in res.method
    for n, g in expected.items():
        close_to(res.grads[n], g, np.float64)
    norms = gradcli.per_sample_grad(f"{path}:loss", input=x, target=y, wrt="param:*", norms=True)
    assert "by a loop over samples for rnn." in norms.method, norms.method
    close_to(norms.norms, norms_of(expected), np.float64)
