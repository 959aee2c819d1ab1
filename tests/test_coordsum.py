"""utils/coordsum.py: CoordSum's reward and history rules on hand-built episodes, the reference returns of
scripted policies (quoted in docs/algorithm.md §1), and the batched-env interface (shapes, dtypes,
auto-reset, seeding, input checks)."""

import numpy as np
import pytest

from utils.coordsum import SCENARIOS, CoordSumVec, make_env

T = 100


def fixed_env(scenario="3x10", history="official", targets=(5,), B=1, max_steps=T):
    """A reset env whose every env gets the target sequence `targets` (the last value repeated to max_steps)."""
    env = CoordSumVec(B, scenario, history=history, max_steps=max_steps, seed=0)
    env.reset()
    seq = np.full(max_steps + 1, targets[-1])
    seq[: len(targets)] = targets
    env.set_targets(np.tile(seq, (B, 1)))
    return env


def play(env, joint_actions):
    """Step a 1-env env through a list of joint actions; returns the list of shared rewards."""
    out = []
    for a in joint_actions:
        _, r, _, _ = env.step(np.array([a]))
        assert np.all(r[0] == r[0, 0])  # shared reward, repeated per agent
        out.append(float(r[0, 0]))
    return out


# ---------------------------------------------------------------- hand-built episodes


def test_rewards_history_ties_and_empty_history():
    env = fixed_env(targets=(5,))
    rewards = play(
        env,
        [
            (3, 2, 0),  # hit; empty history -> guess 0; a0=3 != 0                     -> 2   counts {3:1}
            (3, 1, 1),  # hit; guess 3 == a0                                            -> 1   {3:2}
            (1, 4, 0),  # hit; guess 3                                                  -> 2   {3:2, 1:1}
            (1, 0, 4),  # hit; guess 3                                                  -> 2   {3:2, 1:2}
            (1, 2, 2),  # hit; tie 1 vs 3 -> lowest index 1 == a0                       -> 1   {3:2, 1:3}
            (3, 2, 0),  # hit; guess 1                                                  -> 2   {3:3, 1:3}
            (3, 2, 0),  # hit; tie -> guess 1                                           -> 2   {3:4, 1:3}
            (3, 2, 0),  # hit; guess 3                                                  -> 1   {3:5, 1:3}
            (0, 0, 0),  # miss (sum 0 != 5)                                             -> 0   {3:5, 1:3, 0:1}
            (9, 9, 9),  # miss (sum 27)                                                 -> 0   {3:5, 1:3, 0:1, 9:1}
        ],
    )
    assert rewards == [2, 1, 2, 2, 1, 2, 2, 1, 0, 0]
    np.testing.assert_array_equal(env.history_counts[0, 5], [1, 3, 0, 5, 0, 0, 0, 0, 0, 1])
    assert env.history_counts.sum() == 10  # only row 5 was touched


def test_empty_history_guesses_zero():
    env = fixed_env(targets=(5,))
    assert play(env, [(0, 5, 0)]) == [1]  # a0 = 0 = the empty history's guess
    env = fixed_env(targets=(0,))
    assert play(env, [(0, 0, 0)] * 3) == [1, 1, 1]  # target 0 forces a0 = 0 = guess: never 2


def test_history_counts_missed_steps_too():
    # the official env records agent 0's action on every step, hit or miss
    env = fixed_env(targets=(2,))
    assert play(env, [(2, 9, 9)] * 3 + [(2, 0, 0), (1, 1, 0)]) == [0, 0, 0, 1, 2]


def test_mismatch_gives_zero():
    env = fixed_env(targets=(7, 7, 0, 29))
    assert play(env, [(1, 1, 1), (7, 0, 1), (0, 0, 1), (9, 9, 9)]) == [0, 0, 0, 0]


def test_official_rows_clamp_targets_above_k_minus_1_into_one_row():
    # 3x10: K = 10, so in "official" mode targets 9..29 all use history row 9; targets 0..8 own rows
    joint = [(9, 0, 0), (9, 9, 2), (9, 9, 9), (8, 0, 0), (8, 1, 0)]
    targets = (9, 20, 27, 8, 9)
    env = fixed_env(history="official", targets=targets)
    assert env.history_counts.shape == (1, 10, 10)
    # t=9: empty -> 2; t=20 shares row 9 (guess 9) -> 1; t=27 same row -> 1;
    # t=8 own row (empty) -> 2; t=9 row 9 guess 9, a0=8 -> 2
    assert play(env, joint) == [2, 1, 1, 2, 2]
    np.testing.assert_array_equal(env.history_counts[0, 9], [0, 0, 0, 0, 0, 0, 0, 0, 1, 3])
    np.testing.assert_array_equal(env.history_counts[0, 8], [0, 0, 0, 0, 0, 0, 0, 0, 1, 0])

    env = fixed_env(history="full", targets=targets)
    assert env.history_counts.shape == (1, 30, 10)
    # every target value has its own row: 9, 20, 27, 8 are all first visits -> 2; the second t=9 has
    # guess 9 != a0=8 -> 2
    assert play(env, joint) == [2, 2, 2, 2, 2]
    assert env.history_counts[0, 20, 9] == 1 and env.history_counts[0, 27, 9] == 1


def test_guess_helper_and_row_mapping():
    env = fixed_env(targets=(12, 25))
    assert env.history_row(12) == 9 and env.history_row(3) == 3
    assert env.guess()[0] == 0
    env.step(np.array([[4, 4, 4]]))
    assert env.current_target()[0] == 25 and env.guess()[0] == 4  # shared row 9 remembers the 4
    full = fixed_env(history="full", targets=(12, 25))
    assert full.history_row(25) == 25
    full.step(np.array([[4, 4, 4]]))
    assert full.guess()[0] == 0


def test_batched_equals_single_envs():
    # B envs stepped together give the same rewards as each stepped alone (no leakage between envs)
    rng = np.random.default_rng(3)
    B, steps = 5, 40
    targets = rng.integers(0, 30, (B, T + 1))
    actions = rng.integers(0, 10, (steps, B, 3))
    actions[:, :, 2] = np.clip(targets[:, :steps].T - actions[:, :, 0] - actions[:, :, 1], 0, 9)  # many hits
    env = CoordSumVec(B, "3x10", seed=0)
    env.reset()
    env.set_targets(targets)
    batched = np.stack([env.step(actions[s])[1][:, 0] for s in range(steps)])  # (steps, B)
    assert (batched == 2).any() and (batched == 1).any() and (batched == 0).any()
    for b in range(B):
        single = CoordSumVec(1, "3x10", seed=0)
        single.reset()
        single.set_targets(targets[b : b + 1])
        alone = [single.step(actions[s, b : b + 1])[1][0, 0] for s in range(steps)]
        np.testing.assert_array_equal(batched[:, b], alone)


# ---------------------------------------------------------------- scripted policies, reference returns


def complete_sum(env, target, a0):
    """Agent 0 plays a0; agents 1..N-1 fill the remainder target - a0 greedily (each takes as much as it
    can, up to K-1). They hit the target whenever a0 is feasible for it."""
    N, K = env.num_agents, env.action_dim
    actions = np.zeros((env.num_envs, N), dtype=np.int64)
    actions[:, 0] = a0
    rest = np.clip(target - a0, 0, None)
    for i in range(1, N):
        actions[:, i] = np.minimum(K - 1, rest)
        rest = rest - actions[:, i]
    return actions


def uniform_random(env, rng):
    """Every agent plays a uniformly random action."""
    return rng.integers(0, env.action_dim, (env.num_envs, env.num_agents))


def memoryless(env, rng):
    """Agent 0 plays the largest feasible value min(K-1, target) (K-1 when the target is unreachable), the
    others complete the sum. A function of the current target only: the first visit to a history row
    scores 2, later visits 1 (agent 0 repeats itself)."""
    t = env.current_target()
    return complete_sum(env, t, np.minimum(env.action_dim - 1, t))


def history_aware(env, rng):
    """The decentralised convention: agent 0 plays the smallest feasible value that differs from its most
    frequent past action for the target's history row (if the feasible range is that single value, it
    plays it and scores 1), the others complete the sum. Feasible a0: max(0, t-(N-1)(K-1)) .. min(K-1, t).
    On an unreachable target (t > N(K-1), reward 0 anyway) agent 0 plays the smallest action != guess,
    which keeps K-1 rare in the shared row. Every agent can compute the guess itself, because agent 0's
    past actions are a deterministic function of the targets all agents have seen; the test reads it
    from the env for brevity. Scoring 2 on every reachable target except t = 0 (forced a0 = 0 = guess)
    gives 200 * 28/30 - 100/30 = 183.3 on 3x10."""
    N, K = env.num_agents, env.action_dim
    t, guess = env.current_target(), env.guess()
    lo, hi = np.maximum(0, t - (N - 1) * (K - 1)), np.minimum(K - 1, t)
    unreachable = lo > hi
    lo, hi = np.where(unreachable, 0, lo), np.where(unreachable, K - 1, hi)
    a0 = np.where((lo == guess) & (lo + 1 <= hi), lo + 1, lo)
    return complete_sum(env, t, a0)


def mean_return(policy, scenario, history="official", episodes=200, seed=0):
    env = CoordSumVec(episodes, scenario, history=history, seed=seed)
    env.reset()
    rng = np.random.default_rng(seed + 1)
    for _ in range(T):
        _, _, dones, info = env.step(policy(env, rng))
    assert dones.all()
    return float(info["episode_return"].mean())


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_uniform_random_return(scenario):
    # notes: "uniform random ≈ 2–6". Measured: 3x10 5.8, 3x30 2.5, 5x20 2.5, 8x15 1.8 (analytically
    # ~100 * P(sum = target) * ~1.9; on 8x15 P ~ 1/100, so just under 2)
    ret = mean_return(uniform_random, scenario)
    lo, hi = (2.0, 6.0) if scenario != "8x15" else (1.5, 6.0)
    assert lo <= ret <= hi


@pytest.mark.parametrize(
    "policy, scenario, expected",
    [
        (memoryless, "3x10", 102.0),  # notes: ≈ 102 (3x10)
        (memoryless, "3x30", 125.0),  # notes: "to 125"
        (history_aware, "3x10", 183.0),  # notes: ≈ 183 (3x10)
        (history_aware, "8x15", 199.0),  # notes: "to 199"
    ],
)
def test_reference_returns(policy, scenario, expected):
    ret = mean_return(policy, scenario)
    assert abs(ret - expected) <= 0.05 * expected, ret


def test_full_history_rewards_memoryless_more():
    # with one row per target value the memoryless policy collects a first-visit bonus per target value
    assert mean_return(memoryless, "3x10", "full") > mean_return(memoryless, "3x10", "official") + 10


# ---------------------------------------------------------------- interface


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_shapes_dtypes_attributes(scenario):
    N, K, maxval = SCENARIOS[scenario]
    B = 4
    env = CoordSumVec(B, scenario, seed=1)
    assert (env.num_envs, env.num_agents, env.action_dim) == (B, N, K)
    assert env.obs_dim == 1 and env.state_dim == N and env.max_steps == 100 and env.continuous_actions is False
    obs = env.reset()
    assert obs.shape == (B, N, 1) and obs.dtype == np.float32
    assert np.all(obs == obs[:, :1])  # every agent sees the same target
    assert np.all((obs >= 0) & (obs < maxval)) and np.all(obs == np.round(obs))
    np.testing.assert_array_equal(obs[:, 0, 0], env.current_target())
    s = env.state()
    assert s.shape == (B, N) and s.dtype == np.float32
    obs, r, d, info = env.step(np.zeros((B, N), dtype=np.int64))
    assert obs.shape == (B, N, 1) and obs.dtype == np.float32
    assert r.shape == (B, N) and r.dtype == np.float32
    assert d.shape == (B,) and d.dtype == bool and not d.any()
    assert info["final_obs"].shape == (B, N, 1) and info["final_obs"].dtype == np.float32
    assert info["episode_return"].shape == (B,) and info["episode_return"].dtype == np.float32
    assert info["episode_length"].shape == (B,)
    assert env.history_counts.shape == (B, K, K)
    assert CoordSumVec(B, scenario, history="full").history_counts.shape == (B, maxval, K)
    env.close()


def test_auto_reset_episode_return_and_final_obs():
    B, steps = 3, 7
    env = CoordSumVec(B, "3x10", max_steps=steps, seed=5)
    env.reset()
    targets = np.random.default_rng(0).integers(0, 30, (B, steps + 1))
    env.set_targets(targets)
    total = np.zeros(B)
    for s in range(steps):
        a = complete_sum(env, env.current_target(), np.minimum(9, env.current_target()))
        obs, r, d, info = env.step(a)
        total += r[:, 0]
        np.testing.assert_array_equal(info["episode_length"], s + 1)
        if s < steps - 1:
            assert not d.any() and np.all(info["episode_return"] == 0)
            np.testing.assert_array_equal(obs[:, 0, 0], targets[:, s + 1])
    assert d.all()
    np.testing.assert_allclose(info["episode_return"], total)
    np.testing.assert_array_equal(info["final_obs"][:, :, 0], np.repeat(targets[:, steps : steps + 1], 3, axis=1))
    # the new episode: fresh targets, empty history, counters at 0
    assert env.history_counts.sum() == 0
    np.testing.assert_array_equal(obs[:, 0, 0], env.current_target())
    _, _, d, info = env.step(np.zeros((B, 3), dtype=np.int64))
    np.testing.assert_array_equal(info["episode_length"], 1)
    assert not d.any()


def test_auto_reset_only_finished_envs():
    env = CoordSumVec(2, "3x10", max_steps=3, seed=0)
    env.reset()
    env.step(np.zeros((2, 3), dtype=np.int64))
    env._steps[1] = 0  # desynchronise env 1 (as after a partial reset)
    hist1 = env.history_counts[1].copy()
    env.step(np.zeros((2, 3), dtype=np.int64))
    _, _, d, info = env.step(np.zeros((2, 3), dtype=np.int64))
    np.testing.assert_array_equal(d, [True, False])
    np.testing.assert_array_equal(info["episode_length"], [3, 2])
    assert env.history_counts[0].sum() == 0 and env.history_counts[1].sum() == hist1.sum() + 2


def test_determinism_with_seed():
    def rollout(seed, reset_seed=None):
        env = CoordSumVec(4, "5x20", seed=seed)
        out = [env.reset(seed=reset_seed)]
        rng = np.random.default_rng(0)
        for _ in range(250):  # crosses two auto-resets
            obs, r, d, _ = env.step(uniform_random(env, rng))
            out += [obs, r, d]
        return out

    a, b = rollout(7), rollout(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = rollout(8)
    assert not np.array_equal(a[0], c[0])
    d = rollout(None, reset_seed=7)  # reset(seed) reseeds like the constructor
    assert all(np.array_equal(x, y) for x, y in zip(a, d))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_envs=0),
        dict(num_envs=-1),
        dict(num_envs=2.5),
        dict(scenario="4x4"),
        dict(scenario="3x10-30"),
        dict(history="none"),
        dict(max_steps=0),
        dict(max_steps=1.5),
    ],
)
def test_bad_constructor_args_raise(kwargs):
    args = dict(num_envs=2, scenario="3x10", history="official", max_steps=100) | kwargs
    with pytest.raises(ValueError):
        CoordSumVec(**args)


def test_bad_actions_and_call_order_raise():
    env = CoordSumVec(2, "3x10")
    with pytest.raises(RuntimeError):
        env.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(RuntimeError):
        env.state()
    env.reset()
    for bad in (
        np.zeros((2, 2), dtype=np.int64),
        np.zeros((3, 3), dtype=np.int64),
        np.zeros((2, 3)),
        np.full((2, 3), 10),
        np.full((2, 3), -1),
    ):
        with pytest.raises(ValueError):
            env.step(bad)
    with pytest.raises(ValueError):
        env.set_targets(np.full((2, 101), 30))
    with pytest.raises(ValueError):
        env.set_targets(np.zeros((2, 50), dtype=np.int64))


def test_onehot_encoding_matches_raw_targets_and_rewards():
    """The one-hot observation shows the same target as the raw one; dynamics are untouched."""
    raw = CoordSumVec(8, "3x10", seed=3)
    onehot = CoordSumVec(8, "3x10", seed=3, obs_encoding="onehot")
    assert onehot.obs_dim == 30 and onehot.state_dim == 90
    o_raw, o_hot = raw.reset(), onehot.reset()
    rng = np.random.default_rng(0)
    for _ in range(150):  # crosses an episode boundary (auto-reset)
        assert o_hot.shape == (8, 3, 30) and o_hot.dtype == np.float32
        np.testing.assert_array_equal(o_hot.sum(-1), 1.0)
        np.testing.assert_array_equal(o_hot.argmax(-1), o_raw[..., 0].astype(np.int64))
        actions = rng.integers(0, 10, (8, 3))
        o_raw, r_raw, d_raw, _ = raw.step(actions)
        o_hot, r_hot, d_hot, _ = onehot.step(actions)
        np.testing.assert_array_equal(r_raw, r_hot)
        np.testing.assert_array_equal(d_raw, d_hot)
    with pytest.raises(ValueError, match="obs_encoding"):
        CoordSumVec(2, obs_encoding="binary")


def test_make_env_passes_every_argument_on():
    # make_env(num_envs, seed=None, **task): the common signature of every utils module
    env = make_env(3, 4, scenario="5x20", history="full", max_steps=7, obs_encoding="onehot")
    assert type(env) is CoordSumVec
    assert (env.num_envs, env.scenario, env.history, env.max_steps, env.obs_encoding) == (
        3,
        "5x20",
        "full",
        7,
        "onehot",
    )
    ref = CoordSumVec(3, "5x20", history="full", max_steps=7, seed=4, obs_encoding="onehot")
    np.testing.assert_array_equal(env.reset(), ref.reset())
    rng = np.random.default_rng(0)
    for _ in range(10):  # crosses an auto-reset
        actions = uniform_random(env, rng)
        (*ours, info), (*theirs, ref_info) = env.step(actions), ref.step(actions)
        assert info.keys() == ref_info.keys()
        for a, b in zip([*ours, *info.values()], [*theirs, *ref_info.values()]):
            np.testing.assert_array_equal(a, b)
    default = make_env(2)
    assert (default.scenario, default.history, default.max_steps, default.obs_encoding) == (
        "3x10",
        "official",
        100,
        "raw",
    )
