"""`magpo_smax.py`: the masked categorical heads (unit tests), then end-to-end runs as a user
makes them: tiny runs and their TensorBoard tags, bad input, determinism, every one of the
paper's ten maps (marker `slow`), and (marker `learning`) a short run that must learn to win."""

import os

import numpy as np
import pytest
import torch
from helpers import MAGPO_TAGS, assert_same_numbers, only_run_dir, run_script, same_seed_run_dirs, scalars

from magpo_smax import (
    MASKED_LOGIT,
    Guider,
    Learner,
    dist_entropy,
    dist_kl,
    dist_log_prob,
    dist_sample,
    masked_logits,
    random_perm,
)
from utils.smax import PAPER_MAPS

# num_envs == num_eval_episodes: the evaluation batch reuses the training batch's compiled step
TINY = [
    "--total-timesteps", "256", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
    "--update-epochs", "2", "--eval-interval", "128", "--num-eval-episodes", "4",
    "--learner-hidden", "16", "--guider-dim", "16",
]


# ------------------------------------------------------------------------ masked categoricals
def random_masks(generator, shape):
    """Random availability masks with at least one legal action per row (as SMAX: stop)."""
    avail = torch.rand(shape, generator=generator) < 0.5
    forced = torch.randint(shape[-1], shape[:-1], generator=generator)
    return avail | torch.nn.functional.one_hot(forced, shape[-1]).bool()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_actions_are_never_sampled_and_get_no_mass(dtype):
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    shape = (5000, 10)  # 5000 random masks over 10 actions
    avail = random_masks(generator, shape)
    # large logits on purpose: the illegal actions are often the most attractive ones
    logits = masked_logits(10 * torch.randn(shape, generator=generator, dtype=dtype), avail)
    probs = logits.softmax(-1)
    assert torch.all(probs[~avail] == 0), "an unavailable action got probability mass"
    torch.testing.assert_close(probs.sum(-1), torch.ones(shape[0], dtype=dtype))
    for _ in range(20):  # 100k draws
        action = dist_sample(logits)
        assert avail.gather(-1, action.unsqueeze(-1)).all(), "an unavailable action was sampled"
    assert avail.gather(-1, dist_sample(logits, deterministic=True).unsqueeze(-1)).all()
    assert torch.isfinite(dist_log_prob(logits, dist_sample(logits))).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_entropy_and_kl_run_over_available_actions_only(dtype):
    generator = torch.Generator().manual_seed(1)
    avail = random_masks(generator, (500, 8))
    raw_p = torch.randn(500, 8, generator=generator, dtype=dtype, requires_grad=True)
    raw_q = torch.randn(500, 8, generator=generator, dtype=dtype, requires_grad=True)
    p, q = masked_logits(raw_p, avail), masked_logits(raw_q, avail)
    entropy, kl = dist_entropy(p), dist_kl(p, q)
    assert torch.isfinite(entropy).all() and torch.isfinite(kl).all()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    for i in range(500):  # reference: the distributions restricted to the legal actions
        legal = avail[i]
        logp, logq = raw_p[i, legal].log_softmax(-1), raw_q[i, legal].log_softmax(-1)
        torch.testing.assert_close(entropy[i], -(logp.exp() * logp).sum(), **tol)
        torch.testing.assert_close(kl[i], (logp.exp() * (logp - logq)).sum(), **tol)
    (entropy.sum() + kl.sum()).backward()
    assert torch.isfinite(raw_p.grad).all() and torch.isfinite(raw_q.grad).all()
    assert torch.all(raw_p.grad[~avail] == 0) and torch.all(raw_q.grad[~avail] == 0), "illegal logits must get no gradient"


def test_a_single_legal_action_is_certain():
    """A dead SMAX agent may only stop: log-prob 0, entropy 0, KL 0, and no nan anywhere."""
    avail = torch.zeros(3, 6, dtype=torch.bool)
    avail[:, 4] = True
    p, q = masked_logits(torch.randn(3, 6), avail), masked_logits(torch.randn(3, 6), avail)
    assert torch.all(dist_sample(p) == 4)
    assert torch.all(dist_log_prob(p, torch.full((3,), 4)) == 0)
    assert torch.all(dist_entropy(p) == 0) and torch.all(dist_kl(p, q) == 0)
    assert MASKED_LOGIT > torch.finfo(torch.float32).min, "finite, so that 0 * log 0 is 0, not nan"


@pytest.mark.parametrize("use_state", [False, True], ids=["observations", "global-state"])
def test_networks_respect_masks_and_replay_their_log_probs(use_state):
    """Guider and learner never pick an illegal action over a rollout with random masks and
    episode starts, and the teacher-forced replay (BPTT) gives the guider's rollout log-probs."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    T, B, N, obs_dim, A, S, dim = 12, 6, 4, 9, 7, 5, 16
    guider = Guider(obs_dim, N, A, dim, 2, 1, state_dim=S if use_state else 0)
    learner = Learner(obs_dim, N, A, dim)
    obs, states = torch.randn(T, B, N, obs_dim), torch.randn(T, B, S)
    avail = random_masks(generator, (T, B, N, A))
    starts = torch.rand(T, B, generator=generator) < 0.2
    starts[0] = True
    g_h, l_h = torch.zeros(B, N, dim), torch.zeros(B, N, dim)
    actions, logps, perms = [], [], []
    for t in range(T):
        perm = random_perm(B, N, "cpu")
        action, logp, _, g_h = guider.act(obs[t], g_h, starts[t], perm, avail[t], states[t] if use_state else None)
        learner_action, l_h = learner.act(obs[t], l_h, starts[t], avail[t])
        assert avail[t].gather(-1, action.unsqueeze(-1)).all()
        assert avail[t].gather(-1, learner_action.unsqueeze(-1)).all()
        actions.append(action), logps.append(logp), perms.append(perm)
    actions, logps, perms = torch.stack(actions), torch.stack(logps), torch.stack(perms)
    params, replayed, entropy, _ = guider.evaluate(
        obs, torch.zeros(B, N, dim), starts, actions, perms, avail, states if use_state else None
    )
    torch.testing.assert_close(replayed, logps, rtol=1e-4, atol=1e-5)
    assert torch.all(params.softmax(-1)[~avail] == 0) and torch.isfinite(entropy).all()


# ------------------------------------------------------------------------------ end to end
def run(args, cwd, timeout=300, fast_compile=True):
    """Run magpo_smax.py, by default with the fast-compile XLA flag (tests/helpers.py)."""
    return run_script("magpo_smax.py", args, cwd, timeout=timeout, fast_compile=fast_compile)


EXPECTED_TAGS = MAGPO_TAGS | {
    "charts/win_rate", "eval/win_rate", "eval/guider_win_rate", "eval/random_win_rate", "eval/absolute_win_rate",
}


def test_tiny_run_on_2s3z_writes_tags_and_model(tmp_path):
    result = run([*TINY, "--save-model"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert os.path.basename(run_dir).startswith("2s3z__magpo_smax__1__")
    tags = scalars(run_dir)
    assert EXPECTED_TAGS <= set(tags), EXPECTED_TAGS - set(tags)
    # evaluation before training, at every interval and at the end
    assert [step for step, _ in tags["eval/win_rate"]] == [0, 128, 256]
    assert all(np.isfinite(v) for values in tags.values() for _, v in values)
    assert all(0.0 <= v <= 1.0 for tag in ("eval/win_rate", "eval/guider_win_rate", "eval/absolute_win_rate")
               for _, v in tags[tag])
    saved = torch.load(os.path.join(run_dir, "magpo_smax.cleanrl_model"), weights_only=False)
    assert {"learner", "guider", "best_learner", "args"} <= set(saved)
    assert saved["script"] == "magpo_smax.py" and saved["args"]["map_name"] == "2s3z"
    assert "absolute metric: best learner over 40 episodes" in result.stdout


def test_guider_global_state_runs(tmp_path):
    result = run([*TINY, "--guider-global-state", "--save-model"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(os.path.join(only_run_dir(tmp_path), "magpo_smax.cleanrl_model"), weights_only=False)
    assert saved["guider"]["state_embed.weight"].shape == (16, 120)  # 2s3z: 10 units x 12 features


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--map-name", "2s3zz"], "unknown SMAX map '2s3zz'; registered maps: 10m_vs_11m"),
        (["--capture-video"], "--capture-video is not available for SMAX"),
        (["--delta", "1.0"], "--delta must be > 1"),
        (["--num-envs", "6", "--num-minibatches", "4"], "divisible by --num-minibatches"),
        (["--total-timesteps", "10"], "at least one rollout"),
        (["--num-eval-episodes", "0"], "--num-eval-episodes must be >= 1"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, bad, message):
    result = run([*TINY, *bad], tmp_path, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "runs"), "nothing may be built before the input is checked"


def test_same_seed_same_numbers(tmp_path):
    """JAX on the CPU and torch with one thread are deterministic: two runs, the same numbers."""
    assert_same_numbers(same_seed_run_dirs(run, TINY, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("map_name", PAPER_MAPS)
def test_every_paper_map_builds_and_runs_one_update(tmp_path, map_name):
    result = run(
        ["--map-name", map_name, "--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16",
         "--num-minibatches", "1", "--update-epochs", "1", "--eval-interval", "100000",
         "--num-eval-episodes", "2", "--learner-hidden", "16", "--guider-dim", "16"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tags = scalars(only_run_dir(tmp_path))
    assert [step for step, _ in tags["eval/win_rate"]] == [0, 32]
    assert np.isfinite(tags["losses/guider_loss"][0][1]) and np.isfinite(tags["losses/learner_loss"][0][1])


# Measured (3m, 120k steps, 32 envs, 2 minibatches, 2-core CPU, ~105 s per run; seeds 1, 2, 3):
# random policy: win rate 0, return 0.18-0.20; untrained learner: win rate 0; absolute metric
# (best learner, 320 episodes): win rate 0.447 / 0.478 / 0.428, return 1.335 / 1.371 / 1.316.
# The thresholds keep about half of the smallest margins.
MIN_ABSOLUTE_WIN_RATE = 0.2
MARGIN_OVER_RANDOM_RETURN = 0.55


@pytest.mark.learning
def test_learner_learns_to_win_3m(tmp_path):
    """3m (3 marines against 3 heuristic marines) at a CPU-sized budget (~2 min on 2 cores): the
    decentralised learner, which starts at a 0% win rate like a random policy, must win clearly."""
    budget = os.environ.get("MAGPO_SMAX_LEARNING_STEPS", "120000")
    result = run(
        ["--map-name", "3m", "--total-timesteps", budget, "--num-envs", "32", "--num-minibatches", "2",
         "--eval-interval", "40000", "--seed", "1"],
        tmp_path, timeout=900, fast_compile=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tags = scalars(only_run_dir(tmp_path))
    random_return, random_win_rate = tags["eval/random_return"][0][1], tags["eval/random_win_rate"][0][1]
    untrained_win_rate = tags["eval/win_rate"][0][1]
    win_rate, absolute_return = tags["eval/absolute_win_rate"][0][1], tags["eval/absolute_learner_return"][0][1]
    print(f"random: win rate {random_win_rate:.3f}, return {random_return:.3f}; untrained win rate {untrained_win_rate:.3f}; "
          f"absolute: win rate {win_rate:.3f}, return {absolute_return:.3f}")
    assert win_rate >= MIN_ABSOLUTE_WIN_RATE, (untrained_win_rate, win_rate)
    assert win_rate > random_win_rate and win_rate > untrained_win_rate
    assert absolute_return > random_return + MARGIN_OVER_RANDOM_RETURN, (random_return, absolute_return)
