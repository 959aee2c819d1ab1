"""B1, generalised advantage estimation (mappo_baseline.py: compute_gae; docs/algorithm.md §8)."""

import torch
from conftest import cases, close, load_fixture

from mappo_baseline import compute_gae


def test_matches_the_fixture_with_both_shapes_of_dones():
    for k, case in enumerate(cases(load_fixture("B1"))):
        adv, ret = compute_gae(
            case["rewards"], case["values"], case["dones"], case["next_value"], case["next_done"], 0.99, 0.95
        )
        width = case["dones"].shape[-1]
        close(adv, case["advantages"], f"advantages (dones of width {width})", "B1")
        close(ret, case["returns"], f"returns (dones of width {width})", "B1")


def rollout(T=6, B=2, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards, values = (
        torch.randn(T, B, N, generator=g, dtype=torch.float64),
        torch.randn(T, B, N, generator=g, dtype=torch.float64),
    )
    return rewards, values, torch.randn(B, N, generator=g, dtype=torch.float64)


def test_lambda_zero_is_the_one_step_td_error():
    rewards, values, next_value = rollout()
    zeros = torch.zeros(6, 2, 1, dtype=torch.float64)
    adv, ret = compute_gae(rewards, values, zeros, next_value, torch.zeros(2, 1, dtype=torch.float64), 0.9, 0.0)
    next_values = torch.cat([values[1:], next_value[None]])
    close(adv, rewards + 0.9 * next_values - values, "advantages with lambda 0", "B1")
    close(ret, adv + values, "returns = advantages + values", "B1")


def test_lambda_one_gamma_one_is_the_monte_carlo_return():
    rewards, values, next_value = rollout()
    zeros = torch.zeros(6, 2, 1, dtype=torch.float64)
    _, ret = compute_gae(rewards, values, zeros, next_value, torch.zeros(2, 1, dtype=torch.float64), 1.0, 1.0)
    expected = rewards.flip(0).cumsum(0).flip(0) + next_value
    close(ret, expected, "returns with gamma = lambda = 1", "B1")


def test_an_episode_start_cuts_the_future_off():
    rewards, values, next_value = rollout()
    dones = torch.zeros(6, 2, 1, dtype=torch.float64)
    dones[3] = 1.0  # observation 3 is the first of a new episode: steps 0-2 end an episode
    next_done = torch.zeros(2, 1, dtype=torch.float64)
    adv, _ = compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    later = rewards.clone()
    later[3:] += 100.0
    adv_later, _ = compute_gae(later, values, dones, next_value * 7, next_done, 0.99, 0.95)
    close(adv_later[:3], adv[:3], "advantages before an episode end (after changing what follows it)", "B1")
    assert not torch.allclose(adv_later[3:], adv[3:])
    # with the final flag set, the value after the rollout is not bootstrapped
    adv_end, _ = compute_gae(rewards, values, dones, next_value * 7, torch.ones(2, 1, dtype=torch.float64), 0.99, 0.95)
    adv_end2, _ = compute_gae(rewards, values, dones, next_value, torch.ones(2, 1, dtype=torch.float64), 0.99, 0.95)
    close(adv_end, adv_end2, "advantages when the rollout ends an episode", "B1")
