"""Hidden checks of B1 (instructor kit only): the naive double sum, on fresh inputs of other shapes."""

import torch

from mappo_baseline import compute_gae


def naive_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    T = rewards.shape[0]
    values_ext = torch.cat([values, next_value[None]])
    dones_ext = torch.cat([dones, next_done[None]])
    adv = torch.zeros_like(rewards)
    for t in range(T):
        total, discount = torch.zeros_like(rewards[0]), torch.ones_like(rewards[0])
        for k in range(t, T):
            alive = 1.0 - dones_ext[k + 1]
            delta = rewards[k] + gamma * values_ext[k + 1] * alive - values_ext[k]
            total = total + discount * delta
            discount = discount * gamma * lam * alive
        adv[t] = total
    return adv


def test_equals_the_naive_double_sum():
    g = torch.Generator().manual_seed(7)
    for T, B, N, width in ((1, 1, 1, 1), (12, 3, 5, 5), (7, 2, 2, 1)):
        rewards, values = (
            torch.randn(T, B, N, generator=g, dtype=torch.float64),
            torch.randn(T, B, N, generator=g, dtype=torch.float64),
        )
        dones = (torch.rand(T, B, width, generator=g) < 0.3).double()
        next_value, next_done = (
            torch.randn(B, N, generator=g, dtype=torch.float64),
            (torch.rand(B, width, generator=g) < 0.3).double(),
        )
        adv, ret = compute_gae(rewards, values, dones, next_value, next_done, 0.97, 0.9)
        torch.testing.assert_close(adv, naive_gae(rewards, values, dones, next_value, next_done, 0.97, 0.9))
        torch.testing.assert_close(ret, adv + values)
