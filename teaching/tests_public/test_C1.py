"""C1, agent order and decoding order (magpo_mpe.py: to_positions, to_agents, random_perm; docs/algorithm.md §3)."""

import torch
from conftest import cases, close, load_fixture

from magpo_mpe import random_perm, to_agents, to_positions


def test_matches_the_fixture():
    for k, case in enumerate(cases(load_fixture("C1"))):
        close(to_positions(case["x"], case["perm"]), case["positions"], f"to_positions (case {k})", "C1")
        close(to_agents(case["x"], case["perm"]), case["agents"], f"to_agents (case {k})", "C1")


def test_position_j_holds_agent_perm_j_and_to_agents_undoes_it():
    x = torch.arange(3 * 4 * 2, dtype=torch.float64).reshape(3, 4, 2)
    perm = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3], [3, 2, 1, 0]])
    positions = to_positions(x, perm)
    for m in range(3):
        for j in range(4):
            assert torch.equal(positions[m, j], x[m, perm[m, j]])
    assert torch.equal(to_agents(positions, perm), x)
    assert torch.equal(to_positions(to_agents(x, perm), perm), x)


def test_random_perm_draws_an_independent_order_per_environment():
    torch.manual_seed(0)
    perm = random_perm(500, 4, torch.device("cpu"))
    assert perm.shape == (500, 4) and perm.dtype == torch.int64
    assert torch.equal(perm.sort(dim=1).values, torch.arange(4).expand(500, 4)), "each row must be a permutation"
    assert len({tuple(row) for row in perm.tolist()}) == 24, "every one of the 4! orders should appear"
    assert (perm[:, 0] == 0).float().mean().item() < 0.35, "agent 0 should not usually come first"
