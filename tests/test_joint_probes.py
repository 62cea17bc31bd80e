"""`check --mode probe` over many tensors at once (issue 25): joint probes.

Each probe draws signs over every --wrt tensor together and its own cotangent;
one reverse pass gives vᵀJ for all tensors, one directional difference the
same number from the function. These tests plant bugs and compare with torch:

- one wrong tensor among 40 is caught, and localisation names exactly it
  (the tensors whose torch gradient differs from a correct twin's);
- the cost is K reverse passes and a fixed number of evaluations, the same
  for 2 tensors and for 40 (calls counted inside the model);
- code computing in float32 inside a float64 problem (a loss upcast, Hugging
  Face's causal-LM loss) passes when right and fails when its backward is not;
- localisation names the wrong module inside a transformers ViT, and says
  "inconclusive" (naming no module) when the error is in the top-level forward.
"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import gradcli
from gradcli.problem.function import lookup
from test_check import MIXED as MIXED_LOSS

DEEP = textwrap.dedent('''
    import torch
    from torch import nn

    BUG = {bug!r}  # None, "entry" (1e-3 added to one weight-gradient entry) or "scale" (weight gradient x 1.01)
    WRONG = {layer}  # the layer whose weight gradient is wrong


    class Counted(torch.autograd.Function):
        """The identity; counts the reverse passes through the model."""

        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            Deep.calls["backward"] += 1
            return grad


    class LinearFn(torch.autograd.Function):
        @staticmethod
        def forward(x, weight, bias, wrong):
            return x @ weight.T + bias

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], inputs[1])
            ctx.wrong = inputs[3]

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            grad_weight = grad.T @ x
            if ctx.wrong and BUG == "entry":
                grad_weight = grad_weight.clone()
                grad_weight[1, 2] += 1e-3
            if ctx.wrong and BUG == "scale":
                grad_weight = 1.01 * grad_weight
            return grad @ weight, grad_weight, grad.sum(0), None


    class Layer(nn.Linear):
        def __init__(self, n, wrong):
            super().__init__(n, n)
            self.wrong = wrong

        def forward(self, x):
            return LinearFn.apply(x, self.weight, self.bias, self.wrong)


    class Deep(nn.Module):
        """20 residual layers of width 6: 40 parameter tensors; the output (B, 6) is not a scalar."""

        calls = {{"forward": 0, "backward": 0}}

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.layers = nn.ModuleList([Layer(6, i == WRONG) for i in range(20)])

        def forward(self, x):
            Deep.calls["forward"] += 1
            for layer in self.layers:
                x = x + torch.tanh(layer(x))
            return Counted.apply(x)


    net = Deep()
''')


def deep(tmp_path, bug=None, layer=7):
    path = tmp_path / f"deep_{bug}_{layer}.py"
    path.write_text(DEEP.format(bug=bug, layer=layer))
    return lookup(f"{path}:net")


def torch_grads(fn, x, cotangent):
    """torch's own vᵀJ per parameter for the loaded model (its backward as written)."""
    module = fn.module.double()
    module.zero_grad()
    module(torch.tensor(x)).backward(torch.tensor(cotangent))
    return {f"param:{n}": p.grad.numpy().copy() for n, p in module.named_parameters()}


@pytest.mark.parametrize("bug", ["entry", "scale"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_wrong_tensor_among_forty_is_caught_and_named(tmp_path, bug, seed):
    """The wrong tensor is exactly the one whose torch gradient differs from the correct
    twin's; the joint probes catch it and localisation names it alone."""
    x = np.random.default_rng(seed).standard_normal((5, 6))
    wrong, right = deep(tmp_path, bug), deep(tmp_path)
    v = np.random.default_rng(99).standard_normal((5, 6))
    differs = {n for n, g in torch_grads(wrong, x, v).items() if not np.allclose(g, torch_grads(right, x, v)[n])}
    assert differs == {"param:layers.7.weight"}  # the plant, as torch computes it
    report = gradcli.check(wrong, input=x, wrt="param:*", mode="probe", seed=seed, locate=False)
    assert len(report.results) == 40
    assert report.ok is False and report.joint.ok is False
    assert set(report.failing) == differs
    (mine,) = [r for r in report.results if r.wrt in differs]
    assert not mine.jointly and mine.backends[0].mismatches >= 1  # its own verdict, from its own probes
    if bug == "entry":  # an error in one entry: |e . u| = |e_i| along every sign vector, so every probe sees it
        assert mine.backends[0].mismatches == 4 and report.joint.comparisons[0].mismatches == 4
    clean = gradcli.check(right, input=x, wrt="param:*", mode="probe", seed=seed)
    assert clean.ok is True and all(r.ok and r.jointly for r in clean.results)


def test_the_cost_is_k_reverse_passes_whatever_the_number_of_tensors(tmp_path):
    fn = deep(tmp_path)
    x = np.random.default_rng(0).standard_normal((5, 6))
    calls = type(fn.module).calls
    counted = {}
    for wrt, probes in (("param:layers.3.weight,param:layers.3.bias", 4), ("param:*", 4), ("param:*", 6)):
        calls.update(forward=0, backward=0)
        report = gradcli.check(fn, input=x, wrt=wrt, mode="probe", probes=probes)
        assert report.ok is True
        counted[wrt, probes] = dict(calls)
    two, forty = counted["param:layers.3.weight,param:layers.3.bias", 4], counted["param:*", 4]
    assert two == forty  # 2 tensors or 40: the same reverse passes and evaluations
    assert forty["backward"] == 4 and counted["param:*", 6]["backward"] == 6  # one vjp per probe (own cotangent)
    # K one-sided differences (one evaluation each) over binding's and autograd's own forward passes
    assert counted["param:*", 6]["forward"] - forty["forward"] == 2


# test_check's float64 model whose loss upcasts its logits to float32 (as Hugging Face losses do), its tanh's
# backward FACTOR times too large; here its last layer scaled up: confident predictions, a small loss
MIXED = MIXED_LOSS.replace("{factor}", "{factor!r}").replace(
    "torch.nn.Linear(64, 5)\n", "torch.nn.Linear(64, 5)\n        with torch.no_grad():\n"
                                  "            self.fc2.weight.mul_(30.0)\n")


@pytest.mark.parametrize("mode", ["probe", "full"])
def test_a_right_model_computing_in_float32_inside_passes_with_a_note(tmp_path, mode):
    """Before, full mode failed it: forward mode and autograd both round in float32 and differ by
    1.5e-7 on entries near 0, over float64's atol 1e-8."""
    (tmp_path / "mixed.py").write_text(MIXED.format(factor=1.0))
    x = np.random.default_rng(0).standard_normal((8, 20))
    net = lookup(f"{tmp_path}/mixed.py:net").module.double()
    with torch.no_grad():  # the predicted classes: a confident model, a small loss
        t = net.fc2(torch.tanh(net.fc1(torch.tensor(x)))).argmax(1).numpy()
    report = gradcli.check(f"{tmp_path}/mixed.py:net", input=x, target=t, wrt="param:*", mode=mode, locate=False)
    assert report.ok is True, [(r.wrt, [(c.name, c.max_abs) for c in r.backends]) for r in report.results]
    notes = list(report.notes) + [n for r in report.results for n in r.notes]
    assert any(n.startswith("working precision:") for n in notes)


@pytest.mark.parametrize("mode", ["probe", "full"])
def test_a_wrong_backward_computing_in_float32_inside_is_caught(tmp_path, mode):
    (tmp_path / "mixed_bug.py").write_text(MIXED.format(factor=1.2))
    x = np.random.default_rng(0).standard_normal((8, 20))
    t = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    report = gradcli.check(f"{tmp_path}/mixed_bug.py:net", input=x, target=t, wrt="param:*", mode=mode, locate=False)
    assert report.ok is False
    assert set(report.failing) == {"param:fc1.weight", "param:fc1.bias"}  # in front of the wrong backward


GPT2 = textwrap.dedent('''
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel


    class Loss(torch.nn.Module):
        """A tiny GPT-2's own causal-LM loss, which upcasts the logits to float32 inside."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            config = GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
            self.m = GPT2LMHeadModel(config).eval()
            if {bug!r}:  # the first block's MLP output projection gets a backward 10% too large
                mlp = self.m.transformer.h[0].mlp
                forward = mlp.c_proj.forward
                mlp.c_proj.forward = lambda x: Wrong.apply(forward(x))

        def forward(self, input_ids):
            return self.m(input_ids=input_ids, labels=input_ids).loss


    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return 1.1 * grad


    loss = Loss()
''')


@pytest.mark.parametrize("bug", [False, True])
def test_hugging_face_gpt2_loss_in_float32_inside_a_float64_check(tmp_path, bug):
    """The false refusal of issue 25 came from this loss; check passes it when right, and
    when the first block's MLP backward is 10% off, fails exactly the tensors in front of it."""
    (tmp_path / "gpt2.py").write_text(GPT2.format(bug=bug))
    ids = np.random.default_rng(0).integers(0, 50, (2, 8))
    report = gradcli.check(f"{tmp_path}/gpt2.py:loss", input=ids, wrt="param:*", mode="probe", locate=False)
    if not bug:
        assert report.ok is True
        return
    assert report.ok is False
    # the wrong gradient flows back from block 0's MLP output: into its own weights and everything in front
    # (the embeddings, block 0's attention); block 1 and the final norm see none of it
    in_front = {r.wrt for r in report.results if r.wrt.startswith(("param:m.transformer.wte", "param:m.transformer.wpe",
                                                                    "param:m.transformer.h.0."))}
    assert set(report.failing) <= in_front
    # (c_proj.weight's error, 10% of a share this small, stays under fd's error bar at float32's precision)
    assert {"param:m.transformer.h.0.mlp.c_proj.bias", "param:m.transformer.h.0.mlp.c_fc.weight"} <= set(report.failing)


VIT = textwrap.dedent('''
    import torch
    from torch import nn
    from transformers import ViTConfig, ViTForImageClassification


    class AddToGrad(torch.autograd.Function):
        """A Linear whose weight gradient gets 1e-3 added to entry (0, 0) (the bug)."""

        @staticmethod
        def forward(x, weight, bias):
            return nn.functional.linear(x, weight, bias)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0], inputs[1])

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            g = grad.reshape(-1, grad.shape[-1])
            grad_weight = g.T @ x.reshape(-1, x.shape[-1])
            grad_weight[0, 0] += 1e-3
            return grad @ weight, grad_weight, g.sum(0)


    class BadLinear(nn.Linear):
        def forward(self, x):
            return AddToGrad.apply(x, self.weight, self.bias)


    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, num_labels=10)
            self.m = ViTForImageClassification(config)
            old = self.m.vit.layers[1].mlp.fc1
            bad = BadLinear(old.in_features, old.out_features)
            bad.load_state_dict(old.state_dict())
            self.m.vit.layers[1].mlp.fc1 = bad

        def forward(self, pixel_values, labels):
            return nn.functional.cross_entropy(self.m(pixel_values).logits, labels)


    loss = Loss()
''')


def test_a_wrong_linear_inside_a_vit_is_named_with_its_module_and_entry(tmp_path):
    """Issue 25: found (the entry, exit 1) but blamed on "the top-level forward"; the module
    checks now run along the output gradient each module received, at the size it has in
    the whole model, and name BadLinear."""
    (tmp_path / "vit.py").write_text(VIT)
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3, 32, 32)), rng.integers(0, 10, 4)
    report = gradcli.check(f"{tmp_path}/vit.py:loss", input=x, target=t, wrt="param:*", mode="probe")
    assert report.ok is False and report.failing == ("param:m.vit.layers.1.mlp.fc1.weight",)
    (wrong,) = [r for r in report.results if r.ok is False]
    assert wrong.top[0].index == (0, 0) and wrong.top[0].abs_error == pytest.approx(1e-3, rel=1e-3)
    assert [(m.path, m.cls) for m in report.blamed] == [("m.vit.layers.1.mlp.fc1", "BadLinear")]
    assert not any("inconclusive" in n or "top-level" in n for n in report.notes)


TOP_LEVEL = textwrap.dedent('''
    import torch
    from torch import nn


    class Halved(torch.autograd.Function):
        """The identity, whose backward halves the gradient (the bug, in the top-level forward)."""

        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            return 0.5 * grad


    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x, t):
            h = Halved.apply(torch.tanh(self.fc1(x)))  # between two submodules, in no submodule
            return nn.functional.cross_entropy(self.fc2(h), t)


    model = Model()
''')


def test_an_error_no_module_check_can_place_is_inconclusive_never_a_wrong_place(tmp_path):
    (tmp_path / "top.py").write_text(TOP_LEVEL)
    x = np.random.default_rng(0).standard_normal((5, 6))
    report = gradcli.check(f"{tmp_path}/top.py:model", input=x, target=np.array([0, 1, 2, 0, 1]), wrt="param:*",
                           mode="probe")
    assert report.ok is False and set(report.failing) == {"param:fc1.weight", "param:fc1.bias"}
    assert report.blamed == ()  # fc1 and fc2 are right on their own
    (note,) = [n for n in report.notes if "module localisation" in n]
    assert "inconclusive" in note and "param:fc1.weight" in note
    assert not any("the error is in" in n for n in report.notes)


def test_a_joint_mismatch_is_never_a_pass_when_no_tensor_takes_the_blame():
    """ModelReport.ok stays False on the joint probes' verdict even if every argument's own
    row says ok (group testing could not separate them)."""
    from dataclasses import replace

    from gradcli.checking.joint import Judgement

    x = np.random.default_rng(1).standard_normal((4, 3))
    report = gradcli.check("linear,cross_entropy", input=x, weight=np.ones((5, 3)), target=np.array([0, 1, 4, 2]),
                           wrt="input,weight", mode="probe")
    assert report.ok is True and report.joint is not None
    failed = replace(report, joint=Judgement(report.joint.names, False, (), None, (), 0.0))
    assert all(r.ok for r in failed.results) and failed.ok is False


BFLOAT16_INSIDE = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        """A right model whose hidden layer computes in bfloat16 inside a float64 check."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = nn.Linear(6, 8)
            self.fc2 = nn.Linear(8, 1)

        def forward(self, x):
            h = torch.tanh(self.fc1(x).to(torch.bfloat16)).to(x.dtype)
            return self.fc2(h).sum()


    net = Net()
''')


def _bfloat16_inside(tmp_path, **options):
    (tmp_path / "bf16.py").write_text(BFLOAT16_INSIDE)
    x = np.random.default_rng(0).standard_normal((4, 6))
    return gradcli.check(f"{tmp_path}/bf16.py:net", input=x, wrt="param:*", mode="probe", locate=False,
                         backends=["autograd", "forward", "fd"], **options)


def test_forward_mode_and_autograd_rounding_in_bfloat16_inside_agree_within_that_precision(tmp_path):
    """Both round in bfloat16 (eps 2^-8), each its own way: they differ by far more than float64's rtol.
    fd measures the working precision, and the verdict allows its rounding."""
    eps = float(torch.finfo(torch.bfloat16).eps)
    report = _bfloat16_inside(tmp_path)
    assert report.ok is True, [(c.name, c.max_abs) for c in report.joint.comparisons]
    assert report.rtol >= eps and "widened for the working precision" in report.tolerance_source


def test_a_given_tolerance_is_kept_whatever_the_working_precision(tmp_path):
    """--atol/--rtol given: the user's numbers, not widened; bfloat16 rounding is then out of them."""
    report = _bfloat16_inside(tmp_path, atol=1e-8, rtol=1e-4)
    assert (report.atol, report.rtol) == (1e-8, 1e-4) and "widened" not in report.tolerance_source
    assert report.ok is False


BFLOAT16_UNITS = textwrap.dedent('''
    import torch
    from torch import nn

    SCALE = {scale}  # 1.0: right; else the bfloat16 tanh's backward is off by that factor


    class Tanh(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(h):
            return torch.tanh(h)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)
            ctx.save_for_forward(output)

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y * y) * SCALE

        @staticmethod
        def jvp(ctx, t):  # right: forward mode is the independent check of the backward
            (y,) = ctx.saved_tensors
            return t * (1 - y * y)


    class Net(nn.Module):
        """Each output a sum of a few bfloat16 units: no output sums enough of them to smooth their grid."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(5, 4)

        def forward(self, x):
            h = Tanh.apply(self.lin(x).to(torch.bfloat16)).to(x.dtype)
            return (h ** 2).sum(-1)


    net = Net()
''')


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_a_few_bfloat16_units_per_output_pass_when_right_and_fail_when_wrong(tmp_path, mode):
    """Every rung of the precision ladder below ~1e-2 saw each bfloat16 unit move by whole grid steps or
    not at all, so no two rungs agreed and the precision was the first rung that moved (1.5e-5, far
    below bfloat16's 2^-8): forward mode against autograd (each rounding in bfloat16 its own way)
    and fd then failed a right model. Right: passes; its backward 25% off: fails."""
    x = np.random.default_rng(1).standard_normal((4, 5))
    eps = float(torch.finfo(torch.bfloat16).eps)
    for scale, right in ((1.0, True), (1.25, False)):
        (tmp_path / f"units{right}.py").write_text(BFLOAT16_UNITS.format(scale=scale))
        report = gradcli.check(f"{tmp_path}/units{right}.py:net", input=x, wrt="input,param:*", mode=mode,
                               locate=False, backends=["autograd", "forward", "fd"])
        assert report.ok is right, (scale, [c.rtol for c in report.results])
        # widened for bfloat16's rounding, and no further than 16 of its units (2^-8 each)
        assert all(eps / 16 <= c.rtol <= 8 * eps for c in report.results), [c.rtol for c in report.results]


def test_a_group_that_fails_while_neither_half_does_is_reported_failing_together():
    """Group testing (locate.tensors) on a prober whose joint probes fail over a and b while each
    alone passes (errors that cancel, or a difference at the tolerance): neither is cleared."""
    from gradcli.checking import locate
    from gradcli.checking.joint import Judgement

    def judgement(names, ok):
        return Judgement(tuple(names), ok, (), None, (), 0.0)

    class Stub:
        names = ("a", "b")

        def judge(self, names, first=None):
            return judgement(names, True)  # every proper subset passes

    joint = judgement(("a", "b"), False)
    verdicts, notes = locate.tensors(Stub(), joint)
    assert verdicts["a"].ok is False and verdicts["b"].ok is False
    assert any("neither half" in n for n in notes)
