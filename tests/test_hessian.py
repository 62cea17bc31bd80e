"""Second order: every family x backend against torch (hypothesis), --eig against
numpy.linalg.eigvalsh, chains, user code, check --quantity hessian|hvp, the CLI.

References: ``torch.func.hessian`` of the torch call written out in
``reference.py`` (forward over reverse, independent of gradcli's formulas
and of its reverse-over-reverse autograd backend) and
``torch.autograd.functional.hvp``. Blocks are read off the full Hessian row
by row here.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import gradcli
import reference as ref
from conftest import assert_close, exact_tol
from gradcli.cli import app
from gradcli.core.errors import BackendError
from gradcli.problem.problem import build_problem
from test_backends import FAMILIES

BACKENDS = ["analytic", "fd", "autograd", "forward"]
runner = CliRunner()


def tol2(backend: str, dtype) -> float:
    """fd's second differences (float64, Richardson: O(h^4) with h ~ eps^(1/6), and the rounding
    eps / h^2) are good to about eps^(1/3) at unit scale; the other backends are exact."""
    if backend == "fd":
        return max(float(np.finfo(np.float64).eps) ** (1 / 3), exact_tol(dtype))
    return exact_tol(dtype)


def _all_ignored_mean(case) -> bool:
    t = case["arrays"].get("target")
    p = case["params"]
    return (t is not None and t.dtype.kind in "iu" and p.get("reduction", "mean") == "mean"
            and bool((t == p.get("ignore_index", -100)).all()))


def _near_kink(case) -> bool:
    """fd's widest step (16 h, h = eps^(1/6) max(1, |x|)) would cross a kink or a
    switch of a piecewise second derivative: non-smooth there, tested separately."""
    name, arrays, params = case["function"], case["arrays"], case["params"]
    x = arrays["input"]
    reach = 16 * np.finfo(np.float64).eps ** (1 / 6) * np.maximum(1.0, np.abs(x)) * 2
    if name in ("l1_loss", "smooth_l1_loss", "huber_loss"):
        t = arrays["target"]
        reach = reach + 16 * np.finfo(np.float64).eps ** (1 / 6) * np.maximum(1.0, np.abs(t)) * 2
        d = np.abs(x - t)
        switch = params.get("beta", params.get("delta", 0.0))
        return bool(((d < reach) | (np.abs(d - switch) < reach)).any())
    if "abs" in name:
        return bool((np.abs(x) < reach).any())
    return False


def blocks_from_full(H, layout, reduced):
    """Each row's block ``(*out_block, C, C)`` read off a full Hessian, one row at a time."""
    in_shape, in_axis, out_axis = layout.in_shape, layout.in_axis, layout.out_axis
    rows = in_shape[:in_axis] + in_shape[in_axis + 1:]
    blocks = None
    for r in np.ndindex(*rows):
        in_index = r[:in_axis] + (slice(None),) + r[in_axis:]
        out_index = () if reduced else (r if out_axis is None else r[:out_axis] + (slice(None),) + r[out_axis:])
        block = H[out_index + in_index + in_index]
        if blocks is None:
            blocks = np.zeros(rows + block.shape, dtype=H.dtype)
        blocks[r] = block
    return blocks


def diagonal_from_full(H, shape, reduced):
    n = int(np.prod(shape, dtype=int))
    if reduced:
        return H.reshape(n, n).diagonal().reshape(shape)
    i = np.arange(n)
    return H.reshape(n, n, n)[i, i, i].reshape(shape)


def check_second_order(case, dtype, backend, seed):
    name, arrays, params, wrt = case["function"], case["arrays"], case["params"], case["wrt"]
    tolerance = tol2(backend, dtype)
    kw = {**arrays, **params, "wrt": wrt, "dtype": dtype, "backend": backend}
    if ref.limit(name, backend, ref.SECOND) is not None:  # torch cannot: a clean refusal naming the function
        stage = next(s for s in ref.stages(name) if ref.REFERENCE.get(s) and ref.REFERENCE[s].limits)
        with pytest.raises(BackendError, match=stage):
            gradcli.hessian(name, layout="full", **kw)
        return
    H = ref.full_hessian(name, arrays, params, wrt, dtype)

    full = gradcli.hessian(name, layout="full", **kw)
    assert full.backend.value == backend and full.value.dtype == np.dtype(dtype)
    assert_close(full.value, H, tolerance, f"{backend} full Hessian")
    assert_close(full.output, ref.output(name, arrays, params, wrt, dtype), exact_tol(dtype), "output")

    auto = gradcli.hessian(name, **kw)
    rows = build_problem(name, arrays, params, wrt=wrt).rows
    if auto.layout.value == "blocks":
        expected = blocks_from_full(H, rows, rows.reduced)
        assert_close(auto.value, expected, tolerance, f"{backend} blocks")
        # The blocks are the whole Hessian: nothing lies between rows.
        assert np.isclose(np.square(H).sum(), np.square(expected).sum(), rtol=tolerance, atol=tolerance)
    elif auto.layout.value == "diag":
        expected = diagonal_from_full(H, arrays[wrt].shape, rows.reduced)
        assert_close(auto.value, expected, tolerance, f"{backend} diag")
        assert np.isclose(np.square(H).sum(), np.square(expected).sum(), rtol=tolerance, atol=tolerance)
    else:
        assert auto.layout.value == "full"
        assert_close(auto.value, H, tolerance, f"{backend} auto")

    if full.output.shape == ():
        t = np.random.default_rng(seed).standard_normal(np.shape(arrays[wrt]))
        got = gradcli.hvp(name, tangent=t, **kw)
        assert_close(got.value, ref.hvp(name, arrays, params, t, wrt, dtype), tolerance, f"{backend} hvp")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=12)
@given(data=st.data(), dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 1000))
def test_family_hessian_matches_torch(family, backend, data, dtype, seed):
    """Full Hessian, auto layout (blocks/diag/full) and hvp of every family against torch."""
    case = data.draw(FAMILIES[family], label="case")
    assume(not _all_ignored_mean(case) and not (backend == "fd" and _near_kink(case)))
    check_second_order(case, dtype, backend, seed)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_blocks_are_row_weight_times_softmax_jacobian(backend):
    """Class weights, ignore_index, label smoothing and the mean's divisor folded into
    each row's weight: block r = coef_r a_r (diag(p_r) - p_r p_r^T)."""
    rng = np.random.default_rng(3)
    x, t, w = rng.standard_normal((5, 4)), np.array([0, 3, -1, 2, 1]), rng.random(4) + 0.5
    res = gradcli.hessian("cross_entropy", input=x, target=t, class_weight=w, ignore_index=-1, label_smoothing=0.2,
                          backend=backend)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    keep = t != -1
    a = (0.8 * w[np.where(keep, t, 0)] + 0.2 / 4 * w.sum()) * keep
    expected = (a / (w[t[keep]].sum()))[:, None, None] * (p[:, :, None] * np.eye(4) - p[:, :, None] * p[:, None, :])
    assert_close(res.value, expected, tol2(backend, "float64"), backend)
    assert not res.value[2].any()  # the ignored row has no curvature
    assert any("null space" in s for s in res.structure) and any("semi-definite" in s for s in res.structure)


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e4])
def test_fd_second_differences_adapt_their_step_and_bound_their_error(offset):
    """Logits offset by 1e4 vary on the scale of 1: the step is chosen per entry along a
    geometric sequence, and the error estimate bounds the true error (here against the closed form)."""
    rng = np.random.default_rng(9)
    x, t = rng.standard_normal((4, 5)) + offset, rng.integers(0, 5, 4)
    exact = gradcli.hessian("cross_entropy", input=x, target=t, backend="analytic").value
    fd = gradcli.hessian("cross_entropy", input=x, target=t, backend="fd")
    assert np.all(np.abs(fd.value - exact) <= fd.error)
    assert float(fd.error.max()) < 1e-8 and not fd.notes
    v = rng.standard_normal(x.shape)
    hvp = gradcli.hvp("cross_entropy", input=x, target=t, backend="fd", tangent=v)
    assert np.all(np.abs(hvp.value - np.einsum("rij,rj->ri", exact, v)) <= hvp.error)


def test_elementwise_blocks_along_the_last_axis():
    x = np.random.default_rng(1).standard_normal((3, 4))
    res = gradcli.hessian("mse_loss", input=x, target=np.zeros_like(x), reduction="sum", layout="blocks")
    assert res.value.shape == (3, 4, 4)
    assert_close(res.value, 2 * np.broadcast_to(np.eye(4), (3, 4, 4)), exact_tol("float64"))
    res = gradcli.hessian("tanh", input=x, layout="blocks")  # unreduced: (rows, C_out, C, C), diagonal in all three
    d2 = -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    expected = np.zeros((3, 4, 4, 4))
    i = np.arange(4)
    expected[:, i, i, i] = d2
    assert_close(res.value, expected, exact_tol("float64"))


def test_linear_cross_entropy_weight_hessian_is_x_h_x():
    """Gauss-Newton in block form: H[o, i, p, j] = sum_r x_ri (H_z,r)[o, p] x_rj."""
    rng = np.random.default_rng(2)
    x, W, t = rng.standard_normal((6, 3)), rng.standard_normal((4, 3)), rng.integers(0, 4, 6)
    res = gradcli.hessian("linear,cross_entropy", input=x, weight=W, target=t, wrt="weight")
    z = x @ W.T
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    hz = (p[:, :, None] * np.eye(4) - p[:, :, None] * p[:, None, :]) / 6
    assert_close(res.value, np.einsum("ri,rop,rj->oipj", x, hz, x), exact_tol("float64"))
    assert_close(res.value, ref.full_hessian("linear,cross_entropy", {"input": x, "weight": W, "target": t}, {}, "weight"),
                 exact_tol("float64"))


# --- eigenvalues -------------------------------------------------------------------


def _eig_expected(H, n, k):
    values = np.linalg.eigvalsh(H.reshape(n, n))
    return values[:k], values[-k:]


@pytest.mark.parametrize("backend", ["analytic", "autograd"])
def test_eig_from_blocks_is_exact(backend):
    rng = np.random.default_rng(4)
    arrays = {"input": rng.standard_normal((6, 5)), "target": rng.integers(0, 5, 6)}
    res = gradcli.hessian("cross_entropy", **arrays, eig=3, backend=backend)
    low, high = _eig_expected(ref.full_hessian("cross_entropy", arrays, {}), 30, 3)
    assert_close(res.spectrum.smallest, low, 1e-10)
    assert_close(res.spectrum.largest, high, 1e-10)
    assert res.spectrum.method.startswith("exact") and res.spectrum.residual is None


def test_eig_of_a_small_argument_without_blocks_is_exact_and_its_note_says_so():
    """12 entries: H formed from 12 hvps (no Lanczos), and the note said 'by Lanczos on hvp'."""
    rng = np.random.default_rng(6)
    arrays = {"input": rng.standard_normal((8, 4)), "weight": rng.standard_normal((3, 4)), "target": rng.integers(0, 3, 8)}
    res = gradcli.hessian("linear,cross_entropy", **arrays, wrt="weight", eig=2, backend="autograd")
    low, high = _eig_expected(ref.full_hessian("linear,cross_entropy", arrays, {}, "weight"), 12, 2)
    assert_close(res.spectrum.smallest, low, 1e-10)
    assert_close(res.spectrum.largest, high, 1e-10)
    assert res.spectrum.method.startswith("exact")
    eig_notes = [n for n in res.notes if n.startswith("--eig")]
    assert eig_notes and "exact" in eig_notes[0] and "Lanczos" not in eig_notes[0], res.notes


@pytest.mark.parametrize("backend", ["analytic", "autograd"])
def test_eig_by_lanczos_without_blocks(backend):
    rng = np.random.default_rng(5)
    # 300 entries: above DENSE_HVPS, where Lanczos costs fewer hvps than forming H
    arrays = {"input": rng.standard_normal((8, 60)), "weight": rng.standard_normal((5, 60)), "target": rng.integers(0, 5, 8)}
    res = gradcli.hessian("linear,cross_entropy", **arrays, wrt="weight", eig=2, backend=backend)
    low, high = _eig_expected(ref.full_hessian("linear,cross_entropy", arrays, {}, "weight"), 300, 2)
    assert res.layout is None and res.value.shape == (4,)  # the Hessian itself is not formed
    # 0 is a many-fold eigenvalue (shifting every logit of a row changes nothing): Lanczos finds it, once.
    assert low[1] == pytest.approx(0, abs=1e-12) and "multiplicity" in res.spectrum.method
    assert_close(res.spectrum.smallest[:1], low[:1], 1e-7)
    assert_close(res.spectrum.largest, high, 1e-7)
    assert res.spectrum.method.startswith("Lanczos") and res.spectrum.residual < 1e-6 and res.spectrum.hvps > 0
    full = gradcli.hessian("linear,cross_entropy", **arrays, wrt="weight", eig=2, backend=backend, layout="full")
    assert full.value.shape == (5, 60, 5, 60)
    assert_close(full.spectrum.largest, high, 1e-10)


def test_eig_of_a_small_argument_is_exact_from_the_dense_hessian():
    """32 entries: the Hessian formed from 32 hvps (Lanczos took 183), every eigenvalue exact."""
    rng = np.random.default_rng(6)
    arrays = {"input": rng.standard_normal((8, 8)), "weight": rng.standard_normal((4, 8)), "target": rng.integers(0, 4, 8)}
    res = gradcli.hessian("linear,cross_entropy", **arrays, wrt="weight", eig=2, backend="autograd")
    low, high = _eig_expected(ref.full_hessian("linear,cross_entropy", arrays, {}, "weight"), 32, 2)
    assert res.spectrum.method.startswith("exact") and res.spectrum.hvps == 32
    assert_close(res.spectrum.smallest, low, 1e-10)  # the repeated 0 too: every eigenvalue, multiplicity kept
    assert_close(res.spectrum.largest, high, 1e-10)


def test_eig_of_a_tiny_argument_uses_the_dense_hessian():
    rng = np.random.default_rng(6)
    arrays = {"input": rng.standard_normal((4, 3)), "weight": rng.standard_normal((2, 3)), "bias": rng.standard_normal(2),
              "target": rng.integers(0, 2, 4)}
    res = gradcli.hessian("linear,cross_entropy", **arrays, wrt="bias", eig=1)
    low, high = _eig_expected(ref.full_hessian("linear,cross_entropy", arrays, {}, "bias"), 2, 1)
    assert res.spectrum.method.startswith("exact") and res.spectrum.hvps == 2
    assert_close(res.spectrum.smallest, low, 1e-12)
    assert_close(res.spectrum.largest, high, 1e-12)


# --- user code -----------------------------------------------------------------------

MODEL = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(3, 4)
        self.fc2 = torch.nn.Linear(4, 2)

    def forward(self, x, target):
        return torch.nn.functional.cross_entropy(self.fc2(torch.tanh(self.fc1(x))), target)

net = Net()
"""
DETACHED = Path(__file__).resolve().parents[1] / "sample_inputs" / "detached_backward.py"
BUG = "2 * x.detach() * grad"


def user_file(tmp_path, backward=None):
    """The module above, or the sample custom Function with its backward replaced."""
    if backward is None:
        path = tmp_path / "model.py"
        path.write_text(textwrap.dedent(MODEL))
        return path
    text = DETACHED.read_text()
    assert BUG in text
    path = tmp_path / "custom.py"
    path.write_text(text.replace(BUG, backward))
    return path


def _module_reference(path, x, t, name):
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("hess_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.net.double()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def f(p):
        return torch.func.functional_call(net, {**params, name: p}, (torch.tensor(x), torch.tensor(t)))

    return torch.func.hessian(f)(params[name]).numpy()


@pytest.mark.parametrize("backend", ["autograd", "forward", "fd"])
def test_user_module_parameter_hessian(tmp_path, backend):
    path = user_file(tmp_path)
    rng = np.random.default_rng(7)
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    res = gradcli.hessian(f"{path}:net", input=x, target=t, wrt="param:fc1.weight", backend=backend)
    expected = _module_reference(path, x, t, "fc1.weight")
    assert res.value.shape == (4, 3, 4, 3)
    assert_close(res.value, expected, tol2(backend, "float64"), backend)
    v = rng.standard_normal((4, 3))
    got = gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:fc1.weight", backend=backend, tangent=v)
    assert_close(got.value, np.tensordot(expected, v, axes=2), tol2(backend, "float64"), backend)


def _joint_loss(path, x, t):
    """The module's loss as a torch function of its parameters concatenated in
    their order (written out here, independent of gradcli), and that vector."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("hess_model_all", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.net.double()
    params = {k: p.detach() for k, p in net.named_parameters()}
    theta = torch.cat([p.reshape(-1) for p in params.values()])

    def loss(th):
        split = torch.split(th, [p.numel() for p in params.values()])
        named = {k: s.reshape(p.shape) for (k, p), s in zip(params.items(), split)}
        return torch.func.functional_call(net, named, (torch.tensor(x), torch.tensor(t)))

    return loss, theta


def test_hvp_over_every_parameter_joined(tmp_path):
    """--wrt 'param:*': the parameters flattened in the module's order into one vector,
    so H t has the cross terms between layers."""
    import torch

    path = user_file(tmp_path)
    rng = np.random.default_rng(10)
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    loss, theta = _joint_loss(path, x, t)
    v = rng.standard_normal(theta.numel())
    expected = torch.autograd.functional.hvp(loss, theta, torch.tensor(v))[1].numpy()
    for backend in ("autograd", "forward", "fd"):
        got = gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:*", tangent=v, backend=backend)
        assert got.value.shape == (theta.numel(),)
        assert_close(got.value, expected, tol2(backend, "float64"), backend)
    layer = gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:fc2.*", tangent=v[-10:])
    assert layer.value.shape == (10,)  # fc2.weight (2, 4) and fc2.bias (2,)


@pytest.mark.parametrize("backend", ["autograd", "forward"])
def test_hessian_over_every_parameter_joined_matches_torch_func(tmp_path, backend):
    """The joint vector split back into the parameters (one torch.split, batched under
    vmap by the forward backend): the whole Hessian, cross terms between layers included,
    against torch.func.hessian of the loss of the concatenated parameters."""
    import torch

    path = user_file(tmp_path)
    rng = np.random.default_rng(11)
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    loss, theta = _joint_loss(path, x, t)
    expected = torch.func.hessian(loss)(theta).numpy()
    res = gradcli.hessian(f"{path}:net", input=x, target=t, wrt="param:*", backend=backend)
    assert res.value.shape == (26, 26) and np.any(expected[:12, 16:])  # fc1.weight x fc2.weight terms exist
    assert_close(res.value, expected, exact_tol("float64"), backend)


def test_hvp_of_a_function_loaded_once(tmp_path):
    """gradcli.hvp given a Function from gradcli.problem.function.lookup (the file imported once,
    reused by later calls) equals the call naming the file, call after call: the module
    gradcli moved to float64 and the parameters it read are those of the file."""
    from gradcli.problem.function import lookup

    path = user_file(tmp_path)
    rng = np.random.default_rng(12)
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    v = rng.standard_normal(26)
    fresh = gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:*", tangent=v)
    loaded = lookup(f"{path}:net")
    for _ in range(2):
        got = gradcli.hvp(loaded, input=x, target=t, wrt="param:*", tangent=v, backend="autograd")
        np.testing.assert_array_equal(got.value, fresh.value)
        np.testing.assert_array_equal(got.output, fresh.output)


def test_parameter_array_is_a_copy_never_the_live_parameter(tmp_path):
    """build_problem keeps what parameter_array returns (read-only) without copying it:
    it must not share memory with the module's float64 parameter."""
    from gradcli.problem.function import lookup

    function = lookup(f"{user_file(tmp_path)}:net")
    function.module.double()
    weight = function.module.fc1.weight
    value = function.parameter_array("fc1.weight")
    assert value.dtype == np.float64 and value.shape == (4, 3)
    np.testing.assert_array_equal(value, weight.detach().numpy())
    assert not np.shares_memory(value, weight.detach().numpy())
    joint = function.parameter_array("*")
    np.testing.assert_array_equal(joint[:12], value.reshape(-1))
    assert not np.shares_memory(joint, weight.detach().numpy())


def test_eig_on_a_module_parameter(tmp_path):
    """12 entries: the Hessian formed from 12 hvps of the module, its eigenvalues exact."""
    path = user_file(tmp_path)
    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    res = gradcli.hessian(f"{path}:net", input=x, target=t, wrt="param:fc1.weight", eig=2)
    low, high = _eig_expected(_module_reference(path, x, t, "fc1.weight"), 12, 2)
    assert res.backend.value == "autograd" and res.spectrum.method.startswith("exact") and res.spectrum.hvps == 12
    assert_close(res.spectrum.smallest, low, 1e-10)
    assert_close(res.spectrum.largest, high, 1e-10)
    assert res.spectrum.residual < 1e-10


def test_check_hessian_fails_a_backward_that_is_right_but_not_differentiable(tmp_path):
    """2 x.detach() is the right first derivative, but its own derivative is lost:
    the first-order check passes, the second-order one must fail."""
    path = user_file(tmp_path, BUG)
    args = [f"{path}:loss", "-x", "[0.5, -1.5, 2.0]", "--json"]
    assert runner.invoke(app, ["check", *args]).exit_code == 0
    result = runner.invoke(app, ["check", *args, "--quantity", "hessian"])
    assert result.exit_code == 1, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    fd = next(b for b in doc["backends"] if b["name"] == "fd")
    assert fd["ok"] is False and fd["mismatches"] == 3  # the diagonal: 2 + 2x against the wrong 2x
    assert any("suspect autograd" in n for n in doc["notes"])
    hvp = runner.invoke(app, ["check", *args, "--quantity", "hvp"])
    assert hvp.exit_code == 1


def test_check_hessian_passes_a_differentiable_backward(tmp_path):
    path = user_file(tmp_path, "2 * x * grad")
    result = runner.invoke(app, ["check", f"{path}:loss", "-x", "[0.5, -1.5, 2.0]", "--json", "--quantity", "hessian"])
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["quantity"] == "hessian" and doc["ok"] is True and doc["shape"] == [3, 3]


@pytest.mark.parametrize("quantity", ["hessian", "hvp"])
def test_check_second_order_on_builtins(quantity):
    result = runner.invoke(app, ["check", "cross_entropy", "-x", "randn:4,5", "-t", "[0, 1, 4, 2]", "--label-smoothing",
                                 "0.1", "--class-weight", "rand:5", "--quantity", quantity, "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and {b["name"] for b in doc["backends"]} == {"forward", "analytic", "fd"}
    assert all(b["ok"] for b in doc["backends"])


def test_asymmetric_hessian_is_warned():
    from gradcli.compute.second_order import hessian_structure

    problem = build_problem("expr:x**3", {"input": np.zeros(2)}, {})
    notes = hessian_structure(np.array([[1.0, 2.0], [0.0, 1.0]]), gradcli.core.options.Layout.FULL,
                              problem.with_notes(), np.dtype("float64"))
    assert any(n.startswith("WARNING: NOT symmetric") for n in notes)


# --- the CLI -------------------------------------------------------------------------


def run_json(*args):
    result = runner.invoke(app, [*args, "--json", "--no-timing"])
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_cli_hessian_json_blocks_and_eigenvalues():
    doc = run_json("hessian", "cross_entropy", "-x", "randn:3,5", "-t", "[1, 0, 4]", "--eig", "2")
    assert doc["command"] == "hessian" and doc["layout"] == "blocks" and doc["shape"] == [3, 5, 5]
    assert len(doc["eigenvalues"]["smallest"]) == 2 and doc["eigenvalues"]["method"].startswith("exact")
    assert any("null space" in s for s in doc["structure"])
    full = run_json("hessian", "cross_entropy", "-x", "randn:3,5", "-t", "[1, 0, 4]", "--layout", "full", "-b", "fd")
    assert full["shape"] == [3, 5, 3, 5] and full["backend"] == "fd" and full["error_estimate"] < 1e-8
    lanczos = run_json("hessian", "linear,cross_entropy", "-x", "randn:8,6", "--weight", "randn:5,6", "-t", "randint:5:8",
                       "--wrt", "weight", "--eig", "1")
    assert lanczos["eigenvalues"]["hvps"] > 0 and lanczos["eigenvalues"]["residual"] < 1e-6


def test_cli_hvp_json():
    doc = run_json("hvp", "cross_entropy", "-x", "randn:3,5", "-t", "[1, 0, 4]", "--tangent", "ones:3,5")
    assert doc["command"] == "hvp" and doc["shape"] == [3, 5]
    assert np.allclose(doc["value"], 0, atol=1e-15)  # ones is in every block's null space


@pytest.mark.parametrize("args, message", [
    (["hvp", "softmax", "-x", "randn:2,3", "--tangent", "randn"], "not one number"),
    (["hvp", "cross_entropy", "-x", "randn:2,3", "-t", "[0, 1]"], "--tangent"),
    (["hvp", "cross_entropy", "-x", "randn:2,3", "-t", "[0, 1]", "--tangent", "randn:3"], "--tangent"),
    (["hessian", "cross_entropy", "-x", "randn:2,3", "-t", "[0, 1]", "--layout", "diag"], "--layout diag"),
    (["hessian", "linear", "-x", "randn:2,3", "--weight", "randn:2,3", "--wrt", "weight", "--layout", "blocks"],
     "--layout blocks"),
    (["hessian", "cross_entropy", "-x", "randn:2,3", "-t", "[0, 1]", "--eig", "0"], "--eig"),
    (["hessian", "softmax", "-x", "randn:2,3", "--eig", "1"], "not one number"),
    (["hessian", "cross_entropy", "-x", "randn:64,32", "-t", "randint:32:64", "--layout", "full", "--max-memory", "1MiB"],
     "--layout blocks"),
])
def test_cli_bad_input_exits_2(args, message, tmp_path):
    out = tmp_path / "h.npy"
    result = runner.invoke(app, [*args, "-o", str(out)])
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.stdout == "" and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2 and not out.exists()


def test_cli_table_explain_teaches_the_cross_entropy_hessian():
    result = runner.invoke(app, ["hessian", "cross_entropy", "-x", "randn:2,3", "-t", "[0, 2]", "--explain", "--no-timing"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "softmax Jacobian" in text and "null space" in text and "row 1" in text


def test_functions_shows_second_derivatives():
    result = runner.invoke(app, ["functions", "cross_entropy", "--json"])
    entry = json.loads(result.stdout)["functions"][0]
    assert any("diag(s) - s s^T" in line for line in entry["second_formulas"])
    table = runner.invoke(app, ["functions", "softmax"])
    assert "second derivatives" in table.stdout


def test_spectrum_plot(tmp_path):
    out = tmp_path / "spectrum.png"
    result = runner.invoke(app, ["hessian", "cross_entropy", "-x", "randn:8,5", "-t", "randint:5:8", "--eig", "1",
                                 "--plot", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analytic_and_fd_second_order_never_import_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np, gradcli; x = np.random.default_rng(0).standard_normal((3, 4)); "
            "t = np.array([0, 1, 2]); gradcli.hessian('cross_entropy', input=x, target=t, eig=1); "
            "gradcli.hessian('cross_entropy', input=x, target=t, backend='fd'); "
            "gradcli.hessian('linear,cross_entropy', input=x, weight=np.ones((2, 4)), target=np.array([0, 1, 1]), "
            "wrt='weight', eig=1); print('torch' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(root), "PATH": ""})
    assert out.stdout.strip() == "False"


SECOND_GOLDENS = {
    "story6_hessian_ce_blocks_eig": ["hessian", "cross_entropy", "-x", "sample_inputs/logits.npy", "-t",
                                     "sample_inputs/targets.json", "--eig", "2", "--explain"],
    "story6_hvp_ce": ["hvp", "cross_entropy", "-x", "sample_inputs/logits.npy", "-t", "sample_inputs/targets.json",
                      "--tangent", "randn"],
    "story6_hessian_softmax_blocks": ["hessian", "softmax", "-x", "[[1.0, 2.0, 3.0]]", "--explain"],
}


@pytest.mark.parametrize("name", list(SECOND_GOLDENS))
def test_golden_second_order_tables(name, request, monkeypatch):
    """Table output at fixed width, as tests/test_presentation.py's goldens (round-off shown as ≈0)."""
    from test_presentation import GOLDENS, ROOT, without_roundoff

    monkeypatch.chdir(ROOT)
    result = runner.invoke(app, SECOND_GOLDENS[name] + ["--no-timing"])
    assert result.exit_code == 0, result.stderr
    text = without_roundoff(f"$ gradcli {' '.join(SECOND_GOLDENS[name])}\n{result.stdout}")
    golden = GOLDENS / f"{name}.txt"
    if request.config.getoption("--update-goldens"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{name}: table output changed; if intended, run pytest --update-goldens"


def test_a_tangent_names_the_parameter_it_must_match():
    """A parameter's tangent is checked against ``--wrt param:NAME`` (not a ``--param:NAME`` option), and
    ``check`` refuses one tangent for several parameters before computing anything."""
    mlp = str(Path(__file__).resolve().parents[1] / "sample_inputs" / "mlp.py") + ":loss"
    base = [mlp, "-x", "randn:4,784", "-t", "[0, 1, 2, 0]"]
    wrong = runner.invoke(app, ["hvp", *base, "--wrt", "param:fc3.bias", "--tangent", "randn:10,512"])
    assert wrong.exit_code == 2 and wrong.stdout == ""
    assert "does not match --wrt param:fc3.bias [10]" in wrong.stderr, wrong.stderr
    several = runner.invoke(app, ["check", *base, "--wrt", "param:fc3.*", "--quantity", "hvp",
                                  "--tangent", "randn:10,512"])
    assert several.exit_code == 2 and several.stdout == ""
    assert "cannot serve 2 --wrt entries (param:fc3.weight [10, 512], param:fc3.bias [10])" in several.stderr


TWO_LAYERS = """
import torch
from torch import nn


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x.detach() * grad


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(3, 2)
        self.b = nn.Linear(3, 2)

    def forward(self, x):
        return Square.apply(self.a(x)).sum() + torch.tanh(self.b(x)).pow(2).sum()


net = TwoLayers()
"""


def test_check_hvp_over_a_parameter_list_gives_each_entry_its_own_direction(tmp_path):
    """Without --tangent, every --wrt entry gets a seeded direction shaped like it (an input-shaped
    default made every parameter a shape error), and only the layer behind the detached backward fails."""
    (tmp_path / "two.py").write_text(TWO_LAYERS)
    result = runner.invoke(app, ["check", f"{tmp_path}/two.py:net", "-x", "randn:4,3", "--wrt", "param:*",
                                 "--quantity", "hvp", "--json"])
    assert result.exit_code == 1, result.stdout + result.stderr
    verdicts = {r["wrt"]: r["ok"] for r in json.loads(result.stdout)["results"]}
    assert verdicts == {"param:a.weight": False, "param:a.bias": False, "param:b.weight": True,
                        "param:b.bias": True}


@pytest.mark.parametrize("function,args,fix", [
    ("softmax", [], "softmax has no --reduction: end it in a loss, e.g. softmax,cross_entropy"),
    ("cross_entropy", ["-t", "[0, 1, 2]", "--reduction", "none"], "use --reduction mean or sum"),
])
@pytest.mark.parametrize("command", [["grad"], ["hvp", "--tangent", "randn"], ["hessian", "--eig", "1"]])
def test_a_vector_output_is_refused_with_a_fix_the_function_has(function, args, fix, command):
    """Only a function with a --reduction is told to use it (softmax has none)."""
    result = runner.invoke(app, [command[0], function, "-x", "randn:3,4", *args, *command[1:]])
    assert result.exit_code == 2 and result.stdout == ""
    assert "not one number" in result.stderr and fix in result.stderr, result.stderr
    assert ("--reduction mean or sum" in result.stderr) == (function != "softmax")


NORMED = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(3, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.fc2 = torch.nn.Linear(4, 2)
        self.norm.weight.data.uniform_(0.5, 1.5)
        self.bn.weight.data.uniform_(0.5, 1.5)

    def forward(self, x, target):
        h = torch.nn.functional.gelu(self.bn(self.norm(self.fc1(x))))
        return torch.nn.functional.cross_entropy(self.fc2(h), target)

net = Net()  # training mode: the batch norm uses the batch's statistics
"""


@pytest.mark.parametrize("backend", ["forward", "autograd"])
def test_hessian_of_normalisation_layers_over_every_parameter(tmp_path, backend):
    """LayerNorm and training-mode BatchNorm after a Linear layer: the cross terms between
    fc1 and the norms' weights. torch 2.13's torch.func.hessian (a jvp of the vjp batched
    over its cotangent) drops them; the forward backend must not. Reference: reverse over
    reverse, torch.autograd.functional.hessian of the concatenated parameters."""
    import torch

    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(NORMED))
    rng = np.random.default_rng(12)
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    loss, theta = _joint_loss(path, x, t)
    expected = torch.autograd.functional.hessian(loss, theta).numpy()
    hessian_and_hvp_are(expected, path, x, t, rng, backend)


def hessian_and_hvp_are(expected, path, x, t, rng, backend):
    """``hessian`` and ``hvp`` (along a random direction) of ``path:net`` w.r.t. every
    parameter equal ``expected``, torch's Hessian of the joint parameter vector."""
    res = gradcli.hessian(f"{path}:net", input=x, target=t, wrt="param:*", backend=backend)
    assert_close(res.value, expected, exact_tol("float64"), backend)
    v = rng.standard_normal(expected.shape[0])
    got = gradcli.hvp(f"{path}:net", input=x, target=t, wrt="param:*", tangent=v, backend=backend)
    assert_close(got.value, expected @ v, exact_tol("float64"), backend)


WEIGHT_NORMED = """
import torch
from torch.nn.utils import parametrizations, weight_norm

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = parametrizations.weight_norm(torch.nn.Linear(3, 4))
        self.fc2 = weight_norm(torch.nn.Linear(4, 2))  # the older hook-based form

    def forward(self, x, target):
        return torch.nn.functional.cross_entropy(self.fc2(torch.tanh(self.fc1(x))), target)

net = Net()
"""


@pytest.mark.parametrize("backend", ["autograd", "forward"])
def test_hessian_through_weight_norm(tmp_path, backend):
    """weight_norm, both forms: torch 2.13's fused kernel has a wrong double backward (and
    no forward-mode formula); gradcli's torch backends must give the Hessian of w = g v / ||v||.
    Reference: that formula written out here, differentiated twice by torch."""
    import torch

    from gradcli.problem.function import lookup

    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(WEIGHT_NORMED))
    rng = np.random.default_rng(13)
    x, t = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    _, theta = _joint_loss(path, x, t)
    names = [n for n, _ in lookup(f"{path}:net").module.named_parameters()]
    shapes = {"fc1.bias": (4,), "fc1.parametrizations.weight.original0": (4, 1),
              "fc1.parametrizations.weight.original1": (4, 3), "fc2.bias": (2,), "fc2.weight_g": (2, 1),
              "fc2.weight_v": (2, 4)}
    assert sorted(names) == sorted(shapes)

    def loss(th):
        p = {n: s.reshape(shapes[n]) for n, s in zip(names, torch.split(th, [int(np.prod(shapes[n])) for n in names]))}
        w1 = p["fc1.parametrizations.weight.original0"] * p["fc1.parametrizations.weight.original1"] / \
            p["fc1.parametrizations.weight.original1"].norm(dim=1, keepdim=True)
        w2 = p["fc2.weight_g"] * p["fc2.weight_v"] / p["fc2.weight_v"].norm(dim=1, keepdim=True)
        h = torch.tanh(torch.nn.functional.linear(torch.tensor(x), w1, p["fc1.bias"]))
        return torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, w2, p["fc2.bias"]), torch.tensor(t))

    expected = torch.autograd.functional.hessian(loss, theta).numpy()
    hessian_and_hvp_are(expected, path, x, t, rng, backend)


ATTENTION = """
import torch

torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(4, 1, dim_feedforward=8, dropout=0.0, batch_first=True).double().eval()


def net(x):
    return layer(x)


def energy(x):
    return (layer(x) ** 2).sum()
"""


def test_attention_in_forward_mode_and_second_order(tmp_path):
    """nn.TransformerEncoderLayer runs scaled_dot_product_attention's CPU flash kernel, which
    has no forward-mode formula and no double backward: forward mode, hessian and hvp run it
    by the math kernel (the same numbers) instead of exiting 3."""
    import importlib.util

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    path = tmp_path / "attention.py"
    path.write_text(textwrap.dedent(ATTENTION))
    spec = importlib.util.spec_from_file_location("attention_ref", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = np.random.default_rng(14).standard_normal((2, 3, 4))
    X = torch.tensor(x)
    jac = gradcli.jacobian(f"{path}:net", input=x, backend="forward", layout="full")
    assert_close(jac.value, torch.func.jacrev(module.net)(X).detach().numpy(), exact_tol("float64"), "forward")
    with sdpa_kernel([SDPBackend.MATH]):  # torch's own Hessian needs the math kernel too
        expected = torch.autograd.functional.hessian(module.energy, X).numpy()
    for backend in ("autograd", "forward"):
        res = gradcli.hessian(f"{path}:energy", input=x, backend=backend)
        assert_close(res.value, expected, exact_tol("float64"), backend)
    # autograd's jvp is a double backward (the vjp differentiated once more): it exited 3 here
    t = np.random.default_rng(15).standard_normal(x.shape)
    full = torch.func.jacrev(module.net)(X).detach().numpy().reshape(x.size, x.size)
    for backend in ("autograd", "forward"):
        got = gradcli.jvp(f"{path}:net", input=x, tangent=t, backend=backend)
        assert_close(got.value, (full @ t.reshape(-1)).reshape(x.shape), exact_tol("float64"), backend)
