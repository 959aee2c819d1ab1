"""B3, what the critic sees: MAPPO's global state against IPPO's own observation (mappo_baseline.py: critic_inputs)."""

import torch
from conftest import close, load_fixture

from mappo_baseline import critic_inputs


def test_matches_the_fixture():
    f = load_fixture("B3")
    close(critic_inputs(f["obs"], f["state"], False), f["mappo"], "critic_inputs(..., ippo=False)", "B3")
    close(critic_inputs(f["obs"], f["state"], True), f["ippo"], "critic_inputs(..., ippo=True)", "B3")


def test_mappo_gives_every_agent_the_state_and_ippo_its_own_observation():
    obs, state = torch.randn(5, 4, 6), torch.randn(5, 9)  # (B, N, obs_dim), (B, state_dim)
    mappo = critic_inputs(obs, state, False)
    assert mappo.shape == (5, 4, 9)
    for i in range(4):
        assert torch.equal(mappo[:, i], state)
    assert torch.equal(critic_inputs(obs, state, True), obs)
