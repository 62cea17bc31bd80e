"""Shared test settings: hypothesis profile, tolerances derived from the dtype."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))

# Deterministic examples in CI; a deeper search with HYPOTHESIS_PROFILE=deep.
settings.register_profile("default", deadline=None, derandomize=True, max_examples=40,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("deep", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def exact_tol(dtype) -> float:
    """Exact backends vs torch: a few hundred ulps of accumulated rounding,
    eps**0.6 (float64: 4e-10, float32: 7e-5)."""
    return float(np.finfo(dtype).eps) ** 0.6


def fd_tol(dtype) -> float:
    """fd vs torch: fd runs in float64 (eps**0.45 = 9e-8 covers Richardson's
    truncation and rounding at unit-scale inputs), and the float32 reference
    carries its own rounding."""
    return max(float(np.finfo(np.float64).eps) ** 0.45, exact_tol(dtype))


def tol(backend: str, dtype) -> float:
    return fd_tol(dtype) if backend == "fd" else exact_tol(dtype)


def assert_close(actual, expected, tolerance, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(1.0, float(np.nanmax(np.abs(expected))) if expected.size and np.isfinite(expected).any() else 1.0)
    np.testing.assert_allclose(actual, expected, rtol=tolerance, atol=tolerance * scale, equal_nan=True, err_msg=what)


def pytest_runtest_setup(item):
    """Inside the test process torch computes on one intra-op thread. The tests evaluate tiny
    tensors thousands of times (fd over a model's parameters), and on a shared 2-core machine
    waking torch's thread pool cost 1-10 ms per op against 0.04 ms on one thread: a planted-bug
    model check took 17 s instead of 2. Nothing here asserts on threads, and the tests that run
    gradcli in a subprocess keep torch's default."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/goldens/*.txt from the current table output instead of comparing")
