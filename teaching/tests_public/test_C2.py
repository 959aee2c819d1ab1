"""C2, the guider's autoregressive decoding and teacher forcing (magpo_mpe.py: shifted_tokens, sample_in_order;
docs/algorithm.md §2-§3). Sampling decodes position by position, feeding each sampled action to the next position;
training re-reads the stored actions in one pass, shifted right by one. Both must give the same log-probs."""

import pytest
import torch
from conftest import close, load_fixture

from magpo_mpe import Guider, sample_in_order, shifted_tokens, teacher_forced


def test_shifted_tokens_match_the_fixture():
    f = load_fixture("C2")
    close(
        shifted_tokens(f["discrete_actions"], 5, False, torch.float64), f["discrete_tokens"], "tokens (discrete)", "C2"
    )
    close(
        shifted_tokens(f["continuous_actions"], 2, True, torch.float64),
        f["continuous_tokens"],
        "tokens (continuous)",
        "C2",
    )


def guider_and_rep(continuous, N=4, A=3, M=64, seed=0):
    torch.manual_seed(seed)
    guider = Guider(obs_dim=5, num_agents=N, action_dim=A, continuous=continuous, dim=16).double()
    with torch.no_grad():
        rep, _ = guider.encode(torch.randn(M, N, 16, dtype=torch.float64))
    avail = None
    if not continuous:
        avail = torch.rand(M, N, A) < 0.6
        avail[..., 0] = True
    return guider, rep, avail


@pytest.mark.parametrize("continuous", [True, False])
def test_teacher_forcing_replays_the_sampled_log_probs(continuous):
    guider, rep, avail = guider_and_rep(continuous)
    with torch.no_grad():
        actions, logp = sample_in_order(guider, rep, avail, deterministic=False)
        _, logp_tf, _ = teacher_forced(guider, rep, actions, avail)
    assert logp.shape == (64, 4)
    close(logp_tf, logp, "teacher-forced log-probs against the sampled ones", "C2")


def test_masked_actions_are_never_sampled():
    guider, rep, avail = guider_and_rep(False, M=256)
    with torch.no_grad():
        actions, _ = sample_in_order(guider, rep, avail, deterministic=False)
    assert avail.gather(-1, actions.unsqueeze(-1)).all()


@pytest.mark.parametrize("continuous", [True, False])
def test_position_j_sees_the_earlier_positions_only(continuous):
    guider, rep, avail = guider_and_rep(continuous)
    with torch.no_grad():
        actions, _ = sample_in_order(guider, rep, avail, deterministic=False)
        params, _, _ = teacher_forced(guider, rep, actions, avail)
        for j in range(1, 4):
            changed = actions.clone()
            changed[:, j:] = actions[:, j:].roll(1, dims=0)  # other actions at positions >= j
            new, _, _ = teacher_forced(guider, rep, changed, avail)
            close(new[:, : j + 1], params[:, : j + 1], f"params at positions <= {j} when actions >= {j} change", "C2")
            changed = actions.clone()
            changed[:, j - 1] = actions[:, j - 1].roll(1, dims=0)  # another action at position j - 1
            new, _, _ = teacher_forced(guider, rep, changed, avail)
            assert not torch.allclose(new[:, j], params[:, j]), f"position {j} must depend on position {j - 1}'s action"


@pytest.mark.parametrize("continuous", [True, False])
def test_the_training_pass_reproduces_the_rollout_with_the_stored_order(continuous):
    """Guider.act in a rollout, Guider.evaluate in training with the stored order: the PPO ratio starts at exactly 1."""
    torch.manual_seed(1)
    B, N, A = 32, 4, 3
    guider = Guider(obs_dim=5, num_agents=N, action_dim=A, continuous=continuous, dim=16).double()
    obs, starts = torch.randn(B, N, 5, dtype=torch.float64), torch.ones(B, dtype=torch.bool)
    h = guider.initial_state(B).double()
    perm = torch.rand(B, N).argsort(dim=1)
    avail = None if continuous else torch.ones(B, N, A, dtype=torch.bool)
    with torch.no_grad():
        actions, logp, _, _ = guider.act(obs, h, starts, perm, avail)
        _, logp_train, _, _ = guider.evaluate(
            obs[None], h, starts[None], actions[None], perm[None], None if avail is None else avail[None]
        )
    close(logp_train[0], logp, "Guider.evaluate's log-probs against Guider.act's", "C2")
