"""The closed forms of every catalogue family with each of its options set
(``reference.FIXED``), against torch: full Jacobian, its auto layout, vjp,
grad and jvp (``test_backends.check_all_quantities``). The hypothesis tests
sample options at random; these pin each one."""

from __future__ import annotations

import pytest

from reference import FIXED as CASES
from test_backends import check_all_quantities


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_option_of_every_family_matches_torch(name, dtype):
    check_all_quantities(CASES[name], dtype, "analytic", seed=7)
