"""A1, the guider's mirror-descent step (theory_check.py: guider_step; docs/algorithm.md §11)."""

import numpy as np
import pytest
from conftest import cases, close, load_fixture

from theory_check import guider_step, kl


def test_matches_the_fixture():
    for k, case in enumerate(cases(load_fixture("A1"))):
        out = guider_step(case["mu"].numpy(), case["Q"].numpy(), case["eta"])
        close(out, case["out"], f"guider_step (case {k}, eta {case['eta']})", "A1")


def test_returns_a_policy_that_maximises_the_regularised_objective():
    rng = np.random.default_rng(0)
    mu, Q, eta = rng.dirichlet(np.ones(6), size=4), rng.normal(size=(4, 6)), 0.7
    new = guider_step(mu, Q, eta)
    assert new.shape == mu.shape and np.all(new >= 0) and np.allclose(new.sum(1), 1.0)

    def objective(p):
        return eta * (p * Q).sum(1) - kl(p, mu)

    for _ in range(50):  # no nearby policy on the simplex does better, state by state
        other = np.clip(new + rng.normal(scale=0.02, size=new.shape), 1e-9, None)
        other /= other.sum(1, keepdims=True)
        assert np.all(objective(other) <= objective(new) + 1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_is_stable_for_large_values(scale):
    rng = np.random.default_rng(1)
    mu, Q = rng.dirichlet(np.ones(5), size=3), rng.normal(size=(3, 5)) * scale
    new = guider_step(mu, Q, 1.0)
    assert np.isfinite(new).all() and np.allclose(new.sum(1), 1.0)
    np.testing.assert_allclose(guider_step(mu, Q + 123.0, 1.0), new, atol=1e-12)  # a constant shift changes nothing
