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
from typer.testing import CliRunner

import gradcli
from gradcli.api import solve
from gradcli.problem import build_problem
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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    (folder / "models.py").write_text(textwrap.dedent(MODELS))
    spec = importlib.util.spec_from_file_location("per_sample_models", folder / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return folder / "models.py", module


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
    refused(run("jacobian", f"{path}:two", "-x", "randn:4,4"), 2, "--target", "second argument (t)")
    refused(run("jacobian", "softmax", "-x", "randn:4,4", "--arg", "mask=ones:4"), 2, "only user code")


def test_functions_shows_the_signature_and_mapping(models):
    path, _ = models
    result = runner.invoke(app, ["functions", f"{path}:two", "--json"])
    doc = json.loads(result.stdout)["functions"][0]
    assert doc["signature"] == "(x, t, mask=None)"
    assert doc["mapping"] == {"-x/--input": "x", "-t/--target": "t", "--arg mask=ARRAY": "mask"}


def test_layout_auto_is_full_with_a_reason_when_the_output_drops_the_batch(tmp_path):
    (tmp_path / "f.py").write_text("def f(x):\n    return (x ** 2).sum(0)\n")
    doc = run_json("jacobian", f"{tmp_path}/f.py:f", "-x", "randn:3,4")
    assert doc["layout"] == "full" and doc["shape"] == [4, 3, 4]
    assert any("does not keep the input's batch dim" in n for n in doc["notes"])
