"""Unit tests of the math in magpo_mpe.py (the same functions in every MAGPO script, see
tests/test_copies.py): GAE, the guider and learner losses, the action distributions with their
action masks, and the networks' consistency between sampling (rollout) and training (BPTT)."""

import math

import numpy as np
import pytest
import torch

import magpo_smax
from magpo_mpe import (
    Guider,
    Learner,
    RunningMeanStd,
    compute_gae,
    decoding_order,
    dist_entropy,
    dist_kl,
    dist_log_prob,
    dist_sample,
    gru_unroll,
    guider_loss,
    learner_loss,
    masked_kl,
    masked_logits,
    random_perm,
    tanh_gaussian_log_prob,
    tether_kls,
    tethered_ratio,
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
    expected = naive_gae(
        rewards, values, np.broadcast_to(dones, (T, B, N)), next_value, np.broadcast_to(next_done, (B, N)), 0.99, 0.95
    )
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
def ppo_reference(logp, tok, eps, ent_coef, vf_coef):
    """Plain PPO (clipped surrogate and value loss, entropy bonus) on the tokens `tok` of `_tokens`."""
    logp_old, adv, value, value_old = tok["logp_behaviour"], tok["advantages"], tok["value"], tok["value_old"]
    returns, entropy = tok["returns"], tok["entropy"]
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
    loss, stats = guider_loss(
        logp=logp,
        logp_learner=logp_learner,
        kl_to_learner=kl,
        **tok,
        clip_coef=eps,
        delta=delta,
        ent_coef=0.01,
        vf_coef=0.5,
        norm_adv=False,
    )
    ref = ppo_reference(logp, tok, eps, 0.01, 0.5)
    assert stats["out_of_band_frac"] == 0.0 and stats["guider_kl_loss"] == 0.0
    torch.testing.assert_close(loss, ref)
    (g1,) = torch.autograd.grad(loss, logp)
    (g2,) = torch.autograd.grad(ref, logp)
    torch.testing.assert_close(g1, g2)


def _pg_grad(logp_value, logp_learner_value, logp_old_value, adv_value, delta=1.5, eps=0.2):
    logp = torch.tensor([logp_value], requires_grad=True)
    zero = torch.zeros(1)
    loss, stats = guider_loss(
        logp=logp,
        logp_behaviour=torch.tensor([logp_old_value]),
        logp_learner=torch.tensor([logp_learner_value]),
        advantages=torch.tensor([adv_value]),
        kl_to_learner=zero,
        entropy=zero,
        value=zero,
        value_old=zero,
        returns=zero,
        clip_coef=eps,
        delta=delta,
        ent_coef=0.0,
        vf_coef=0.0,
        norm_adv=False,
    )
    (grad,) = torch.autograd.grad(loss, logp)
    return grad.item(), stats


@pytest.mark.parametrize("ratio_to_behaviour", [0.85, 1.0, 1.15])
def test_guider_loss_outside_band_blocks_push_away(ratio_to_behaviour):
    """Outside [1/delta, delta] (with the PPO ratio inside its own clip range, as in the first
    epoch), the policy-gradient term never moves mu further from the learner."""
    logp = math.log(0.3)
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


def test_guider_loss_outside_band_keeps_the_gradient_where_ppo_ratio_is_past_its_clip():
    """The exception stated in guider_loss's comment (docs/algorithm.md §4): when the PPO ratio mu/beta
    has left [1 - eps, 1 + eps] on the side PPO does not clip, the unclipped term r * A is the smaller
    one inside the min() and keeps its gradient, even with mu outside the band, pushing it further
    from the learner."""
    logp = math.log(0.3)
    # above the band (mu/pi = 2.5 > delta), A > 0, and r = mu/beta = 0.5 < 1 - eps: r * A < clip(r~) * A
    grad, stats = _pg_grad(logp, logp - math.log(2.5), logp - math.log(0.5), +1.0)
    assert stats["out_of_band_frac"] == 1.0 and grad == pytest.approx(-0.5)  # descent raises mu, away from pi
    # below the band (mu/pi = 0.4 < 1/delta), A < 0, and r = 1.5 > 1 + eps: the same on the other side
    grad, _ = _pg_grad(logp, logp + math.log(2.5), logp - math.log(1.5), -1.0)
    assert grad == pytest.approx(1.5)  # descent lowers mu, away from pi
    # ... and at r = 0.9 (inside the PPO range) the push-away gradient is dropped again
    grad, _ = _pg_grad(logp, logp - math.log(2.5), logp - math.log(0.9), +1.0)
    assert grad == 0.0


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
    loss, stats = guider_loss(
        logp=logp.detach(),
        logp_behaviour=logp.detach(),
        logp_learner=logp_learner,
        advantages=zeros,
        kl_to_learner=kl,
        entropy=zeros,
        value=zeros,
        value_old=zeros,
        returns=zeros,
        clip_coef=0.2,
        delta=delta,
        ent_coef=0.0,
        vf_coef=0.0,
        norm_adv=False,
    )
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
    loss, stats = guider_loss(
        logp=logp,
        logp_learner=logp_learner,
        kl_to_learner=torch.rand(64),
        **tok,
        clip_coef=0.2,
        delta=math.inf,
        ent_coef=0.0,
        vf_coef=0.5,
        norm_adv=False,
    )
    ref = ppo_reference(logp, tok, 0.2, 0.0, 0.5)
    assert stats["out_of_band_frac"] == 0.0
    torch.testing.assert_close(loss, ref)


def test_guider_value_loss_clip_switch():
    """--clip-vloss (default): 0.5 max(unclipped, clipped)^2; --no-clip-vloss: plain 0.5 (V - R)^2."""
    value, value_old, returns = torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([3.0])
    zero = torch.zeros(1)
    common = dict(
        logp=zero,
        logp_behaviour=zero,
        logp_learner=zero,
        advantages=zero,
        kl_to_learner=zero,
        entropy=zero,
        value=value,
        value_old=value_old,
        returns=returns,
        clip_coef=0.2,
        delta=1.5,
        ent_coef=0.0,
        vf_coef=1.0,
        norm_adv=False,
    )
    _, clipped = guider_loss(**common)
    _, plain = guider_loss(**common, clip_vloss=False)
    assert clipped["value_loss"] == pytest.approx(0.5 * (0.2 - 3.0) ** 2)  # the clipped value 0.2 is further
    assert plain["value_loss"] == pytest.approx(0.5 * (2.0 - 3.0) ** 2)


# ------------------------------------------------------------------------------ learner loss
def test_learner_kl_is_forward_kl_from_guider():
    guider_logits = torch.randn(50, 5)
    learner_logits = torch.randn(50, 5, requires_grad=True)
    kl = dist_kl(guider_logits, learner_logits, False)
    mu, pi = guider_logits.softmax(-1), learner_logits.softmax(-1)
    torch.testing.assert_close(kl, (mu * (mu.log() - pi.log())).sum(-1))
    zeros = torch.zeros(50)
    loss, stats = learner_loss(
        logp_learner=zeros, logp_behaviour=zeros, advantages=zeros, kl_from_guider=kl, clip_coef=0.2, alpha=0.0
    )
    (grad,) = torch.autograd.grad(loss, learner_logits)
    # forward KL = cross-entropy to mu: d/dlogits = (pi - mu) / num_tokens (reverse KL would differ)
    torch.testing.assert_close(grad, (pi - mu).detach() / 50)
    assert stats["kl_guider_learner"] == pytest.approx(kl.mean().item())


# ------------------------------------------------------------------------------ the tether's parts
def test_tethered_ratio_is_ppo_inside_the_band_and_constant_in_mu_outside():
    delta = 1.5
    logp_learner, logp_behaviour = torch.zeros(5), torch.full((5,), -0.1)
    # mu/pi = 0.5 (below), 0.8, 1.0, 1.4 (inside), 2.0 (above)
    logp = torch.tensor([0.5, 0.8, 1.0, 1.4, 2.0]).log().requires_grad_(True)
    r_tilde = tethered_ratio(logp, logp_learner, logp_behaviour, delta)
    inside = torch.tensor([False, True, True, True, False])
    torch.testing.assert_close(r_tilde[inside], (logp - logp_behaviour).exp()[inside])
    torch.testing.assert_close(r_tilde[~inside], torch.tensor([1 / delta, delta]) * math.exp(0.1))
    (grad,) = torch.autograd.grad(r_tilde.sum(), logp)
    assert torch.all(grad[~inside] == 0) and torch.all(grad[inside] > 0)


def test_masked_kl_switches_on_outside_the_band_only_and_averages_over_all_tokens():
    logp_learner = torch.zeros(4)
    logp = torch.tensor([0.5, 0.9, 1.1, 3.0]).log()  # delta 2: only the last token is out of the band
    kl_to_learner = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    loss, out_of_band = masked_kl(logp, logp_learner, kl_to_learner, 2.0)
    assert out_of_band.tolist() == [0.0, 0.0, 0.0, 1.0] and loss.item() == pytest.approx(4.0 / 4)
    (grad,) = torch.autograd.grad(loss, kl_to_learner)
    assert grad.tolist() == [0.0, 0.0, 0.0, 0.25]


@pytest.mark.parametrize("continuous", [False, True])
def test_tether_kls_are_both_the_forward_kl_with_the_other_side_held_fixed(continuous):
    P = 6 if continuous else 4
    guider_params = torch.randn(7, 3, P, requires_grad=True)
    learner_params = torch.randn(7, 3, P, requires_grad=True)
    kl_to_learner, kl_from_guider = tether_kls(guider_params, learner_params, continuous)
    reference = dist_kl(guider_params, learner_params, continuous)  # KL(mu || pi), both sides live
    torch.testing.assert_close(kl_to_learner, reference)
    torch.testing.assert_close(kl_from_guider, reference)
    g_grad, l_grad = torch.autograd.grad(kl_to_learner.sum(), (guider_params, learner_params), allow_unused=True)
    assert l_grad is None and g_grad.abs().sum() > 0  # the guider moves, the learner is a constant
    g_grad, l_grad = torch.autograd.grad(kl_from_guider.sum(), (guider_params, learner_params), allow_unused=True)
    assert g_grad is None and l_grad.abs().sum() > 0  # the learner moves, the guider is a constant


@pytest.mark.parametrize("alpha", [0.0, 1.0, 4.0])
def test_learner_loss_alpha_weights_off_policy_ppo(alpha):
    n, eps = 100, 0.2
    logp_learner = torch.log(torch.rand(n) * 0.8 + 0.1).requires_grad_()
    logp_behaviour = torch.log(torch.rand(n) * 0.8 + 0.1)
    adv, kl = torch.randn(n), torch.rand(n)
    loss, stats = learner_loss(
        logp_learner=logp_learner,
        logp_behaviour=logp_behaviour,
        advantages=adv,
        kl_from_guider=kl,
        clip_coef=eps,
        alpha=alpha,
    )
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


def random_masks(generator, shape):
    """Random availability masks with at least one legal action per row (as SMAX: stop)."""
    avail = torch.rand(shape, generator=generator) < 0.5
    forced = torch.randint(shape[-1], shape[:-1], generator=generator)
    return avail | torch.nn.functional.one_hot(forced, shape[-1]).bool()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_actions_are_never_sampled_and_get_no_mass(dtype):
    generator = torch.Generator().manual_seed(0)
    shape = (5000, 10)  # 5000 random masks over 10 actions
    avail = random_masks(generator, shape)
    # large logits on purpose: the illegal actions are often the most attractive ones
    logits = masked_logits(10 * torch.randn(shape, generator=generator, dtype=dtype), avail)
    probs = logits.softmax(-1)
    assert torch.all(probs[~avail] == 0), "an unavailable action got probability mass"
    torch.testing.assert_close(probs.sum(-1), torch.ones(shape[0], dtype=dtype))
    for _ in range(20):  # 100k draws
        action = dist_sample(logits, continuous=False)
        assert avail.gather(-1, action.unsqueeze(-1)).all(), "an unavailable action was sampled"
    assert avail.gather(-1, dist_sample(logits, False, deterministic=True).unsqueeze(-1)).all()
    assert torch.isfinite(dist_log_prob(logits, dist_sample(logits, False), False)).all()
    # all-True masks (MPE, CoordSum) change nothing
    raw = torch.randn(shape, generator=generator, dtype=dtype)
    assert torch.equal(masked_logits(raw, torch.ones(shape, dtype=torch.bool)), raw)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entropy_and_kl_run_over_available_actions_only(dtype):
    generator = torch.Generator().manual_seed(1)
    avail = random_masks(generator, (500, 8))
    raw_p = torch.randn(500, 8, generator=generator, dtype=dtype, requires_grad=True)
    raw_q = torch.randn(500, 8, generator=generator, dtype=dtype, requires_grad=True)
    p, q = masked_logits(raw_p, avail), masked_logits(raw_q, avail)
    entropy, kl = dist_entropy(p, False), dist_kl(p, q, False)
    assert torch.isfinite(entropy).all() and torch.isfinite(kl).all()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for i in range(500):  # reference: the distributions restricted to the legal actions
        legal = avail[i]
        logp, logq = raw_p[i, legal].log_softmax(-1), raw_q[i, legal].log_softmax(-1)
        torch.testing.assert_close(entropy[i], -(logp.exp() * logp).sum(), **tol)
        torch.testing.assert_close(kl[i], (logp.exp() * (logp - logq)).sum(), **tol)
    (entropy.sum() + kl.sum()).backward()
    assert torch.isfinite(raw_p.grad).all() and torch.isfinite(raw_q.grad).all()
    assert torch.all(raw_p.grad[~avail] == 0) and torch.all(raw_q.grad[~avail] == 0), "illegal logits get no gradient"


def test_a_single_legal_action_is_certain():
    """A dead SMAX agent may only stop: log-prob 0, entropy 0, KL 0, and no nan anywhere."""
    avail = torch.zeros(3, 6, dtype=torch.bool)
    avail[:, 4] = True
    p, q = masked_logits(torch.randn(3, 6), avail), masked_logits(torch.randn(3, 6), avail)
    assert torch.all(dist_sample(p, False) == 4)
    assert torch.all(dist_log_prob(p, torch.full((3,), 4), False) == 0)
    assert torch.all(dist_entropy(p, False) == 0) and torch.all(dist_kl(p, q, False) == 0)


@pytest.mark.parametrize("use_state", [False, True], ids=["observations", "smax-global-state"])
def test_networks_respect_masks_and_replay_their_log_probs(use_state):
    """Guider and learner never pick an illegal action over a rollout with random masks and
    episode starts, and the teacher-forced replay (BPTT) gives the guider's rollout log-probs.
    With the world state: magpo_smax.py's guider (`--guider-global-state`)."""
    generator = torch.Generator().manual_seed(2)
    T, B, N, obs_dim, A, S, dim = 12, 6, 4, 9, 7, 5, 16
    if use_state:
        guider = magpo_smax.Guider(obs_dim, N, A, False, dim, 2, 1, state_dim=S)
    else:
        guider = Guider(obs_dim, N, A, False, dim, 2, 1)
    learner = Learner(obs_dim, N, A, False, dim)
    obs, states = torch.randn(T, B, N, obs_dim), torch.randn(T, B, S)
    avail = random_masks(generator, (T, B, N, A))
    starts = torch.rand(T, B, generator=generator) < 0.2
    starts[0] = True
    g_h, l_h = torch.zeros(B, N, dim), torch.zeros(B, N, dim)
    actions, logps, perms = [], [], []
    for t in range(T):
        perm = random_perm(B, N, "cpu")
        state = {"state": states[t]} if use_state else {}
        action, logp, _, g_h = guider.act(obs[t], g_h, starts[t], perm, avail[t], **state)
        learner_action, l_h = learner.act(obs[t], l_h, starts[t], avail[t])
        assert avail[t].gather(-1, action.unsqueeze(-1)).all()
        assert avail[t].gather(-1, learner_action.unsqueeze(-1)).all()
        actions.append(action), logps.append(logp), perms.append(perm)
    actions, logps, perms = torch.stack(actions), torch.stack(logps), torch.stack(perms)
    state = {"state": states} if use_state else {}
    params, replayed, entropy, _ = guider.evaluate(obs, torch.zeros(B, N, dim), starts, actions, perms, avail, **state)
    torch.testing.assert_close(replayed, logps, rtol=1e-4, atol=1e-5)
    assert torch.all(params.softmax(-1)[~avail] == 0) and torch.isfinite(entropy).all()


# ----------------------------------------------------------------------------------- networks
def test_decoding_orders():
    """`random`: an independent permutation per env; `official`: index order 0..N-1 for every env."""
    official = decoding_order(4, 3, "cpu", "official")
    assert official.shape == (4, 3) and (official == torch.arange(3)).all()
    random = decoding_order(64, 3, "cpu", "random")
    assert (random.sort(dim=1).values == torch.arange(3)).all() and len({tuple(r) for r in random.tolist()}) > 1


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
