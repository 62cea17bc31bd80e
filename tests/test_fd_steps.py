"""fd's steps where they matter: one-sided differences at a domain edge keep
the sign of their side, and second differences keep their steps on the
dtype's grid, so an offset input is differenced as accurately as one near 0.
(``test_fd.py`` holds the error-estimate and non-smooth tests.)"""

from __future__ import annotations

import numpy as np
import pytest

import gradcli

EPS = float(np.finfo(np.float64).eps)


@pytest.mark.parametrize("expr, x, slope", [
    ("x+0*sqrt(-x)", [0.0, -1.0], 1.0),  # nothing finite to the right of 0: differenced from the left
    ("-2*x+0*sqrt(-x)", [0.0, -0.5], -2.0),
    ("3*x+0*sqrt(x)", [0.0, 2.0], 3.0),  # nothing finite to the left: from the right
])
def test_one_sided_differences_at_a_domain_edge_keep_their_sign(expr, x, slope):
    """At the edge of the domain only one side is finite: the derivative from that side is the
    slope itself (not its negative), within the estimate, and the entry is not flagged."""
    res = gradcli.jacobian(f"expr:{expr}", input=np.array(x), backend="fd")
    np.testing.assert_allclose(res.value, slope, rtol=EPS ** 0.5)
    assert (np.abs(res.value - slope) <= res.error).all()
    assert res.nonsmooth is None or not res.nonsmooth.any()


@pytest.mark.parametrize("offset", [1e5, -3e5, 1e6])
def test_second_differences_at_large_offsets_keep_half_the_digits(offset):
    """sin'' = -sin at x ~ 1e6: the steps are whole numbers of the dtype's spacing at x, so every
    point is exact and the second difference keeps about sqrt(eps) relative accuracy, as near 0
    (a step off the grid moves each point by up to half a spacing, which the second difference
    divides by the square of the step)."""
    x = offset + np.array([0.3, 1.1, 2.6])
    res = gradcli.hessian("expr:sin(x)", input=x, backend="fd")
    expected = -np.sin(x)
    assert (np.abs(res.value - expected) <= res.error).all()
    np.testing.assert_allclose(res.value, expected, rtol=EPS ** 0.5)
