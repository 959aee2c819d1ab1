"""Batched RWARE, LBF and Connector (InstaDeep's `jumanji`) behind the common interface.

One bridge for the paper's three jumanji environments. `JumanjiVec` runs B copies of one task with a single
jitted, vmapped `step`, resets only the environments whose episode ended, and hands everything back as numpy
arrays, with the interface of `utils/__init__.py` (B = num_envs, N = num_agents, A = action_dim):

    envs = make_env(64, seed=1, env="rware", scenario="tiny-2ag")   # or env="lbf" / "connector"
    obs = envs.reset(seed=None)                      # (B, N, obs_dim) float32
    envs.state()                                     # (B, N * obs_dim) float32: all observations, concatenated
    envs.avail_actions()                             # (B, N, A) bool: jumanji's action masks
    obs, rewards, dones, info = envs.step(actions)   # actions (B, N) integers

The 26 tasks are the paper's (`TASKS`, from the official configs `mava/configs/env/scenario/*.yaml` of
liyheng/MAGPO at d2ac38b): 15 RWARE, 7 LBF, 4 Connector. A task name is checked against that table without
importing JAX (`check_task`). jumanji is 1.1.2; the official code used 1.1.1, whose RobotWarehouse and
LevelBasedForaging dynamics are the same code (the two differ in their viewers only).

The official wrappers' conventions (`mava/wrappers/jumanji.py`), kept here:
- Observations are jumanji's `agents_view` as float32 (raw integer features, not normalised). The one-hot
  agent id that the official `AgentIDWrapper` puts before them is added by the training scripts' networks
  ([one-hot id, obs], as for every env of this repository), so it is not in `obs`.
- RWARE (`RobotWarehouse`): the scalar team reward (+1 per delivered requested shelf) is repeated for every
  agent. Any collision between agents ends the episode, and jumanji would take an illegal action as a no-op
  (`step` rejects unavailable actions unless `check_actions=False`, as utils/smax.py does).
- LBF (`LevelBasedForaging`): the per-agent (normalised) rewards are summed into a team reward, repeated for
  every agent. An episode ends when all food is eaten or at step 100.
- Connector: `Connector(LegacyRandomWalkGenerator(grid, n), time_limit=T)`, which gives the boards of the
  official `Connector-v2` (jumanji 1.1.2 no longer registers it; its default generator makes other
  boards). Rewards are summed and repeated as for LBF. The observation is the official *vector* one
  (`VectorConnectorWrapper`): per agent, its own position and target (row, column) divided by grid_size^2,
  then a 5x5 window around it of blockers (+1 a head, -1 a path) and one of targets (+1 its own, -1 the
  others'), both padded with +1 outside the grid: 4 + 2 x 25 = 54 features. The paper's MLP networks need
  a vector, which is why this is the vector form rather than the grid one (an inference, not stated in the
  official configs).
- `dones` = jumanji's `timestep.last()`: termination, the time limit and RWARE's collisions alike. The
  training scripts treat every end as terminal (no bootstrapping at the time limit), as the official code.
- `state()` is every agent's observation concatenated (the official default global state).

Auto-reset: an env whose episode ended is reset at once with jumanji's own key rule (`AutoResetWrapper`:
`key, _ = split(state.key)`), so the random stream is jumanji's. Only the envs that ended are reset: their
indices are padded to a power of two and their fresh states written back. Each padded size compiles once, the
first time it is needed (seconds; a load from the persistent cache in later processes). Resetting all B every
step and keeping the ones needed, as a vmapped `AutoResetWrapper` does, was 1.5-7x slower on one core, most on
Connector, whose board generator is slow (docs/benchmarks.md).

`info`, each (B,), valid where `dones` (0 elsewhere): `episode_return` float32 (the sum over the episode of the
team reward, i.e. the mean over agents of their summed rewards), `episode_length` int64; and `final_obs`
(B, N, obs_dim), the last observation of the episode that just ended (equal to `obs` where not done).
`envs.step_count` (B,) int64 is jumanji's step counter of the current observations (0 on a first one).

JAX plumbing as in `utils/smax.py`: JAX runs on the CPU with the persistent compilation cache of
`utils/jax_cache.py`; the reset states are cast to strong types (RWARE's have a weakly typed field, which would
make `step` compile twice); actions go to the compiled step as an int32 numpy array and outputs come back as
numpy copies (`jnp.asarray` on the way in costs 50-75 us a step, docs/benchmarks.md). `import jumanji` (~3 s)
happens on the first environment built, not on `import utils.jumanji`.
"""

from __future__ import annotations

import functools

import numpy as np

from utils import EpisodeRecorder, JaxVecEnv
from utils.jax_cache import import_jax

FAMILIES = ("rware", "lbf", "connector")
# marl-eval's environment names (the official configs' `env_name`: mava/configs/env/{rware,lbf,connector}.yaml)
ENV_NAMES = {"rware": "RobotWarehouse", "lbf": "LevelBasedForaging", "connector": "Connector"}

# The paper's tasks, from the official configs (mava/configs/env/*.yaml and scenario/*.yaml at d2ac38b).
# RWARE: every task has column_height 8, sensor_range 1 and time_limit 500; the request queue is the number
# of agents, halved for "-hard". Values: (shelf_rows, shelf_columns, num_agents, request_queue_size).
RWARE_TASKS = {
    "tiny-2ag": (1, 3, 2, 2), "tiny-2ag-hard": (1, 3, 2, 1), "tiny-4ag": (1, 3, 4, 4), "tiny-4ag-hard": (1, 3, 4, 2),
    "small-4ag": (2, 3, 4, 4), "small-4ag-hard": (2, 3, 4, 2),
    "medium-4ag": (2, 5, 4, 4), "medium-4ag-hard": (2, 5, 4, 2), "medium-6ag": (2, 5, 6, 6),
    "large-4ag": (3, 5, 4, 4), "large-4ag-hard": (3, 5, 4, 2), "large-8ag": (3, 5, 8, 8), "large-8ag-hard": (3, 5, 8, 4),
    "xlarge-4ag": (4, 5, 4, 4), "xlarge-4ag-hard": (4, 5, 4, 2),
}  # fmt: skip
RWARE_COLUMN_HEIGHT, RWARE_SENSOR_RANGE, RWARE_TIME_LIMIT = 8, 1, 500
# LBF: max_agent_level 2 and time_limit 100 everywhere. Values: (grid_size, fov, num_agents, num_food, force_coop).
LBF_TASKS = {
    "2s-8x8-2p-2f-coop": (8, 2, 2, 2, True), "8x8-2p-2f-coop": (8, 8, 2, 2, True),
    "2s-10x10-3p-3f": (10, 2, 3, 3, False), "10x10-3p-3f": (10, 10, 3, 3, False),
    "15x15-3p-5f": (15, 15, 3, 5, False), "15x15-4p-3f": (15, 15, 4, 3, False), "15x15-4p-5f": (15, 15, 4, 5, False),
}  # fmt: skip
LBF_MAX_AGENT_LEVEL, LBF_TIME_LIMIT = 2, 100
# Connector: values (grid_size, num_agents, time_limit).
CONNECTOR_TASKS = {
    "con-5x5x3a": (5, 3, 25), "con-7x7x5a": (7, 5, 49), "con-10x10x10a": (10, 10, 100), "con-15x15x23a": (15, 23, 225),
}  # fmt: skip
CONNECTOR_FOV = 2  # the vector observation's window: (2 * fov + 1)^2 cells (VectorConnectorWrapper's fov)
TASKS = {"rware": RWARE_TASKS, "lbf": LBF_TASKS, "connector": CONNECTOR_TASKS}
DEFAULT_SCENARIOS = {"rware": "tiny-2ag", "lbf": "2s-8x8-2p-2f-coop", "connector": "con-5x5x3a"}


def check_task(env: str, scenario: str) -> None:
    """Raise ValueError (one line, listing the choices) for an unknown family or task; no JAX import."""
    if env not in TASKS:
        raise ValueError(f"unknown jumanji env {env!r}; choose one of {', '.join(FAMILIES)}")
    if scenario not in TASKS[env]:
        raise ValueError(f"unknown {env} task {scenario!r}; the paper's {env} tasks: {', '.join(TASKS[env])}")


def family_of(scenario: str) -> str | None:
    """The family ('rware', 'lbf' or 'connector') of a paper task name, None if it is none of them (the
    26 names are distinct)."""
    return next((env for env, tasks in TASKS.items() if scenario in tasks), None)


def build_jumanji_env(env: str, scenario: str):
    """The task's unwrapped jumanji environment (imports jumanji)."""
    check_task(env, scenario)
    import_jax()
    if env == "rware":
        from jumanji.environments.routing.robot_warehouse import RobotWarehouse
        from jumanji.environments.routing.robot_warehouse.generator import RandomGenerator

        shelf_rows, shelf_columns, num_agents, queue = RWARE_TASKS[scenario]
        generator = RandomGenerator(
            shelf_rows=shelf_rows,
            shelf_columns=shelf_columns,
            column_height=RWARE_COLUMN_HEIGHT,
            num_agents=num_agents,
            sensor_range=RWARE_SENSOR_RANGE,
            request_queue_size=queue,
        )
        return RobotWarehouse(generator, time_limit=RWARE_TIME_LIMIT)
    if env == "lbf":
        from jumanji.environments.routing.lbf import LevelBasedForaging
        from jumanji.environments.routing.lbf.generator import RandomGenerator

        grid_size, fov, num_agents, num_food, force_coop = LBF_TASKS[scenario]
        generator = RandomGenerator(
            grid_size=grid_size,
            fov=fov,
            num_agents=num_agents,
            num_food=num_food,
            max_agent_level=LBF_MAX_AGENT_LEVEL,
            force_coop=force_coop,
        )
        return LevelBasedForaging(generator, time_limit=LBF_TIME_LIMIT)
    from jumanji.environments.routing.connector import Connector
    from jumanji.environments.routing.connector.generator import LegacyRandomWalkGenerator

    grid_size, num_agents, time_limit = CONNECTOR_TASKS[scenario]
    return Connector(LegacyRandomWalkGenerator(grid_size, num_agents), time_limit=time_limit)


def connector_vector_view(grid, num_agents: int, fov: int = CONNECTOR_FOV):
    """Connector's grid (g, g) int32 -> the official vector observation (N, 4 + 2 (2 fov + 1)^2) float32.

    jumanji encodes agent i's path, head and target as 1 + 3i, 2 + 3i, 3 + 3i (0 = empty). Each agent sees
    the grid relabelled so that it is agent 0 (the others shifted cyclically, `switch_perspective` of
    mava/wrappers/jumanji.py); then, as the official VectorConnectorWrapper: its head's and target's (row,
    column) divided by g^2 (the target reads (0, 0) once reached: its cell then holds the head), and two
    windows centred on the head, padded with +1 beyond the border: blockers (+1 a head, -1 a path, 0 free)
    and targets (+1 its own, -1 another agent's)."""
    import jax
    import jax.numpy as jnp

    g = grid.shape[0]
    side = 2 * fov + 1

    def one_agent(i):
        # agent i's perspective: its values become 1, 2, 3
        view = jnp.where(grid >= 1, (grid - 1 - 3 * i) % (3 * num_agents) + 1, grid)
        kind = view % 3  # 1 path, 2 head, 0 target (or empty)
        blockers = jnp.where(kind == 2, 1, jnp.where(kind == 1, -1, 0))
        own_head, own_target = view == 2, view == 3
        targets = jnp.where(own_target, 1, jnp.where((kind == 0) & (view != 0), -1, 0))

        def location(mask):  # (row, column) of the first True cell in row-major order, (0, 0) if none
            index = jnp.argmax(mask.reshape(-1))
            return jnp.stack([index // g, index % g])

        head, target = location(own_head), location(own_target)

        def window(values):  # the (side, side) cells centred on the head, flattened row by row
            padded = jnp.pad(values, fov, constant_values=1)
            return jax.lax.dynamic_slice(padded, (head[0], head[1]), (side, side)).reshape(-1)

        return jnp.concatenate([head / (g * g), target / (g * g), window(blockers), window(targets)], dtype=jnp.float32)

    return jax.vmap(one_agent)(jnp.arange(num_agents))


def team_reward(env: str, reward):
    """One env's reward from jumanji -> the team reward () float32 that every agent gets: RWARE's is already
    one scalar for the team (repeated, official RwareWrapper); LBF's and Connector's are per agent (N,) and
    summed (official `aggregate_rewards: True`)."""
    import jax.numpy as jnp

    return (reward if env == "rware" else jnp.sum(reward)).astype(jnp.float32)


@functools.lru_cache(maxsize=None)
def _batched_functions(env_name: str, scenario: str):
    """Build the task's env and its jitted functions, once per task per process.

    Returns (env, functions, trace counter). Per env: obs (N, obs_dim) float32, avail (N, A) bool, team
    reward () float32, done () bool, step_count () int32; the jitted functions take and return them with a
    leading batch axis:
      reset_all(keys (B, 2)) -> state, obs, avail, step_count
      step(state, actions (B, N) int32) -> state, obs, avail, team_reward, done, step_count
      reset_at(state, index (K,) int32) -> state, obs, avail, step_count (the envs at `index` reset, K a bucket)
    """
    jax = import_jax()
    import jax.numpy as jnp

    env = build_jumanji_env(env_name, scenario)
    num_agents = env.num_agents
    traces = {"reset_all": 0, "step": 0, "reset_at": 0}

    def strong(tree):
        # jnp.asarray with an explicit dtype drops the weak type that reset's Python scalars carry
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), tree)

    def observe(observation):
        if env_name == "connector":
            obs = connector_vector_view(observation.grid, num_agents)
        else:
            obs = observation.agents_view.astype(jnp.float32)  # (N, obs_dim)
        return obs, observation.action_mask.astype(jnp.bool_), observation.step_count

    def reset_one(key):
        state, timestep = env.reset(key)
        return (strong(state), *observe(timestep.observation))

    def step_one(state, actions):
        state, timestep = env.step(state, actions)
        obs, avail, step_count = observe(timestep.observation)
        return strong(state), obs, avail, team_reward(env_name, timestep.reward), timestep.last(), step_count

    def reset_all(keys):
        traces["reset_all"] += 1  # Python side effect: runs once per trace, i.e. per compile
        return jax.vmap(reset_one)(keys)

    def step(state, actions):
        traces["step"] += 1
        return jax.vmap(step_one)(state, actions)

    def reset_at(state, index):
        traces["reset_at"] += 1
        # AutoResetWrapper's rule: the new episode's key is the first half of split(state.key)
        keys = jax.vmap(lambda key: jax.random.split(key)[0])(state.key[index])
        fresh, obs, avail, step_count = jax.vmap(reset_one)(keys)
        # repeated indices (the padding) write the same fresh state twice
        state = jax.tree.map(lambda old, new: old.at[index].set(new), state, fresh)
        return state, obs, avail, step_count

    functions = {"reset_all": jax.jit(reset_all), "step": jax.jit(step), "reset_at": jax.jit(reset_at)}
    return env, functions, traces


def bucket_size(count: int, num_envs: int) -> int:
    """The padded number of envs reset together: the next power of two >= count, at most num_envs."""
    return min(1 << (count - 1).bit_length(), num_envs)


class JumanjiVec(JaxVecEnv):
    """B episodes of one paper task (RWARE, LBF or Connector), stepped at once (see the module docstring)."""

    def __init__(
        self,
        env: str = "rware",
        scenario: str | None = None,
        num_envs: int = 64,
        seed: int | None = None,
        cache_dir: str | None = None,
        check_actions: bool = True,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        scenario = DEFAULT_SCENARIOS.get(env) if scenario is None else scenario
        check_task(env, scenario)
        jax = import_jax(cache_dir)
        import jax.numpy as jnp

        self._jax, self._jnp = jax, jnp
        self.env, self.scenario, self.num_envs, self.check_actions = env, scenario, num_envs, check_actions
        self.env_name = ENV_NAMES[env]
        self._env, self._fns, self._traces = _batched_functions(env, scenario)
        self.num_agents = int(self._env.num_agents)
        self.action_dim = int(self._env.action_spec.num_values[0])
        if env == "connector":
            self.obs_dim = 4 + 2 * (2 * CONNECTOR_FOV + 1) ** 2
        else:
            self.obs_dim = int(self._env.observation_spec.agents_view.shape[-1])
        self.state_dim = self.num_agents * self.obs_dim
        self.time_limit = int(self._env.time_limit)
        self._key = jax.random.PRNGKey(0 if seed is None else seed)  # the stream of reset(); JAX key 0 if None
        self._state = None  # the batched jumanji state; None until reset()
        self._stepped = None  # the batched state after the last step, before its resets (for drawing)

    @property
    def traces(self) -> dict:
        """How often each jitted function was traced (= compiled) for this task in this process."""
        return dict(self._traces)

    def compile_all(self) -> None:
        """Compile the reset of every padded size now (each otherwise compiles the first time an episode end
        needs it), e.g. before timing. Changes no state."""
        self._require_reset()
        for size in sorted({bucket_size(count, self.num_envs) for count in range(1, self.num_envs + 1)}):
            self._fns["reset_at"](self._state, np.zeros(size, dtype=np.int32))

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start B new episodes from the next key of the env's stream (`seed` restarts it at PRNGKey(seed)):
        env i from key i of split(that key, B)."""
        if seed is not None:
            self._key = self._jax.random.PRNGKey(seed)
        self._key, reset_key = self._jax.random.split(self._key)
        self._state, obs, avail, step_count = self._fns["reset_all"](self._jax.random.split(reset_key, self.num_envs))
        self._stepped = self._state
        self._obs, self._avail = np.array(obs), np.array(avail)
        self.step_count = np.array(step_count).astype(np.int64)
        self._return = np.zeros(self.num_envs, dtype=np.float64)
        self._length = np.zeros(self.num_envs, dtype=np.int64)
        return self._obs.copy()

    def state(self) -> np.ndarray:
        """(B, N * obs_dim): every agent's current observation, concatenated."""
        self._require_reset()
        return self._obs.reshape(self.num_envs, self.state_dim).copy()

    def step(self, actions):
        self._require_reset()
        actions = self._checked_actions(actions)
        state, obs, avail, reward, done, step_count = self._fns["step"](self._state, actions.astype(np.int32))
        obs, avail, reward, done = np.array(obs), np.array(avail), np.array(reward), np.array(done)
        step_count = np.array(step_count).astype(np.int64)
        self._stepped = state
        self._return += reward
        self._length += 1
        info = {
            "episode_return": np.where(done, self._return, 0.0).astype(np.float32),  # (B,)
            "episode_length": np.where(done, self._length, 0),  # (B,) int64
            "final_obs": obs.copy(),  # (B, N, obs_dim)
        }
        if done.any():
            ended = np.flatnonzero(done)
            index = np.full(bucket_size(len(ended), self.num_envs), ended[0], dtype=np.int32)
            index[: len(ended)] = ended
            state, fresh_obs, fresh_avail, fresh_count = self._fns["reset_at"](state, index)
            obs[ended] = np.array(fresh_obs)[: len(ended)]
            avail[ended] = np.array(fresh_avail)[: len(ended)]
            step_count[ended] = np.array(fresh_count)[: len(ended)]
            self._return[ended], self._length[ended] = 0.0, 0
        self._state, self._obs, self._avail, self.step_count = state, obs, avail, step_count
        rewards = np.repeat(reward[:, None], self.num_agents, axis=1)  # (B, N) the team reward, per agent
        return obs.copy(), rewards, done, info

    def get_state(self) -> dict:
        """Everything the next steps depend on, as numpy copies (plain arrays, picklable without jumanji): the
        leaves of the batched jumanji state (its keys included), the key of reset(), the running returns and
        lengths, and the current observations, masks and step counters."""
        self._require_reset()
        return {
            "leaves": [np.array(x) for x in self._jax.tree_util.tree_leaves(self._state)],
            "key": np.array(self._key),
            "return": self._return.copy(),
            "length": self._length.copy(),
            "obs": self._obs.copy(),
            "avail": self._avail.copy(),
            "step_count": self.step_count.copy(),
        }

    def set_state(self, state: dict) -> None:
        if self._state is None:
            self.reset()  # for the pytree's structure; every value is replaced below
        treedef = self._jax.tree_util.tree_structure(self._state)
        self._state = self._jax.tree_util.tree_unflatten(treedef, [self._jnp.asarray(x) for x in state["leaves"]])
        self._stepped = self._state
        self._key = self._jnp.asarray(state["key"])
        self._return, self._length = state["return"].copy(), state["length"].copy()
        self._obs, self._avail, self.step_count = state["obs"].copy(), state["avail"].copy(), state["step_count"].copy()

    # ------------------------------------------------------------------ drawing (enjoy.py's GIFs)
    def jumanji_state(self, i: int, before_reset: bool = False):
        """Env i's unbatched jumanji state now, or (`before_reset`) at the end of the last step, before an
        ended episode was reset: its final state."""
        self._require_reset()
        batched = self._stepped if before_reset else self._state
        return self._jax.tree.map(lambda x: x[i], batched)

    def save_animation(self, states: list, path: str, interval: int = 200) -> None:
        """A GIF of a list of `jumanji_state`s, drawn by jumanji's own viewer (matplotlib, Pillow)."""
        import matplotlib

        matplotlib.use("Agg")  # headless
        from matplotlib.animation import PillowWriter

        animation = self._env.animate(states, interval=interval)
        animation.save(path, writer=PillowWriter(fps=max(1, round(1000 / interval))))
        self._env.close()

    def close(self) -> None:
        self._state = self._stepped = None


class StateRecorder(EpisodeRecorder):
    """EpisodeRecorder over a JumanjiVec that also keeps env 0's jumanji states over the same episode
    (`states`: the first one, then one per step, the final state included): what enjoy.py animates with
    `save_animation`."""

    def reset(self, seed=None):
        obs = super().reset(seed)
        self.states = [self.envs.jumanji_state(0)]
        return obs

    def step(self, actions):
        recording = self._recording
        out = super().step(actions)
        if recording:
            self.states.append(self.envs.jumanji_state(0, before_reset=bool(out[2][0])))
        return out


def make_env(
    num_envs: int = 64, seed: int | None = None, env: str = "rware", scenario: str | None = None, **kwargs
) -> JumanjiVec:
    """B environments of one of the paper's jumanji tasks (a one-line ValueError lists the tasks if unknown);
    `scenario` None is the family's first task (DEFAULT_SCENARIOS). Extra keyword arguments go to JumanjiVec
    (cache_dir, check_actions)."""
    return JumanjiVec(env, scenario, num_envs, seed=seed, **kwargs)
