"""Batched SMAX (JaxMARL's StarCraft-like micromanagement, heuristic enemies) behind the common interface.

SMAX lives in JAX (`jaxmarl`, PyPI). `SMAXVec` runs B copies of `HeuristicEnemySMAX` on one map
with a single jitted, vmapped `reset` and a single jitted, vmapped `step` (auto-reset inside),
and hands everything back as numpy arrays, with the interface of `utils/__init__.py` that every
wrapper has (B = num_envs, N = num_agents = number of allies, A = action_dim):

    envs = make_env(num_envs=64, seed=1, map_name="2s3z")    # or SMAXVec("2s3z", 64, seed=1)
    envs.num_envs, envs.num_agents, envs.obs_dim, envs.state_dim, envs.action_dim
    obs = envs.reset(seed=None)                      # (B, N, obs_dim) float32
    envs.state()                                     # (B, state_dim) float32, the world state
    envs.avail_actions()                             # (B, N, A) bool, legal actions now
    obs, rewards, dones, info = envs.step(actions)   # actions (B, N) integers
    envs.close()

- `rewards` (B, N) float32: the team reward (JaxMARL gives every ally the same one: the enemy
  team's health lost this step as a fraction, divided by the number of enemies, plus 1 on a win),
  repeated for every agent, as `SimpleSpreadVec` returns per-agent rewards.
- `dones` (B,) bool: the episode ended at this step (win, loss, draw or the time limit).
  JaxMARL tests the limit before it counts the step, so an episode lasts at most
  `max_episode_length` = `max_steps` + 1 = 101 steps (`max_steps` is JaxMARL's, 100). Auto-reset: where done, `obs`, `state()` and `avail_actions()`
  already belong to the first step of the next episode.
- `info`, each (B,), valid where `dones` (0 elsewhere):
  `episode_return` float32 (sum of the team reward), `episode_length` int64, `won` bool
  (the final team reward is >= 1, exactly as JaxMARL's SMAXLogWrapper counts a win), and
  `truncated` bool (ended by the time limit with both teams alive); plus `final_obs`
  (B, N, obs_dim) and `final_state` (B, state_dim), the last observation and world state of the
  episode that just ended (for bootstrapping or drawing; equal to `obs` / `state()` where not done).
- `step` checks the actions: shape (B, N), integer, in [0, A) and available (an unavailable action
  raises ValueError rather than being silently ignored by SMAX). SMAX always allows action 4 (stop),
  the only legal action of a dead agent; dead agents observe zeros.

Observation and action layout (JaxMARL's `unit_list` observations and discrete actions):
obs = 13 features of each other ally, then of each enemy, then 10 own features; actions = 4 moves,
stop, then one "attack enemy k" per enemy (A = 5 + num_enemies); world state = 10 features per unit
(allies, then enemies) + the team and the unit type of every unit (state_dim = 12 x units).

JAX details (measured on the project's 2-core CPU, see docs/benchmarks.md):
- `import jaxmarl` (~2-3 s) happens on the first environment built, not on `import utils.smax`;
  it prints to stdout and, through its brax probe, resets sys.stdout/sys.stderr to the process's
  original streams (which would break pytest's capture and any caller's redirection). Both are
  undone here.
- JAX runs on the CPU, with the persistent compilation cache below (`utils/jax_cache.py`, shared with
  `utils/jumanji.py`): the networks are torch's.
- The reset state has weakly typed fields; after a step they are strongly typed, so the second
  call of `step` would trace and compile again. The reset state is cast to strong types, and
  `step` compiles once per (map, B) per process (`SMAXVec.step_traces` counts it; tested).
- The persistent compilation cache (default `~/.cache/magpo_jax`, or `$XDG_CACHE_HOME/magpo_jax`;
  the `MAGPO_JAX_CACHE_DIR` environment variable or `cache_dir=` overrides it, an empty string
  turns it off) makes the 8-12 s first compile of a map a ~2 s load in later processes.
- The jitted functions are shared by every SMAXVec of the same map and keyword arguments, so an
  evaluation batch of the same size as the training batch compiles nothing more.
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from utils import JaxVecEnv
from utils.jax_cache import import_jax

# The paper's ten SMAX maps (docs/algorithm.md §14); any map registered in JaxMARL is accepted.
PAPER_MAPS = (
    "2s3z",
    "3s5z",
    "5m_vs_6m",
    "10m_vs_11m",
    "27m_vs_30m",
    "3s5z_vs_3s6z",
    "3s_vs_5z",
    "6h_vs_8z",
    "smacv2_5_units",
    "smacv2_10_units",
)
_configured = {}


def import_jaxmarl(cache_dir: str | None = None):
    """Import jax and jaxmarl once, quietly, with the streams restored and the cache configured.

    Returns the `jaxmarl.environments.smax` module. `cache_dir` only takes effect on the first
    call in a process (JAX initialises its cache once)."""
    if "smax" in _configured:
        return _configured["smax"]
    import_jax(cache_dir)  # on the CPU, with the persistent cache (utils/jax_cache.py)
    stdout, stderr, original_stdout = sys.stdout, sys.stderr, sys.__stdout__
    try:
        with open(os.devnull, "w") as devnull:
            # jaxmarl prints "Importing submoduled environments..." after its brax probe has reset
            # sys.stdout to sys.__stdout__, so both are pointed at devnull for the import.
            sys.stdout = sys.__stdout__ = devnull
            from jaxmarl.environments import smax
    finally:
        sys.__stdout__ = original_stdout
        sys.stdout, sys.stderr = stdout, stderr  # the brax probe reset both to sys.__std*__
    _configured.update(smax=smax)
    return smax


def registered_maps() -> list[str]:
    """Every SMAX map name JaxMARL knows (imports jaxmarl)."""
    return sorted(import_jaxmarl().smax_env.MAP_NAME_TO_SCENARIO)


# JaxMARL 0.2.0's map registry (`smax_env.MAP_NAME_TO_SCENARIO`), so that a map name is checked without
# importing jaxmarl (seconds): tests/test_smax_env.py checks that it is still the registry.
KNOWN_MAPS = (
    "10m_vs_11m", "25m", "27m_vs_30m", "2s3z", "3m", "3s5z", "3s5z_vs_3s6z", "3s_vs_5z", "5m_vs_6m", "6h_vs_8z",
    "8m", "smacv2_10_units", "smacv2_20_units", "smacv2_5_units",
)  # fmt: skip


def check_map_name(map_name: str) -> None:
    """Raise ValueError listing the registered maps if `map_name` is not one of them (no JAX import)."""
    if map_name not in KNOWN_MAPS:
        raise ValueError(f"unknown SMAX map {map_name!r}; registered maps: {', '.join(KNOWN_MAPS)}")


@functools.lru_cache(maxsize=None)
def _batched_functions(map_name: str, env_kwargs: tuple):
    """Build the env and its jitted, vmapped reset and step, once per (map, kwargs) per process.

    Returns (env, reset_fn, step_fn, trace_counter). Shapes, per env: obs (N, obs_dim), world
    state (S,), avail (N, A); the jitted functions take and return them with a leading B axis.
    """
    smax = import_jaxmarl()
    import jax
    import jax.numpy as jnp

    env = smax.HeuristicEnemySMAX(scenario=smax.map_name_to_scenario(map_name), **dict(env_kwargs))
    agents = env.agents  # the allies, in index order
    traces = {"reset": 0, "step": 0}

    def strong(tree):
        # jnp.asarray with an explicit dtype drops the weak type that reset's Python scalars carry
        return jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), tree)

    def observe(obs_dict, state):
        obs = jnp.stack([obs_dict[a] for a in agents])  # (N, obs_dim)
        avail = env.get_avail_actions(state)
        avail = jnp.stack([avail[a] for a in agents]).astype(jnp.bool_)  # (N, A), uint8 in JaxMARL
        return obs, obs_dict["world_state"], avail

    def reset_one(key):
        obs_dict, state = env.reset(key)
        state = strong(state)
        return (state, *observe(obs_dict, state))

    def step_one(key, state, actions, running_return, running_length):
        step_key, reset_key = jax.random.split(key)
        obs_dict, next_state, rewards, dones, _ = env.step_env(
            step_key, state, {a: actions[i] for i, a in enumerate(agents)}
        )
        obs, world_state, avail = observe(obs_dict, next_state)
        reward = rewards[agents[0]]  # the team reward: every ally gets the same
        done = dones["__all__"]
        episode_return, episode_length = running_return + reward, running_length + 1
        won = reward >= 1.0  # SMAXLogWrapper's win: the final step carries the won-battle bonus
        allies_alive = jnp.any(next_state.state.unit_alive[: env.num_allies])
        enemies_alive = jnp.any(next_state.state.unit_alive[env.num_allies :])
        truncated = allies_alive & enemies_alive
        # Auto-reset: where done, carry on from a fresh episode (reset is computed and selected).
        reset_state, reset_obs, reset_world_state, reset_avail = reset_one(reset_key)
        pick = lambda fresh, old: jnp.where(done, fresh, old)  # noqa: E731
        new_state = jax.tree.map(pick, reset_state, strong(next_state))
        out = (
            pick(reset_obs, obs),
            pick(reset_world_state, world_state),
            pick(reset_avail, avail),
            reward,
            done,
            jnp.where(done, episode_return, 0.0),
            jnp.where(done, episode_length, 0),
            done & won,
            done & truncated,
            obs,
            world_state,
        )
        running = (jnp.where(done, 0.0, episode_return), jnp.where(done, 0, episode_length))
        return new_state, running, out

    def reset_batch(key, num_envs):
        traces["reset"] += 1  # Python side effect: runs once per trace, i.e. per compile
        return jax.vmap(reset_one)(jax.random.split(key, num_envs))

    def step_batch(key, state, actions, running_return, running_length):
        traces["step"] += 1
        key, step_key = jax.random.split(key)
        keys = jax.random.split(step_key, actions.shape[0])
        new_state, running, out = jax.vmap(step_one)(keys, state, actions, running_return, running_length)
        return key, new_state, running, out

    reset_fn = jax.jit(reset_batch, static_argnums=(1,))
    step_fn = jax.jit(step_batch)
    return env, reset_fn, step_fn, traces


def _to_numpy(x) -> np.ndarray:
    """A JAX CPU array -> a numpy array that owns its memory (a copy: microseconds at these sizes)."""
    return np.array(x)


class SMAXVec(JaxVecEnv):
    """B SMAX episodes on one map, heuristic enemies, stepped at once (see the module docstring)."""

    has_wins = True

    def __init__(
        self,
        map_name: str = "2s3z",
        num_envs: int = 64,
        seed: int | None = None,
        cache_dir: str | None = None,
        check_actions: bool = True,
        **env_kwargs,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        import_jaxmarl(cache_dir)
        check_map_name(map_name)
        import jax
        import jax.numpy as jnp

        self._jax, self._jnp = jax, jnp
        self.map_name, self.num_envs, self.check_actions = map_name, num_envs, check_actions
        self._env, self._reset_fn, self._step_fn, self._traces = _batched_functions(
            map_name, tuple(sorted(env_kwargs.items()))
        )
        env = self._env
        self.num_agents = env.num_allies
        self.num_enemies = env.num_enemies
        self.obs_dim = env.observation_space(env.agents[0]).shape[0]
        self.state_dim = env.state_size
        self.action_dim = env.action_space(env.agents[0]).n
        self.max_steps = env.max_steps
        self.max_episode_length = env.max_steps + 1  # JaxMARL's is_terminal sees the step count before the step
        self._key = jax.random.PRNGKey(0 if seed is None else seed)
        self._state = None  # the batched JAX state; None until reset()

    @property
    def step_traces(self) -> int:
        """How often `step` was traced (= compiled) for this map in this process."""
        return self._traces["step"]

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._key = self._jax.random.PRNGKey(seed)
        self._key, reset_key = self._jax.random.split(self._key)
        self._state, obs, world_state, avail = self._reset_fn(reset_key, self.num_envs)
        self._running = (
            self._jnp.zeros(self.num_envs, self._jnp.float32),
            self._jnp.zeros(self.num_envs, self._jnp.int32),
        )
        self._obs, self._world_state, self._avail = _to_numpy(obs), _to_numpy(world_state), _to_numpy(avail)
        return self._obs.copy()

    def state(self) -> np.ndarray:
        """The world state (B, state_dim) of the current step."""
        self._require_reset()
        return self._world_state.copy()

    def step(self, actions):
        self._require_reset()
        actions = self._checked_actions(actions)
        # int32 numpy straight into the compiled step: ~1 us, where jnp.asarray costs 50-75 us a call
        self._key, self._state, self._running, out = self._step_fn(
            self._key, self._state, actions.astype(np.int32), *self._running
        )
        (
            obs,
            world_state,
            avail,
            reward,
            done,
            episode_return,
            episode_length,
            won,
            truncated,
            final_obs,
            final_state,
        ) = map(_to_numpy, out)
        self._obs, self._world_state, self._avail = obs, world_state, avail
        info = {
            "episode_return": episode_return,  # (B,) float32
            "episode_length": episode_length.astype(np.int64),  # (B,)
            "won": won,  # (B,) bool
            "truncated": truncated,  # (B,) bool
            "final_obs": final_obs,  # (B, N, obs_dim)
            "final_state": final_state,  # (B, state_dim)
        }
        rewards = np.repeat(reward[:, None], self.num_agents, axis=1)  # (B, N) team reward
        return obs.copy(), rewards, done, info

    def get_state(self) -> dict:
        """Everything the next steps depend on, as numpy copies (plain arrays, picklable without
        JaxMARL): the JAX key, the leaves of the batched JAX state pytree, the running returns and
        lengths, and the current observations, world states and masks."""
        self._require_reset()
        leaves = self._jax.tree_util.tree_leaves((self._key, self._state, self._running))
        return {
            "leaves": [np.array(x) for x in leaves],
            "obs": self._obs.copy(),
            "world_state": self._world_state.copy(),
            "avail": self._avail.copy(),
        }

    def set_state(self, state: dict) -> None:
        if self._state is None:
            self.reset()  # for the pytree's structure; every value is replaced below
        treedef = self._jax.tree_util.tree_structure((self._key, self._state, self._running))
        leaves = [self._jnp.asarray(x) for x in state["leaves"]]
        self._key, self._state, self._running = self._jax.tree_util.tree_unflatten(treedef, leaves)
        self._obs, self._world_state, self._avail = (
            state["obs"].copy(),
            state["world_state"].copy(),
            state["avail"].copy(),
        )

    def close(self) -> None:
        self._state = None


def make_env(num_envs: int = 64, seed: int | None = None, map_name: str = "2s3z", **kwargs) -> SMAXVec:
    """B SMAX environments on `map_name` with heuristic enemies (a ValueError lists the maps if unknown).

    Extra keyword arguments go to SMAXVec (cache_dir, check_actions) or JaxMARL's
    HeuristicEnemySMAX (e.g. enemy_shoots=False, attack_mode="random", max_steps=...)."""
    return SMAXVec(map_name, num_envs, seed=seed, **kwargs)
