"""Hidden checks of C2 (instructor kit only): one agent, many agents, greedy decoding."""

import pytest
import torch

from magpo_mpe import Guider, sample_in_order, teacher_forced


@pytest.mark.parametrize("N", [1, 6])
@pytest.mark.parametrize("deterministic", [False, True])
def test_teacher_forcing_replays_sampling_for_other_sizes(N, deterministic):
    torch.manual_seed(3)
    guider = Guider(obs_dim=3, num_agents=N, action_dim=4, continuous=False, dim=8).double()
    with torch.no_grad():
        rep, _ = guider.encode(torch.randn(16, N, 8, dtype=torch.float64))
        actions, logp = sample_in_order(guider, rep, None, deterministic)
        params, logp_tf, _ = teacher_forced(guider, rep, actions, None)
    torch.testing.assert_close(logp_tf, logp)
    if deterministic:
        assert torch.equal(actions, params.argmax(-1))
