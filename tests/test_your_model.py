"""Your model as it is (SPEC §2): Hugging Face models (tiny ViT, BERT, GPT-2
configs, no download) and plain torch modules, from the command line with no
wrapper file — ``--select``, ``--weights``, keyword arguments, ``--wrt
act:MODULE``, named results per parameter, and per-sample checks at the code's
working precision — each against torch itself."""

from __future__ import annotations

import io
import json
import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import transformers  # noqa: F401  (the test extra installs it: a missing one fails, never skips)

import gradcli
from gradcli.cli import app

runner = CliRunner()

# The tiny ViT, BERT and GPT-2 of the samples (transformers configs, nothing downloaded): vocabularies of 50.
HF = Path(__file__).resolve().parent.parent / "sample_inputs" / "hf_models.py"
TORCH = '''
import dataclasses

import torch
from torch import nn


class Tagger(nn.Module):
    """An LSTM over embeddings returning a tuple (scores, (h, c)); the mask is its second positional parameter."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(20, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, ids, mask=None):
        h, state = self.lstm(self.emb(ids))
        scores = self.head(h)
        if mask is not None:
            scores = scores * mask[..., None]
        return scores, state


class Heads(nn.Module):
    """A dict of two heads and an integer count."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.trunk = nn.Linear(4, 6)
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 2)

    def forward(self, x, weight=None):
        h = torch.tanh(self.trunk(x))
        if weight is not None:
            h = h * weight
        return {"a": self.a(h), "b": self.b(h), "count": torch.tensor(2)}


@dataclasses.dataclass
class Out:
    loss: torch.Tensor
    extra: torch.Tensor


def with_dataclass(x):
    return Out(loss=(x ** 2).sum(), extra=x * 3)


def loss_logits(x, labels=None):
    """(loss, logits, count) as many training steps return it: the loss is None without labels."""
    logits = x * 2
    loss = None if labels is None else ((logits - labels) ** 2).mean()
    return loss, logits, 3


class Scaled(nn.Module):
    """A forward with a required keyword-only argument."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.lin = nn.Linear(3, 2)

    def forward(self, x, *, scale, shift=None):
        return self.lin(x) * scale + (0 if shift is None else shift)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Wrapped(nn.Module):  # a Lightning module holds the network as self.model
    def __init__(self):
        super().__init__()
        self.model = CNN()


class Bag(nn.Module):
    """Embeddings, a layer, one number: cheap for check's full comparison."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.emb = nn.Embedding(20, 4)
        self.fc = nn.Linear(4, 2)

    def forward(self, ids):
        return torch.tanh(self.fc(self.emb(ids))).pow(2).sum()


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(torch.tanh(self.fc(x)))
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("yourmodel")
    (path / "hf.py").write_text(HF.read_text())
    (path / "nets.py").write_text(TORCH)
    (path / "tagloss.py").write_text(textwrap.dedent('''
        from nets import Tagger

        class Loss(Tagger):  # the tagger's scores, squared and summed: one number
            def forward(self, ids):
                return super().forward(ids)[0].pow(2).sum()
    '''))
    return path


def load(folder, name):
    """The model as the user's file builds it, for the torch reference."""
    import importlib.util

    file, _, attr = name.partition(":")
    spec = importlib.util.spec_from_file_location(f"ref_{file[:-3]}", folder / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = getattr(module, attr)
    return made() if not isinstance(made, torch.nn.Module) else made


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def run_json(*args):
    result = run(*args, "--json", "--no-timing")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def refused(result, *texts):
    assert result.exit_code == 2, result.stdout + result.stderr
    assert not result.stdout and "Traceback" not in result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr
    return result.stderr


IMAGES = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
IDS = np.random.default_rng(1).integers(1, 40, (3, 7))


@pytest.fixture(scope="module")
def arrays(folder):
    np.save(folder / "images.npy", IMAGES)
    np.save(folder / "ids.npy", IDS)
    np.save(folder / "tags.npy", np.random.default_rng(2).integers(0, 20, (3, 5)))
    np.save(folder / "mask.npy", (np.arange(15).reshape(3, 5) % 4 != 0).astype(np.float64))
    return folder


# --- 1. --select -------------------------------------------------------------------


def test_select_logits_of_a_vit_is_torchs(arrays):
    doc = run_json("vjp", arrays / "hf.py:vit", "-x", arrays / "images.npy", "--select", "logits")
    model = load(arrays, "hf.py:vit").double()
    x = torch.tensor(IMAGES, requires_grad=True)
    logits = model(pixel_values=x).logits
    (expected,) = torch.autograd.grad(logits.sum(), x)
    np.testing.assert_allclose(doc["output"], logits.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(doc["value"], expected.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, listed", [
    ("hf.py:vit", ["ImageClassifierOutput", "--select logits ([2, 3])"]),
    ("nets.py:Heads", ["dict", "--select a ([2, 3])", "--select b ([2, 2])", "--select count ([] int64)"]),
])
def test_a_return_of_several_tensors_is_refused_naming_each_and_its_select(arrays, name, listed):
    x = "images.npy" if name.startswith("hf") else "randn:2,4"
    refused(run("jacobian", arrays / name, "-x", arrays / x if x.endswith("npy") else x), "FUNCTION:", *listed)


def test_select_paths_into_a_tuple_and_a_dataclass(arrays):
    """--select 1.0 (the LSTM's h_n in (scores, (h_n, c_n))); a dataclass field by name."""
    stderr = refused(run("jacobian", arrays / "nets.py:Tagger", "-x", arrays / "tags.npy", "--wrt", "act:emb"),
                     "--select 0 ([3, 5, 3])", "--select 1.0 ([1, 3, 5])", "--select 1.1 ([1, 3, 5])")
    assert "tuple holding 3 tensors" in stderr
    doc = run_json("vjp", arrays / "nets.py:Tagger", "-x", arrays / "tags.npy", "--select", "1.0", "--wrt", "act:emb")
    model = load(arrays, "nets.py:Tagger").double()
    emb = model.emb(torch.tensor(np.load(arrays / "tags.npy"))).detach().requires_grad_(True)
    h_n = model.lstm(emb)[1][0]
    np.testing.assert_allclose(doc["value"], torch.autograd.grad(h_n.sum(), emb)[0].numpy(), rtol=1e-9, atol=1e-12)
    x = np.random.default_rng(3).standard_normal(4)
    doc = run_json("grad", arrays / "nets.py:with_dataclass", "-x", json.dumps(x.tolist()), "--select", "loss")
    np.testing.assert_allclose(doc["value"], 2 * x, rtol=1e-12)


def test_select_refusals_name_the_fix(arrays):
    refused(run("jacobian", arrays / "nets.py:Heads", "-x", "randn:2,4", "--select", "c"),
            "--select c:", "has no 'c'", "--select a ([2, 3])")
    refused(run("jacobian", arrays / "nets.py:CNN", "-x", "randn:1,1,6,6", "--select", "logits"),
            "returns one tensor [1, 2]", "drop --select")
    refused(run("jacobian", "softmax", "-x", "randn:2,3", "--select", "logits"), "--select: only user code")


def test_select_of_a_none_or_a_number_names_the_select_and_the_tensors(arrays):
    """A loss that is None without labels, or a count, is what --select picked, not what the code returned."""
    for sel, kind in (("0", "picks None"), ("2", "picks an int")):
        refused(run("jacobian", arrays / "nets.py:loss_logits", "-x", "randn:2,3", "--select", sel),
                f"--select {sel}:", kind, "--select 1 ([2, 3])")
    x, labels = np.random.default_rng(5).standard_normal((2, 2, 3))
    doc = run_json("grad", arrays / "nets.py:loss_logits", "-x", json.dumps(x.tolist()), "--arg",
                   f"labels={json.dumps(labels.tolist())}", "--select", "0")
    xt = torch.tensor(x, requires_grad=True)
    (expected,) = torch.autograd.grad(((2 * xt - torch.tensor(labels)) ** 2).mean(), xt)
    np.testing.assert_allclose(doc["value"], expected.numpy(), rtol=1e-12)


# --- 2. --weights ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoints(arrays):
    """Trained weights as a user has them: a ViT and a GPT-2 as .safetensors (save_model: GPT-2's tied lm_head
    written once), a CNN's state dict (.pt), and a Lightning-like checkpoint (.ckpt: state_dict under model.)."""
    from safetensors.torch import save_model

    folder = arrays
    torch.manual_seed(11)
    vit = load(folder, "hf.py:vit")
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.2 * torch.randn_like(p))
    save_model(vit, str(folder / "vit.safetensors"))
    save_model(load(folder, "hf.py:gpt2"), str(folder / "gpt2.safetensors"))
    wrapped = load(folder, "nets.py:Wrapped")
    with torch.no_grad():
        for p in wrapped.parameters():
            p.mul_(3.0)
    torch.save(wrapped.model.state_dict(), folder / "cnn.pt")
    torch.save({"epoch": 7, "state_dict": wrapped.state_dict(), "hyper_parameters": {"lr": 0.1}}, folder / "cnn.ckpt")
    return folder, vit, wrapped.model


def test_weights_from_safetensors_are_the_ones_torch_computes_with(checkpoints):
    folder, vit, _ = checkpoints
    doc = run_json("vjp", folder / "hf.py:vit", "-x", folder / "images.npy", "--select", "logits",
                   "--weights", folder / "vit.safetensors")
    x = torch.tensor(IMAGES, requires_grad=True)
    logits = vit.double()(pixel_values=x).logits
    np.testing.assert_allclose(doc["output"], logits.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(doc["value"], torch.autograd.grad(logits.sum(), x)[0].numpy(), rtol=1e-9, atol=1e-12)
    assert any("40 tensors loaded from" in n for n in doc["notes"])
    fresh = run_json("vjp", folder / "hf.py:vit", "-x", folder / "images.npy", "--select", "logits")
    assert not np.allclose(fresh["output"], doc["output"])  # the weights changed the model


@pytest.mark.parametrize("spec, prefix", [("cnn.pt", None), ("cnn.ckpt:state_dict", "model.")])
def test_weights_from_a_state_dict_and_a_lightning_checkpoint(checkpoints, spec, prefix):
    folder, _, cnn = checkpoints
    x = np.random.default_rng(4).standard_normal((2, 1, 6, 6))
    args = ["--weights", folder / spec] + (["--weights-prefix", prefix] if prefix else [])
    doc = run_json("jacobian", folder / "nets.py:CNN", "-x", json.dumps(x.tolist()), *args)
    expected = cnn.double()(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(doc["output"], expected, rtol=1e-12)


def test_tied_weights_saved_once_load(checkpoints):
    """GPT-2's lm_head is its wte: save_model writes one of the two, and the other is loaded through it."""
    from safetensors.torch import load_model

    folder, _, _ = checkpoints
    doc = run_json("vjp", folder / "hf.py:gpt2", "-x", folder / "ids.npy", "--select", "logits", "--weights",
                   folder / "gpt2.safetensors", "--wrt", "act:transformer.ln_f")
    assert any("tied to" in n for n in doc["notes"])
    model = load(folder, "hf.py:gpt2")
    load_model(model, str(folder / "gpt2.safetensors"))
    np.testing.assert_allclose(doc["output"], model.double()(torch.tensor(IDS)).logits.detach().numpy(), rtol=1e-12,
                               atol=1e-12)


def test_weights_that_do_not_fit_are_refused_listing_the_keys_and_the_fix(checkpoints):
    folder, _, _ = checkpoints
    err = refused(run("jacobian", folder / "nets.py:CNN", "-x", "randn:1,1,6,6", "--weights", folder / "cnn.ckpt"),
                  "not a state dict", "--weights", "cnn.ckpt:state_dict")
    assert "epoch" in err
    refused(run("jacobian", folder / "nets.py:CNN", "-x", "randn:1,1,6,6", "--weights", f"{folder}/cnn.ckpt:state_dict"),
            "4 missing (conv.weight, conv.bias, fc.weight, fc.bias)", "4 unexpected (model.conv.weight",
            "add --weights-prefix model.")
    err = refused(run("jacobian", folder / "hf.py:vit", "-x", folder / "images.npy", "--select", "logits", "--weights",
                      folder / "gpt2.safetensors"), "missing (", "unexpected (", "--no-strict-weights")
    assert "(and 35 more)" in err  # the first 5 of each, then a count
    cnn = load(folder, "nets.py:CNN").state_dict()
    torch.save({k: v for k, v in cnn.items() if k.startswith("conv.")}, folder / "part.pt")
    torch.save({**cnn, "fc.weight": torch.zeros(2, 40)}, folder / "mis.pt")
    refused(run("jacobian", folder / "nets.py:CNN", "-x", "randn:1,1,6,6", "--weights", folder / "mis.pt"),
            "1 of another shape (fc.weight: file [2, 40], module [2, 48])")
    refused(run("jacobian", folder / "nets.py:CNN", "-x", "randn:1,1,6,6", "--weights", folder / "part.pt"),
            "2 missing (fc.weight, fc.bias)", "the file holds part of the module")
    loose = run_json("jacobian", folder / "nets.py:CNN", "-x", "randn:1,1,6,6", "--weights", folder / "part.pt",
                     "--no-strict-weights")
    assert any("2 tensors loaded" in n for n in loose["notes"])
    assert any("--no-strict-weights" in n and "2 missing (fc.weight, fc.bias)" in n and "left as the module had them"
               in n for n in loose["notes"])


def test_weights_are_bounded_by_max_memory_from_the_header_before_any_tensor_is_read(tmp_path):
    """A header claiming 4 GiB of tensors in a 200-byte file: refused for its size (the bytes it says it holds),
    not read; a truncated header is not a safetensors file."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}).encode()
    (tmp_path / "huge.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    (tmp_path / "m.py").write_text("import torch\nm = torch.nn.Linear(2, 2)\n")
    refused(run("jacobian", tmp_path / "m.py:m", "-x", "randn:2", "--weights", tmp_path / "huge.safetensors"),
            "--weights:", "needs 4.0 GiB, over --max-memory")
    (tmp_path / "bad.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    refused(run("jacobian", tmp_path / "m.py:m", "-x", "randn:2", "--weights", tmp_path / "bad.safetensors"),
            "is not a safetensors file")


class _Payload:
    def __reduce__(self):  # unpickling this would run code: create a file
        return (open, ("PWNED_BY_PICKLE", "w"))


def test_a_pickle_in_a_checkpoint_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(2, 2), "evil": _Payload()}, buffer, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    (tmp_path / "evil.pt").write_bytes(buffer.getvalue())
    (tmp_path / "m.py").write_text("import torch\nm = torch.nn.Linear(2, 2)\n")
    refused(run("jacobian", "m.py:m", "-x", "randn:2", "--weights", "evil.pt"), "weights_only=True")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


# --- 3. keyword binding ------------------------------------------------------------


def test_arg_fills_the_second_positional_parameter_and_wrt_takes_its_name(arrays):
    tags, mask = np.load(arrays / "tags.npy"), np.load(arrays / "mask.npy")
    common = ["--select", "0", "--wrt", "mask"]
    by_name = run_json("vjp", arrays / "nets.py:Tagger", "-x", arrays / "tags.npy", "--arg", f"mask={arrays}/mask.npy",
                       *common)
    by_position = run_json("vjp", arrays / "nets.py:Tagger", "-x", arrays / "tags.npy", "-t", arrays / "mask.npy",
                           *common)
    model = load(arrays, "nets.py:Tagger").double()
    m = torch.tensor(mask, requires_grad=True)
    scores = model(torch.tensor(tags), m)[0]
    expected = torch.autograd.grad(scores.sum(), m)[0].numpy()
    np.testing.assert_allclose(by_name["value"], expected, rtol=1e-10, atol=1e-13)
    assert by_position["value"] == by_name["value"]
    refused(run("vjp", arrays / "nets.py:Tagger", "-x", arrays / "tags.npy", "-t", arrays / "mask.npy", "--arg",
                f"mask={arrays}/mask.npy", *common), "--arg mask", "-t/--target already fills mask")


def test_labels_by_keyword_give_a_hugging_face_loss_and_its_gradient(arrays):
    """ViT's second positional parameter is labels in this transformers, BERT's is attention_mask: --arg NAME
    reaches either by name; --wrt pixel_values is the input by its own name."""
    labels = [0, 2]
    doc = run_json("grad", arrays / "hf.py:vit", "-x", arrays / "images.npy", "--arg", f"labels={labels}",
                   "--select", "loss", "--wrt", "pixel_values")
    model = load(arrays, "hf.py:vit").double()
    x = torch.tensor(IMAGES, requires_grad=True)
    loss = model(pixel_values=x, labels=torch.tensor(labels)).loss
    np.testing.assert_allclose(doc["output"], loss.item(), rtol=1e-12)
    np.testing.assert_allclose(doc["value"], torch.autograd.grad(loss, x)[0].numpy(), rtol=1e-8, atol=1e-12)
    assert doc["wrt"] == "input"
    refused(run("grad", arrays / "hf.py:vit", "-x", arrays / "images.npy", "--arg", f"labels={labels}", "--select",
                "loss", "--wrt", "labels"), "--wrt labels", "integers")


def test_a_required_keyword_only_argument_not_given_is_exit_2_naming_arg(arrays):
    """forward(self, x, *, scale): without --arg scale the code's TypeError was exit 3."""
    refused(run("jacobian", arrays / "nets.py:Scaled", "-x", "randn:4,3"), "--arg scale=ARRAY", "missing")
    x, scale = (np.random.default_rng(6).standard_normal(shape) for shape in ((4, 3), (4, 2)))
    doc = run_json("jacobian", arrays / "nets.py:Scaled", "-x", json.dumps(x.tolist()), "--arg",
                   f"scale={json.dumps(scale.tolist())}", "--wrt", "scale", "--layout", "full")
    model = load(arrays, "nets.py:Scaled").double()
    expected = torch.autograd.functional.jacobian(lambda s: model(torch.tensor(x), scale=s), torch.tensor(scale))
    np.testing.assert_allclose(doc["value"], expected.numpy(), rtol=1e-12, atol=1e-15)


def test_wrt_a_parameter_named_weight(arrays):
    """forward(self, x, weight=None): --wrt weight (given with --weight or --arg weight=) is that argument."""
    x = np.random.default_rng(5).standard_normal((2, 4))
    w = np.random.default_rng(6).standard_normal(6)
    docs = [run_json("vjp", arrays / "nets.py:Heads", "-x", json.dumps(x.tolist()), option, value, "--select", "a",
                     "--wrt", "weight") for option, value in (("--weight", json.dumps(w.tolist())),
                                                              ("--arg", f"weight={json.dumps(w.tolist())}"))]
    model = load(arrays, "nets.py:Heads").double()
    wt = torch.tensor(w, requires_grad=True)
    expected = torch.autograd.grad(model(torch.tensor(x), wt)["a"].sum(), wt)[0].numpy()
    for doc in docs:
        np.testing.assert_allclose(doc["value"], expected, rtol=1e-10)
    refused(run("vjp", arrays / "nets.py:Heads", "-x", "randn:2,4", "--select", "a", "--wrt", "weight"),
            "--wrt weight: weight is not given", "--weight ARRAY")


# --- 4. --wrt act:MODULE --------------------------------------------------------------


def test_token_saliency_of_bert_through_its_word_embeddings(arrays):
    """d pooler_output / d embeddings: torch's reference feeds the same embeddings as inputs_embeds."""
    doc = run_json("vjp", arrays / "hf.py:bert", "-x", arrays / "ids.npy", "--select", "pooler_output",
                   "--wrt", "act:embeddings.word_embeddings")
    model = load(arrays, "hf.py:bert").double()
    ids = torch.tensor(IDS)
    emb = model.embeddings.word_embeddings(ids).detach().requires_grad_(True)
    out = model(inputs_embeds=emb).pooler_output
    np.testing.assert_allclose(doc["output"], out.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(doc["value"], torch.autograd.grad(out.sum(), emb)[0].numpy(), rtol=1e-8, atol=1e-12)
    assert doc["wrt_shape"] == [3, 7, 32]


def test_integer_ids_are_refused_naming_the_embedding_to_differentiate(arrays):
    refused(run("jacobian", arrays / "hf.py:bert", "-x", arrays / "ids.npy", "--select", "pooler_output"),
            "--wrt input", "integer ids", "--wrt act:embeddings.word_embeddings")


def test_gpt2_loss_gradient_wrt_its_token_embeddings(arrays):
    doc = run_json("grad", arrays / "hf.py:gpt2", "-x", arrays / "ids.npy", "--arg", f"labels={arrays}/ids.npy",
                   "--select", "loss", "--wrt", "act:transformer.wte")
    model = load(arrays, "hf.py:gpt2").double()
    ids = torch.tensor(IDS)
    emb = model.transformer.wte(ids).detach().requires_grad_(True)
    loss = model(inputs_embeds=emb, labels=ids).loss
    np.testing.assert_allclose(doc["output"], loss.item(), rtol=1e-6)  # (HF's loss is float32 inside)
    np.testing.assert_allclose(doc["value"], torch.autograd.grad(loss, emb)[0].numpy(), rtol=1e-5, atol=1e-9)


@pytest.fixture(scope="module")
def act_reference(arrays):
    """The Tagger's scores as a function of its embeddings' output, in torch."""
    model = load(arrays, "nets.py:Tagger").double()
    tags = torch.tensor(np.load(arrays / "tags.npy"))
    emb = model.emb(tags).detach()

    def f(e):
        return model.head(model.lstm(e)[0]).pow(2).sum()

    return emb, f


@pytest.mark.parametrize("command", ["jacobian", "grad", "vjp", "jvp", "hvp", "hessian"])
def test_act_works_with_every_computing_command(arrays, act_reference, command):
    emb, f = act_reference
    tangent = np.random.default_rng(7).standard_normal(tuple(emb.shape))
    args = ["--tangent", json.dumps(tangent.tolist())] if command in ("jvp", "hvp") else []
    doc = run_json(command, arrays / "tagloss.py:Loss", "-x", arrays / "tags.npy", "--wrt", "act:emb", *args)
    t = torch.tensor(tangent)
    expected = {"grad": lambda: torch.func.grad(f)(emb), "jacobian": lambda: torch.func.jacrev(f)(emb),
                "vjp": lambda: torch.func.grad(f)(emb),
                "jvp": lambda: torch.func.jvp(f, (emb,), (t,))[1],
                "hvp": lambda: torch.func.jvp(torch.func.grad(f), (emb,), (t,))[1],
                "hessian": lambda: torch.func.hessian(f)(emb)}[command]().detach().numpy()
    np.testing.assert_allclose(doc["value"], expected, rtol=1e-8, atol=1e-10)


def test_several_acts_at_once_each_see_the_others_downstream(arrays):
    """act:emb and act:fc bound together (check's and grad's lists): fc, downstream of emb, must not
    become a constant for emb's derivative (a plain replacement made it 0 in every backend, so check
    compared zeros with zeros and passed)."""
    tags = np.load(arrays / "tags.npy")
    got = gradcli.grad(str(arrays / "nets.py:Bag"), input=tags, wrt="act:emb,act:fc").named()
    model = load(arrays, "nets.py:Bag").double()
    emb = model.emb(torch.tensor(tags)).detach().requires_grad_(True)
    fc = model.fc(emb)
    loss = torch.tanh(fc).pow(2).sum()
    d_emb, d_fc = torch.autograd.grad(loss, [emb, fc])
    np.testing.assert_allclose(got["act:emb"], d_emb.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got["act:fc"], d_fc.numpy(), rtol=1e-10, atol=1e-14)
    assert np.abs(got["act:emb"]).max() > 0.01


def test_check_with_act(arrays):
    doc = run_json("check", arrays / "nets.py:Bag", "-x", arrays / "tags.npy", "--wrt", "act:emb,act:fc")
    assert doc["ok"] is True and doc["wrt"] == ["act:emb", "act:fc"]
    assert [r["shape"] for r in doc["results"]] == [[3, 5, 4], [3, 5, 2]]
    result = run("check", arrays / "tagloss.py:Loss", "-x", arrays / "tags.npy", "--wrt", "act:lstm")
    refused(result, "--wrt act:lstm", "returns a tuple", "not one tensor")  # (output, (h, c)): three tensors


def test_act_refusals(arrays):
    refused(run("grad", arrays / "nets.py:Shared", "-x", "randn:2,3", "--wrt", "act:fc"), "called 2 times")
    refused(run("grad", arrays / "nets.py:Tagger", "-x", arrays / "tags.npy", "--select", "0", "--wrt", "act:embb"),
            "no submodule 'embb'", "did you mean act:emb")


def test_functions_lists_submodules_with_their_output_shapes(arrays):
    result = run("functions", arrays / "hf.py:bert", "-x", arrays / "ids.npy", "--json")
    assert result.exit_code == 0, result.stderr
    entry = json.loads(result.stdout)["functions"][0]
    subs = {s["name"]: s for s in entry["submodules"]}
    assert subs["embeddings.word_embeddings"] == {"name": "embeddings.word_embeddings", "class": "Embedding",
                                                  "output": "[3, 7, 32]"}
    assert subs["pooler"]["output"] == "[3, 32]" and "encoder.layer.0.attention.self.query" in subs
    plain = run("functions", arrays / "nets.py:Tagger")
    assert plain.exit_code == 0 and "give -x to see their output shapes" in " ".join(plain.stdout.split())


# --- 5. named results ------------------------------------------------------------------


def test_grad_wrt_every_parameter_is_named_and_shaped_like_each_grad(arrays, tmp_path):
    labels = [1, 0]
    out = tmp_path / "g.npz"
    doc = run_json("grad", arrays / "hf.py:vit", "-x", arrays / "images.npy", "--arg", f"labels={labels}",
                   "--select", "loss", "--wrt", "param:*", "-o", out)
    model = load(arrays, "hf.py:vit").double()
    model(pixel_values=torch.tensor(IMAGES), labels=torch.tensor(labels)).loss.backward()
    grads = {f"param:{n}": p.grad.numpy() for n, p in model.named_parameters()}
    assert [r["wrt"] for r in doc["results"]] == list(grads)
    saved = np.load(out)
    for r in doc["results"]:
        assert r["shape"] == list(grads[r["wrt"]].shape)
        np.testing.assert_allclose(r["value"], grads[r["wrt"]], rtol=1e-7, atol=1e-11)
        np.testing.assert_array_equal(saved[r["wrt"]], np.asarray(r["value"]))
    table = run("grad", arrays / "hf.py:vit", "-x", arrays / "images.npy", "--arg", f"labels={labels}", "--select",
                "loss", "--wrt", "param:vit.layers.0.attention.*")
    assert table.exit_code == 0
    for name in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"):
        assert f"param:vit.layers.0.attention.{name}  (32, 32)" in table.stdout


def test_hvp_saves_its_tangent_and_each_parameters_slice(arrays, tmp_path):
    out = tmp_path / "h.npz"
    run_json("hvp", arrays / "tagloss.py:Loss", "-x", arrays / "tags.npy", "--wrt", "param:head.*", "--tangent",
             "randn", "-o", out)
    saved = np.load(out)
    assert saved["tangent"].shape == (18,) and saved["param:head.weight"].shape == (3, 5)
    np.testing.assert_array_equal(saved["param:head.bias"], saved["value"][15:])


# --- 6. working precision -------------------------------------------------------------------


def test_gpt2_per_sample_norms_are_not_refused_for_its_float32_loss(arrays, tmp_path):
    """HF's causal-LM loss casts the logits to float32: the batch gradient differs from the mean of the
    per-sample ones by float32 rounding (3 samples: a mean over 3 rounds differently), which a float64 tolerance
    read as 'samples interact'. Judged at the measured working precision, with a note; the norms are torch's."""
    ids = np.random.default_rng(1).integers(0, 40, (3, 9))
    np.save(tmp_path / "ids3.npy", ids)
    doc = run_json("grad", arrays / "hf.py:gpt2", "-x", tmp_path / "ids3.npy", "--arg", f"labels={tmp_path}/ids3.npy",
                   "--select", "loss", "--per-sample", "--norms", "--wrt", "param:*")
    assert any("working precision" in n for n in doc["notes"])
    model = load(arrays, "hf.py:gpt2").double()
    expected = []
    for b in range(3):
        one = torch.tensor(ids[b:b + 1])
        grads = torch.autograd.grad(model(input_ids=one, labels=one).loss, list(model.parameters()))
        expected.append(float(torch.sqrt(sum((g ** 2).sum() for g in grads))))
    np.testing.assert_allclose(doc["value"], expected, rtol=1e-5)


def test_a_real_interaction_is_still_refused_in_code_that_rounds_inside(tmp_path):
    (tmp_path / "mixed.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class Loss(nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(0)
                self.fc = nn.Linear(4, 3)

            def forward(self, x, t):
                z = self.fc(x)
                z = z - 0.1 * z.mean(0)  # couples the samples
                return nn.functional.cross_entropy(z.float(), t)
    '''))
    refused(run("grad", tmp_path / "mixed.py:Loss", "-x", "randn:6,4", "-t", "[0, 1, 2, 0, 1, 2]", "--per-sample",
                "--wrt", "param:*"), "samples interact")


# --- 7. smaller ------------------------------------------------------------------------


def test_a_long_name_is_never_cut_in_a_table():
    """q/k/v/o differ at the end of their names: shortened in the middle when the table is too wide,
    numbered and written out whole below it when even that does not fit."""
    from rich.console import Console

    from gradcli.render.names import Name, NamesFirst
    from rich.table import Table

    names = [f"param:vit.layers.{i}.attention.{p}_proj.weight" for i in (0, 1) for p in "qkvo"]
    assert Name(names[0]).fitted(40).plain == "param:vit.l.0.attention.q_proj.weight"
    assert Name(names[0]).fitted(30).plain == "param:vit.l.0.a.q_proj.weight"

    def build(cell):
        table = Table()
        table.add_column("argument")
        table.add_column("numbers", no_wrap=True)
        for n in names:
            table.add_row(cell(n), "1.0e-08")
        return table

    def drawn(width: int) -> str:
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(NamesFirst(build, names))
        return console.file.getvalue()

    assert all(n in drawn(200) for n in names)  # room enough: whole
    narrow = drawn(50)  # shortened in the middle: the layer index and q/k/v/o kept on each row
    assert all(f"param:vit.l.{n.split('.')[2]}.a.{n.split('attention.')[1]}" in narrow for n in names)
    narrower = drawn(30)  # numbered rows, each name written out below (wrapped, not cut, on a 30-column terminal)
    assert "[8]" in narrower and all(n in "".join(narrower.split()) for n in names)
    assert not any("…" in text for text in (narrow, narrower))


def test_summarised_rendering_does_not_grow_with_the_array():
    """The cells formatted for a (4, 10, 3, 32, 32) Jacobian and one 4x as large are as many."""
    from rich.console import Console

    from gradcli.core.options import BackendName, Layout, Quantity
    from gradcli.core.results import Result
    from gradcli.render import table

    counts = []
    for side in (32, 64):
        value = np.random.default_rng(0).standard_normal((4, 10, 3, side, side))
        result = Result(quantity=Quantity.JACOBIAN, function="f", params={}, wrt="input", backend=BackendName.AUTOGRAD,
                        dtype="float64", input_shape=(4, 3, side, side), wrt_shape=(4, 3, side, side),
                        output_shape=(4, 10), layout=Layout.BLOCKS, value=value, output=np.zeros((4, 10)), notes=(),
                        seconds=0.0, per_sample=True, batch_axes=1)
        calls = [0]
        original = table.NumberFormat.__call__

        def counting(self, v, original=original):
            calls[0] += 1
            return original(self, v)

        table.NumberFormat.__call__ = counting
        try:
            Console(file=io.StringIO(), width=120, color_system=None).print(table.render_body(result))
        finally:
            table.NumberFormat.__call__ = original
        counts.append(calls[0])
    assert counts[0] == counts[1] and counts[0] < 10_000
