"""Tests of `mappo_baseline.py`: the pure loss math, the actor (MAGPO's learner) and the critic's
input switch (MAPPO: global state, IPPO: own observation), and end-to-end runs as a user starts
them: both envs in both modes, the TensorBoard tags, bad input, same-seed determinism."""

import glob
import math
import os

import numpy as np
import pytest
import torch
from helpers import assert_same_numbers, only_run_dir, run_script, scalars

import magpo_mpe
from mappo_baseline import (
    Args,
    Critic,
    Learner,
    compute_gae,
    critic_inputs,
    dist_entropy,
    dist_log_prob,
    dist_sample,
    mask_logits,
    ppo_loss,
    validate_args,
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
def _loss(logp, logp_old, adv, entropy=None, value=None, value_old=None, returns=None, eps=0.2,
          ent_coef=0.0, vf_coef=0.0, norm_adv=False, clip_vloss=True):
    zeros = torch.zeros_like(logp_old)
    return ppo_loss(
        logp, logp_old, adv, zeros if entropy is None else entropy,
        zeros if value is None else value, zeros if value_old is None else value_old,
        zeros if returns is None else returns, eps, ent_coef, vf_coef, norm_adv, clip_vloss,
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
    loss, stats = ppo_loss(logp, logp_old, adv, entropy, value, value_old, returns, eps, ent_coef, vf_coef)
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
    loss0, stats0 = ppo_loss(logp_old, logp_old, adv, entropy * 0, value, value, value, eps, ent_coef, vf_coef)
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
    loss, stats = _loss(zero, zero, zero, value=v, value_old=zero, returns=torch.tensor([returns], dtype=F64), vf_coef=1.0)
    (grad,) = torch.autograd.grad(loss, v)
    assert stats["value_loss"] == pytest.approx(expected_loss)
    assert grad.item() == pytest.approx(expected_grad)
    # --no-clip-vloss: plain 0.5 (V - R)^2 whatever V_old is
    loss, _ = _loss(zero, zero, zero, value=v, value_old=zero, returns=torch.tensor([returns], dtype=F64),
                    vf_coef=1.0, clip_vloss=False)
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
        return ppo_loss(logp, logp_old, adv, entropy, value, value_old, returns, 0.2, 0.01, 0.5)[0]

    assert torch.autograd.gradcheck(f, (logp, value, entropy))


# --------------------------------------------------------------------------- distributions
def test_masked_categorical_never_picks_illegal_actions():
    logits = torch.randn(500, 6, dtype=F64, requires_grad=True)
    legal = torch.rand(500, 6) < 0.5
    legal[:, 2] = True  # at least one legal action per row
    masked = mask_logits(logits, legal)
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
    torch.testing.assert_close(mask_logits(logits, torch.ones_like(legal)), logits)


# --------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("continuous", [True, False])
def test_actor_is_magpo_learner(continuous):
    """Same parameters, same outputs as magpo_mpe.Learner: the comparison isolates the algorithm."""
    T, B, N, obs_dim, A = 9, 3, 3, 18, 5
    ours = Learner(obs_dim, N, A, continuous, hidden=16).to(F64)
    theirs = magpo_mpe.Learner(obs_dim, N, A, continuous, hidden=16).to(F64)
    shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    ours.load_state_dict(theirs.state_dict())
    obs, starts, h0 = torch.randn(T, B, N, obs_dim, dtype=F64), torch.rand(T, B) < 0.3, torch.randn(B, N, 16, dtype=F64)
    for a, b in zip(ours(obs, h0, starts), theirs(obs, h0, starts)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"env": "smac"}, "unknown --env 'smac'"),
        ({"env": "smax", "map_name": "9z"}, "unknown SMAX map '9z'; registered maps: 10m_vs_11m, "),
        ({"env": "smax", "capture_video": True}, "--capture-video"),
        ({"env": "coordsum", "scenario": "4x4"}, "unknown --scenario '4x4'"),
        ({"env": "coordsum", "capture_video": True}, "--capture-video"),
        ({"num_envs": 6, "num_minibatches": 4}, "divisible by --num-minibatches"),
        ({"num_agents": 1}, "--num-agents must be >= 2"),
        ({"num_steps": 0}, "--num-steps must be >= 1"),
        ({"total_timesteps": 10}, "at least one rollout"),
        ({"clip_coef": 0.0}, "--clip-coef must be > 0"),
        ({"gae_lambda": 1.5}, "--gae-lambda must be in [0, 1]"),
    ],
)
def test_validate_args_rejects_bad_input(overrides, message):
    validate_args(Args())  # the defaults are valid
    with pytest.raises(ValueError) as error:
        validate_args(Args(**overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------------------------ runs
TINY = [
    "--total-timesteps", "256", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
    "--update-epochs", "2", "--eval-interval", "128", "--num-eval-episodes", "2",
    "--learner-hidden", "16", "--critic-hidden", "16",
]
# CoordSum episodes last 100 steps: 2 rollouts of 64 steps finish one per env
TINY_COORDSUM = [*TINY[:6], "--num-steps", "64", *TINY[8:], "--total-timesteps", "512", "--eval-interval", "256"]
# SMAX episodes last at most 101 steps: the same; 4 eval envs = 4 train envs, so one compile of `step`
TINY_SMAX = [*TINY_COORDSUM, "--num-eval-episodes", "4"]
SMAX_TAGS = {"charts/win_rate", "eval/win_rate", "eval/random_win_rate", "eval/absolute_win_rate"}
EXPECTED_TAGS = {
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
    "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
    "losses/explained_variance",
    "eval/learner_return", "eval/random_return", "eval/absolute_learner_return",
}


def run(args, cwd, timeout=120, fast_compile=False):
    return run_script("mappo_baseline.py", args, cwd, timeout=timeout, fast_compile=fast_compile)


@pytest.fixture(scope="module")
def default_mpe_runs(tmp_path_factory):
    """The default mode (MAPPO on simple_spread, continuous) run twice with the same seed."""
    dirs = []
    for name in ("a", "b"):
        cwd = tmp_path_factory.mktemp(name)
        result = run([*TINY, "--seed", "7", "--save-model"], cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        dirs.append(only_run_dir(cwd))
    return dirs


def check_run(run_dir, eval_steps, prefix):
    assert os.path.basename(run_dir).startswith(prefix), run_dir
    tags = scalars(run_dir)
    expected = EXPECTED_TAGS | (SMAX_TAGS if "2s3z" in prefix else set())
    assert expected <= set(tags), expected - set(tags)
    if "2s3z" not in prefix:  # win rates only where the env has wins
        assert not SMAX_TAGS & set(tags), SMAX_TAGS & set(tags)
    assert [step for step, _ in tags["eval/learner_return"]] == eval_steps  # before training, every interval, end
    assert all(np.isfinite(v) for values in tags.values() for _, v in values)
    return tags


def test_default_run_writes_tags_and_model(default_mpe_runs):
    run_dir = default_mpe_runs[0]
    check_run(run_dir, [0, 128, 256], "simple_spread_3ag__mappo_baseline__7__")
    saved = torch.load(os.path.join(run_dir, "mappo_baseline.cleanrl_model"), weights_only=False)
    assert saved["script"] == "mappo_baseline.py"
    assert {"learner", "best_learner", "critic", "args"} <= set(saved)
    assert saved["args"]["exp_name"] == "mappo_baseline" and saved["args"]["num_envs"] == 4
    # MAPPO's critic reads [one-hot id (3), global state (3 x 18)]
    assert saved["critic"]["pre.0.weight"].shape == (16, 3 + 3 * 18)
    assert saved["learner"]["pre.0.weight"].shape == (16, 3 + 18)


def test_same_seed_same_numbers(default_mpe_runs):
    assert_same_numbers(default_mpe_runs, prefixes=("losses/", "eval/"))


@pytest.mark.parametrize(
    "extra, eval_steps, prefix, num_agents, critic_in",
    [
        (["--ippo", "--capture-video"], [0, 128, 256], "simple_spread_3ag__ippo_baseline__1__", 3, 3 + 18),
        (["--no-continuous-actions", "--num-agents", "4"], [0, 128, 256], "simple_spread_4ag__mappo_baseline__1__",
         4, 4 + 4 * 24),
        (["--env", "coordsum"], [0, 256, 512], "coordsum_3x10__mappo_baseline__1__", 3, 3 + 3 * 30),
        (["--env", "coordsum", "--ippo", "--scenario", "5x20", "--coordsum-obs", "raw"], [0, 256, 512],
         "coordsum_5x20__ippo_baseline__1__", 5, 5 + 1),
        # 2s3z: 5 allies; world state 12 x 10 units, observation 13 x 9 other units + 10 own features
        (["--env", "smax"], [0, 256, 512], "2s3z__mappo_baseline__1__", 5, 5 + 120),
        (["--env", "smax", "--ippo"], [0, 256, 512], "2s3z__ippo_baseline__1__", 5, 5 + 127),
    ],
    ids=["mpe-ippo-video", "mpe-discrete-4ag", "coordsum-mappo", "coordsum-5x20-ippo-raw", "smax-mappo", "smax-ippo"],
)
def test_variants_run(tmp_path, extra, eval_steps, prefix, num_agents, critic_in):
    base = TINY_COORDSUM if "coordsum" in extra else TINY_SMAX if "smax" in extra else TINY
    result = run([*base, *extra, "--save-model"], tmp_path, timeout=300, fast_compile="smax" in extra)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    check_run(run_dir, eval_steps, prefix)
    exp_name = "ippo_baseline" if "--ippo" in extra else "mappo_baseline"
    saved = torch.load(os.path.join(run_dir, f"{exp_name}.cleanrl_model"), weights_only=False)
    assert saved["critic"]["pre.0.weight"].shape[1] == critic_in  # MAPPO: [id, state]; IPPO: [id, own obs]
    # the saved args describe the env actually run (CoordSum: agents from the scenario, discrete)
    assert saved["args"]["num_agents"] == num_agents
    discrete = {"--no-continuous-actions", "coordsum", "smax"} & set(extra)
    assert saved["args"]["continuous_actions"] == (not discrete)
    if "--capture-video" in extra:
        assert len(glob.glob(os.path.join(run_dir, "videos", "*.gif"))) == len(eval_steps)


def test_bad_input_is_one_line_error(tmp_path):
    """The messages are checked in-process above; this checks how the script exits with one."""
    result = run([*TINY, "--env", "smac"], tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: unknown --env 'smac'; choose one of ['mpe', 'coordsum', 'smax']", result.stderr
    assert not os.path.exists(tmp_path / "runs"), "nothing may be built before the input is checked"
