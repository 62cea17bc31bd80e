"""User code: functions and modules from files, TorchScript and torch.export
programs, per-sample Jacobians, module parameters, and the user's errors."""

from __future__ import annotations

import importlib.util
import json
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import gradcli
from gradcli.cli import app

runner = CliRunner()

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


net = Net()


def make():
    return Net()


class Loss(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def forward(self, input, target):
        return nn.functional.cross_entropy(self.net(input), target)


loss = Loss()


def custom_loss(input, target):
    return ((input.softmax(-1) - nn.functional.one_hot(target, input.shape[-1])) ** 2).sum()


class Trainable(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(4)

    def forward(self, x):
        return self.bn(x)


def broken(x):
    return x.reshape(7, 7)


not_callable = 3
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "net.py").write_text(textwrap.dedent(NET))
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4))
    np.save(tmp_path / "x.npy", x)
    return tmp_path, x


def reference_blocks(tmp_path, x):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ref_net", tmp_path / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Net().double()
    per_sample = torch.func.vmap(torch.func.jacrev(lambda s: model(s[None])[0]))
    return model, per_sample(torch.tensor(x)).detach().numpy()


def run_json(*args):
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("backend, tolerance", [("autograd", 1e-10), ("forward", 1e-10), ("fd", 1e-6)])
@pytest.mark.parametrize("name", ["net", "make"])
def test_story3_per_sample_blocks_equal_vmap_jacrev(files, backend, tolerance, name):
    tmp_path, x = files
    _, expected = reference_blocks(tmp_path, x)
    doc = run_json("jacobian", f"{tmp_path}/net.py:{name}", "-x", str(tmp_path / "x.npy"), "--layout", "blocks", "-b", backend)
    assert doc["shape"] == [3, 5, 2, 4, 4] and doc["backend"] == backend and doc["layout"] == "blocks"
    np.testing.assert_allclose(np.array(doc["value"]), expected, atol=tolerance, rtol=tolerance)


def test_torchscript_and_export_give_the_same_jacobian(files):
    tmp_path, x = files
    model, expected = reference_blocks(tmp_path, x)
    model.eval()
    torch.jit.save(torch.jit.script(model), tmp_path / "net.pt")
    torch.export.save(torch.export.export(model, (torch.tensor(x),)), tmp_path / "net.pt2")
    python = run_json("jacobian", f"{tmp_path}/net.py:net", "-x", str(tmp_path / "x.npy"), "--layout", "full")
    for path in ("net.pt", "net.pt2"):
        for layout in ("full", "blocks"):
            doc = run_json("jacobian", str(tmp_path / path), "-x", str(tmp_path / "x.npy"), "--layout", layout)
            want = python["value"] if layout == "full" else expected
            np.testing.assert_allclose(np.array(doc["value"]), np.array(want), atol=1e-10, rtol=1e-10)


def test_wrt_param_equals_what_backward_accumulates(files):
    tmp_path, x = files
    y = [1, 4, 0]
    import importlib.util

    spec = importlib.util.spec_from_file_location("ref_net2", tmp_path / "net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Loss().double()
    model(torch.tensor(x), torch.tensor(y)).backward()
    for name in ("net.fc.weight", "net.conv.bias"):
        doc = run_json("grad", f"{tmp_path}/net.py:loss", "-x", str(tmp_path / "x.npy"), "-t", json.dumps(y),
                       "--wrt", f"param:{name}")
        expected = dict(model.named_parameters())[name].grad.numpy()
        assert doc["wrt_shape"] == list(expected.shape)
        np.testing.assert_allclose(np.array(doc["value"]), expected, atol=1e-12, rtol=1e-10)
    fd = run_json("grad", f"{tmp_path}/net.py:loss", "-x", str(tmp_path / "x.npy"), "-t", json.dumps(y),
                  "--wrt", "param:net.fc.bias", "-b", "fd")
    np.testing.assert_allclose(np.array(fd["value"]), model.net.fc.bias.grad.numpy(), atol=1e-8)


def test_custom_loss_gets_integer_targets_as_a_keyword(files):
    tmp_path, _ = files
    z, y = np.random.default_rng(1).standard_normal((4, 3)), [0, 2, 1, 1]
    xt = torch.tensor(z, requires_grad=True)
    ((xt.softmax(-1) - torch.nn.functional.one_hot(torch.tensor(y), 3)) ** 2).sum().backward()
    for backend in ("autograd", "forward", "fd"):
        doc = run_json("grad", f"{tmp_path}/net.py:custom_loss", "-x", json.dumps(z.tolist()), "-t", json.dumps(y), "-b", backend)
        np.testing.assert_allclose(np.array(doc["value"]), xt.grad.numpy(), atol=1e-7 if backend == "fd" else 1e-12)


def test_per_sample_blocks_of_training_batch_norm_are_refused(files):
    tmp_path, _ = files
    for verify in ("--verify-blocks", "--no-verify-blocks"):
        result = runner.invoke(app, ["jacobian", f"{tmp_path}/net.py:Trainable", "-x", "randn:4,4", "--layout", "blocks",
                                     verify, "--json"])
        assert result.exit_code == 2 and result.stdout == ""
        assert "bn (BatchNorm1d)" in result.stderr and ".eval()" in result.stderr
    ok = run_json("jacobian", f"{tmp_path}/net.py:net", "-x", str(tmp_path / "x.npy"), "--layout", "blocks", "--verify-blocks")
    assert any("do not interact" in n for n in ok["notes"])


def test_functions_lists_module_parameters(files):
    tmp_path, _ = files
    doc = run_json("functions", f"{tmp_path}/net.py:net")
    assert doc["functions"][0]["parameters"] == {"conv.weight": [3, 2, 3, 3], "conv.bias": [3], "fc.weight": [5, 48],
                                                 "fc.bias": [5]}


@pytest.mark.parametrize("function, code, message", [
    ("missing.py:net", 2, "file not found"),
    ("{tmp}/net.py:nosuch", 2, "has no 'nosuch'"),
    ("{tmp}/net.py:not_callable", 2, "not a function or module"),
    ("{tmp}/net.py:broken", 3, r"RuntimeError: shape '\[7, 7\]' is invalid.*net\.py:\d+: return x\.reshape\(7, 7\)"),
])
def test_user_code_errors(files, function, code, message):
    import re

    tmp_path, _ = files
    result = runner.invoke(app, ["jacobian", function.format(tmp=tmp_path), "-x", "randn:3"])
    assert result.exit_code == code and result.stdout == ""
    assert re.search(message, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_analytic_has_no_closed_form_for_user_code(files):
    tmp_path, _ = files
    result = runner.invoke(app, ["jacobian", f"{tmp_path}/net.py:net", "-x", "randn:1,2,4,4", "-b", "analytic"])
    assert result.exit_code == 3 and "no closed form" in result.stderr


def test_check_compares_per_sample_blocks(files):
    tmp_path, _ = files
    doc = run_json("check", f"{tmp_path}/net.py:net", "-x", str(tmp_path / "x.npy"), "--layout", "blocks")
    assert doc["ok"] and doc["layout"] == "blocks" and doc["shape"] == [3, 5, 2, 4, 4]
    assert {b["name"] for b in doc["backends"]} == {"forward", "fd"}


# --- fd on user code within --max-memory ----------------------------------------------

WIDE = '''
import torch
from torch import nn

torch.manual_seed(0)
net = nn.Sequential(nn.Linear(6, 32768), nn.Tanh(), nn.Linear(32768, 3)).eval()
'''


@pytest.mark.parametrize("extra", [[], ["--layout", "full"], ["--wrt", "param:2.bias"]])
def test_fd_on_user_code_sizes_its_evaluations_to_max_memory(tmp_path, extra):
    """One evaluation of the wide net at a batch of 4 saves about 3-4 MiB of
    activations: under --max-memory 2MiB not even one of fd's points fits (exit 2,
    the limit named); under 64MiB fd gives autograd's values."""
    (tmp_path / "wide.py").write_text(WIDE)
    args = ["jacobian", f"{tmp_path}/wide.py:net", "-x", "randn:4,6", *extra]
    tight = runner.invoke(app, [*args, "-b", "fd", "--max-memory", "2MiB"])
    assert tight.exit_code == 2 and tight.stdout == "", tight.stderr
    assert "--max-memory" in tight.stderr and "activations measured" in tight.stderr and "--rows" in tight.stderr
    assert len(tight.stderr.strip().splitlines()) <= 2 and "Traceback" not in tight.stderr
    fd = np.array(run_json(*args, "-b", "fd", "--max-memory", "64MiB")["value"])
    exact = np.array(run_json(*args, "-b", "autograd")["value"])
    np.testing.assert_allclose(fd, exact, atol=1e-8, rtol=1e-6)


# --- --rows with user code's --arg arrays -----------------------------------------------

MASKED = '''
import torch
from torch import nn


def masked(x, *, mask):
    return torch.tanh(x) * mask


def weighted(x, *, w):
    return torch.tanh(x) * w


torch.manual_seed(0)
batch_norm = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
'''


@pytest.fixture
def masked(tmp_path):
    (tmp_path / "masked.py").write_text(MASKED)
    x = np.random.default_rng(1).standard_normal((4, 4))
    np.save(tmp_path / "x.npy", x)
    return tmp_path, x


@pytest.mark.parametrize("rows, index", [("1:3", [1, 2]), ("0,3", [0, 3]), ("2", [2])])
def test_rows_slice_an_arg_whose_dim_0_is_the_batch(masked, rows, index):
    tmp_path, x = masked
    mask = (np.arange(16).reshape(4, 4) % 3 != 0).astype(float)
    doc = run_json("jacobian", f"{tmp_path}/masked.py:masked", "-x", str(tmp_path / "x.npy"),
                   "--arg", f"mask={json.dumps(mask.tolist())}", "--rows", rows, "--layout", "blocks")
    xs, ms = torch.tensor(x[index]), torch.tensor(mask[index])
    expected = torch.func.vmap(torch.func.jacrev(lambda s, m: torch.tanh(s) * m))(xs, ms).numpy()
    np.testing.assert_allclose(np.array(doc["value"]), expected, rtol=4 * np.finfo(float).eps, atol=0)
    np.testing.assert_allclose(np.array(doc["output"]), (torch.tanh(xs) * ms).numpy(), rtol=4 * np.finfo(float).eps)


@pytest.mark.parametrize("rows", ["1", "0,2"])
def test_rows_refuse_a_shared_arg_whose_dim_0_equals_the_batch_by_coincidence(masked, rows):
    """w (4,) weighs the 4 features of a batch of 4: sliced with the rows it is
    wrong (--rows 1: it broadcasts silently) or breaks the code (--rows 0,2).
    Exit 2 naming the array and the fix; as (1, 4) it is shared, and right."""
    tmp_path, x = masked
    w = [1.0, 2.0, 3.0, 4.0]
    args = ["jacobian", f"{tmp_path}/masked.py:weighted", "-x", str(tmp_path / "x.npy"), "--rows", rows]
    refused = runner.invoke(app, [*args, "--arg", f"w={json.dumps(w)}"])
    assert refused.exit_code == 2 and refused.stdout == "", refused.stderr
    assert "--arg w" in refused.stderr and "leading axis of size 1" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 2 and "Traceback" not in refused.stderr
    doc = run_json(*args, "--arg", f"w={json.dumps([w])}", "--layout", "blocks")
    index = [int(r) for r in rows.split(",")]
    expected = torch.func.vmap(torch.func.jacrev(lambda s: torch.tanh(s) * torch.tensor(w, dtype=s.dtype)))(
        torch.tensor(x[index])).numpy()
    np.testing.assert_allclose(np.array(doc["value"]), expected, rtol=4 * np.finfo(float).eps, atol=0)


def test_rows_of_a_model_whose_samples_interact_are_refused(masked):
    tmp_path, _ = masked
    result = runner.invoke(app, ["jacobian", f"{tmp_path}/masked.py:batch_norm", "-x", str(tmp_path / "x.npy"),
                                 "--rows", "1:3", "--layout", "full"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "--rows" in result.stderr and "BatchNorm1d" in result.stderr and ".eval()" in result.stderr


# --- integer arrays reach user code as integers ----------------------------------------

EMBEDDING = '''
import torch
from torch import nn


class Bag(nn.Module):
    """Token ids (B, T) -> mean of their embeddings -> logits; the loss with class targets."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, tokens, target):
        return nn.functional.cross_entropy(self.fc(torch.tanh(self.emb(tokens)).mean(1)), target)


bag = Bag()


def pick(x, *, idx):
    return x[idx] * 2
'''

TOKENS = [[1, 2, 3], [4, 5, 9], [2, 2, 7]]
LABELS = [0, 2, 1]


@pytest.fixture
def embedding(tmp_path):
    (tmp_path / "emb.py").write_text(EMBEDDING)
    spec = importlib.util.spec_from_file_location("emb_ref", tmp_path / "emb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tmp_path, module.Bag().double()


def test_token_ids_stay_integer_for_grad_and_check_wrt_parameters(embedding):
    tmp_path, model = embedding
    tokens, labels = torch.tensor(TOKENS), torch.tensor(LABELS)
    model(tokens, labels).backward()
    args = [f"{tmp_path}/emb.py:bag", "-x", json.dumps(TOKENS), "-t", json.dumps(LABELS), "--wrt", "param:*"]
    got = run_json("grad", *args)  # one result per parameter, shaped like its .grad
    assert [r["wrt"] for r in got["results"]] == [f"param:{n}" for n, _ in model.named_parameters()]
    for r, (_, p) in zip(got["results"], model.named_parameters()):
        np.testing.assert_allclose(np.array(r["value"]), p.grad.numpy(), rtol=16 * np.finfo(float).eps, atol=1e-15)
    report = run_json("check", *args)
    assert report["ok"] and [r["wrt"] for r in report["results"]] == ["param:emb.weight", "param:fc.weight",
                                                                       "param:fc.bias"]
    assert all({b["name"]: b["ok"] for b in r["backends"]} == {"forward": True, "fd": True} for r in report["results"])
    library = gradcli.check(f"{tmp_path}/emb.py:bag", input=np.array(TOKENS), target=np.array(LABELS), wrt="param:*")
    assert library.ok


def test_per_sample_gradients_of_an_embedding_model_equal_vmap_grad(embedding):
    tmp_path, model = embedding
    params = {n: p.detach() for n, p in model.named_parameters()}
    one = lambda theta, x, t: torch.func.functional_call(model, theta, (x[None], t[None]))  # noqa: E731
    expected = torch.func.vmap(torch.func.grad(one), in_dims=(None, 0, 0))(
        params, torch.tensor(TOKENS), torch.tensor(LABELS))
    doc = run_json("grad", f"{tmp_path}/emb.py:bag", "-x", json.dumps(TOKENS), "-t", json.dumps(LABELS),
                   "--wrt", "param:*", "--per-sample")
    got = {r["wrt"]: np.array(r["value"]) for r in doc["results"]}
    library = gradcli.per_sample_grad(f"{tmp_path}/emb.py:bag", input=np.array(TOKENS), target=np.array(LABELS))
    for name, value in expected.items():
        np.testing.assert_allclose(got[f"param:{name}"], value.numpy(), rtol=16 * np.finfo(float).eps, atol=1e-15)
        np.testing.assert_allclose(library.grads[name], value.numpy(), rtol=16 * np.finfo(float).eps,
                                   atol=1e-15)


def test_an_integer_arg_stays_integer(embedding):
    tmp_path, _ = embedding
    x = np.random.default_rng(2).standard_normal(5)
    doc = run_json("jacobian", f"{tmp_path}/emb.py:pick", "-x", json.dumps(x.tolist()), "--arg", "idx=[0, 3, 3]")
    expected = torch.func.jacrev(lambda s: s[torch.tensor([0, 3, 3])] * 2)(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(np.array(doc["value"]), expected)
    refused = runner.invoke(app, ["jacobian", f"{tmp_path}/emb.py:pick", "-x", "randn:5", "--arg", "idx=[0, 3]",
                                  "--wrt", "idx"])
    assert refused.exit_code == 2 and "--wrt idx" in refused.stderr and "--arg idx holds integers" in refused.stderr


def test_differentiating_token_ids_exits_2_naming_wrt(embedding):
    tmp_path, _ = embedding
    result = runner.invoke(app, ["grad", f"{tmp_path}/emb.py:bag", "-x", json.dumps(TOKENS), "-t", json.dumps(LABELS)])
    assert result.exit_code == 2 and result.stdout == ""
    assert "--wrt input" in result.stderr and "--wrt param:NAME" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and "Traceback" not in result.stderr


def test_fd_on_user_code_counts_its_own_arrays_against_max_memory(tmp_path):
    """fd holds, per entry of the blocks, a value, an error estimate and two flags
    beside the result: 64 x 256 x 256 entries are 104 MiB of them. Under
    --max-memory 64MiB (the 32 MiB result fits) the run used to go ahead, its
    evaluations sized to the whole limit, and peaked 231 MiB above its start;
    now it stops before any work, naming the fix."""
    (tmp_path / "square.py").write_text("import torch\n\ntorch.manual_seed(0)\n"
                                        "net = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh()).double()\n")
    result = runner.invoke(app, ["jacobian", f"{tmp_path}/square.py:net", "-x", "randn:64,256", "--layout", "blocks",
                                 "-b", "fd", "--max-memory", "64MiB", "--no-value", "--json"])
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert "--max-memory: fd's own arrays" in result.stderr and "104.0 MiB" in result.stderr
    assert "-b autograd" in result.stderr and len(result.stderr.strip().splitlines()) <= 2


def test_arg_fills_the_second_positional_parameter_by_name(tmp_path):
    """forward(self, x, key_padding_mask=None): --arg key_padding_mask fills the mask by
    name, as -t does by position (SPEC §2 "Your model as it is"); both at once is exit 2."""
    (tmp_path / "attn.py").write_text(textwrap.dedent('''
        import torch

        def attend(x, key_padding_mask=None):
            if key_padding_mask is not None:
                x = x.masked_fill(key_padding_mask.bool()[..., None], 0.0)
            return x.softmax(-1)
    '''))
    mask = [[0, 1], [0, 0]]
    by_name = run_json("jacobian", f"{tmp_path}/attn.py:attend", "-x", "randn:2,2,3",
                       "--arg", f"key_padding_mask={json.dumps(mask)}")
    by_position = run_json("jacobian", f"{tmp_path}/attn.py:attend", "-x", "randn:2,2,3", "-t", json.dumps(mask))
    assert np.all(np.array(by_name["output"])[0, 1] == 1 / 3)  # the masked position: softmax of zeros
    assert by_name["value"] == by_position["value"] and by_name["output"] == by_position["output"]
    both = runner.invoke(app, ["jacobian", f"{tmp_path}/attn.py:attend", "-x", "randn:2,2,3", "-t", json.dumps(mask),
                               "--arg", f"key_padding_mask={json.dumps(mask)}"])
    assert both.exit_code == 2 and not both.stdout
    assert "--arg key_padding_mask" in both.stderr and "-t/--target already fills" in both.stderr


@pytest.mark.parametrize("body, shown", [("return x * 2, x.sum()", ["--select 0 ([2, 3])", "--select 1 ([])"]),
                                         ("return {'logits': x * 2}", ["--select logits ([2, 3])"]),
                                         ("return (x > 0).long()", ["argmax"])])
def test_an_output_that_is_not_one_float_tensor_is_a_usage_error(tmp_path, body, shown):
    """A model returning (logits, aux), a dict, or integers does not fit FUNCTION: exit 2
    (it was exit 3, 'a backend could not run'), naming each tensor inside with the
    --select that picks it."""
    (tmp_path / "multi.py").write_text(f"def f(x):\n    {body}\n")
    result = runner.invoke(app, ["jacobian", f"{tmp_path}/multi.py:f", "-x", "randn:2,3"])
    assert result.exit_code == 2 and not result.stdout
    assert result.stderr.startswith("gradcli: error: FUNCTION:") and all(s in result.stderr for s in shown)


def test_forward_mode_keeps_no_autograd_graph(tmp_path):
    """A module's parameters require grad, so forward-mode tangents recorded an autograd graph
    and every vmap chunk's activations stayed alive until the end (the README's CNN: over 3 GB
    under --max-memory 20MB). Forward mode runs under no_grad: nothing is saved for a backward."""
    (tmp_path / "conv.py").write_text(textwrap.dedent('''
        import torch
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                                  torch.nn.Linear(4 * 8 * 8, 3))
    '''))
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        res = gradcli.jacobian(f"{tmp_path}/conv.py:net", input=x, backend="forward", verify_blocks=False)
        jvp = gradcli.jvp(f"{tmp_path}/conv.py:net", input=x, backend="forward", tangent=np.ones_like(x))
    assert sum(saved) == 0
    spec = importlib.util.spec_from_file_location("conv_ref", tmp_path / "conv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.net.double()
    full = torch.func.jacrev(net)(torch.tensor(x)).detach().numpy()
    blocks = np.stack([full[b, :, b] for b in range(2)])
    np.testing.assert_allclose(res.value, blocks, rtol=0, atol=np.finfo(np.float64).eps ** 0.6)
    np.testing.assert_allclose(jvp.value, np.tensordot(full, np.ones_like(x), axes=4), rtol=0, atol=1e-9)


def test_forward_mode_through_multihead_attention_in_eval_mode(tmp_path):
    """nn.MultiheadAttention in eval mode takes its fused fast path when grad is off (as
    forward mode runs), which has no forward-mode formula: gradcli switches the fast path
    off, so -b forward gives jacrev's blocks, a key padding mask (-t) included."""
    (tmp_path / "mha.py").write_text(textwrap.dedent('''
        import torch
        torch.manual_seed(0)
        attn = torch.nn.MultiheadAttention(4, 2, batch_first=True).double().eval()

        def net(x, key_padding_mask):
            return attn(x, x, x, key_padding_mask=key_padding_mask.bool())[0]
    '''))
    x, mask = np.random.default_rng(3).standard_normal((2, 3, 4)), np.array([[0, 0, 1], [0, 0, 0]])
    res = gradcli.jacobian(f"{tmp_path}/mha.py:net", input=x, target=mask, backend="forward")
    spec = importlib.util.spec_from_file_location("mha_ref", tmp_path / "mha.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    full = torch.func.jacrev(lambda t: module.net(t, torch.tensor(mask)))(torch.tensor(x)).detach().numpy()
    blocks = np.stack([full[b, :, :, b] for b in range(2)])
    np.testing.assert_allclose(res.value, blocks, rtol=0, atol=np.finfo(np.float64).eps ** 0.6)


@pytest.mark.parametrize("text, named", [
    ("Trying to use forward AD with aten::_native_multi_head_attention that does not support it",
     "no forward-mode formula for aten::_native_multi_head_attention;"),
    ("Batching rule not implemented for aten::lstm.input. We could not generate a fallback.",
     "no batching rule for aten::lstm.input in your code"),
])
def test_torch_refusals_name_the_whole_op(text, named):
    """The op in torch's refusal is named whole (the forward-mode one said 'for aten'), and a
    missing vmap batching rule is a torch.func refusal (it read as 'your code raised')."""
    from gradcli.backends.torchbase import torch_errors
    from gradcli.core.errors import BackendError

    with pytest.raises(BackendError) as err:
        with torch_errors("forward"):
            raise RuntimeError(text)
    assert named in str(err.value)


def test_code_that_turns_off_requires_grad_on_its_input_is_named_not_differentiated_as_zero(tmp_path):
    """x.requires_grad_(False) inside the code: torch's backward raises, gradcli gave a zero
    gradient with exit 0; now exit 3 naming the call."""
    (tmp_path / "off.py").write_text("def f(x):\n    x.requires_grad_(False)\n    return (x ** 2).sum()\n")
    for command in ("grad", "vjp"):
        result = runner.invoke(app, [command, f"{tmp_path}/off.py:f", "-x", "[1.0, 2.0]", "-b", "autograd"])
        assert result.exit_code == 3 and not result.stdout, result.output
        assert "requires_grad_(False)" in result.stderr


@pytest.mark.parametrize("entry", ["jacobian", "grad", "check", "health"])
@pytest.mark.parametrize("given", ["module", "lambda", "number"])
def test_the_library_refuses_an_object_for_the_function_naming_what_to_give(entry, given):
    """gradcli loads your code itself (fresh, seeded, in the working dtype): a module or function
    object given as the function was an AttributeError from deep inside; it is a UsageError that
    says what to give instead."""
    import torch

    import gradcli
    from gradcli.core.errors import UsageError

    obj = {"module": torch.nn.Linear(3, 1), "lambda": lambda x: x.sum(), "number": 3}[given]
    with pytest.raises(UsageError) as refused:
        getattr(gradcli, entry)(obj, input=np.ones((2, 3)))
    assert "PATH.py:NAME" in str(refused.value) and type(obj).__name__ in str(refused.value)
