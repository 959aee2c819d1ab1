"""utils/mpe.py against the real mpe2: SimpleSpreadVec must produce mpe2's observations, rewards,
truncations and physical state, and both backends must behave the same behind one interface."""

import numpy as np
import pytest
from mpe2 import simple_spread_v3
from pettingzoo.utils.env_logger import EnvLogger

from utils.mpe import PettingZooMPE, SimpleSpreadVec, make_env

ATOL = 1e-5
MAX_CYCLES = 25
BACKENDS = ["numpy", "pettingzoo"]
ACTION_KINDS = pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "discrete"])


@pytest.fixture(autouse=True)
def _quiet_mpe2():
    # mpe2 logs a warning for every out-of-range continuous action it clips; these tests send many on purpose
    EnvLogger.suppress_output()
    yield
    EnvLogger.unsuppress_output()


def mpe2_env(N, continuous, max_cycles=MAX_CYCLES):
    return simple_spread_v3.parallel_env(N=N, local_ratio=0.5, max_cycles=max_cycles, continuous_actions=continuous)


def random_actions(rng, B, N, continuous):
    if continuous:  # a third of the components fall outside [0, 1], to exercise the clipping
        return rng.uniform(-0.25, 1.25, (B, N, 5)).astype(np.float32)
    return rng.integers(0, 5, (B, N))


def step_mpe2(envs, actions):
    """Step each mpe2 env with its row of `actions`; returns obs (B, N, obs_dim), rewards (B, N),
    terminated (B,), truncated (B,)."""
    agents = envs[0].possible_agents
    results = [env.step({a: actions[i, j] for j, a in enumerate(agents)}) for i, env in enumerate(envs)]
    obs, rewards, terminations, truncations = (per_agent([r[k] for r in results], agents) for k in range(4))
    return obs, rewards, terminations.all(axis=1), truncations.all(axis=1)


def per_agent(dicts, agents):
    """[{agent: value} for each env] -> array (B, N, ...)."""
    return np.array([[d[a] for a in agents] for d in dicts])


def world_of(envs):
    """mpe2's physical state, stacked like SimpleSpreadVec.get_world()."""
    worlds = [env.unwrapped.world for env in envs]
    return {
        "agent_pos": np.array([[a.state.p_pos for a in w.agents] for w in worlds]),
        "agent_vel": np.array([[a.state.p_vel for a in w.agents] for w in worlds]),
        "landmark_pos": np.array([[lm.state.p_pos for lm in w.landmarks] for w in worlds]),
    }


@ACTION_KINDS
@pytest.mark.parametrize("N", [3, 5, 10])
def test_matches_mpe2(N, continuous):
    B, rounds = 10, 5  # 10 mpe2 envs side by side, 5 episodes each: 50 episodes
    envs = [mpe2_env(N, continuous) for _ in range(B)]
    agents = envs[0].possible_agents
    vec = SimpleSpreadVec(B, N, continuous_actions=continuous, seed=0)
    vec.reset()
    rng = np.random.default_rng(N)
    max_diff = {}

    def check(name, ours, theirs):
        diff = float(np.abs(ours - theirs).max())
        assert diff <= ATOL, f"{name}: max abs difference {diff}"
        max_diff[name] = max(max_diff.get(name, 0.0), diff)

    for episode in range(rounds):
        # start both from mpe2's initial state
        obs = per_agent([env.reset(seed=1000 * episode + i)[0] for i, env in enumerate(envs)], agents)
        vec.set_world(np.arange(B), **world_of(envs))
        check("obs", vec.state().reshape(B, N, -1), obs)
        returns = np.zeros((B, N))
        for t in range(MAX_CYCLES):
            actions = random_actions(rng, B, N, continuous)
            obs, rewards, dones, info = vec.step(actions)
            ref_obs, ref_rewards, ref_terminated, ref_truncated = step_mpe2(envs, actions)
            returns += ref_rewards
            check("obs", info["final_obs"], ref_obs)
            # mpe2's rewards are float64, ours float32: compare in float32 so that rounding the
            # output is not mistaken for a difference (and cannot exceed ATOL for large returns)
            check("reward", rewards, ref_rewards.astype(np.float32))
            last = t == MAX_CYCLES - 1
            assert not ref_terminated.any()
            assert ref_truncated.tolist() == [last] * B
            assert dones.tolist() == [last] * B
            if not last:  # (after the last step our envs have already been reset)
                check("obs", obs, ref_obs)
                ours, theirs = vec.get_world(), world_of(envs)
                for key in ours:
                    check("world (float64)", ours[key], theirs[key])
        # auto-reset: info describes the episode that just ended, obs already starts the next one
        check("episode_return", info["episode_return"], returns.mean(axis=1).astype(np.float32))
        assert (info["episode_length"] == MAX_CYCLES).all()
        np.testing.assert_array_equal(obs.reshape(B, -1), vec.state())
        np.testing.assert_array_equal(obs[..., 0:2], 0.0)  # fresh velocities
        np.testing.assert_array_equal(obs[..., 2:4], vec.get_world()["agent_pos"].astype(np.float32))
        assert not np.allclose(obs, info["final_obs"])
    print(f"\nN={N} {'continuous' if continuous else 'discrete'} max abs diff vs mpe2: {max_diff}")


@ACTION_KINDS
def test_pettingzoo_backend_is_mpe2(continuous):
    B, N, T, seed = 2, 3, 4, 7
    ours = PettingZooMPE(B, N, continuous_actions=continuous, max_cycles=T, seed=seed)
    refs = [mpe2_env(N, continuous, max_cycles=T) for _ in range(B)]
    agents = refs[0].possible_agents
    ref_obs = per_agent([env.reset(seed=seed + i)[0] for i, env in enumerate(refs)], agents)
    np.testing.assert_array_equal(ours.reset(), ref_obs)
    rng = np.random.default_rng(0)
    returns = np.zeros((B, N))
    for t in range(T + 2):  # crosses one auto-reset
        actions = random_actions(rng, B, N, continuous)
        obs, rewards, dones, info = ours.step(actions)
        ref_obs, ref_rewards, _, ref_truncated = step_mpe2(refs, actions)
        returns += ref_rewards
        np.testing.assert_array_equal(info["final_obs"], ref_obs)
        np.testing.assert_array_equal(rewards, ref_rewards.astype(np.float32))
        np.testing.assert_array_equal(dones, ref_truncated)
        if dones.any():
            np.testing.assert_allclose(info["episode_return"], returns.mean(axis=1), rtol=0, atol=ATOL)
            ref_obs = per_agent([env.reset()[0] for env in refs], agents)
            returns[:] = 0.0
        np.testing.assert_array_equal(obs, ref_obs)
        np.testing.assert_array_equal(ours.state(), np.stack([env.state() for env in refs]))


@ACTION_KINDS
def test_backends_agree_with_one_env(continuous):
    # with one env, a seed gives both backends the same random draws, auto-resets included
    envs = [
        make_env(1, backend=backend, num_agents=4, continuous_actions=continuous, max_cycles=5, seed=3)
        for backend in BACKENDS
    ]
    np.testing.assert_array_equal(*(env.reset() for env in envs))
    rng = np.random.default_rng(0)
    for _ in range(12):
        actions = random_actions(rng, 1, 4, continuous)
        (obs_a, rew_a, done_a, info_a), (obs_b, rew_b, done_b, info_b) = (env.step(actions) for env in envs)
        np.testing.assert_allclose(obs_a, obs_b, rtol=0, atol=ATOL)
        np.testing.assert_allclose(rew_a, rew_b, rtol=0, atol=ATOL)
        np.testing.assert_array_equal(done_a, done_b)
        assert info_a.keys() == info_b.keys()
        for key in info_a:
            np.testing.assert_allclose(info_a[key], info_b[key], rtol=0, atol=ATOL)
        np.testing.assert_allclose(*(env.state() for env in envs), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(*(env.reset(seed=11) for env in envs))


@ACTION_KINDS
@pytest.mark.parametrize("backend", BACKENDS)
def test_interface(backend, continuous):
    B, N, T = 3, 4, 5
    env = make_env(B, backend=backend, num_agents=N, continuous_actions=continuous, max_cycles=T, seed=0)
    assert (env.num_envs, env.num_agents, env.obs_dim, env.state_dim, env.action_dim) == (B, N, 6 * N, 6 * N * N, 5)
    assert (env.continuous_actions, env.max_cycles, env.local_ratio) == (continuous, T, 0.5)
    obs = env.reset()
    assert obs.shape == (B, N, 6 * N) and obs.dtype == np.float32
    np.testing.assert_array_equal(env.state(), obs.reshape(B, -1))
    rng = np.random.default_rng(0)
    for t in range(T):
        obs, rewards, dones, info = env.step(random_actions(rng, B, N, continuous))
        assert obs.shape == (B, N, 6 * N) and obs.dtype == np.float32
        assert rewards.shape == (B, N) and rewards.dtype == np.float32
        assert dones.shape == (B,) and dones.dtype == bool
        assert info["final_obs"].shape == (B, N, 6 * N) and info["final_obs"].dtype == np.float32
        assert info["episode_return"].shape == (B,) and info["episode_return"].dtype == np.float32
        assert info["episode_length"].shape == (B,) and np.issubdtype(info["episode_length"].dtype, np.integer)
        state = env.state()
        assert state.shape == (B, env.state_dim) and state.dtype == np.float32
        np.testing.assert_array_equal(state, obs.reshape(B, -1))
        assert dones.tolist() == [t == T - 1] * B
        if t < T - 1:
            np.testing.assert_array_equal(info["episode_return"], 0.0)
            np.testing.assert_array_equal(info["final_obs"], obs)
    assert (info["episode_length"] == T).all()
    first = env.reset(seed=5)
    np.testing.assert_array_equal(first, env.reset(seed=5))
    assert not np.array_equal(first, env.reset(seed=6))
    env.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_actions_raise(backend):
    discrete = make_env(2, backend=backend, continuous_actions=False, seed=0)
    discrete.reset()
    # out of range (above, below), wrong shape, not integers
    for actions in [np.full((2, 3), 5), np.full((2, 3), -1), np.zeros((2, 4), dtype=int), np.zeros((2, 3))]:
        with pytest.raises(ValueError):
            discrete.step(actions)
    continuous = make_env(2, backend=backend, continuous_actions=True, seed=0)
    continuous.reset()
    with pytest.raises(ValueError):
        continuous.step(np.zeros((2, 3, 4), dtype=np.float32))


@pytest.mark.parametrize("env_class", [SimpleSpreadVec, PettingZooMPE])
@pytest.mark.parametrize(
    "bad",
    [dict(num_envs=0), dict(num_agents=1), dict(local_ratio=1.5), dict(local_ratio=-0.1), dict(max_cycles=0)],
    ids=str,
)
def test_bad_arguments_raise(env_class, bad):
    with pytest.raises(ValueError):
        env_class(**{"num_envs": 2, **bad})


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend"):
        make_env(2, backend="bogus")


def test_make_env_defaults_and_positional_seed():
    # make_env(num_envs, seed=None, backend="numpy", ...): the common signature of every utils module
    env = make_env(2)
    assert type(env) is SimpleSpreadVec
    assert (env.num_envs, env.num_agents, env.continuous_actions, env.local_ratio, env.max_cycles) == (
        2,
        3,
        True,
        0.5,
        25,
    )
    for backend in BACKENDS:
        np.testing.assert_array_equal(
            make_env(2, 4, backend=backend).reset(), make_env(2, seed=4, backend=backend).reset()
        )
    assert type(make_env(2, backend="pettingzoo")) is PettingZooMPE
