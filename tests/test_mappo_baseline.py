"""Unit tests of `mappo_baseline.py`: the PPO loss, the actor (MAGPO's learner) and the critic's
input switch (MAPPO: global state, IPPO: own observation). Its end-to-end runs, bad input and
determinism are checked with the other scripts' in tests/test_scripts.py."""

import math

import numpy as np
import pytest
import torch

import magpo_mpe
from mappo_baseline import (
    Critic,
    compute_gae,
    critic_inputs,
    dist_entropy,
    dist_log_prob,
    dist_sample,
    masked_logits,
    ppo_loss,
)

F64 = torch.float64  # explicit dtypes: other test modules change torch's default dtype


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


# ----------------------------------------------------------------------------------- GAE
def test_gae_is_magpo_mpe_gae():
    T, B, N = 40, 5, 3
    rewards, values = torch.randn(T, B, N, dtype=F64), torch.randn(T, B, N, dtype=F64)
    dones = (torch.rand(T, B, 1) < 0.1).to(F64)
    next_value, next_done = torch.randn(B, N, dtype=F64), (torch.rand(B, 1) < 0.5).to(F64)
    ours = compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    theirs = magpo_mpe.compute_gae(rewards, values, dones, next_value, next_done, 0.99, 0.95)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # one step, no bootstrap past an episode end: A = r - V
    adv, ret = compute_gae(rewards[:1], values[:1], dones[:1], next_value, torch.ones(B, 1, dtype=F64), 0.9, 0.5)
    torch.testing.assert_close(adv, rewards[:1] - values[:1])
    torch.testing.assert_close(ret, rewards[:1])


# ------------------------------------------------------------------------------- PPO loss
def _loss(
    logp,
    logp_old,
    adv,
    entropy=None,
    value=None,
    value_old=None,
    returns=None,
    eps=0.2,
    ent_coef=0.0,
    vf_coef=0.0,
    norm_adv=False,
    clip_vloss=True,
):
    zeros = torch.zeros_like(logp_old)
    return ppo_loss(
        logp=logp,
        logp_old=logp_old,
        advantages=adv,
        entropy=zeros if entropy is None else entropy,
        value=zeros if value is None else value,
        value_old=zeros if value_old is None else value_old,
        returns=zeros if returns is None else returns,
        clip_coef=eps,
        ent_coef=ent_coef,
        vf_coef=vf_coef,
        norm_adv=norm_adv,
        clip_vloss=clip_vloss,
    )


def _policy_grad(ratio, adv, eps=0.2):
    logp = torch.tensor([math.log(ratio)], dtype=F64, requires_grad=True)
    loss, stats = _loss(logp, torch.zeros(1, dtype=F64), torch.tensor([adv], dtype=F64), eps=eps)
    (grad,) = torch.autograd.grad(loss, logp)
    return grad.item(), stats


@pytest.mark.parametrize(
    "ratio, adv, clipped",
    [
        (1.5, +1.0, True),  # A > 0: no gain from raising pi above (1 + eps) beta
        (1.1, +1.0, False),
        (0.5, +1.0, False),  # A > 0 and ratio below 1 - eps: the pessimistic min keeps the gradient
        (0.5, -1.0, True),  # A < 0: no gain from lowering pi below (1 - eps) beta
        (0.9, -1.0, False),
        (1.5, -1.0, False),
    ],
)
def test_ppo_clip_removes_the_gradient_only_past_the_clip_on_the_gaining_side(ratio, adv, clipped):
    grad, stats = _policy_grad(ratio, adv)
    if clipped:
        assert grad == 0.0
    else:  # d/dlogp of -ratio * A, so gradient descent moves logp in the direction of A
        assert grad == pytest.approx(-ratio * adv)
    assert stats["clipfrac"] == float(abs(ratio - 1.0) > 0.2)


def test_ppo_loss_matches_a_reference_and_normalises_advantages():
    n, eps, ent_coef, vf_coef = 200, 0.2, 0.01, 0.5
    logp_old = torch.log(torch.rand(n, dtype=F64) * 0.8 + 0.1)
    logp = logp_old + 0.3 * torch.randn(n, dtype=F64)
    adv, entropy = torch.randn(n, dtype=F64) * 3 + 1, torch.rand(n, dtype=F64)
    value, value_old, returns = (torch.randn(n, dtype=F64) for _ in range(3))
    loss, stats = _loss(logp, logp_old, adv, entropy, value, value_old, returns, eps, ent_coef, vf_coef, norm_adv=True)
    # CleanRL's formulation: max of the negated surrogates, advantages standardised first
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (logp - logp_old).exp()
    pg = torch.max(-a * ratio, -a * ratio.clamp(1 - eps, 1 + eps)).mean()
    v_clipped = value_old + (value - value_old).clamp(-eps, eps)
    v = 0.5 * torch.max((value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    torch.testing.assert_close(loss, pg - ent_coef * entropy.mean() + vf_coef * v)
    assert stats["policy_loss"] == pytest.approx(pg.item())
    assert stats["value_loss"] == pytest.approx(v.item())
    assert stats["entropy"] == pytest.approx(entropy.mean().item())
    assert stats["approx_kl"] == pytest.approx(((ratio - 1) - (logp - logp_old)).mean().item())
    assert stats["approx_kl"] > 0
    # at the first step (pi = beta) the surrogate of normalised advantages is exactly zero
    loss0, stats0 = _loss(
        logp_old, logp_old, adv, entropy * 0, value, value, value, eps, ent_coef, vf_coef, norm_adv=True
    )
    assert abs(stats0["policy_loss"]) < 1e-12 and stats0["approx_kl"] == 0.0 and stats0["clipfrac"] == 0.0
    assert stats0["value_loss"] == 0.0 and abs(loss0.item()) < 1e-12


@pytest.mark.parametrize(
    "value, returns, expected_loss, expected_grad",
    [
        # V_old = 0, eps = 0.2. Moved 0.5 towards R = 1: the clipped V = 0.2 is further from R and
        # wins the max, a constant in V: no gradient beyond the clip
        (0.5, 1.0, 0.5 * 0.8**2, 0.0),
        # inside the clip range both terms agree: plain MSE gradient V - R
        (0.1, 1.0, 0.5 * 0.9**2, 0.1 - 1.0),
        # overshoot past R = 0.1: the unclipped term is larger, so the gradient pulls V back
        (0.5, 0.1, 0.5 * 0.4**2, 0.5 - 0.1),
    ],
)
def test_clipped_value_loss(value, returns, expected_loss, expected_grad):
    v = torch.tensor([value], dtype=F64, requires_grad=True)
    zero = torch.zeros(1, dtype=F64)
    loss, stats = _loss(
        zero, zero, zero, value=v, value_old=zero, returns=torch.tensor([returns], dtype=F64), vf_coef=1.0
    )
    (grad,) = torch.autograd.grad(loss, v)
    assert stats["value_loss"] == pytest.approx(expected_loss)
    assert grad.item() == pytest.approx(expected_grad)
    # --no-clip-vloss: plain 0.5 (V - R)^2 whatever V_old is
    loss, _ = _loss(
        zero,
        zero,
        zero,
        value=v,
        value_old=zero,
        returns=torch.tensor([returns], dtype=F64),
        vf_coef=1.0,
        clip_vloss=False,
    )
    (grad,) = torch.autograd.grad(loss, v)
    assert loss.item() == pytest.approx(0.5 * (value - returns) ** 2)
    assert grad.item() == pytest.approx(value - returns)


def test_entropy_bonus_lowers_the_loss_and_raises_the_entropy():
    zero, adv = torch.zeros(8, dtype=F64), torch.randn(8, dtype=F64)
    base, _ = _loss(zero, zero, adv, entropy=zero, ent_coef=0.01)
    more, _ = _loss(zero, zero, adv, entropy=zero + 1.0, ent_coef=0.01)
    assert more.item() == pytest.approx(base.item() - 0.01)
    # through a categorical: a gradient step on the entropy term alone makes the policy more uniform
    logits = torch.randn(8, 5, dtype=F64, requires_grad=True)
    entropy = dist_entropy(logits, continuous=False)
    loss, _ = _loss(zero, zero, zero, entropy=entropy, ent_coef=0.01)
    (grad,) = torch.autograd.grad(loss, logits)
    with torch.no_grad():
        assert torch.all(dist_entropy(logits - 10.0 * grad, False) > entropy)
    # continuous: the bonus widens the Gaussian (d loss / d log_std = -ent_coef per dim / tokens)
    params = torch.zeros(8, 10, dtype=F64, requires_grad=True)
    loss, _ = _loss(zero, zero, zero, entropy=dist_entropy(params, True), ent_coef=0.01)
    (grad,) = torch.autograd.grad(loss, params)
    torch.testing.assert_close(grad[:, 5:], torch.full((8, 5), -0.01 / 8, dtype=F64))
    assert torch.all(grad[:, :5] == 0)


def test_ppo_loss_gradients_match_finite_differences():
    """gradcheck through the whole loss, away from the clip kinks (ratios in [0.9, 1.1], eps 0.2,
    values within the value clip), with advantage normalisation on."""
    n = 12
    logp_old = torch.log(torch.rand(n, dtype=F64) * 0.8 + 0.1)
    logp = (logp_old + (torch.rand(n, dtype=F64) - 0.5) * 0.2).requires_grad_()
    value_old = torch.randn(n, dtype=F64)
    value = (value_old + (torch.rand(n, dtype=F64) - 0.5) * 0.3).requires_grad_()
    entropy = torch.rand(n, dtype=F64, requires_grad=True)
    adv, returns = torch.randn(n, dtype=F64), torch.randn(n, dtype=F64)

    def f(logp, value, entropy):
        return _loss(logp, logp_old, adv, entropy, value, value_old, returns, 0.2, 0.01, 0.5, norm_adv=True)[0]

    assert torch.autograd.gradcheck(f, (logp, value, entropy))


# --------------------------------------------------------------------------- distributions
def test_masked_categorical_never_picks_illegal_actions():
    logits = torch.randn(500, 6, dtype=F64, requires_grad=True)
    legal = torch.rand(500, 6) < 0.5
    legal[:, 2] = True  # at least one legal action per row
    masked = masked_logits(logits, legal)
    action = dist_sample(masked.detach(), continuous=False)
    assert torch.all(legal.gather(1, action.unsqueeze(1)))
    logp, entropy = dist_log_prob(masked, action, False), dist_entropy(masked, False)
    # the same numbers as a categorical over the legal actions only
    reference = torch.distributions.Categorical(logits=logits.detach().masked_fill(~legal, -math.inf))
    torch.testing.assert_close(logp.detach(), reference.log_prob(action))
    torch.testing.assert_close(entropy.detach(), reference.entropy())
    (grad,) = torch.autograd.grad((logp + entropy).sum(), logits)
    assert torch.isfinite(grad).all() and torch.all(grad[~legal] == 0)
    # all-legal masks (MPE, CoordSum) change nothing
    torch.testing.assert_close(masked_logits(logits, torch.ones_like(legal)), logits)


# --------------------------------------------------------------------------------- networks
def test_critic_input_switch():
    B, N, obs_dim = 4, 3, 5
    obs = torch.randn(B, N, obs_dim)
    state = obs.reshape(B, N * obs_dim) + 100.0  # distinguishable from every observation
    mappo = critic_inputs(obs, state, ippo=False)
    assert mappo.shape == (B, N, N * obs_dim)
    for i in range(N):  # every agent sees the whole global state
        torch.testing.assert_close(mappo[:, i], state)
    torch.testing.assert_close(critic_inputs(obs, state, ippo=True), obs)  # IPPO: its own observation only
    # with a time axis, as in the update
    seq = critic_inputs(obs.expand(7, B, N, obs_dim), state.expand(7, B, N * obs_dim), ippo=False)
    assert seq.shape == (7, B, N, N * obs_dim)


def test_critic_rollout_state_matches_bptt():
    T, B, N, D = 12, 3, 3, 7
    critic = Critic(D, N, hidden=8).to(F64)
    x, starts, h0 = torch.randn(T, B, N, D, dtype=F64), torch.rand(T, B) < 0.3, torch.randn(B, N, 8, dtype=F64)
    values, h_seq = critic(x, h0, starts)
    assert values.shape == (T, B, N)
    h = h0
    for t in range(T):
        v, h = critic(x[t : t + 1], h, starts[t : t + 1])
        torch.testing.assert_close(v[0], values[t])
    torch.testing.assert_close(h, h_seq)
    # the one-hot id gives agents with the same input different values
    same = x[:, :, :1].expand(T, B, N, D)
    v_same, _ = critic(same, h0 * 0, starts)
    assert not torch.allclose(v_same[..., 0], v_same[..., 1])
