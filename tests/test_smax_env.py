"""utils/smax.py: the batched SMAX wrapper's interface (shapes, dtypes, auto-reset, episode
statistics), the win flag on a scripted win and a scripted loss, input checks, and the JAX
plumbing (a single compile of `step`, the restored streams, the persistent cache)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from utils.smax import PAPER_MAPS, SMAXVec, make_env, registered_maps

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = 4
EAST, STOP = 1, 4  # SMAX's discrete actions: 0 north, 1 east, 2 south, 3 west, 4 stop, 5 + k attack enemy k
OWN_HEALTH = -10  # the own-features block (health, x, y, cooldown, 6 unit-type bits) ends every observation


def random_legal_actions(envs, generator):
    avail = envs.avail_actions().float()  # (B, N, A)
    return torch.multinomial(avail.reshape(-1, avail.shape[-1]), 1, generator=generator).reshape(avail.shape[:2])


def scripted_attack(envs):
    """Attack the lowest-numbered enemy in range; with none in range, walk east towards the enemies."""
    avail = envs.avail_actions()  # (B, N, A)
    attack = avail[..., 5:]
    first_target = attack.float().argmax(-1) + 5
    walk = torch.where(avail[..., EAST], EAST, STOP)
    return torch.where(attack.any(-1), first_target, walk)


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
    env = make_env("2s3z", B, seed=0)
    yield env
    env.close()


def test_shapes_dtypes_and_sizes(envs):
    obs = envs.reset(seed=3)
    N, A = envs.num_agents, envs.action_dim
    assert (envs.num_envs, N, envs.num_enemies, A) == (B, 5, 5, 10)
    assert (envs.obs_dim, envs.state_dim) == (13 * (4 + 5) + 10, 12 * 10)
    assert obs.shape == (B, N, envs.obs_dim) and obs.dtype == torch.float32
    assert envs.state().shape == (B, envs.state_dim) and envs.state().dtype == torch.float32
    avail = envs.avail_actions()
    assert avail.shape == (B, N, A) and avail.dtype == torch.bool
    assert avail[..., :5].all(), "at the start every ally is alive: it can move and stop"
    assert not avail[..., 5:].any(), "at the start the enemies are out of range"
    assert torch.all(obs[..., OWN_HEALTH] == 1.0), "every ally starts at full health"

    obs, rewards, dones, info = envs.step(torch.full((B, N), STOP))
    assert obs.shape == (B, N, envs.obs_dim) and obs.dtype == torch.float32
    assert rewards.shape == (B, N) and rewards.dtype == torch.float32
    assert torch.equal(rewards, rewards[:, :1].expand(B, N)), "the team reward, repeated for every agent"
    assert dones.shape == (B,) and dones.dtype == torch.bool
    expected = {"episode_return": torch.float32, "episode_length": torch.int64, "won": torch.bool,
                "truncated": torch.bool, "final_obs": torch.float32, "final_state": torch.float32}
    assert {key: value.dtype for key, value in info.items()} == expected
    assert info["final_obs"].shape == obs.shape and info["final_state"].shape == (B, envs.state_dim)
    # tensors the caller owns: writing into them must not change the wrapper's view
    obs.zero_()
    envs.avail_actions().zero_()
    assert envs.avail_actions()[..., STOP].all()


def test_auto_reset_and_episode_statistics(envs):
    """Play random legal actions: at every episode end the wrapper's return, length and win flag
    must equal the sums kept here, and the next observation must be a fresh episode's."""
    envs.reset(seed=1)
    generator = torch.Generator().manual_seed(0)
    running_return, running_length = torch.zeros(B, dtype=torch.float64), torch.zeros(B, dtype=torch.long)
    episodes = 0
    for _ in range(300):
        obs, rewards, dones, info = envs.step(random_legal_actions(envs, generator))
        running_return += rewards[:, 0].double()
        running_length += 1
        for i in torch.nonzero(dones).flatten().tolist():
            episodes += 1
            assert info["episode_length"][i] == running_length[i]
            assert info["episode_return"][i].item() == pytest.approx(running_return[i].item(), abs=1e-4)
            assert info["won"][i] == (rewards[i, 0] >= 1.0)
            assert 1 <= running_length[i] <= envs.max_episode_length
            # the next episode: everyone alive at full health, free to move; the old one in final_obs
            assert torch.all(obs[i, :, OWN_HEALTH] == 1.0) and envs.avail_actions()[i, :, :5].all()
            assert not torch.equal(info["final_obs"][i], obs[i])
        running_return[dones], running_length[dones] = 0.0, 0
        not_done = ~dones
        assert torch.all(info["episode_return"][not_done] == 0) and torch.all(info["episode_length"][not_done] == 0)
        assert torch.equal(info["final_obs"][not_done], obs[not_done])
        assert torch.equal(info["final_state"][not_done], envs.state()[not_done])
    assert episodes >= B, "random play on 2s3z ends episodes well within 300 steps"


def test_scripted_win_sets_the_win_flag():
    """Enemies that never shoot, allies that focus fire: every episode is a win, and its return is
    exactly 1 (all enemy health, as a fraction of the team's) + 1 (the won-battle bonus)."""
    envs = make_env("3m", B, seed=0, enemy_shoots=False)
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
    envs = make_env("3m", B, seed=0)
    envs.reset()
    losses = []
    for _ in range(100):
        _, rewards, dones, info = envs.step(torch.full((B, 3), STOP))
        assert torch.all(rewards == 0)
        losses += [(bool(w), float(r), bool(t), int(n)) for w, r, t, n in zip(
            info["won"][dones], info["episode_return"][dones], info["truncated"][dones], info["episode_length"][dones])]
        if len(losses) >= B:
            break
    assert len(losses) >= B
    for won, ret, truncated, length in losses:
        assert (won, ret, truncated) == (False, 0.0, False) and length < envs.max_episode_length


def test_time_limit_is_flagged_as_truncation():
    """JaxMARL ends an episode when the step count *before* the step reaches max_steps: at step
    max_steps + 1. Standing still, nobody can die in those 6 steps."""
    envs = make_env("3m", 2, seed=0, enemy_shoots=False, max_steps=5)
    assert envs.max_episode_length == 6
    envs.reset()
    for step in range(1, 7):
        _, _, dones, info = envs.step(torch.full((2, 3), STOP))
        assert bool(dones.all()) == (step == 6) and bool(dones.any()) == (step == 6)
    assert info["truncated"].all() and not info["won"].any() and torch.all(info["episode_length"] == 6)


def test_step_compiles_once_and_builds_share_it():
    """The reset state's weakly typed field would make the second `step` compile again (+4-10 s)."""
    envs = make_env("2s3z", 3, seed=0, max_steps=6)  # its own kwargs: its own jitted functions and count
    envs.reset()
    generator = torch.Generator().manual_seed(0)
    saw_reset = False
    for _ in range(14):  # two auto-resets
        _, _, dones, _ = envs.step(random_legal_actions(envs, generator))
        saw_reset |= bool(dones.any())
    assert saw_reset and envs.step_traces == 1
    again = make_env("2s3z", 3, seed=5, max_steps=6)
    again.reset()
    again.step(random_legal_actions(again, generator))
    assert again.step_traces == 1, "a second batch of the same map and size reuses the compiled step"


def test_same_seed_same_episodes():
    def play(seed):
        envs = make_env("2s3z", B, seed=seed)
        trajectory = [envs.reset()]
        generator = torch.Generator().manual_seed(0)
        for _ in range(30):
            obs, rewards, dones, _ = envs.step(random_legal_actions(envs, generator))
            trajectory += [obs, rewards, dones.float()]
        return trajectory

    first, second, other = play(7), play(7), play(8)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])


def test_bad_input(envs):
    with pytest.raises(ValueError, match=r"unknown SMAX map 'nope'; registered maps: .*2s3z"):
        make_env("nope", 2)
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        SMAXVec("2s3z", 0)
    with pytest.raises(RuntimeError, match="reset"):
        SMAXVec("2s3z", B).step(torch.zeros(B, 5, dtype=torch.long))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        envs.step(torch.zeros(B, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integers"):
        envs.step(torch.zeros(B, 5))
    with pytest.raises(ValueError, match="in \\[0, 10\\)"):
        envs.step(torch.full((B, 5), 10))
    with pytest.raises(ValueError, match="unavailable action 5 for agent 0 in env 0"):
        envs.step(torch.full((B, 5), 5))  # attack enemy 0: out of range at the start


def test_registered_maps_include_the_papers_ten():
    assert set(PAPER_MAPS) <= set(registered_maps())


def test_import_is_quiet_restores_streams_and_fills_the_cache(tmp_path):
    """In a fresh process: importing jaxmarl prints to stdout and resets sys.stdout/sys.stderr;
    the wrapper must swallow the print, restore the caller's streams, point JAX's persistent cache
    at the chosen directory with our threshold, and compiled programs must land there. The
    threshold is then lowered to 0 so the last check does not depend on the machine's speed."""
    script = (
        "import io, sys\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "sys.stdout, sys.stderr = out, err\n"
        "from utils.smax import MIN_CACHED_COMPILE_SECS, import_jaxmarl, make_env\n"
        "import_jaxmarl()\n"
        "import jax\n"
        "assert jax.config.jax_compilation_cache_dir == sys.argv[1], jax.config.jax_compilation_cache_dir\n"
        "assert jax.config.jax_persistent_cache_min_compile_time_secs == MIN_CACHED_COMPILE_SECS\n"
        "# Whether a program is written depends on how long XLA took to compile it, which depends on\n"
        "# the machine (reset_batch takes ~1 s here, under 0.5 s on a fast one): cache everything.\n"
        "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)\n"
        "envs = make_env('3m', 2, seed=0)\n"
        "envs.reset()\n"
        "assert sys.stdout is out and sys.stderr is err, 'streams were not restored'\n"
        "sys.__stdout__.write('captured=' + repr(out.getvalue()) + '\\n')\n"
    )
    cache = tmp_path / "cache"
    env = {**os.environ, "MAGPO_JAX_CACHE_DIR": str(cache), "PYTHONPATH": REPO}
    result = subprocess.run([sys.executable, "-c", script, str(cache)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "captured=''\n", result.stdout
    assert any(name.startswith("jit_reset_batch") for name in os.listdir(cache))
