"""Unit tests of the math in magpo_mpe.py: GAE, the guider and learner losses, the action
distributions, and the networks' consistency between sampling (rollout) and training (BPTT)."""

import math

import numpy as np
import pytest
import torch

from magpo_mpe import (
    Guider,
    Learner,
    RunningMeanStd,
    compute_gae,
    dist_kl,
    dist_log_prob,
    dist_sample,
    guider_loss,
    gru_unroll,
    learner_loss,
    tanh_gaussian_log_prob,
    to_agents,
    to_positions,
)

@pytest.fixture(autouse=True)
def _seed_and_float64():
    """Seeded, and float64 for tight tolerances (the networks are dtype-agnostic) in this module
    only: a process-wide default would leak into every other test module, whose runs must see the
    float32 that users get."""
    torch.manual_seed(0)
    np.random.seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------------- GAE
def naive_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """A_t = sum_k (gamma lam)^k delta_{t+k}, summed explicitly and stopped at episode ends."""
    T = rewards.shape[0]
    values_ext = np.concatenate([values, next_value[None]], 0)
    dones_ext = np.concatenate([dones, next_done[None]], 0)
    adv = np.zeros_like(rewards)
    for t in range(T):
        total, discount = 0.0, 1.0
        for k in range(t, T):
            nonterminal = 1.0 - dones_ext[k + 1]
            delta = rewards[k] + gamma * values_ext[k + 1] * nonterminal - values[k]
            total = total + discount * delta
            discount = discount * gamma * lam * nonterminal
        adv[t] = total
    return adv


def test_gae_matches_naive_sum():
    T, B, N = 30, 4, 3
    rewards = np.random.randn(T, B, N)
    values = np.random.randn(T, B, N)
    dones = (np.random.rand(T, B, 1) < 0.15).astype(np.float64)
    next_value, next_done = np.random.randn(B, N), (np.random.rand(B, 1) < 0.5).astype(np.float64)
    adv, ret = compute_gae(*map(torch.from_numpy, (rewards, values, dones, next_value, next_done)), 0.99, 0.95)
    expected = naive_gae(rewards, values, np.broadcast_to(dones, (T, B, N)), next_value,
                         np.broadcast_to(next_done, (B, N)), 0.99, 0.95)
    np.testing.assert_allclose(adv.numpy(), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ret.numpy(), expected + values, rtol=1e-10, atol=1e-10)


def test_running_mean_std_matches_all_data_seen():
    norm, chunks = RunningMeanStd(), [torch.randn(n) * 5 - 20 for n in (7, 100, 33)]
    for chunk in chunks:
        norm.update(chunk)
    data = torch.cat(chunks).numpy()
    assert norm.mean == pytest.approx(data.mean(), rel=1e-4)
    assert norm.var == pytest.approx(data.var(), rel=1e-4)
    x = torch.randn(5)
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x)


# ------------------------------------------------------------------------------- guider loss
def ppo_reference(logp, logp_old, adv, value, value_old, returns, entropy, eps, ent_coef, vf_coef):
    ratio = (logp - logp_old).exp()
    pg = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv).mean()
    v_clip = value_old + (value - value_old).clamp(-eps, eps)
    v = 0.5 * torch.max((value - returns) ** 2, (v_clip - returns) ** 2).mean()
    return pg - ent_coef * entropy.mean() + vf_coef * v


def _tokens(n=64):
    logp_old = torch.log(torch.rand(n) * 0.8 + 0.1)
    return dict(
        logp_behaviour=logp_old,
        advantages=torch.randn(n),
        entropy=torch.rand(n),
        value=torch.randn(n),
        value_old=torch.randn(n),
        returns=torch.randn(n),
    )


def test_guider_loss_inside_band_equals_ppo():
    tok = _tokens()
    delta, eps = 1.5, 0.2
    logp_learner = tok["logp_behaviour"] + 0.3 * torch.randn(64)
    # every token strictly inside the band: |log mu - log pi| < log delta
    logp = (logp_learner + (torch.rand(64) * 2 - 1) * 0.9 * math.log(delta)).requires_grad_()
    kl = torch.rand(64)  # must be masked out entirely
    loss, stats = guider_loss(logp, tok["logp_behaviour"], logp_learner, tok["advantages"], kl, tok["entropy"],
                              tok["value"], tok["value_old"], tok["returns"], eps, delta, 0.01, 0.5, norm_adv=False)
    ref = ppo_reference(logp, tok["logp_behaviour"], tok["advantages"], tok["value"], tok["value_old"],
                        tok["returns"], tok["entropy"], eps, 0.01, 0.5)
    assert stats["out_of_band_frac"] == 0.0 and stats["guider_kl_loss"] == 0.0
    torch.testing.assert_close(loss, ref)
    (g1,) = torch.autograd.grad(loss, logp)
    (g2,) = torch.autograd.grad(ref, logp)
    torch.testing.assert_close(g1, g2)


def _pg_grad(logp_value, logp_learner_value, logp_old_value, adv_value, delta=1.5, eps=0.2):
    logp = torch.tensor([logp_value], requires_grad=True)
    one = torch.ones(1)
    loss, stats = guider_loss(logp, torch.tensor([logp_old_value]), torch.tensor([logp_learner_value]),
                              torch.tensor([adv_value]), torch.zeros(1), torch.zeros(1),
                              torch.zeros(1), torch.zeros(1), torch.zeros(1), eps, delta, 0.0, 0.0, norm_adv=False)
    (grad,) = torch.autograd.grad(loss, logp)
    return grad.item(), stats


@pytest.mark.parametrize("ratio_to_behaviour", [0.85, 1.0, 1.15])
def test_guider_loss_outside_band_blocks_push_away(ratio_to_behaviour):
    """Outside [1/delta, delta] (with the PPO ratio inside its own clip range, as in the first
    epoch), the policy-gradient term never moves mu further from the learner."""
    log_delta, logp = math.log(1.5), math.log(0.3)
    logp_old = logp - math.log(ratio_to_behaviour)
    # mu/pi = 2.5 > delta and A > 0: raising mu would push away -> zero gradient
    grad, stats = _pg_grad(logp, logp - math.log(2.5), logp_old, +1.0)
    assert stats["out_of_band_frac"] == 1.0 and grad == 0.0
    # mu/pi = 1/2.5 < 1/delta and A < 0: lowering mu would push away -> zero gradient
    grad, _ = _pg_grad(logp, logp + math.log(2.5), logp_old, -1.0)
    assert grad == 0.0
    # ... while the gradient towards the learner survives: mu/pi > delta with A < 0 lowers mu
    # (the loss grows with logp, so gradient descent lowers it)
    grad, _ = _pg_grad(logp, logp - math.log(2.5), logp_old, -1.0)
    assert grad > 0.0
    grad, _ = _pg_grad(logp, logp + math.log(2.5), logp_old, +1.0)
    assert grad < 0.0
    assert log_delta > 0


def test_guider_masked_kl_acts_only_outside_band():
    delta = 1.5
    guider_logits = torch.randn(200, 5, requires_grad=True)
    learner_logits = torch.randn(200, 5)
    action = dist_sample(guider_logits.detach(), continuous=False)
    logp = dist_log_prob(guider_logits, action, False)
    logp_learner = dist_log_prob(learner_logits, action, False)
    kl = dist_kl(guider_logits, learner_logits.detach(), False)
    outside = ((logp - logp_learner).abs() > math.log(delta)).detach()
    assert 0 < outside.sum() < 200, "the test needs tokens on both sides of the band"
    zeros = torch.zeros(200)
    loss, stats = guider_loss(logp.detach(), logp.detach(), logp_learner, zeros, kl, zeros,
                              zeros, zeros, zeros, 0.2, delta, 0.0, 0.0, norm_adv=False)
    (grad,) = torch.autograd.grad(loss, guider_logits)
    assert torch.all(grad[~outside] == 0)
    assert torch.all(grad[outside].abs().sum(-1) > 0)
    # the KL term is the mean over all tokens, masked zeros included (official choice)
    torch.testing.assert_close(torch.tensor(stats["guider_kl_loss"]), (kl * outside).sum().detach() / 200)
    # a small step along -grad brings the out-of-band guider closer to the learner
    with torch.no_grad():
        stepped = guider_logits - 50.0 * grad
        assert dist_kl(stepped, learner_logits, False)[outside].sum() < kl[outside].sum()


def test_guider_delta_inf_is_untethered_ppo():
    tok = _tokens()
    logp = (tok["logp_behaviour"] + 0.2 * torch.randn(64)).requires_grad_()
    logp_learner = tok["logp_behaviour"] + 3.0 * torch.randn(64)  # far away: no tether at delta=inf
    loss, stats = guider_loss(logp, tok["logp_behaviour"], logp_learner, tok["advantages"], torch.rand(64),
                              tok["entropy"], tok["value"], tok["value_old"], tok["returns"], 0.2, math.inf, 0.0, 0.5,
                              norm_adv=False)
    ref = ppo_reference(logp, tok["logp_behaviour"], tok["advantages"], tok["value"], tok["value_old"],
                        tok["returns"], tok["entropy"], 0.2, 0.0, 0.5)
    assert stats["out_of_band_frac"] == 0.0
    torch.testing.assert_close(loss, ref)


# ------------------------------------------------------------------------------ learner loss
def test_learner_kl_is_forward_kl_from_guider():
    guider_logits = torch.randn(50, 5)
    learner_logits = torch.randn(50, 5, requires_grad=True)
    kl = dist_kl(guider_logits, learner_logits, False)
    mu, pi = guider_logits.softmax(-1), learner_logits.softmax(-1)
    torch.testing.assert_close(kl, (mu * (mu.log() - pi.log())).sum(-1))
    loss, stats = learner_loss(torch.zeros(50), torch.zeros(50), torch.zeros(50), kl, 0.2, alpha=0.0)
    (grad,) = torch.autograd.grad(loss, learner_logits)
    # forward KL = cross-entropy to mu: d/dlogits = (pi - mu) / num_tokens (reverse KL would differ)
    torch.testing.assert_close(grad, (pi - mu).detach() / 50)
    assert stats["learner_bc_kl"] == pytest.approx(kl.mean().item())


@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_learner_loss_alpha_weights_off_policy_ppo(alpha):
    n, eps = 100, 0.2
    logp_learner = torch.log(torch.rand(n) * 0.8 + 0.1).requires_grad_()
    logp_behaviour = torch.log(torch.rand(n) * 0.8 + 0.1)
    adv, kl = torch.randn(n), torch.rand(n)
    loss, stats = learner_loss(logp_learner, logp_behaviour, adv, kl, eps, alpha)
    a = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (logp_learner - logp_behaviour).exp()  # learner over the guider's behaviour
    rl = -torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a).mean()
    torch.testing.assert_close(loss, alpha * rl + kl.mean())
    assert stats["learner_rl_loss"] == pytest.approx(rl.item())


# ----------------------------------------------------------------------------- distributions
def test_tanh_gaussian_log_prob_matches_numeric_density():
    """p(a) from a central difference of the CDF P(A <= a) = Phi((atanh(a) - m) / s)."""
    mean, log_std = torch.tensor([0.3, -1.2, 0.0]), torch.tensor([-0.5, 0.4, 0.0])
    a = torch.tensor([0.2, -0.95, 0.7])
    h = 1e-6

    def cdf(x):
        return 0.5 * (1 + torch.erf((torch.atanh(x) - mean) / (log_std.exp() * math.sqrt(2))))

    numeric = ((cdf(a + h) - cdf(a - h)) / (2 * h)).log()
    u = torch.atanh(a)
    per_dim = torch.stack([tanh_gaussian_log_prob(u[i : i + 1], mean[i : i + 1], log_std[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(per_dim, numeric, rtol=1e-6, atol=1e-6)
    # the joint log-density of independent dims is the sum
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std), numeric.sum(), rtol=1e-6, atol=1e-6)
    # stable far in the tails, where 1 - tanh(u)^2 underflows
    assert torch.isfinite(tanh_gaussian_log_prob(torch.tensor([30.0]), torch.zeros(1), torch.zeros(1)))


def test_gaussian_kl_matches_torch_distributions():
    p, q = torch.randn(10, 4), torch.randn(10, 4)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(p[:, :2], p[:, 2:].exp()), torch.distributions.Normal(q[:, :2], q[:, 2:].exp())
    ).sum(-1)
    torch.testing.assert_close(dist_kl(p, q, True), ref)


# ----------------------------------------------------------------------------------- networks
def test_permutation_helpers_are_inverse():
    x = torch.randn(7, 4, 3)
    perm = torch.rand(7, 4).argsort(1)
    torch.testing.assert_close(to_agents(to_positions(x, perm), perm), x)
    torch.testing.assert_close(to_positions(x, perm)[2, 1], x[2, perm[2, 1]])


def test_gru_unroll_equals_step_by_step_loop_with_resets():
    gru = torch.nn.GRU(6, 5)
    T, M = 20, 4
    x, h0 = torch.randn(T, M, 6), torch.randn(M, 5)
    starts = torch.rand(T, M) < 0.2
    out, hT = gru_unroll(gru, x, h0, starts)
    h, outs = h0, []
    for t in range(T):
        h = h * (~starts[t]).double().unsqueeze(-1)
        o, h = gru(x[t : t + 1], h.unsqueeze(0))
        h = h[0]
        outs.append(o[0])
    torch.testing.assert_close(out, torch.stack(outs))
    torch.testing.assert_close(hT, h)


@pytest.mark.parametrize("continuous", [True, False])
def test_teacher_forced_guider_matches_sampling(continuous):
    """The log-probs and values recorded while sampling agent by agent (random order per step,
    recurrent memory, episode resets) equal the teacher-forced BPTT pass used in training."""
    T, B, N, obs_dim, A = 12, 5, 4, 7, 5
    guider = Guider(obs_dim, N, A, continuous, dim=16, heads=2, blocks=2)
    obs = torch.randn(T, B, N, obs_dim)
    starts = torch.rand(T, B) < 0.2
    h0 = torch.randn(B, N, 16)
    h, rec = h0, {"a": [], "logp": [], "v": [], "perm": []}
    for t in range(T):
        perm = torch.rand(B, N).argsort(1)
        a, logp, v, h = guider.act(obs[t], h, starts[t], perm)
        for k, val in zip(("a", "logp", "v", "perm"), (a, logp, v, perm)):
            rec[k].append(val)
    rec = {k: torch.stack(v) for k, v in rec.items()}
    _, logp, _, value = guider.evaluate(obs, h0, starts, rec["a"], rec["perm"])
    torch.testing.assert_close(logp, rec["logp"])
    torch.testing.assert_close(value, rec["v"])
    # the decoder is autoregressive: the first decoded agent's log-prob ignores the others' actions
    first = rec["perm"][..., 0]
    other = rec["a"].clone()
    other_mask = torch.ones(T, B, N, dtype=torch.bool).scatter(2, first.unsqueeze(-1), False)
    other[other_mask] = dist_sample(torch.randn(int(other_mask.sum()), 2 * A if continuous else A), continuous)
    _, logp2, _, _ = guider.evaluate(obs, h0, starts, other, rec["perm"])
    torch.testing.assert_close(logp2.gather(2, first.unsqueeze(-1)), logp.gather(2, first.unsqueeze(-1)))
    assert not torch.allclose(logp2, logp)


def test_learner_rollout_state_matches_bptt():
    T, B, N, obs_dim = 10, 3, 3, 6
    learner = Learner(obs_dim, N, 5, continuous=True, hidden=8)
    obs, starts, h0 = torch.randn(T, B, N, obs_dim), torch.rand(T, B) < 0.3, torch.randn(B, N, 8)
    params_seq, h_seq = learner(obs, h0, starts)
    h = h0
    for t in range(T):
        params, h = learner(obs[t : t + 1], h, starts[t : t + 1])
        torch.testing.assert_close(params[0], params_seq[t])
    torch.testing.assert_close(h, h_seq)
