"""gradcli health against torch: the numbers, the flags, the origin of a NaN, and that
the hooks leave the gradients exactly as a plain backward makes them.

Models live in tests/health_cases/: ``models.py`` (clean: no flag), ``faults.py``
(one seeded fault each, its line marked ``# FAULT <case>``).
"""

from __future__ import annotations

import importlib.util
import json
import math
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import exact_tol
from rich.console import Console

import gradcli
from gradcli.core.errors import ExitCode, UsageError, UserCodeError
from gradcli.health.hooks import Recorder
from gradcli.health.report import Flag, Phase
from gradcli.health.run import bind, examine, health
from gradcli.render.health import health_to_dict, ordered, render_health
from gradcli.render.json import dumps

CASES = Path(__file__).parent / "health_cases"
MODELS, FAULTS = CASES / "models.py", CASES / "faults.py"
CLEAN = ["tanh_mlp", "residual", "inplace", "shared", "convnet", "attention", "recurrent", "xavier", "tied_lm"]
TOL = exact_tol(np.float32)  # the models compute in float32, their own dtype


def batch_of(rows=16, features=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, features)), rng.integers(0, 3, rows)


def fresh(path: Path, name: str):
    """The model as a user's own script would load it: its own import, no gradcli."""
    spec = importlib.util.spec_from_file_location(f"health_fresh_{path.stem}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def torch_step(model, x, t):
    """A plain training step's gradients: ``loss.backward()``, then each ``p.grad``."""
    model.zero_grad(set_to_none=True)
    loss = model(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(t))
    loss.backward()
    return loss, {n: p.grad for n, p in model.named_parameters()}


def same(a, b) -> bool:
    """Bit for bit (None: no gradient reached it, on both sides)."""
    return a is None and b is None or a is not None and b is not None and torch.equal(a, b)


def fault_line(case: str, marker: str = "FAULT") -> str:
    lines = FAULTS.read_text().splitlines()
    number = next(i + 1 for i, line in enumerate(lines) if f"# {marker} {case}" in line)
    return f"{FAULTS.relative_to(Path.cwd()) if FAULTS.is_relative_to(Path.cwd()) else FAULTS}:{number}"


# --- the hooks change nothing --------------------------------------------------------------


@pytest.mark.parametrize("name", CLEAN)
def test_watched_gradients_equal_a_plain_backward_bit_for_bit(name):
    x, t = batch_of()
    batch, _ = bind(f"{MODELS}:{name}", input=x, target=t)
    _, plain = batch.step()
    with Recorder(batch.modules, batch.batch) as recorder:
        _, watched = batch.step()
    assert recorder.calls, "the hooks saw no call"
    _, reference = torch_step(fresh(MODELS, name), x, t)
    for leaf, g, p in zip(batch.leaves, watched, plain):
        assert same(g, p), f"{name}: {leaf} differs under the hooks"
        assert same(g, reference[leaf.removeprefix("param:")]), f"{name}: {leaf} differs from loss.backward()"


def test_watched_gradients_equal_with_a_batch_large_enough_to_defer_the_unit_reads():
    x, t = batch_of(rows=64)
    batch, _ = bind(f"{MODELS}:inplace", input=x, target=t)
    _, reference = torch_step(fresh(MODELS, "inplace"), x, t)
    with Recorder(batch.modules, batch.batch):
        _, watched = batch.step()
    assert all(same(g, reference[leaf.removeprefix("param:")]) for leaf, g in zip(batch.leaves, watched))


# --- the numbers against torch ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["tanh_mlp", "shared", "convnet"])
def test_parameter_norms_equal_torch_grad_norms(name):
    x, t = batch_of()
    report = health(f"{MODELS}:{name}", input=x, target=t, lr=0.01)
    loss, grads = torch_step(fresh(MODELS, name), x, t)
    weights = dict(fresh(MODELS, name).named_parameters())
    assert report.output == pytest.approx(float(loss.detach()), rel=TOL)
    assert [p.name for p in report.parameters] == [n for n in grads]  # every parameter once, in the model's order
    for p in report.parameters:
        g = grads[p.name]
        assert p.norm == pytest.approx(float(g.double().norm()), rel=TOL), p.name
        assert p.weight_norm == pytest.approx(float(weights[p.name].detach().double().norm()), rel=TOL), p.name
        if p.weight_norm == 0:  # a batch norm's bias starts at 0
            assert p.ratio is None and p.update is None
        else:
            assert p.ratio == pytest.approx(p.norm / p.weight_norm, rel=TOL)
            assert p.update == pytest.approx(0.01 * p.ratio, rel=TOL)
        assert p.zeros == int((g == 0).sum()) and p.nonfinite == 0, p.name


def test_a_tied_parameter_is_one_row_with_its_other_name():
    x, t = batch_of()
    report = health(f"{MODELS}:shared", input=x, target=t)
    tied = [p for p in report.parameters if p.aliases]
    assert [(p.name, p.aliases) for p in tied] == [("decode.weight", ("tied.weight",))]


def hand_measured(model, x, t):
    """Each call's (‖∂L/∂out‖, ‖∂L/∂in‖) measured independently: a plain forward hook keeps the
    call's input and output, a tensor hook the output's gradient, and the input gradient is
    that call's own vjp, ``autograd.grad(out, in, g_out)``."""
    calls, grads = [], {}
    handles = []
    for name, module in model.named_modules():
        if type(module).forward is torch.nn.Sequential.forward:
            continue

        def keep(mod, args, out, name=name):
            i = len(calls)
            out = out if isinstance(out, torch.Tensor) else out[0]  # (attention returns (output, weights))
            calls.append((name, args[0] if args and isinstance(args[0], torch.Tensor) else None, out))
            if out.requires_grad:
                out.register_hook(lambda g, i=i: grads.__setitem__(i, g))

        handles.append(module.register_forward_hook(keep))
    loss = model(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(t))
    loss.backward(retain_graph=True)
    for h in handles:
        h.remove()
    measured = []
    for i, (name, xin, out) in enumerate(calls):
        g_out = grads.get(i)
        g_in = None
        if g_out is not None and xin is not None and xin.requires_grad:
            (g_in,) = torch.autograd.grad(out, xin, g_out, retain_graph=True)
        norm = (lambda g: None if g is None else float(g.double().norm()))
        measured.append((name, norm(g_out), norm(g_in)))
    return measured


@pytest.mark.parametrize("name", ["tanh_mlp", "residual", "shared", "attention"])
def test_each_gain_equals_what_hooks_measure_by_hand(name):
    x, t = batch_of()
    report = health(f"{MODELS}:{name}", input=x, target=t)
    by_hand = hand_measured(fresh(MODELS, name), x, t)
    assert [m.name for m in report.modules] == [n for n, _, _ in by_hand]  # the calls, in the order they returned
    for m, (_, out_grad, in_grad) in zip(report.modules, by_hand):
        assert m.out_grad == pytest.approx(out_grad, rel=TOL), m.label
        if in_grad is None:
            assert m.in_grad is None, m.label
        else:
            assert m.in_grad == pytest.approx(in_grad, rel=TOL), m.label
            assert m.gain == pytest.approx(in_grad / out_grad, rel=2 * TOL), m.label


def test_a_residual_block_counts_its_skip_and_its_branch_only_its_own_share():
    x, t = batch_of()
    modules = {m.name: m for m in health(f"{MODELS}:residual", input=x, target=t).modules}
    block, branch = modules["blocks.1"], modules["blocks.1.branch.2"]
    # the block's input gradient is g_out (the skip) plus the branch's: more than the branch's alone
    assert block.in_grad != pytest.approx(modules["blocks.1.norm"].in_grad, rel=1e-3)
    assert branch.out_grad == pytest.approx(block.out_grad, rel=TOL)  # the branch's output is the block's sum's term


def test_inplace_relu_gains_equal_those_of_the_same_model_without_inplace():
    x, t = batch_of()
    inplace = health(f"{MODELS}:inplace", input=x, target=t)
    copy = fresh(MODELS, "inplace")
    copy.act1.inplace = copy.act2.inplace = False
    by_hand = hand_measured(copy, x, t)
    for m, (name, out_grad, in_grad) in zip(inplace.modules, by_hand):
        assert m.name == name
        assert m.out_grad == pytest.approx(out_grad, rel=TOL), name
        assert (m.in_grad is None) == (in_grad is None) and (in_grad is None or
                                                              m.in_grad == pytest.approx(in_grad, rel=TOL)), name


def test_a_module_called_twice_has_a_row_per_call_and_one_never_run_has_none():
    x, t = batch_of()
    shared = health(f"{MODELS}:shared", input=x, target=t)
    assert [m.label for m in shared.modules if m.name == "mix"] == ["mix [call 1/2]", "mix [call 2/2]"]
    residual = health(f"{MODELS}:residual", input=x, target=t)
    names = {m.name for m in residual.modules}
    assert "unused" not in names and "blocks" not in names and "blocks.0" not in names  # plain Sequentials: no row
    unused = {p.name: p for p in residual.parameters}["unused.weight"]
    assert unused.norm is None and any("received no gradient" in n for n in residual.notes)


def test_dead_and_saturated_fractions_count_units_and_entries():
    x, t = batch_of()
    modules = {m.name: m for m in health(f"{FAULTS}:dead_relu", input=x, target=t).modules}
    assert modules["act"].dead == 1.0 and modules["fc1"].dead == 0.0
    # the samples scaled by 1000 saturate the first tanh, those scaled by 1/1000 do not
    x = batch_of()[0] * np.where(np.arange(16) < 8, 1e3, 1e-3)[:, None]
    first = {m.name: m for m in health(f"{MODELS}:tanh_mlp", input=x, target=t).modules}["layers.1"]
    model = fresh(MODELS, "tanh_mlp")
    h = torch.tanh(model.layers[0](torch.from_numpy(x.astype(np.float32))))
    expected = float((h.abs() >= 1 - torch.finfo(torch.float32).eps).double().mean())
    assert first.saturated == pytest.approx(expected) and 0.2 < expected < 0.8


# --- clean models raise nothing ---------------------------------------------------------------


def test_a_decoder_tied_to_an_embedding_is_not_held_to_a_linear_init_gain():
    """Its weight is the embedding's, N(0, 1): it passes back ~√32 of its gradient, above 10/√3 (what
    a Linear at torch's init would have to exceed), and that is not a fault."""
    x, t = batch_of()
    model = fresh(MODELS, "tied_lm")
    seen = {}
    model.decode.register_forward_pre_hook(lambda m, a: seen.update(inp=a[0]) or a[0].retain_grad())
    model.decode.register_forward_hook(lambda m, a, out: seen.update(out=out) or out.retain_grad())
    model(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(t)).backward()
    gain = float(seen["inp"].grad.norm() / seen["out"].grad.norm())
    assert gain > 10 / math.sqrt(3)
    report = health(f"{MODELS}:tied_lm", input=x, target=t)
    assert next(m for m in report.modules if m.name == "decode").gain == pytest.approx(gain, rel=1e-4)
    assert report.flags == ()


@pytest.mark.parametrize("name", CLEAN)
def test_clean_models_raise_no_flag(name):
    x, t = batch_of()
    report = health(f"{MODELS}:{name}", input=x, target=t)
    assert report.flags == () and report.origin is None and report.ok
    assert all(m.flags == () for m in report.modules) and all(p.flags == () for p in report.parameters)


# --- seeded faults name the right module, op and line -------------------------------------------


@pytest.mark.parametrize("case, op", [("sqrt_forward", "aten.sqrt"), ("log_forward", "aten.log"),
                                      ("div_forward", "aten.div"), ("exp_forward", "aten.exp"),
                                      ("softmax_forward", "aten._softmax"), ("exp_then_divide", "aten.exp"),
                                      ("log_then_multiply", "aten.log")])
def test_a_nan_made_in_the_forward_is_traced_to_its_module_op_and_line(case, op):
    """An inf computed from finite numbers (exp overflowing, log(0)) is the origin even when a later op
    of the module turns it into the NaN it returns; an inf written on purpose (masked_fill) is not."""
    x, t = batch_of()
    report = health(f"{FAULTS}:{case}", input=x, target=t)
    o = report.origin
    assert report.flags[0] is Flag.NONFINITE and not report.ok
    assert (o.phase, o.module, o.op.rsplit(".", 1)[0]) == (Phase.FORWARD, "body.2", op)
    assert o.op_at == fault_line(case) and "# FAULT" in o.code
    forward = int(o.forward_at.rsplit(":", 1)[1])
    assert FAULTS.read_text().splitlines()[forward - 1].strip() == "def forward(self, x):"
    assert 0 < int(fault_line(case).rsplit(":", 1)[1]) - forward <= 3  # the module's own forward


@pytest.mark.parametrize("case, node", [("sqrt_backward", "SqrtBackward0"), ("masked_sqrt", "SqrtBackward0"),
                                        ("acos_backward", "AcosBackward0")])
def test_a_nan_made_only_in_the_backward_is_traced_to_its_module_node_and_line(case, node):
    x, t = batch_of()
    report = health(f"{FAULTS}:{case}", input=x, target=t)
    o = report.origin
    assert all(m.finite_output for m in report.modules)  # the forward is finite
    assert (o.phase, o.module, o.op, o.op_at) == (Phase.BACKWARD, "body.2", node, fault_line(case))
    # torch's own detector names a later node or only NaN: sqrt's backward at 0 returns inf
    bad = {m.name for m in report.modules if Flag.NONFINITE in m.flags}
    assert "body.2" in bad and "head" not in bad


def test_a_custom_function_whose_backward_alone_makes_nan_is_named_with_its_backward_line():
    x, t = batch_of()
    o = health(f"{FAULTS}:custom_backward", input=x, target=t).origin
    assert (o.phase, o.module, o.cls, o.op) == (Phase.BACKWARD, "body.2", "CustomOp", "NaNBackwardBackward")
    assert o.op_at == fault_line("custom_backward", "APPLY")
    assert o.backward_at == fault_line("custom_backward")


def test_a_layer_scaled_by_40_is_exploding_among_its_peers():
    x, t = batch_of(features=16)
    report = health(f"{FAULTS}:scaled40", input=x, target=t)
    assert report.flags == (Flag.EXPLODING,) and report.ok  # (exploding is not in the default --fail-on)
    assert [m.name for m in report.modules if m.flags] == ["layers.4"]
    assert "the median" in {m.name: m for m in report.modules}["layers.4"].reasons[0]
    assert not health(f"{FAULTS}:scaled40", input=x, target=t, fail_on="exploding").ok


def test_a_layer_scaled_by_40_among_layers_of_other_widths_is_exploding():
    x, t = batch_of()
    report = health(f"{FAULTS}:scaled_mixed", input=x, target=t)
    assert report.flags == (Flag.EXPLODING,)
    assert [m.name for m in report.modules if m.flags] == ["fc2"]


@pytest.mark.parametrize("case, phase, op", [("root_forward", Phase.FORWARD, "aten.log.default"),
                                             ("root_backward", Phase.BACKWARD, "SqrtBackward0")])
def test_a_nan_made_outside_any_submodule_is_the_models_own(case, phase, op):
    x, t = batch_of()
    o = health(f"{FAULTS}:{case}", input=x, target=t).origin
    assert (o.phase, o.module, o.op, o.op_at) == (phase, "", op, fault_line(case))


def test_a_saturated_sigmoid_stack_is_vanishing_from_a_sigmoid_down():
    x, t = batch_of(features=16)
    report = health(f"{FAULTS}:saturated", input=x, target=t)
    assert report.flags == (Flag.VANISHING,)
    flagged = [m for m in report.modules if m.flags]
    first = min(flagged, key=lambda m: m.backward_order)
    assert first.cls == "Sigmoid" and first.in_grad < 1e-7 <= first.out_grad
    assert all(m.name.startswith("layers.") for m in flagged)


def test_dead_relus_are_dead_and_nothing_else_is_flagged():
    x, t = batch_of()
    report = health(f"{FAULTS}:dead_relu", input=x, target=t)
    assert report.flags == (Flag.DEAD,)
    assert [(m.name, m.flags) for m in report.modules if m.flags] == [("act", (Flag.DEAD,))]
    fc1 = {p.name: p for p in report.parameters}["fc1.weight"]
    assert fc1.norm == 0 and fc1.zeros == fc1.size  # no gradient reaches the layer before it


def write(tmp_path, text, name="m.py"):
    path = tmp_path / name
    path.write_text("import torch\nfrom torch import nn\n" + text)
    return path


def test_a_weight_that_holds_nan_before_the_forward_is_the_origin(tmp_path):
    path = write(tmp_path, "net = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 1))\n"
                           "with torch.no_grad():\n    net[2].weight[0, 1] = float('nan')\n")
    o = health(f"{path}:net", input=batch_of()[0], cotangent=np.ones((16, 1))).origin
    assert (o.phase, o.module) == (Phase.PARAMETERS, "2") and "2.weight holds 1" in o.detail


def test_nonfinite_input_let_in_is_the_origin(tmp_path):
    x = batch_of()[0]
    x[3, 2] = np.inf
    path = write(tmp_path, "net = nn.Sequential(nn.Linear(8, 1))\n")
    with pytest.raises(UsageError) as err:
        health(f"{path}:net", input=x, cotangent=np.ones((16, 1)))
    assert err.value.cli_message().startswith("--input: non-finite value inf at index [3, 2]")
    assert health(f"{path}:net", input=x, cotangent=np.ones((16, 1)), allow_nonfinite=True).origin.phase is Phase.INPUT


def test_a_float32_norm_past_its_range_is_exploding_not_nonfinite(tmp_path):
    # gradient entries of ~1e25 are finite in float32, their squares are not
    path = write(tmp_path, "class L(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        torch.manual_seed(0)\n        self.fc = nn.Linear(8, 64)\n"
                           "    def forward(self, x):\n        return self.fc(x).sum() * 1e25\nloss = L()\n")
    report = health(f"{path}:loss", input=batch_of()[0])
    assert Flag.NONFINITE not in report.flags and Flag.EXPLODING in report.flags
    weight = report.parameters[0]
    assert weight.nonfinite == 0 and math.isfinite(weight.norm) and weight.norm > 1e25


def test_a_function_that_calls_a_module_by_name_is_watched_through_it(tmp_path):
    path = write(tmp_path, "torch.manual_seed(0)\nnet = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))\n"
                           "def loss(x, t):\n    return nn.functional.cross_entropy(net(x), t)\n")
    x, t = batch_of()
    report = health(f"{path}:loss", input=x, target=t)
    assert [m.name for m in report.modules] == ["net.0", "net.1", "net.2"]
    assert [p.name for p in report.parameters] == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]


def test_wrt_selects_parameters_and_the_input_gives_the_first_module_its_gain():
    x, t = batch_of()
    report = health(f"{MODELS}:tanh_mlp", input=x, target=t, wrt="input,param:layers.4.*")
    assert report.wrt == ("input", "param:layers.4.weight", "param:layers.4.bias")
    assert [p.name for p in report.parameters] == ["layers.4.weight", "layers.4.bias"]
    first = report.modules[0]
    assert first.name == "layers.0" and first.gain is not None and first.gain > 0


# --- refusals: exit 2 for the command, exit 3 for your code ---------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"wrt": "target"}, "--wrt target: health differentiates"),
    ({"wrt": "param:nothing*"}, "--wrt param:nothing*: matches no parameter"),
    ({"explode": 0.5}, "--explode"),
    ({"vanish": -1}, "--vanish"),
    ({"lr": "fast"}, "--lr"),
    ({"fail_on": "nan"}, "--fail-on: unknown flag 'nan'"),
])
def test_bad_options_are_usage_errors_naming_the_option(kwargs, match):
    x, t = batch_of()
    with pytest.raises(UsageError) as err:
        health(f"{MODELS}:tanh_mlp", input=x, target=t, **kwargs)
    assert match in err.value.cli_message() and err.value.exit_code is ExitCode.USAGE


def test_a_non_scalar_output_needs_a_cotangent(tmp_path):
    path = write(tmp_path, "torch.manual_seed(0)\nnet = nn.Sequential(nn.Linear(8, 3))\n")
    x = batch_of()[0]
    with pytest.raises(UsageError) as err:
        health(f"{path}:net", input=x)
    assert "--cotangent: " in err.value.cli_message() and "returns shape [16, 3]" in str(err.value)
    assert "ones:16,3" in str(err.value)
    report = health(f"{path}:net", input=x, cotangent=np.ones((16, 3)))
    assert report.cotangent_norm == pytest.approx(math.sqrt(48)) and report.output is None


def test_a_builtin_or_a_function_without_modules_is_refused(tmp_path):
    with pytest.raises(UsageError, match="health runs your model"):
        health("softmax", input=np.ones((2, 3)))
    path = write(tmp_path, "def f(x):\n    return (x ** 2).sum()\n")
    with pytest.raises(UsageError, match="names none"):
        health(f"{path}:f", input=np.ones((2, 3)))


def test_user_code_raising_in_its_backward_is_exit_3_naming_the_line(tmp_path):
    path = write(tmp_path, "class Boom(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, x):\n"
                           "        return x * 1\n    @staticmethod\n    def backward(ctx, g):\n"
                           "        raise ValueError('no backward here')\n"
                           "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.fc = nn.Linear(8, 1)\n    def forward(self, x):\n"
                           "        return Boom.apply(self.fc(x)).sum()\nnet = M()\n")
    with pytest.raises(UserCodeError, match=r"ValueError: no backward here \(at m.py:9") as err:
        health(f"{path}:net", input=batch_of()[0])
    assert err.value.exit_code is ExitCode.BACKEND


# --- rendering ------------------------------------------------------------------------------------


def rendered(report, **kw) -> str:
    out = StringIO()
    Console(file=out, width=160, color_system=None).print(render_health(report, **kw))
    return out.getvalue()


def test_the_table_puts_flags_first_and_the_origin_above():
    x, t = batch_of()
    report = health(f"{FAULTS}:sqrt_backward", input=x, target=t)
    text = rendered(report)
    assert text.index("NON-FINITE VALUES first appear in the backward") < text.index("modules:")
    assert "SqrtBackward0 at " + fault_line("sqrt_backward") in text
    rows = ordered(report.modules)
    assert [bool(m.flags) for m in rows] == sorted((bool(m.flags) for m in rows), reverse=True)
    assert "FAIL: nonfinite raised, and --fail-on nonfinite counts it (exit 1)" in text


def test_top_cuts_the_table_and_json_keeps_every_row_unless_asked():
    x, t = batch_of()
    report = health(f"{MODELS}:residual", input=x, target=t)
    assert "… 14 more modules (--top)" in rendered(report, top=4)
    full = health_to_dict(report)
    assert len(full["modules"]) == len(report.modules) and "left_out" not in full
    cut = health_to_dict(report, top=3)
    assert len(cut["modules"]) == 3 and cut["left_out"]["modules"] == len(report.modules) - 3


def test_json_is_strict_with_nan_as_null():
    x, t = batch_of()
    report = health(f"{FAULTS}:log_forward", input=x, target=t)
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    doc = json.loads(dumps(health_to_dict(report, timing=False)), parse_constant=refuse)
    assert doc["output"] is None and doc["flags"] == ["nonfinite"] and doc["ok"] is False
    assert doc["origin"]["op_at"] == fault_line("log_forward")


def test_the_library_calls_health_by_the_package_name():
    x, t = batch_of()
    report = gradcli.health(f"{MODELS}:tanh_mlp", input=x, target=t, lr=1e-3)
    assert report.lr == 1e-3 and [m.name for m in report.modules][-1] == "" and "health" in gradcli.__all__


# --- the command line --------------------------------------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from gradcli.cli import app  # noqa: E402

runner = CliRunner()
SAMPLES = Path(__file__).parent.parent / "sample_inputs"
POOLING = [f"{SAMPLES}/pooling.py:loss", "-x", f"{SAMPLES}/sequences.npy", "-t", f"{SAMPLES}/sequence_labels.json"]


def test_the_command_finds_the_nan_of_the_docs_worked_example_and_exits_1():
    result = runner.invoke(app, ["health", *POOLING, "--json", "--no-timing"])
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    o = doc["origin"]
    assert (o["module"], o["class"], o["op"]) == ("encoder.norm", "UnitNorm", "SqrtBackward0")
    lines = (SAMPLES / "pooling.py").read_text().splitlines()
    assert lines[int(o["op_at"].rsplit(":", 1)[1]) - 1].strip().startswith("norm = torch.sqrt(")
    assert doc["ok"] is False and doc["flags"] == ["nonfinite"]


def test_fail_on_decides_the_exit_code_and_o_writes_the_document(tmp_path):
    out = tmp_path / "health.json"
    args = ["health", f"{FAULTS}:scaled40", "-x", "randn:16,16", "-t", "randint:3:16", "--no-timing"]
    passed = runner.invoke(app, [*args, "-o", str(out)])
    assert passed.exit_code == 0 and "ok: no flag of --fail-on nonfinite raised (exit 0); raised but not failing: " \
        "exploding" in passed.stdout
    assert json.loads(out.read_text())["flags"] == ["exploding"]
    failed = runner.invoke(app, [*args, "--fail-on", "nonfinite,exploding", "--json"])
    assert failed.exit_code == 1 and json.loads(failed.stdout)["ok"] is False
    assert runner.invoke(app, ["health", *POOLING, "--fail-on", "none"]).exit_code == 0


@pytest.mark.parametrize("extra, message", [
    (["-o", "{tmp}/health.npy"], "--output: unknown extension '.npy'"),
    (["--fail-on", "slow", "-o", "{tmp}/h.json"], "--fail-on: unknown flag 'slow'"),
    (["--explode", "0.5", "-o", "{tmp}/h.json"], "--explode"),
    (["--wrt", "param:nothing", "-o", "{tmp}/h.json"], "--wrt param:nothing: matches no parameter"),
])
def test_bad_options_exit_2_with_nothing_on_stdout_and_no_file(tmp_path, extra, message):
    result = runner.invoke(app, ["health", *POOLING, *(e.format(tmp=tmp_path) for e in extra)])
    assert result.exit_code == 2 and result.stdout == "" and message in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_a_builtin_is_refused_on_the_command_line_too():
    result = runner.invoke(app, ["health", "softmax", "-x", "randn:3,4"])
    assert result.exit_code == 2 and "health runs your model" in result.stderr and result.stdout == ""


def test_your_code_raising_exits_3(tmp_path):
    path = write(tmp_path, "def broken():\n    raise RuntimeError('cannot build')\n")
    result = runner.invoke(app, ["health", f"{path}:broken", "-x", "randn:4,8"])
    assert result.exit_code == 3 and "cannot build" in result.stderr and result.stdout == ""


def test_a_cotangent_generator_takes_the_outputs_shape(tmp_path):
    path = write(tmp_path, "torch.manual_seed(0)\nnet = nn.Sequential(nn.Linear(8, 3))\n")
    result = runner.invoke(app, ["health", f"{path}:net", "-x", "randn:16,8", "--cotangent", "ones", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["cotangent_norm"] == pytest.approx(math.sqrt(48))


def test_a_checkpointed_segment_run_again_in_the_backward_is_not_a_second_call(tmp_path):
    text = ("import torch.nn.functional as F\nfrom torch.utils.checkpoint import checkpoint\n"
            "class Block(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            "        self.fc, self.act = nn.Linear(8, 8), nn.GELU()\n    def forward(self, x):\n"
            "        return x + self.act(self.fc(x))\n"
            "class Net(nn.Module):\n    def __init__(self, again):\n        super().__init__()\n"
            "        torch.manual_seed(0)\n        self.again = again\n"
            "        self.blocks = nn.ModuleList(Block() for _ in range(3))\n        self.head = nn.Linear(8, 3)\n"
            "    def forward(self, x, t):\n        for b in self.blocks:\n"
            "            x = checkpoint(b, x, use_reentrant=False) if self.again else b(x)\n"
            "        return F.cross_entropy(self.head(x), t)\n"
            "plain, checkpointed = Net(False), Net(True)\n")
    path = write(tmp_path, text)
    x, t = batch_of()
    plain, again = (health(f"{path}:{name}", input=x, target=t, wrt="input,param:*")
                    for name in ("plain", "checkpointed"))
    assert [m.label for m in again.modules] == [m.label for m in plain.modules]  # no "[call 2/2]"
    for a, b in zip(again.modules, plain.modules):
        assert (a.out_grad, a.in_grad) == pytest.approx((b.out_grad, b.in_grad), rel=TOL), a.label


def test_no_hook_is_left_on_the_model_or_its_parameters(tmp_path):
    path = write(tmp_path, "class Scale(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.s = nn.Parameter(torch.ones(8))\n    def forward(self, x):\n"
                           "        return self.s  # a parameter returned as it is: a leaf output\n"
                           "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                           "        self.scale, self.fc = Scale(), nn.Linear(8, 1)\n"
                           "    def forward(self, x):\n        return self.fc(x * self.scale(x)).sum()\nnet = M()\n")
    x, _ = batch_of()
    batch, _ = bind(f"{path}:net", input=x)
    report = examine(batch)
    assert {m.name: m.out_grad for m in report.modules}["scale"] > 0  # the leaf's hook fired
    model = batch.function.module
    assert not model.scale.s._backward_hooks
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert not torch.nn.modules.module._global_forward_hooks


def test_cuda_without_a_device_is_refused_and_float64_data_is_noted():
    args = ["health", f"{MODELS}:tanh_mlp", "-x", "randn:16,8", "-t", "randint:3:16"]
    result = runner.invoke(app, [*args, "--device", "cuda"])
    if torch.cuda.is_available():
        assert result.exit_code == 0, result.stderr
    else:
        assert result.exit_code == 3 and "--device cuda: torch sees no CUDA device" in result.stderr
    plain = runner.invoke(app, args)  # randn makes float64 data; the model is float32
    assert plain.exit_code == 0 and "float64 arrays computed in float32, the model's own dtype" in plain.stdout


def test_a_model_returning_a_dict_with_trained_weights_is_examined_with_select_and_weights(tmp_path):
    """Your model as it is: a dict return picked by --select, a checkpoint with a key prefix
    loaded by --weights; the norms are torch's on the trained weights, not the initial ones."""
    (tmp_path / "dictnet.py").write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc1, self.fc2 = nn.Linear(6, 8), nn.Linear(8, 3)\n\n"
        "    def forward(self, x, labels):\n"
        "        logits = self.fc2(torch.relu(self.fc1(x)))\n"
        "        return {'logits': logits, 'loss': nn.functional.cross_entropy(logits, labels)}\n")
    trained = fresh(tmp_path / "dictnet.py", "Net")()
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(3.0)
    torch.save({f"model.{k}": v for k, v in trained.state_dict().items()}, tmp_path / "ckpt.pt")
    x, t = torch.randn(5, 6), torch.tensor([0, 2, 1, 1, 0])
    trained(x, t)["loss"].backward()
    with pytest.raises(UsageError, match="--select loss"):
        health(f"{tmp_path}/dictnet.py:Net", input=x.numpy(), target=t.numpy())
    report = health(f"{tmp_path}/dictnet.py:Net", input=x.numpy(), target=t.numpy(), select="loss",
                    weights=str(tmp_path / "ckpt.pt"), weights_prefix="model.")
    expected = {n: float(p.grad.norm()) for n, p in trained.named_parameters()}
    got = {p.name: p.norm for p in report.parameters}
    assert got.keys() == expected.keys()
    for name, norm in expected.items():
        assert math.isclose(got[name], norm, rel_tol=1e-5), name


# --- the flag rules, each planted (the mutation harness's health class) -----------------------------------------

def test_the_dead_fraction_counts_units_dead_over_the_whole_batch(tmp_path):
    """One ReLU unit of four is 0 for every sample, the others positive for every sample: a quarter
    of the units are dead, though no sample's output is all 0."""
    path = write(tmp_path, "torch.manual_seed(0)\nnet = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))\n"
                           "with torch.no_grad():\n    net[0].weight[0].zero_()\n    net[0].bias[0] = -1.0\n"
                           "    net[0].bias[1:] = 100.0\n")
    x = batch_of()[0]
    net = fresh(path, "net")
    with torch.no_grad():
        h = net[1](net[0](torch.from_numpy(x.astype(np.float32))))
    expected = float((h == 0).all(0).double().mean())
    assert expected == 0.25 and not bool((h == 0).all(1).any())
    rows = {m.name: m for m in health(f"{path}:net", input=x, cotangent=np.ones((16, 3))).modules}
    assert rows["1"].dead == expected and rows["0"].dead == 0.0


def test_a_zero_initialised_layer_that_learns_is_not_dead(tmp_path):
    """Its outputs are all 0, but torch gives its weight a non-zero gradient: it learns, so it is not dead."""
    path = write(tmp_path, "torch.manual_seed(0)\nnet = nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 3))\n"
                           "with torch.no_grad():\n    net[2].weight.zero_()\n    net[2].bias.zero_()\n")
    x = batch_of()[0]
    net = fresh(path, "net")
    net(torch.from_numpy(x.astype(np.float32))).backward(torch.ones(16, 3))
    assert bool(net[2].weight.grad.any())
    rows = {m.name: m for m in health(f"{path}:net", input=x, cotangent=np.ones((16, 3))).modules}
    assert rows["2"].dead == 1.0 and Flag.DEAD not in rows["2"].flags


def test_gradient_norms_are_judged_relative_to_the_cotangents_norm(tmp_path):
    """A cotangent of norm 8e4 gives gradient norms of that size: above --explode (1e3) in absolute
    terms, O(1) times ‖v‖ (torch's own gradients say so): nothing explodes."""
    path = write(tmp_path, "torch.manual_seed(0)\nnet = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))\n")
    x = batch_of()[0]
    v = np.full((16, 4), 1e4)
    net = fresh(path, "net")
    net(torch.from_numpy(x.astype(np.float32))).backward(torch.from_numpy(v.astype(np.float32)))
    norms = [float(p.grad.norm()) for p in net.parameters()]
    assert max(norms) > 1e3 and max(norms) < 10 * np.linalg.norm(v)
    report = health(f"{path}:net", input=x, cotangent=v)
    assert report.cotangent_norm == pytest.approx(np.linalg.norm(v))
    assert report.flags == () and all(m.flags == () for m in report.modules)


def test_the_backward_origin_is_the_first_branch_torch_differentiates(tmp_path):
    """Two branches take sqrt at 0 (its derivative is inf) from finite output gradients: the origin is
    the one whose input gradient torch computes first (measured here with tensor hooks), not the last."""
    text = ("class Root(nn.Module):\n    def forward(self, x):\n        return torch.sqrt((x ** 2).sum(1))\n\n\n"
            "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        torch.manual_seed(0)\n"
            "        self.fc = nn.Linear(8, 8)\n        self.a = Root()\n        self.b = Root()\n\n"
            "    def forward(self, x, seen=None):\n        h = self.fc(x)\n"
            "        a, b = h[:, :4] * 0, h[:, 4:] * 0  # rows of zeros that require grad\n"
            "        if seen is not None:\n"
            "            a.register_hook(lambda g: seen.append('a'))\n"
            "            b.register_hook(lambda g: seen.append('b'))\n"
            "        return (self.a(a) + self.b(b)).sum()\n\n\nnet = Net()\n")
    path = write(tmp_path, text)
    x = batch_of()[0]
    seen = []
    net = fresh(path, "net")
    net(torch.from_numpy(x.astype(np.float32)), seen).backward()
    assert len(seen) == 2 and not bool(torch.isfinite(net.fc.weight.grad).all())
    origin = health(f"{path}:net", input=x).origin
    assert origin.phase is Phase.BACKWARD and origin.module == seen[0], origin
