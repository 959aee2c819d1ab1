"""utils/smax.py: the batched SMAX wrapper's interface (shapes, dtypes, auto-reset, episode
statistics), the win flag on a scripted win and a scripted loss, input checks, and the JAX
plumbing (a single compile of `step`, the restored streams, the persistent cache)."""

import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

from utils import random_actions
from utils.smax import KNOWN_MAPS, PAPER_MAPS, SMAXVec, make_env, registered_maps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = 4
EAST, STOP = 1, 4  # SMAX's discrete actions: 0 north, 1 east, 2 south, 3 west, 4 stop, 5 + k attack enemy k
OWN_HEALTH = -10  # the own-features block (health, x, y, cooldown, 6 unit-type bits) ends every observation


def scripted_attack(envs):
    """Attack the lowest-numbered enemy in range; with none in range, walk east towards the enemies."""
    avail = envs.avail_actions()  # (B, N, A)
    attack = avail[..., 5:]
    first_target = attack.argmax(-1) + 5
    walk = np.where(avail[..., EAST], EAST, STOP)
    return np.where(attack.any(-1), first_target, walk)


def assert_array(x, dtype, shape):
    """`x` is a numpy array (not a torch tensor or a JAX array) of this dtype and shape."""
    assert type(x) is np.ndarray, type(x)
    assert x.dtype == dtype and x.shape == shape, (x.dtype, x.shape)


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    """Compile fast in these tests: XLA's backend optimisation level 0 compiles SMAX 2-3x faster
    and runs it ~3x slower (docs/benchmarks.md), the right trade for short tests. JAX reads the
    flag when it starts, on the first environment built (utils/smax.py imports JAX lazily), and
    subprocesses inherit it; it is set for this module only, so other tests' runs are unaffected."""
    with pytest.MonkeyPatch.context() as patch:
        if "XLA_FLAGS" not in os.environ:
            patch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
        yield


@pytest.fixture(scope="module")
def envs():
    env = make_env(B, seed=0, map_name="2s3z")
    yield env
    env.close()


def test_shapes_dtypes_and_sizes(envs):
    obs = envs.reset(seed=3)
    N, A = envs.num_agents, envs.action_dim
    assert (envs.num_envs, N, envs.num_enemies, A) == (B, 5, 5, 10)
    assert (envs.obs_dim, envs.state_dim) == (13 * (4 + 5) + 10, 12 * 10)
    assert_array(obs, np.float32, (B, N, envs.obs_dim))
    assert_array(envs.state(), np.float32, (B, envs.state_dim))
    avail = envs.avail_actions()
    assert_array(avail, np.bool_, (B, N, A))
    assert avail[..., :5].all(), "at the start every ally is alive: it can move and stop"
    assert not avail[..., 5:].any(), "at the start the enemies are out of range"
    assert np.all(obs[..., OWN_HEALTH] == 1.0), "every ally starts at full health"

    obs, rewards, dones, info = envs.step(np.full((B, N), STOP))
    assert_array(obs, np.float32, (B, N, envs.obs_dim))
    assert_array(rewards, np.float32, (B, N))
    assert np.array_equal(rewards, np.broadcast_to(rewards[:, :1], (B, N))), "the team reward, repeated for every agent"
    assert_array(dones, np.bool_, (B,))
    expected = {
        "episode_return": (np.float32, (B,)),
        "episode_length": (np.int64, (B,)),
        "won": (np.bool_, (B,)),
        "truncated": (np.bool_, (B,)),
        "final_obs": (np.float32, obs.shape),
        "final_state": (np.float32, (B, envs.state_dim)),
    }
    assert info.keys() == expected.keys()
    for key, (dtype, shape) in expected.items():
        assert_array(info[key], dtype, shape)
    # arrays the caller owns: writing into them must not change the wrapper's view
    obs[...] = 0.0
    envs.avail_actions()[...] = False
    envs.state()[...] = 0.0
    assert envs.avail_actions()[..., STOP].all()
    assert envs.state().any()


def test_auto_reset_and_episode_statistics(envs):
    """Play random legal actions: at every episode end the wrapper's return, length and win flag
    must equal the sums kept here, and the next observation must be a fresh episode's."""
    envs.reset(seed=1)
    rng = np.random.default_rng(0)
    running_return, running_length = np.zeros(B, dtype=np.float64), np.zeros(B, dtype=np.int64)
    episodes = 0
    for _ in range(300):
        obs, rewards, dones, info = envs.step(random_actions(envs, rng))
        running_return += rewards[:, 0].astype(np.float64)
        running_length += 1
        for i in np.flatnonzero(dones).tolist():
            episodes += 1
            assert info["episode_length"][i] == running_length[i]
            assert float(info["episode_return"][i]) == pytest.approx(running_return[i], abs=1e-4)
            assert info["won"][i] == (rewards[i, 0] >= 1.0)
            assert 1 <= running_length[i] <= envs.max_episode_length
            # the next episode: everyone alive at full health, free to move; the old one in final_obs
            assert np.all(obs[i, :, OWN_HEALTH] == 1.0) and envs.avail_actions()[i, :, :5].all()
            assert not np.array_equal(info["final_obs"][i], obs[i])
        running_return[dones], running_length[dones] = 0.0, 0
        not_done = ~dones
        assert np.all(info["episode_return"][not_done] == 0) and np.all(info["episode_length"][not_done] == 0)
        assert np.array_equal(info["final_obs"][not_done], obs[not_done])
        assert np.array_equal(info["final_state"][not_done], envs.state()[not_done])
    assert episodes >= B, "random play on 2s3z ends episodes well within 300 steps"


def test_scripted_win_sets_the_win_flag():
    """Enemies that never shoot, allies that focus fire: every episode is a win, and its return is
    exactly 1 (all enemy health, as a fraction of the team's) + 1 (the won-battle bonus)."""
    envs = make_env(B, seed=0, map_name="3m", enemy_shoots=False)
    envs.reset()
    wins, returns = [], []
    for _ in range(100):
        _, rewards, dones, info = envs.step(scripted_attack(envs))
        wins += info["won"][dones].tolist()
        returns += info["episode_return"][dones].tolist()
        assert not info["truncated"][dones].any()
        if len(wins) >= B:
            break
    assert len(wins) >= B and all(wins)
    np.testing.assert_allclose(returns, 2.0, atol=1e-4)


def test_scripted_loss_clears_the_win_flag():
    """Allies that only stand still never damage the enemy: the heuristic enemies walk over and
    kill them, so every episode is a loss with return 0 that ends before the time limit."""
    envs = make_env(B, seed=0, map_name="3m")
    envs.reset()
    losses = []
    for _ in range(100):
        _, rewards, dones, info = envs.step(np.full((B, 3), STOP))
        assert np.all(rewards == 0)
        losses += [
            (bool(w), float(r), bool(t), int(n))
            for w, r, t, n in zip(
                info["won"][dones],
                info["episode_return"][dones],
                info["truncated"][dones],
                info["episode_length"][dones],
            )
        ]
        if len(losses) >= B:
            break
    assert len(losses) >= B
    for won, ret, truncated, length in losses:
        assert (won, ret, truncated) == (False, 0.0, False) and length < envs.max_episode_length


def test_time_limit_is_flagged_as_truncation():
    """JaxMARL ends an episode when the step count *before* the step reaches max_steps: at step
    max_steps + 1. Standing still, nobody can die in those 6 steps."""
    envs = make_env(2, seed=0, map_name="3m", enemy_shoots=False, max_steps=5)
    assert envs.max_episode_length == 6
    envs.reset()
    for step in range(1, 7):
        _, _, dones, info = envs.step(np.full((2, 3), STOP))
        assert bool(dones.all()) == (step == 6) and bool(dones.any()) == (step == 6)
    assert info["truncated"].all() and not info["won"].any() and np.all(info["episode_length"] == 6)


def test_step_compiles_once_and_builds_share_it():
    """The reset state's weakly typed field would make the second `step` compile again (+4-10 s)."""
    envs = make_env(3, seed=0, map_name="2s3z", max_steps=6)  # its own kwargs: its own jitted functions and count
    envs.reset()
    rng = np.random.default_rng(0)
    saw_reset = False
    for _ in range(14):  # two auto-resets
        _, _, dones, _ = envs.step(random_actions(envs, rng))
        saw_reset |= bool(dones.any())
    assert saw_reset and envs.step_traces == 1
    again = make_env(3, seed=5, map_name="2s3z", max_steps=6)
    again.reset()
    again.step(random_actions(again, rng))
    assert again.step_traces == 1, "a second batch of the same map and size reuses the compiled step"


def test_same_seed_same_episodes():
    def play(seed):
        envs = make_env(B, seed=seed, map_name="2s3z")
        trajectory = [envs.reset()]
        rng = np.random.default_rng(0)
        for _ in range(30):
            obs, rewards, dones, _ = envs.step(random_actions(envs, rng))
            trajectory += [obs, rewards, dones]
        return trajectory

    first, second, other = play(7), play(7), play(8)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], other[0])


def test_bad_input(envs):
    with pytest.raises(ValueError, match=r"unknown SMAX map 'nope'; registered maps: .*2s3z"):
        make_env(2, map_name="nope")
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        SMAXVec("2s3z", 0)
    with pytest.raises(RuntimeError, match="reset"):
        SMAXVec("2s3z", B).step(np.zeros((B, 5), dtype=np.int64))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        envs.step(np.zeros((B, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        envs.step(np.zeros((B, 5)))
    with pytest.raises(ValueError, match="in \\[0, 10\\)"):
        envs.step(np.full((B, 5), 10))
    with pytest.raises(ValueError, match="unavailable action 5 for agent 0 in env 0"):
        envs.step(np.full((B, 5), 5))  # attack enemy 0: out of range at the start


def test_make_env_positional_arguments(envs):
    # make_env(num_envs, seed=None, map_name=...): the common signature of every utils module
    assert list(inspect.signature(make_env).parameters)[:3] == ["num_envs", "seed", "map_name"]
    positional = make_env(B, 7, "2s3z")
    assert (positional.num_envs, positional.map_name) == (B, "2s3z")
    np.testing.assert_array_equal(positional.reset(), make_env(B, seed=7, map_name="2s3z").reset())


def test_registered_maps_include_the_papers_ten():
    assert set(PAPER_MAPS) <= set(registered_maps())
    # the list that checks --map-name without importing jaxmarl is JaxMARL's registry, in order
    assert KNOWN_MAPS == tuple(registered_maps())


def test_import_is_quiet_restores_streams_and_fills_the_cache(tmp_path):
    """In a fresh process: importing jaxmarl prints to stdout and resets sys.stdout/sys.stderr;
    the wrapper must swallow the print, restore the caller's streams, point JAX's persistent cache
    at the chosen directory with our threshold, and compiled programs must land there. The
    threshold is then lowered to 0 so the last check does not depend on the machine's speed."""
    script = (
        "import io, sys\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "sys.stdout, sys.stderr = out, err\n"
        "from utils.jax_cache import MIN_CACHED_COMPILE_SECS\n"
        "from utils.smax import import_jaxmarl, make_env\n"
        "import_jaxmarl()\n"
        "import jax\n"
        "assert jax.config.jax_compilation_cache_dir == sys.argv[1], jax.config.jax_compilation_cache_dir\n"
        "assert jax.config.jax_persistent_cache_min_compile_time_secs == MIN_CACHED_COMPILE_SECS\n"
        "# Whether a program is written depends on how long XLA took to compile it, which depends on\n"
        "# the machine (reset_batch takes ~1 s here, under 0.5 s on a fast one): cache everything.\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "envs = make_env(2, seed=0, map_name='3m')\n"
        "envs.reset()\n"
        "assert sys.stdout is out and sys.stderr is err, 'streams were not restored'\n"
        "sys.__stdout__.write('captured=' + repr(out.getvalue()) + '\\n')\n"
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "MAGPO_JAX_CACHE_DIR": str(cache), "PYTHONPATH": REPO}
    result = subprocess.run(
        [sys.executable, "-c", script, str(cache)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "captured=''\n", result.stdout
    assert any(name.startswith("jit_reset_batch") for name in os.listdir(cache))
