"""Every environment wrapper through the one interface of utils/__init__.py: MPE (numpy backend,
continuous and discrete actions; pettingzoo backend), CoordSum (raw and one-hot observations), SMAX
and the jumanji bridge (LBF and Connector), with the shared helpers random_actions,
random_policy_score and EpisodeRecorder.

SMAX compiles with JAX: it runs on '3m' with B = 4 envs and default options only, the one
(map, size, options) that tests/test_smax_env.py builds too, so the whole module adds no compile to
that file's and at most one (~5-10 s) when it runs alone (less with JAX's persistent cache). The
jumanji tasks are the ones tests/test_jumanji_env.py steps, with the same B, for the same reason.
RWARE is not among them: its episodes last up to 500 steps, and two per env would take over a
thousand; tests/test_jumanji_env.py checks it against jumanji itself, get_state/set_state included."""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch

from utils import EpisodeRecorder, VecEnv, coordsum, jumanji, mpe, random_actions, random_policy_score, smax

B = 4
INT_ATTRS = ("num_envs", "num_agents", "obs_dim", "state_dim", "action_dim")
ATTRS = (*INT_ATTRS, "continuous_actions", "has_wins")
MAX_STEPS = 1000  # every rollout here ends well within this (episodes: MPE 25, CoordSum 100, SMAX <= 101, LBF <= 100,
# Connector con-5x5x3a <= 25 steps)
SMAX_OWN_HEALTH = -10  # the own-features block (health, x, y, cooldown, 6 unit-type bits) ends a SMAX observation


def mpe_first_obs(envs, obs, i):
    return np.all(obs[i, :, 0:2] == 0.0)  # every agent starts at rest (obs starts with the own velocity)


def coordsum_first_obs(envs, obs, i):
    return envs.history_counts[i].sum() == 0  # the history is cleared at reset, and grows by one every step


def smax_first_obs(envs, obs, i):
    # every ally alive at full health and free to move
    return np.all(obs[i, :, SMAX_OWN_HEALTH] == 1.0) and envs.avail_actions()[i, :, :5].all()


def jumanji_first_obs(envs, obs, i):
    return envs.step_count[i] == 0  # jumanji's step counter of the current observation


@dataclass(frozen=True)
class Case:
    make: Callable  # seed -> B environments
    continuous: bool
    has_wins: bool
    masked: bool  # has real action masks (else avail_actions() is all True)
    score_range: tuple  # where the random policy's mean return must land
    is_first_obs: Callable  # (envs, obs, i) -> whether obs[i] is the first observation of an episode


MPE_SCORE = (-80.0, -5.0)  # negative distances and collision penalties: -20 to -30 over 25 steps with N = 3
COORDSUM_SCORE = (1.0, 15.0)  # uniform random scores ~5.8 over 100 steps on 3x10 (tests/test_coordsum.py)
SMAX_SCORE = (0.0, 2.0)  # all enemy health (1) + the won-battle bonus (1) is the most there is
LBF_SCORE = (0.0, 1.0)  # the normalised per-agent rewards of one episode sum to at most 1
CONNECTOR_SCORE = (-2.25, 3.0)  # con-5x5x3a: -0.03 per unconnected agent and step (3 x 25 steps), +1 per connection
CASES = {
    "mpe-numpy-continuous": Case(
        lambda seed: mpe.make_env(B, seed, continuous_actions=True), True, False, False, MPE_SCORE, mpe_first_obs
    ),
    "mpe-numpy-discrete": Case(
        lambda seed: mpe.make_env(B, seed, continuous_actions=False), False, False, False, MPE_SCORE, mpe_first_obs
    ),
    "mpe-pettingzoo-continuous": Case(
        lambda seed: mpe.make_env(B, seed, backend="pettingzoo", continuous_actions=True),
        True,
        False,
        False,
        MPE_SCORE,
        mpe_first_obs,
    ),
    "mpe-pettingzoo-discrete": Case(
        lambda seed: mpe.make_env(B, seed, backend="pettingzoo", continuous_actions=False),
        False,
        False,
        False,
        MPE_SCORE,
        mpe_first_obs,
    ),
    "coordsum-raw": Case(
        lambda seed: coordsum.make_env(B, seed, scenario="3x10", obs_encoding="raw"),
        False,
        False,
        False,
        COORDSUM_SCORE,
        coordsum_first_obs,
    ),
    "coordsum-onehot": Case(
        lambda seed: coordsum.make_env(B, seed, scenario="3x10", obs_encoding="onehot"),
        False,
        False,
        False,
        COORDSUM_SCORE,
        coordsum_first_obs,
    ),
    "smax-3m": Case(lambda seed: smax.make_env(B, seed, map_name="3m"), False, True, True, SMAX_SCORE, smax_first_obs),
    "jumanji-lbf": Case(
        lambda seed: jumanji.make_env(B, seed, env="lbf", scenario="2s-10x10-3p-3f"),
        False,
        False,
        True,
        LBF_SCORE,
        jumanji_first_obs,
    ),
    "jumanji-connector": Case(
        lambda seed: jumanji.make_env(B, seed, env="connector", scenario="con-5x5x3a"),
        False,
        False,
        True,
        CONNECTOR_SCORE,
        jumanji_first_obs,
    ),
}


@pytest.fixture(params=list(CASES), scope="module")
def case(request):
    return CASES[request.param]


# ---------------------------------------------------------------- checks (also run on broken wrappers below)


def assert_array(x, dtype, shape):
    """`x` is a numpy array (not a torch tensor, a JAX array or a list) of this dtype and shape."""
    assert type(x) is np.ndarray, type(x)
    assert x.dtype == dtype, x.dtype
    assert x.shape == shape, x.shape


def check_attributes(envs):
    assert isinstance(envs, VecEnv), type(envs)
    for name in INT_ATTRS:
        value = getattr(envs, name)
        assert isinstance(value, (int, np.integer)) and not isinstance(value, bool), (name, type(value))
        assert value >= 1, (name, value)
    for name in ("continuous_actions", "has_wins"):
        assert type(getattr(envs, name)) is bool, (name, type(getattr(envs, name)))


def check_avail_and_state(envs, masked):
    avail = envs.avail_actions()
    assert_array(avail, np.bool_, (envs.num_envs, envs.num_agents, envs.action_dim))
    if masked:
        assert avail.any(axis=-1).all(), "every agent must have a legal action"
    else:
        assert avail.all()
    assert_array(envs.state(), np.float32, (envs.num_envs, envs.state_dim))


def check_step(envs, out, masked):
    obs, rewards, dones, info = out
    Bn, N = envs.num_envs, envs.num_agents
    assert_array(obs, np.float32, (Bn, N, envs.obs_dim))
    assert_array(rewards, np.float32, (Bn, N))
    assert_array(dones, np.bool_, (Bn,))
    assert type(info) is dict
    assert_array(info["episode_return"], np.float32, (Bn,))
    assert_array(info["episode_length"], np.int64, (Bn,))
    assert_array(info["final_obs"], np.float32, (Bn, N, envs.obs_dim))
    assert ("won" in info) == envs.has_wins, sorted(info)
    if envs.has_wins:
        assert_array(info["won"], np.bool_, (Bn,))
    check_avail_and_state(envs, masked)


def check_reset_and_one_step(envs, num_envs, masked):
    check_attributes(envs)
    assert envs.num_envs == num_envs
    assert_array(envs.reset(), np.float32, (num_envs, envs.num_agents, envs.obs_dim))
    check_avail_and_state(envs, masked)
    check_step(envs, envs.step(random_actions(envs, np.random.default_rng(0))), masked)


# ---------------------------------------------------------------- the interface, wrapper by wrapper


def test_attributes_reset_and_step(case):
    envs = case.make(0)
    check_reset_and_one_step(envs, B, case.masked)
    assert (envs.continuous_actions, envs.has_wins) == (case.continuous, case.has_wins)
    envs.close()


def test_full_episodes_and_auto_reset(case):
    """Random play until every env has finished two episodes: at each end the wrapper's length and
    return must equal the ones counted here, `obs` must start the next episode and `final_obs` hold
    the old one's last observation; elsewhere `final_obs` is the current observation."""
    envs = case.make(1)
    obs = envs.reset()
    assert all(case.is_first_obs(envs, obs, i) for i in range(B))
    rng = np.random.default_rng(0)
    returns, lengths, finished = np.zeros(B), np.zeros(B, dtype=np.int64), np.zeros(B, dtype=np.int64)
    for _ in range(MAX_STEPS):
        out = envs.step(random_actions(envs, rng))
        check_step(envs, out, case.masked)
        obs, rewards, dones, info = out
        returns += rewards.astype(np.float64).mean(axis=1)  # the mean over agents of their summed rewards
        lengths += 1
        np.testing.assert_array_equal(info["final_obs"][~dones], obs[~dones])
        for i in np.flatnonzero(dones):
            assert info["episode_length"][i] == lengths[i]
            assert float(info["episode_return"][i]) == pytest.approx(returns[i], rel=1e-5, abs=1e-5)
            assert case.is_first_obs(envs, obs, i), "after done, obs is the next episode's first observation"
            assert not np.array_equal(info["final_obs"][i], obs[i])
        returns[dones], lengths[dones] = 0.0, 0
        finished += dones
        if (finished >= 2).all():
            break
    assert (finished >= 2).all(), finished
    envs.close()


def test_reset_seed_restarts_the_stream(case):
    envs = case.make(0)

    def rollout(seed, steps=30):  # 30 steps: crosses MPE's episode end
        out = [envs.reset(seed=seed), envs.state(), envs.avail_actions()]
        rng = np.random.default_rng(1)
        for _ in range(steps):
            obs, rewards, dones, info = envs.step(random_actions(envs, rng))
            out += [obs, rewards, dones, *info.values(), envs.state(), envs.avail_actions()]
        return out

    first = rollout(11)
    second = rollout(11)  # the stream has moved on since the first reset: seeding restarts it
    assert len(first) == len(second)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(first, second))
    np.testing.assert_array_equal(case.make(5).reset(seed=11), first[0])  # whatever the construction seed
    assert not np.array_equal(envs.reset(seed=12), first[0])


def test_random_actions_respect_masks_and_are_uniform(case):
    envs = case.make(2)
    envs.reset()
    rng = np.random.default_rng(0)
    Bn, N, A = envs.num_envs, envs.num_agents, envs.action_dim
    for _ in range(60):  # crosses MPE's episode end; SMAX's masks change as units come in range and die
        avail = envs.avail_actions()
        for _ in range(50):
            actions = random_actions(envs, rng)
            if case.continuous:
                assert type(actions) is np.ndarray and np.issubdtype(actions.dtype, np.floating)
                assert actions.shape == (Bn, N, A) and actions.min() >= 0.0 and actions.max() <= 1.0
            else:
                assert type(actions) is np.ndarray and np.issubdtype(actions.dtype, np.integer)
                assert actions.shape == (Bn, N)
                assert np.take_along_axis(avail, actions[..., None], axis=-1).all(), "an unavailable action"
        envs.step(actions)

    draws = 4000
    if case.continuous:
        samples = np.stack([random_actions(envs, rng) for _ in range(draws // 4)])  # 1000 x B x N x A values
        assert samples.min() >= 0.0 and samples.max() <= 1.0
        counts, _ = np.histogram(samples, bins=10, range=(0.0, 1.0))
        np.testing.assert_allclose(counts / samples.size, 0.1, atol=0.005)
        return
    avail = envs.avail_actions()
    samples = np.stack([random_actions(envs, rng) for _ in range(draws)])  # (draws, B, N)
    counts = (samples[..., None] == np.arange(A)).sum(axis=0)  # (B, N, A)
    assert not counts[~avail].any(), "an unavailable action"
    expected = np.broadcast_to(draws / avail.sum(axis=-1, keepdims=True), counts.shape)
    # uniform over the available actions: each count within 25% (> 5 standard deviations) of its share
    np.testing.assert_array_less(np.abs(counts - expected)[avail], 0.25 * expected[avail])
    if case.masked:
        assert not avail.all(), "the masks tested should exclude some actions"


def test_random_policy_score(case):
    """The same seed on fresh envs built alike gives the same score; a float in the env's range,
    and a win rate (a float in [0, 1]) exactly where the env reports wins."""
    first, second = (random_policy_score(case.make(3), seed=5) for _ in range(2))
    assert first == second
    mean_return, win_rate = first
    assert type(mean_return) is float
    lo, hi = case.score_range
    assert lo <= mean_return <= hi, mean_return
    if case.has_wins:
        assert type(win_rate) is float and 0.0 <= win_rate <= 1.0
    else:
        assert win_rate is None


def test_episode_recorder(case):
    """EpisodeRecorder keeps env 0's reset observation and one observation per step up to and
    including its final one, then stops until the next reset; all else passes through unchanged
    (checked against a twin built with the same seed and given the same actions)."""
    recorder, twin = EpisodeRecorder(case.make(4)), case.make(4)
    for name in ATTRS:
        assert getattr(recorder, name) == getattr(twin, name), name
    obs = recorder.reset(seed=2)
    np.testing.assert_array_equal(obs, twin.reset(seed=2))
    expected = [obs[0].copy()]
    rng = np.random.default_rng(0)
    episode_length, steps_after = None, 0
    for _ in range(MAX_STEPS):
        np.testing.assert_array_equal(recorder.avail_actions(), twin.avail_actions())
        np.testing.assert_array_equal(recorder.state(), twin.state())
        actions = random_actions(twin, rng)
        out, twin_out = recorder.step(actions), twin.step(actions)
        for ours, theirs in zip(out[:3], twin_out[:3]):
            assert type(ours) is type(theirs) and ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)
        assert out[3].keys() == twin_out[3].keys()
        for key in out[3]:
            np.testing.assert_array_equal(out[3][key], twin_out[3][key])
        obs, _, dones, info = out
        if episode_length is None:
            expected.append((info["final_obs"] if dones[0] else obs)[0].copy())
            if dones[0]:
                episode_length = int(info["episode_length"][0])
        else:
            steps_after += 1
        obs[...] = 0.0  # the recorder keeps copies: the caller may reuse the arrays it was given
        info["final_obs"][...] = 0.0
        assert len(recorder.episode) == len(expected)
        for frame, want in zip(recorder.episode, expected):
            assert_array(frame, np.float32, (recorder.num_agents, recorder.obs_dim))
            np.testing.assert_array_equal(frame, want)
        if steps_after == 3:  # a few steps past the end of env 0's episode: nothing more recorded
            break
    assert steps_after == 3 and len(recorder.episode) == episode_length + 1
    assert random_policy_score(recorder, 0) == random_policy_score(twin, 0)  # usable as the envs it wraps
    obs = recorder.reset()  # a new reset starts a new recording
    assert len(recorder.episode) == 1
    np.testing.assert_array_equal(recorder.episode[0], obs[0])


# ---------------------------------------------------------------- the checks catch a broken wrapper


class TorchCoordSum(coordsum.CoordSumVec):
    """Returns torch tensors, as utils/smax.py once did."""

    def reset(self, seed=None):
        return torch.from_numpy(super().reset(seed))

    def step(self, actions):
        obs, rewards, dones, info = super().step(actions)
        return torch.from_numpy(obs), torch.from_numpy(rewards), torch.from_numpy(dones), info


class NotAVecEnv:
    """The interface's attributes and methods but no VecEnv base, hence no avail_actions()."""

    continuous_actions = has_wins = False

    def __init__(self, num_envs):
        self._envs = coordsum.make_env(num_envs, 0)
        for name in INT_ATTRS:
            setattr(self, name, getattr(self._envs, name))
        self.reset, self.step, self.state = self._envs.reset, self._envs.step, self._envs.state


class ClaimsWins(coordsum.CoordSumVec):
    has_wins = True  # but its info has no "won"


class FloatLengths(coordsum.CoordSumVec):
    def step(self, actions):
        obs, rewards, dones, info = super().step(actions)
        return obs, rewards, dones, {**info, "episode_length": info["episode_length"].astype(np.float32)}


@pytest.mark.parametrize("broken", [TorchCoordSum, NotAVecEnv, ClaimsWins, FloatLengths], ids=lambda c: c.__name__)
def test_checks_fail_on_a_broken_wrapper(broken):
    check_reset_and_one_step(coordsum.CoordSumVec(B), B, masked=False)  # the unbroken env passes
    with pytest.raises(AssertionError):
        check_reset_and_one_step(broken(B), B, masked=False)


def test_get_state_set_state_continues_identically(case):
    """set_state(get_state()) on a fresh env built the same way (another seed, never reset) makes every
    later step give identical outputs, across episode ends and auto-resets; the state is a copy."""
    envs = case.make(3)
    envs.reset(seed=4)
    rng = np.random.default_rng(0)
    for _ in range(7):
        envs.step(random_actions(envs, rng))
    saved = envs.get_state()
    clone = case.make(99)
    clone.set_state(saved)
    outs = []
    for env in (envs, clone):
        rng = np.random.default_rng(1)
        out = [env.state(), env.avail_actions()]
        for _ in range(40):  # crosses the MPE and CoordSum-free episode ends (MPE: 25 steps)
            obs, rewards, dones, info = env.step(random_actions(env, rng))
            out += [obs, rewards, dones, *info.values(), env.state(), env.avail_actions()]
        out.append(env.reset())  # the random stream was restored too
        outs.append(out)
    assert len(outs[0]) == len(outs[1])
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(*outs))
    # stepping the original did not change the saved state: restoring it again repeats the clone's steps
    again = case.make(5)
    again.set_state(saved)
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(again.step(random_actions(again, rng))[0], outs[1][2])
