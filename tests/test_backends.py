"""Every function x option x backend against torch, computed here (hypothesis).

The reference is torch.autograd on the torch call written out in
``reference.py``; the Jacobian's blocks are read off torch's full Jacobian row
by row. Tolerances come from the dtype (conftest).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import gradcli
import reference as ref
from conftest import assert_close, tol
from gradcli.core.errors import BackendError

BACKENDS = ["analytic", "fd", "autograd", "forward"]


def _all_ignored_mean(case) -> bool:
    """torch's own modes disagree here (reverse: zero gradient, forward: nan); tested separately."""
    t = case["arrays"].get("target")
    p = case["params"]
    return (t is not None and t.dtype.kind in "iu" and p.get("reduction", "mean") == "mean"
            and bool((t == p.get("ignore_index", -100)).all()))


def _kwargs(case, dtype, backend):
    return {**case["arrays"], **case["params"], "wrt": case["wrt"], "dtype": dtype, "backend": backend}


def _ref_args(case):
    return case["function"], case["arrays"], case["params"], case["wrt"]


def check_all_quantities(case, dtype, backend, seed):
    name, arrays, params, wrt = _ref_args(case)
    kw = _kwargs(case, dtype, backend)
    reason = ref.limit(name, backend, ref.FIRST)
    if reason is not None:  # torch cannot: gradcli refuses cleanly, naming the function (never a wrong number)
        stage = next(s for s in ref.stages(name) if ref.REFERENCE.get(s) and ref.REFERENCE[s].limits)
        for quantity in (gradcli.jacobian, gradcli.jvp):
            with pytest.raises(BackendError, match=stage):
                quantity(name, **kw, **({"tangent": np.ones(np.shape(arrays[wrt]))} if quantity is gradcli.jvp else {}))
        return
    tolerance = tol(backend, dtype)
    full = ref.full_jacobian(name, arrays, params, wrt, dtype)
    out = ref.output(name, arrays, params, wrt, dtype)

    res = gradcli.jacobian(name, layout="full", **kw)
    assert res.backend.value == backend and res.dtype == dtype
    assert_close(res.value, full, tolerance, f"{backend} full Jacobian")
    assert_close(res.output, out, tol("analytic", dtype), f"{backend} output")
    assert res.value.dtype == np.dtype(dtype)

    auto = gradcli.jacobian(name, **kw)
    if auto.layout.value == "blocks":
        problem_rows = gradcli.problem.problem.build_problem(name, arrays, params, wrt=wrt).rows
        expected = ref.blocks_from_full(full, arrays[wrt].shape, problem_rows.in_axis, problem_rows.out_axis)
        assert_close(auto.value, expected, tolerance, f"{backend} blocks")
        # The blocks are the whole Jacobian: nothing lies off the block diagonal.
        assert np.isclose(np.square(full).sum(), np.square(expected).sum(), rtol=tolerance)
    elif auto.layout.value == "diag":
        n = arrays[wrt].size
        expected = full.reshape(n, n).diagonal().reshape(arrays[wrt].shape)
        assert_close(auto.value, expected, tolerance, f"{backend} diag")
        assert np.isclose(np.square(full).sum(), np.square(expected).sum(), rtol=tolerance)  # nothing off the diagonal
        if expected.ndim:  # --layout blocks: the diagonal blocks along the last axis
            blocks = gradcli.jacobian(name, layout="blocks", **kw).value
            c = expected.shape[-1]
            assert_close(blocks, expected[..., :, None] * np.eye(c), tolerance, f"{backend} elementwise blocks")
    else:
        assert_close(auto.value, full, tolerance, f"{backend} auto layout")

    rng = np.random.default_rng(seed)
    v = rng.standard_normal(out.shape)
    assert_close(gradcli.vjp(name, cotangent=v, **kw).value, ref.backward(name, arrays, params, wrt, dtype, v),
                 tolerance, f"{backend} vjp")
    if out.shape == ():
        assert_close(gradcli.grad(name, **kw).value, ref.backward(name, arrays, params, wrt, dtype), tolerance,
                     f"{backend} grad")
    t = rng.standard_normal(arrays[wrt].shape)
    assert_close(gradcli.jvp(name, tangent=t, **kw).value, ref.jvp(name, arrays, params, t, wrt, dtype), tolerance,
                 f"{backend} jvp")


FAMILIES = ref.families()  # every built-in's sample inputs, by family (tests/reference.py)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
@given(data=st.data(), dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 1000))
def test_family_matches_torch(family, backend, data, dtype, seed):
    """Full Jacobian, auto layout, vjp, grad and jvp of every family against torch."""
    case = data.draw(FAMILIES[family], label="case")
    assume(not _all_ignored_mean(case))
    check_all_quantities(case, dtype, backend, seed)


@given(case=ref.cases())
def test_backends_agree_with_each_other(case):
    """The four backends give the same full Jacobian, in float64."""
    assume(not _all_ignored_mean(case))
    results = {b: gradcli.jacobian(case["function"], layout="full", **_kwargs(case, "float64", b)).value for b in BACKENDS}
    for backend in BACKENDS[1:]:
        assert_close(results[backend], results["analytic"], tol(backend, "float64"), f"{backend} vs analytic")


@pytest.mark.parametrize("backend", ["analytic", "fd", "autograd"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_every_target_ignored_gives_nan_loss_and_zero_gradient_as_torch(backend, label_smoothing):
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = np.full(3, -100)
    res = gradcli.grad("cross_entropy", input=x, target=t, label_smoothing=label_smoothing, backend=backend)
    torch_grad = ref.backward("cross_entropy", {"input": x, "target": t}, {"label_smoothing": label_smoothing})
    assert np.isnan(res.output) and np.isnan(ref.output("cross_entropy", {"input": x, "target": t}, {}))
    np.testing.assert_array_equal(res.value, torch_grad)
    assert any("every target is ignored" in n for n in res.notes)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("function", ["softmax", "log_softmax", "cross_entropy"])
def test_huge_logits_stay_finite_and_correct(backend, function):
    """Logits of +-1e4: the analytic backend's log-sum-exp keeps every value finite."""
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1.0], [-1e4, -1e4 + 2.0, -1e4, -1e4]])
    arrays = {"input": x} if function != "cross_entropy" else {"input": x, "target": np.array([1, 0])}
    res = gradcli.jacobian(function, layout="full", backend=backend, **arrays)
    assert np.isfinite(res.value).all() and np.isfinite(res.output).all()
    expected = ref.full_jacobian(function, arrays, {})
    if backend == "fd":
        # The automatic steps follow how the function varies, not |x|: logits of 1e4 that
        # differ by 1 are as easy as logits near 0, and the estimate bounds the error.
        assert_close(res.value, expected, 1e-7, "fd, automatic steps")
        assert (np.abs(res.value - expected) <= res.error).all() and not res.nonsmooth.any()
        fixed = gradcli.jacobian(function, layout="full", backend=backend, fd_step=1e-4, **arrays)
        assert_close(fixed.value, expected, 1e-7, "fd with --fd-step 1e-4")
    else:
        assert_close(res.value, expected, tol(backend, "float64"), backend)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    """Story 2: dL/dz = (softmax(z) - onehot(y)) / N for the mean reduction."""
    z = np.random.default_rng(1).standard_normal((4, 3))
    y = np.array([2, 0, 1, 1])
    res = gradcli.grad("cross_entropy", input=z, target=y)
    s = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert_close(res.value, (s - np.eye(3)[y]) / 4, 1e-12)


def test_nll_loss_gradient_only_touches_the_true_class():
    z = np.random.default_rng(2).standard_normal((3, 5)) + 2.0  # raw scores, positive: not log-probabilities
    y = np.array([4, 0, 2])
    res = gradcli.grad("nll_loss", input=z, target=y)
    expected = np.zeros((3, 5))
    expected[np.arange(3), y] = -1 / 3
    np.testing.assert_array_equal(res.value, expected)
    assert any("expects log-probabilities" in n for n in res.notes)


def test_softmax_vjp_with_ones_is_zero_and_says_why():
    """Story 4: probs.backward(ones) gives zeros because every block's columns sum to 0."""
    x = np.random.default_rng(3).standard_normal((5, 4))
    res = gradcli.vjp("softmax", input=x)
    assert np.abs(res.value).max() < 1e-15
    assert any("sum to 0" in n for n in res.notes)
    blocks = gradcli.jacobian("softmax", input=x).value
    assert blocks.shape == (5, 4, 4)
    assert_close(blocks.sum(axis=1), np.zeros((5, 4)), 1e-15)
    full = gradcli.jacobian("softmax", input=x, layout="full").value
    assert full.shape == (5, 4, 5, 4)
    for i in range(5):
        for j in range(5):
            if i != j:
                assert not full[i, :, j, :].any()


def test_integer_input_is_converted_with_a_note():
    res = gradcli.jacobian("softmax", input=np.arange(6).reshape(2, 3))
    assert res.dtype == "float64" and any("integer values converted" in n for n in res.notes)


@pytest.mark.parametrize("method", ["central", "forward", "richardson"])
def test_fd_methods_and_error_estimates(method):
    x = np.random.default_rng(4).standard_normal((6, 5))
    exact = gradcli.jacobian("softmax", input=x, backend="analytic").value
    res = gradcli.jacobian("softmax", input=x, backend="fd", fd_method=method)
    actual_error = np.abs(res.value - exact)
    limit = {"central": 1e-9, "forward": 1e-6, "richardson": 1e-11}[method]
    assert actual_error.max() < limit
    # The estimate bounds the actual error, and is not absurdly loose.
    assert (actual_error <= res.error + 1e-15).mean() > 0.95
    assert res.error.max() < 100 * limit
    # Points per column, and f(x) itself once (smooth logits near 0: the first steps already converge).
    assert res.evaluations == {"central": 4, "forward": 2, "richardson": 6}[method] * 5 + 1


def test_fd_differences_float32_in_float64_unless_asked():
    x = np.random.default_rng(5).standard_normal((3, 4))
    exact = gradcli.jacobian("softmax", input=x, backend="analytic").value
    wide = gradcli.jacobian("softmax", input=x, backend="fd", dtype="float32")
    same = gradcli.jacobian("softmax", input=x, backend="fd", dtype="float32", fd_dtype="same")
    assert wide.value.dtype == np.float32 and any("differenced in float64" in n for n in wide.notes)
    assert np.abs(wide.value - exact).max() < 1e-6  # float32 rounding of an accurate value
    assert np.abs(same.value - exact).max() > np.abs(wide.value - exact).max()



def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_available(), reason="no CUDA device on this machine (tested where one exists)")
@pytest.mark.parametrize("backend", ["autograd", "forward"])
def test_cuda_device_gives_the_cpu_result(backend):
    x = np.random.default_rng(6).standard_normal((4, 5))
    cpu = gradcli.jacobian("softmax", input=x, backend=backend, device="cpu")
    gpu = gradcli.jacobian("softmax", input=x, backend=backend, device="cuda")
    assert_close(gpu.value, cpu.value, 1e-12)


def test_cuda_without_a_device_is_a_backend_error():
    if _cuda_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(gradcli.BackendError, match="no CUDA device"):
        gradcli.jacobian("softmax", input=np.ones((2, 3)), backend="autograd", device="cuda")
