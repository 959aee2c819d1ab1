"""A2, the learner's projection onto product policies (theory_check.py: project; docs/algorithm.md §11)."""

import numpy as np
from conftest import cases, close, load_fixture

from theory_check import Game, identity_obs_map, product_policy, project, projection_objective, random_game


def game_of(case):
    return Game(
        case["P"].numpy(),
        case["R"].numpy(),
        case["rho"].numpy(),
        case["gamma"],
        case["num_agents"],
        case["num_actions"],
    )


def test_matches_the_fixture():
    for k, case in enumerate(cases(load_fixture("A2"))):
        out = project(game_of(case), case["mu_hat"].numpy(), case["obs_map"].numpy(), case["d"].numpy())
        close(out, case["out"], f"project (case {k})", "A2")


def test_recovers_a_product_policy_under_full_observability():
    rng = np.random.default_rng(0)
    game = random_game(rng, 4, 2, 3, 0.9)
    pi_s = rng.dirichlet(np.ones(3), size=(2, 4))  # (N, S, A): each agent's own table
    d = rng.dirichlet(np.ones(4))
    out = project(game, product_policy(pi_s), identity_obs_map(2, 4), d)
    assert out.shape == (2, 4, 3)
    np.testing.assert_allclose(out, pi_s, atol=1e-12)


def test_minimises_the_projection_objective():
    rng = np.random.default_rng(1)
    game = random_game(rng, 5, 2, 3, 0.9)
    obs_map = np.array([[0, 0, 1, 1, 2], [0, 1, 2, 0, 1]])  # aliasing: several states share an observation
    mu_hat, d = rng.dirichlet(np.ones(9), size=5), rng.dirichlet(np.ones(5))
    pi = project(game, mu_hat, obs_map, d)
    assert np.allclose(pi[0].sum(-1), 1.0) and np.all(pi[0] >= 0)
    best = projection_objective(game, mu_hat, pi, obs_map, d)
    for _ in range(50):
        other = np.clip(pi + rng.normal(scale=0.02, size=pi.shape), 1e-9, None)
        other /= other.sum(-1, keepdims=True)
        assert projection_objective(game, mu_hat, other, obs_map, d) >= best - 1e-12
