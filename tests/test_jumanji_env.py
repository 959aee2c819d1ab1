"""utils/jumanji.py: the paper's 26 jumanji tasks (RWARE, LBF, Connector) in one batched bridge.

- the task table against the paper's naming rules, and a bad task name as a one-line error without JAX;
- the bridge against jumanji stepped directly (a vmapped `AutoResetWrapper` from the same keys): the same
  jumanji states, observations, masks, rewards and dones at every step, across auto-resets, per family;
- the official reward conventions (RWARE's team reward repeated, LBF's and Connector's summed) and the
  Connector vector observation against an independent re-derivation from the board;
- one compile of `step`, get_state/set_state on RWARE (tests/test_env_interface.py runs LBF and Connector
  through the common interface), and input checks.

The bridge compiles with JAX: B = 4 envs, the smallest task of each family, XLA's fast-compile level
(as tests/test_smax_env.py)."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from utils import random_actions
from utils.jumanji import (
    CONNECTOR_TASKS,
    DEFAULT_SCENARIOS,
    ENV_NAMES,
    FAMILIES,
    LBF_TASKS,
    RWARE_TASKS,
    TASKS,
    JumanjiVec,
    bucket_size,
    check_task,
    family_of,
    make_env,
    team_reward,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = 4
# the tasks stepped here: the smallest of each family (LBF: the smallest without forced cooperation, where
# random play eats food, so that the summed rewards are checked on real values)
TESTED = {"rware": "tiny-2ag", "lbf": "2s-10x10-3p-3f", "connector": "con-5x5x3a"}


@pytest.fixture(scope="module", autouse=True)
def _fast_compile():
    """XLA's backend optimisation level 0: faster compiles, slower steps, the right trade for short tests
    (read when JAX starts; set for this module only, see tests/test_smax_env.py)."""
    with pytest.MonkeyPatch.context() as patch:
        if "XLA_FLAGS" not in os.environ:
            patch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
        yield


# ------------------------------------------------------------------------------ the task table (no JAX)
def test_the_papers_26_tasks():
    """15 RWARE, 7 LBF and 4 Connector tasks, named as the paper names them, and each name says what the
    table holds: RWARE `<size>-<N>ag[-hard]` (size -> shelf rows x columns, request queue N or N/2 for
    -hard), LBF `[2s-]<G>x<G>-<N>p-<F>f[-coop]` (field of view 2 with `2s-`, else the whole grid),
    Connector `con-<G>x<G>x<N>a` (time limit G^2)."""
    assert (len(RWARE_TASKS), len(LBF_TASKS), len(CONNECTOR_TASKS)) == (15, 7, 4)
    assert sum(len(tasks) for tasks in TASKS.values()) == 26 and tuple(TASKS) == FAMILIES
    shelves = {"tiny": (1, 3), "small": (2, 3), "medium": (2, 5), "large": (3, 5), "xlarge": (4, 5)}
    for name, (rows, columns, agents, queue) in RWARE_TASKS.items():
        size, n, hard = re.fullmatch(r"(\w+)-(\d+)ag(-hard)?", name).groups()
        assert (rows, columns, agents) == (*shelves[size], int(n)), name
        assert queue == (agents // 2 if hard else agents), name
    for name, (grid, fov, agents, food, coop) in LBF_TASKS.items():
        two_sight, g, g2, n, f, coop_suffix = re.fullmatch(r"(2s-)?(\d+)x(\d+)-(\d+)p-(\d+)f(-coop)?", name).groups()
        assert g == g2 and (grid, agents, food) == (int(g), int(n), int(f)), name
        assert fov == (2 if two_sight else grid) and coop == bool(coop_suffix), name
    for name, (grid, agents, time_limit) in CONNECTOR_TASKS.items():
        g, g2, n = re.fullmatch(r"con-(\d+)x(\d+)x(\d+)a", name).groups()
        assert g == g2 and (grid, agents, time_limit) == (int(g), int(n), int(g) ** 2), name
    for env in FAMILIES:
        assert DEFAULT_SCENARIOS[env] in TASKS[env]
        assert all(family_of(name) == env for name in TASKS[env])
    assert family_of("2s3z") is None
    assert ENV_NAMES == {"rware": "RobotWarehouse", "lbf": "LevelBasedForaging", "connector": "Connector"}


def test_a_bad_task_name_is_a_one_line_error_without_jax():
    script = (
        "import sys\n"
        "from utils.jumanji import check_task, make_env\n"
        "for env, scenario in (('rware', 'tiny-3ag'), ('lbf', 'tiny-2ag'), ('smax', '3m')):\n"
        "    try:\n"
        "        make_env(2, env=env, scenario=scenario)\n"
        "    except ValueError as error:\n"
        "        print(error)\n"
        "assert 'jax' not in sys.modules and 'jumanji' not in sys.modules, 'a bad name must not import JAX'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rware, lbf, family = result.stdout.splitlines()
    assert rware.startswith("unknown rware task 'tiny-3ag'; the paper's rware tasks: tiny-2ag, tiny-2ag-hard")
    assert lbf.startswith("unknown lbf task 'tiny-2ag'; the paper's lbf tasks: 2s-8x8-2p-2f-coop")
    assert family == "unknown jumanji env 'smax'; choose one of rware, lbf, connector"
    check_task("connector", "con-15x15x23a")  # a good name passes


def test_bucket_sizes():
    assert [bucket_size(k, 64) for k in (1, 2, 3, 4, 5, 17, 33, 64)] == [1, 2, 4, 4, 8, 32, 64, 64]
    assert [bucket_size(k, 6) for k in (1, 3, 5, 6)] == [1, 4, 6, 6]


# ------------------------------------------------------------------------------ rewards and observations
def test_reward_conventions():
    """RWARE's reward is already the team's scalar: every agent gets it as it is (not N times it). LBF's
    and Connector's are per agent: their sum is the team reward."""
    np.testing.assert_array_equal(np.array(team_reward("rware", np.float32(1.0))), np.float32(1.0))
    for env in ("lbf", "connector"):
        reward = np.array([0.25, 0.5, -0.03], dtype=np.float32)
        value = np.array(team_reward(env, reward))
        assert value.dtype == np.float32 and value.shape == ()
        assert value == pytest.approx(0.72, abs=1e-6)


def connector_view_reference(grid, num_agents, fov=2):
    """The official vector observation from its definition, cell by cell (no perspective arithmetic): a
    cell with value v > 0 belongs to agent (v - 1) // 3 and is its path, head or target for
    (v - 1) % 3 = 0, 1, 2."""
    g = grid.shape[0]
    owner, kind = (grid - 1) // 3, (grid - 1) % 3
    out = []
    for i in range(num_agents):
        heads = np.argwhere((grid > 0) & (owner == i) & (kind == 1))
        targets = np.argwhere((grid > 0) & (owner == i) & (kind == 2))
        head = heads[0] if len(heads) else np.zeros(2, dtype=int)
        target = targets[0] if len(targets) else np.zeros(2, dtype=int)  # reached: its cell is the head
        blockers, aims = [], []
        for dr in range(-fov, fov + 1):
            for dc in range(-fov, fov + 1):
                r, c = head[0] + dr, head[1] + dc
                if not (0 <= r < g and 0 <= c < g):
                    blockers.append(1.0)  # beyond the border reads +1 in both windows
                    aims.append(1.0)
                    continue
                v = grid[r, c]
                blockers.append(0.0 if v == 0 else {1: 1.0, 0: -1.0, 2: 0.0}[kind[r, c]])
                aims.append(0.0 if v == 0 or kind[r, c] != 2 else (1.0 if owner[r, c] == i else -1.0))
        scale = np.float32(g * g)
        out.append(np.concatenate([head.astype(np.float32) / scale, target.astype(np.float32) / scale, blockers, aims]))
    return np.stack(out).astype(np.float32)


def test_connector_view_on_a_hand_made_board():
    """5x5, 2 agents: agent 0 (path 1, head 2, target 3), agent 1 (path 4, head 5, target 6)."""
    from utils.jumanji import connector_vector_view

    grid = np.zeros((5, 5), dtype=np.int32)
    grid[0, 0], grid[0, 1], grid[0, 2] = 1, 1, 2  # agent 0's path along the top row, head at (0, 2)
    grid[4, 4] = 3  # agent 0's target
    grid[2, 2], grid[1, 2] = 5, 4  # agent 1's head at (2, 2), its path just above
    grid[0, 4] = 6  # agent 1's target
    view = np.array(connector_vector_view(grid, 2))
    assert view.shape == (2, 54) and view.dtype == np.float32
    np.testing.assert_array_equal(view[0, :4], np.array([0, 2, 4, 4], dtype=np.float32) / np.float32(25))
    blockers0 = view[0, 4:29].reshape(5, 5)  # centred on (0, 2): rows -2..2, columns 0..4
    np.testing.assert_array_equal(blockers0[:2], 1.0)  # above the top row: outside
    np.testing.assert_array_equal(blockers0[2], [-1, -1, 1, 0, 0])  # the own path, the own head
    assert blockers0[3, 2] == -1 and blockers0[4, 2] == 1  # agent 1's path and head below
    targets0 = view[0, 29:].reshape(5, 5)
    assert targets0[2, 4] == -1 and (targets0[2:] != 0).sum() == 1  # only agent 1's target in view
    targets1 = view[1, 29:].reshape(5, 5)  # agent 1, centred on (2, 2): its own target at (0, 4)
    assert targets1[0, 4] == 1 and targets1[4, 4] == -1
    np.testing.assert_array_equal(view, connector_view_reference(grid, 2))


# ------------------------------------------------------------------------------ against jumanji itself
def expected_obs(env_name, observation, num_agents):
    """What the bridge must return for a batch of jumanji observations: float32 agents_view (RWARE, LBF),
    the vector view of each board (Connector)."""
    if env_name != "connector":
        return np.array(observation.agents_view).astype(np.float32)
    return np.stack([connector_view_reference(grid, num_agents) for grid in np.array(observation.grid)])


def expected_rewards(env_name, reward, num_agents):
    reward = np.array(reward, dtype=np.float32)
    team = reward if env_name == "rware" else reward.sum(axis=1)  # (B,)
    return np.repeat(team[:, None], num_agents, axis=1)


@pytest.mark.parametrize("env_name", FAMILIES)
def test_bridge_equals_jumanji_stepped_directly(env_name):
    """The same random legal actions on the bridge and on jumanji's own vmapped AutoResetWrapper, both
    started from split(split(PRNGKey(seed))[1], B) (the bridge's first reset): identical jumanji states,
    observations, masks, rewards and dones at every step, the terminal observation in `final_obs`, and
    the episode statistics, across auto-resets."""
    import jax
    from jumanji.wrappers import AutoResetWrapper

    scenario, seed, steps = TESTED[env_name], 3, {"rware": 400, "lbf": 300, "connector": 120}[env_name]
    envs = make_env(B, seed=seed, env=env_name, scenario=scenario)
    raw = envs._env
    N = envs.num_agents
    reference = AutoResetWrapper(raw, next_obs_in_extras=True)
    ref_step = jax.jit(jax.vmap(reference.step))
    _, reset_key = jax.random.split(jax.random.PRNGKey(seed))
    ref_state, ref_timestep = jax.vmap(reference.reset)(jax.random.split(reset_key, B))

    def assert_same_state(ours):
        theirs = jax.tree_util.tree_leaves(ref_state)
        mine = jax.tree_util.tree_leaves(ours)
        assert len(theirs) == len(mine)
        for a, b in zip(theirs, mine):
            np.testing.assert_array_equal(np.array(a), np.array(b))

    obs = envs.reset()
    assert_same_state(envs._state)
    np.testing.assert_array_equal(obs, expected_obs(env_name, ref_timestep.observation, N))
    np.testing.assert_array_equal(envs.avail_actions(), np.array(ref_timestep.observation.action_mask))
    np.testing.assert_array_equal(envs.step_count, 0)
    # the jitted step is shared by every bridge of this task in the process (another test may have compiled it
    # for another batch size): count from here
    traces_before = envs.traces["step"]
    rng = np.random.default_rng(0)
    returns, lengths, ended, rewarded = np.zeros(B), np.zeros(B, dtype=np.int64), 0, 0
    for _ in range(steps):
        actions = random_actions(envs, rng)
        obs, rewards, dones, info = envs.step(actions)
        ref_state, ref_timestep = ref_step(ref_state, np.asarray(actions, dtype=np.int32))
        assert_same_state(envs._state)
        np.testing.assert_array_equal(obs, expected_obs(env_name, ref_timestep.observation, N))
        np.testing.assert_array_equal(envs.avail_actions(), np.array(ref_timestep.observation.action_mask))
        np.testing.assert_allclose(rewards, expected_rewards(env_name, ref_timestep.reward, N), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(dones, np.array(ref_timestep.last()))
        np.testing.assert_array_equal(info["final_obs"], expected_obs(env_name, ref_timestep.extras["next_obs"], N))
        np.testing.assert_array_equal(envs.step_count, np.array(ref_timestep.observation.step_count))
        returns += rewards[:, 0]
        lengths += 1
        np.testing.assert_allclose(info["episode_return"], np.where(dones, returns, 0.0), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(info["episode_length"], np.where(dones, lengths, 0))
        ended += dones.sum()
        rewarded += (rewards != 0).any(axis=1).sum()
        returns[dones], lengths[dones] = 0.0, 0
    print(f"{ended} episode ends, {rewarded} rewarded steps")
    assert ended >= 1, "the rollout must cross an auto-reset"
    if env_name != "rware":  # random play on RWARE rarely delivers a shelf; test_reward_conventions covers it
        assert rewarded >= 1
    assert envs.traces["step"] - traces_before <= 1  # at most one compile for this batch, across auto-resets


def test_compile_all_compiles_every_reset_size_once():
    """B = 6: resets of 1, 2, 4 and 6 envs. After compile_all, stepping compiles nothing more, and compile_all
    changed nothing: the outputs equal those of an env that never called it."""
    envs, twin = (make_env(6, seed=1, env="connector", scenario="con-5x5x3a") for _ in range(2))
    before = envs.traces["reset_at"]
    envs.reset(), twin.reset()
    envs.compile_all()
    assert envs.traces["reset_at"] - before == 4  # no other test here has 6 Connector envs
    compiled = envs.traces["reset_at"]
    rng, twin_rng = np.random.default_rng(0), np.random.default_rng(0)
    ended = 0
    for _ in range(60):
        out, twin_out = envs.step(random_actions(envs, rng)), twin.step(random_actions(twin, twin_rng))
        assert all(np.array_equal(a, b) for a, b in zip(out[:3], twin_out[:3]))
        ended += out[2].sum()
    assert ended >= 6 and envs.traces["reset_at"] == compiled


def test_get_state_set_state_on_rware():
    """RWARE (500-step episodes, too long for tests/test_env_interface.py): a clone built with another seed
    continues identically from get_state(), and the saved state is a copy."""
    envs = make_env(B, seed=0, env="rware", scenario="tiny-2ag")
    envs.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(10):
        envs.step(random_actions(envs, rng))
    saved = envs.get_state()
    clone = make_env(B, seed=9, env="rware", scenario="tiny-2ag")
    clone.set_state(saved)
    outs = []
    for env in (envs, clone):
        rng = np.random.default_rng(1)
        out = [env.state(), env.avail_actions()]
        for _ in range(60):
            obs, rewards, dones, info = env.step(random_actions(env, rng))
            out += [obs, rewards, dones, *info.values(), env.avail_actions(), env.step_count.copy()]
        out.append(env.reset())
        outs.append(out)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(*outs))
    again = make_env(B, seed=2, env="rware", scenario="tiny-2ag")
    again.set_state(saved)
    np.testing.assert_array_equal(again.step(random_actions(again, np.random.default_rng(1)))[0], outs[1][2])


def test_sizes_and_bad_input():
    envs = make_env(B, seed=0, env="lbf", scenario="15x15-4p-5f")
    assert (envs.num_agents, envs.obs_dim, envs.action_dim, envs.state_dim) == (4, 3 * (5 + 4), 6, 4 * 27)
    assert (envs.time_limit, envs.env_name, envs.has_wins, envs.continuous_actions) == (
        100,
        "LevelBasedForaging",
        False,
        False,
    )
    rware = make_env(B, seed=0, env="rware", scenario="tiny-2ag")
    assert (rware.num_agents, rware.time_limit, rware.env_name) == (2, 500, "RobotWarehouse")
    with pytest.raises(ValueError, match="num_envs must be >= 1"):
        JumanjiVec("lbf", "15x15-4p-5f", 0)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros((B, 4), dtype=np.int64))
    envs.reset()
    with pytest.raises(ValueError, match="shape"):
        envs.step(np.zeros((B, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        envs.step(np.zeros((B, 4)))
    with pytest.raises(ValueError, match=r"in \[0, 6\)"):
        envs.step(np.full((B, 4), 6))
    avail = envs.avail_actions()
    env, agent, action = np.argwhere(~avail)[0]
    actions = random_actions(envs, np.random.default_rng(0))
    actions[env, agent] = action
    with pytest.raises(ValueError, match=f"unavailable action {action} for agent {agent} in env {env}"):
        envs.step(actions)
