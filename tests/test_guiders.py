"""The three guiders behind `--guider` (magpo_mpe.py, copied in every MAGPO script and in ctce_baseline.py, see
tests/test_copies.py; docs/algorithm.md §16): Sable's retention in its recurrent and chunkwise forms, the one
interface (sampling = teacher forcing, so the PPO ratio is 1 before the first step), decoder causality, the
official Sable's zero-initialised SwiGLU, and the step counter Sable carries with its memory."""

import math

import numpy as np
import pytest
import torch

import magpo_mpe
from magpo_mpe import (
    MAT,
    Sable,
    dist_log_prob,
    random_perm,
    retention_chunk,
    retention_decays,
    retention_step,
    timestep_encoding,
)

GUIDERS = ("mat-gru", "mat", "sable")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


class Sizes:
    """The Args fields make_guider reads: 2 heads and 2 blocks, so the per-head and per-block paths are used."""

    guider_dim, guider_heads, guider_blocks = 16, 2, 2
    sable_decay, sable_ffn, timestep_chunk_size = 0.8, "init", 0

    def __init__(self, guider, **kwargs):
        self.guider = guider
        self.__dict__.update(kwargs)


def make(guider, continuous, obs_dim=6, num_agents=3, action_dim=5, **kwargs):
    return magpo_mpe.make_guider(Sizes(guider, **kwargs), obs_dim, num_agents, action_dim, continuous).double()


def episode_data(T=9, B=4, N=3, obs_dim=6, A=5, continuous=False):
    """Observations, episode starts (the first step of env 0, and starts inside the sequence), stored orders and
    action masks (discrete: action 0 unavailable at random, never all)."""
    obs = torch.randn(T, B, N, obs_dim, dtype=torch.float64)
    starts = torch.rand(T, B) < 0.25
    starts[0, 0] = True
    starts[min(4, T - 1), 1] = True
    perms = torch.stack([random_perm(B, N, "cpu") for _ in range(T)])
    avail = None
    if not continuous:
        avail = torch.ones(T, B, N, A, dtype=torch.bool)
        avail[..., 0] = torch.rand(T, B, N) < 0.5
    return obs, starts, perms, avail


def rollout(guider, obs, starts, perms, avail, h=None):
    """Sample T steps as the training loop does: actions, log-probs, values (T, B, N), the state at the start and
    at the end."""
    h0 = guider.initial_state(obs.shape[1]).double() if h is None else h
    h, out = h0, []
    for t in range(obs.shape[0]):
        action, logp, value, h = guider.act(obs[t], h, starts[t], perms[t], None if avail is None else avail[t])
        out.append((action, logp, value))
    actions, logps, values = (torch.stack(x) for x in zip(*out))
    return actions, logps, values, h0, h


# ----------------------------------------------------------------------------------- retention


def recurrent_reference(q, k, v, state, starts, kappa, num_agents, causal):
    """Retention step by step as Sable acts: per timestep the state is reset at a start or decayed once, then the
    encoder adds all N tokens before reading them, the decoder adds and reads one token at a time."""
    B, H, C, d = q.shape
    out = torch.zeros_like(q)
    for t in range(C // num_agents):
        keep = (~starts[:, t]).to(q.dtype).view(B, 1, 1, 1)
        state = state * kappa.view(1, H, 1, 1) * keep
        tokens = range(t * num_agents, (t + 1) * num_agents)
        groups = [[p] for p in tokens] if causal else [list(tokens)]
        for group in groups:
            out[:, :, group], state = retention_step(q[:, :, group], k[:, :, group], v[:, :, group], state)
    return out, state


def chunked(q, k, v, state, starts, kappa, num_agents, causal, chunk_steps):
    outs, C = [], q.shape[2]
    for begin in range(0, C // num_agents, chunk_steps):
        tokens = slice(begin * num_agents, (begin + chunk_steps) * num_agents)
        piece = starts[:, begin : begin + chunk_steps]
        out, state = retention_chunk(q[:, :, tokens], k[:, :, tokens], v[:, :, tokens], state, piece, kappa,
                                     num_agents, causal)  # fmt: skip
        outs.append(out)
    return torch.cat(outs, dim=2), state


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "decoder"])
@pytest.mark.parametrize("chunk_steps", [1, 4, 9], ids=["chunk1", "chunk4-not-dividing-9", "whole"])
def test_chunkwise_retention_equals_the_recurrent_form(causal, chunk_steps):
    B, H, T, N, d = 3, 2, 9, 3, 4
    q, k, v = (torch.randn(B, H, T * N, d, dtype=torch.float64) for _ in range(3))
    state = torch.randn(B, H, d, d, dtype=torch.float64)  # carried in from a previous rollout
    starts = torch.zeros(B, T, dtype=torch.bool)
    starts[0, 3] = starts[0, 4] = starts[1, 0] = starts[2, 8] = True  # inside chunks, at a chunk's start, last step
    kappa = torch.tensor(retention_decays(H, 0.8), dtype=torch.float64)
    expected, expected_state = recurrent_reference(q, k, v, state, starts, kappa, N, causal)
    out, new_state = chunked(q, k, v, state, starts, kappa, N, causal, chunk_steps)
    assert torch.allclose(out, expected, rtol=0, atol=1e-10)
    assert torch.allclose(new_state, expected_state, rtol=0, atol=1e-10)


def test_a_start_cuts_the_past_and_the_carried_state():
    B, H, T, N, d = 2, 1, 6, 2, 4
    q, k, v = (torch.randn(B, H, T * N, d, dtype=torch.float64) for _ in range(3))
    starts = torch.zeros(B, T, dtype=torch.bool)
    starts[:, 3] = True
    kappa = torch.tensor(retention_decays(H, 1.0), dtype=torch.float64)
    out, state = retention_chunk(q, k, v, torch.randn(B, H, d, d, dtype=torch.float64), starts, kappa, N, True)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, : 3 * N] += 1.0  # every token before the start
    v2[:, :, : 3 * N] -= 2.0
    out2, state2 = retention_chunk(q, k2, v2, torch.randn(B, H, d, d, dtype=torch.float64), starts, kappa, N, True)
    assert torch.equal(out[:, :, 3 * N :], out2[:, :, 3 * N :]) and torch.equal(state, state2)
    assert not torch.allclose(out[:, :, : 3 * N], out2[:, :, : 3 * N])


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_decay_per_head_follows_the_formula(heads):
    for scale in (1.0, 0.5):
        expected = [(1 - math.exp(math.log(1 / 32) + h * (math.log(1 / 512) - math.log(1 / 32)) / max(heads - 1, 1)))
                    * scale for h in range(heads)]  # fmt: skip
        assert np.allclose(retention_decays(heads, scale), expected, rtol=0, atol=1e-12)
    assert retention_decays(1, 1.0)[0] == pytest.approx(1 - 1 / 32)


def test_decay_scale_zero_makes_every_timestep_independent():
    guider = make("sable", False, sable_decay=0.0)
    obs, starts, perms, avail = episode_data()
    actions, logps, _, h0, _ = rollout(guider, obs, starts, perms, avail)
    obs2 = obs.clone()
    obs2[:4] += 1.0  # change the first 4 steps only
    params = guider.evaluate(obs, h0, starts, actions, perms, avail)[0]
    params2 = guider.evaluate(obs2, h0, starts, actions, perms, avail)[0]
    assert torch.equal(params[4:], params2[4:]) and not torch.allclose(params[:4], params2[:4])


def test_timestep_encoding_is_sin_and_cos_of_the_step():
    pe = timestep_encoding(torch.tensor([0.0, 3.0], dtype=torch.float64), 8)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * 4, dtype=torch.float64))
    assert pe[1, 2].item() == pytest.approx(math.sin(3.0 * math.exp(-2 * math.log(10000.0) / 8)))
    assert pe[1, 3].item() == pytest.approx(math.cos(3.0 * math.exp(-2 * math.log(10000.0) / 8)))


# ----------------------------------------------------------------------------------- the one interface


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "masked-discrete"])
@pytest.mark.parametrize("name", GUIDERS)
def test_training_replays_the_rollout_exactly(name, continuous):
    """Teacher forcing from the stored state and orders gives the rollout's log-probs and values (r = 1 before the
    first PPO step); for Sable in every chunk size, with the memory and the step count it ends with."""
    guider = make(name, continuous)
    obs, starts, perms, avail = episode_data(continuous=continuous)
    # a state carried in from an earlier rollout (Sable's memory and step count; the GRU's states)
    _, _, _, _, h_before = rollout(guider, obs, torch.zeros_like(starts), perms, avail)
    actions, logps, values, h0, h_end = rollout(guider, obs, starts, perms, avail, h=h_before)
    for chunk_steps in (1, 4, 9) if name == "sable" else (None,):
        if chunk_steps is not None:
            guider.chunk_steps = chunk_steps
        params, logp, entropy, value = guider.evaluate(obs, h0, starts, actions, perms, avail)
        assert torch.allclose(logp, logps, rtol=0, atol=1e-10) and torch.allclose(value, values, rtol=0, atol=1e-10)
        assert torch.isfinite(entropy).all()
        if name == "sable":
            assert torch.allclose(guider.sequence(obs, h0, starts, actions, perms, avail)[2], h_end, rtol=0, atol=1e-10)
    # the GAE bootstrap: value() is the value act() would give at the next step
    next_start = torch.tensor([True, False, False, True])
    assert torch.allclose(guider.value(obs[0], h_end, next_start), guider.act(obs[0], h_end, next_start, perms[0],
                          None if avail is None else avail[0])[2], rtol=0, atol=1e-12)  # fmt: skip
    assert h0.shape == guider.initial_state(4).shape


@pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "masked-discrete"])
@pytest.mark.parametrize("name", GUIDERS)
def test_position_j_sees_the_actions_before_it_only(name, continuous):
    """In decoding order, position j's distribution does not change with the actions of positions >= j and does
    change with position j-1's; for Sable within the last timestep of a sequence."""
    N = 4
    guider = make(name, continuous, num_agents=N)
    obs, starts, perms, avail = episode_data(T=3, N=N, continuous=continuous)
    actions, _, _, h0, _ = rollout(guider, obs, starts, perms, avail)
    params = guider.evaluate(obs, h0, starts, actions, perms, avail)[0]  # (T, B, N, P) in agent order
    j, t = 2, 2
    position = lambda x: torch.gather(x, 1, perms[t].view(*perms[t].shape, *[1] * (x.dim() - 2)).expand_as(x))  # noqa: E731
    for later, changes in (((2, 3), False), ((1,), True)):
        changed = actions.clone()
        for p in later:  # the agents at decoding positions `later` in step t
            agent = perms[t, :, p]
            if continuous:
                changed[t, torch.arange(4), agent] += 1.0
            else:  # another available action
                changed[t, torch.arange(4), agent] = torch.where(changed[t, torch.arange(4), agent] == 4, 3, 4)
        params2 = guider.evaluate(obs, h0, starts, changed, perms, avail)[0]
        same = torch.allclose(position(params[t])[:, j], position(params2[t])[:, j], rtol=0, atol=1e-12)
        assert same != changes


def test_sable_never_remembers_the_last_decoded_action():
    """As officially: the action of the last position of a step feeds no token, so no later output depends on it."""
    guider = make("sable", False)
    obs, starts, perms, avail = episode_data(T=4)
    starts[:] = False
    actions, _, _, h0, _ = rollout(guider, obs, starts, perms, avail)
    changed = actions.clone()
    last = perms[1, :, -1]  # the last-decoded agent of step 1
    changed[1, torch.arange(4), last] = torch.where(changed[1, torch.arange(4), last] == 4, 3, 4)
    a, b = (
        guider.sequence(obs, h0, starts, actions, perms, avail),
        guider.sequence(obs, h0, starts, changed, perms, avail),
    )
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])


def test_mat_encoder_is_permutation_equivariant():
    guider = make("mat", False)
    obs = torch.randn(5, 3, 6, dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])
    ids = torch.eye(3, dtype=torch.float64)
    # the agent id travels with the agent: permute (id, observation) pairs, i.e. relabel ids along with them
    guider.agent_ids.copy_(ids[perm])
    _, permuted = guider.encode(obs[:, perm])
    guider.agent_ids.copy_(ids)
    _, values = guider.encode(obs)
    assert torch.allclose(permuted, values[:, perm], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ("mat", "sable"))
def test_masked_actions_are_never_sampled(name):
    guider = make(name, False)
    obs, starts, perms, avail = episode_data(T=20, continuous=False)
    avail[..., 1:3] = False
    actions, logps, _, _, _ = rollout(guider, obs, starts, perms, avail)
    taken = torch.gather(avail, -1, actions.unsqueeze(-1)).squeeze(-1)
    assert taken.all() and torch.isfinite(logps).all()


# ----------------------------------------------------------------------------------- Sable's faithful details


@pytest.mark.parametrize("zero_init", [True, False], ids=["zero (official)", "init"])
def test_sable_swiglu_trains_only_when_initialised(zero_init):
    guider = make("sable", False, sable_ffn="zero" if zero_init else "init")
    obs, starts, perms, avail = episode_data()
    actions, _, _, h0, _ = rollout(guider, obs, starts, perms, avail)
    params, logp, entropy, value = guider.evaluate(obs, h0, starts, actions, perms, avail)
    (logp.mean() + value.pow(2).mean() - entropy.mean()).backward()
    grads = [p.grad for name, p in guider.named_parameters() if ".ffn." in name]
    assert len(grads) == 2 * 2 * 3  # 2 blocks each in the encoder and the decoder, 3 weights each
    assert all(g is not None for g in grads)
    assert all(torch.count_nonzero(g) == 0 for g in grads) == zero_init
    others = [p.grad for name, p in guider.named_parameters() if ".ffn." not in name and p.grad is not None]
    assert any(torch.count_nonzero(g) > 0 for g in others)


def test_sable_counts_steps_within_episodes():
    guider = make("sable", False)
    obs, starts, perms, avail = episode_data(T=9)
    h = guider.initial_state(4).double()
    counts, expected, step = [], [], torch.zeros(4)
    for t in range(9):
        step = torch.where(starts[t], 0.0, step + 1)
        h = guider.act(obs[t], h, starts[t], perms[t], avail[t])[3]
        counts.append(guider.unpack(h)[1].clone())
        expected.append(step.clone())
    # the first step of env 0 starts an episode; the others continue one begun before (count -1 + 1 ... from 0)
    assert torch.equal(torch.stack(counts)[:, 0], torch.stack(expected)[:, 0].double())
    assert torch.equal(torch.stack(counts)[starts], torch.zeros(int(starts.sum()), dtype=torch.float64))


def test_sable_state_is_bounded_by_its_chunks():
    """The default chunk holds at most 512 tokens (N = 10: 51 timesteps), so a 128-step pass never builds the
    whole rollout's (1280 x 1280) decay matrix."""
    guider = Sable(4, 10, 5, False, dim=8)
    assert guider.chunk_steps == 51
    assert Sable(4, 3, 5, False, dim=8).chunk_steps == 170
    assert Sable(4, 3, 5, False, dim=8, chunk_steps=16).chunk_steps == 16


def test_mat_is_memoryless():
    guider = MAT(6, 3, 5, True, dim=16)
    assert guider.initial_state(4).shape == (4, 0)
    obs, starts, perms, _ = episode_data(continuous=True)
    obs, perms = obs.float(), perms
    a, logp, _, _ = guider.act(obs[0], guider.initial_state(4), starts[0], perms[0])
    assert torch.allclose(dist_log_prob(guider.evaluate(obs[:1], guider.initial_state(4), starts[:1], a[None],
                          perms[:1])[0], a[None], True), logp[None], atol=1e-5)  # fmt: skip
