"""Batched MPE simple_spread in numpy, with mpe2's exact semantics.

mpe2's `simple_spread_v3` steps one environment at a time in Python, object by object: about 3.8k
env-steps/s with 3 agents and 480 with 10 on one CPU core (docs/benchmarks.md). On-policy training wants thousands of
env-steps per update, so the environment, not the network, would dominate the run time.
`SimpleSpreadVec` keeps B environments in arrays and steps them all with a few numpy ops (140-200x
faster at B=64, see benchmarks/bench_env.py). It follows mpe2 operation by operation in float64, so
observations and rewards are the same numbers as mpe2's (tests/test_mpe_env.py checks this).

`PettingZooMPE` puts the real mpe2 environments behind the same interface (`utils/__init__.py`), and
`make_env` picks one.

Both reproduce `simple_spread_v3.parallel_env(N, local_ratio, max_cycles, continuous_actions)` with
its other options at their defaults (no curriculum, no early termination, full observability).
"""

from __future__ import annotations

import copy

import numpy as np

from utils import VecEnv

# mpe2 constants (World, Scenario.make_world and SimpleEnv._set_action)
DT = 0.1
DAMPING = 0.25
CONTACT_FORCE = 100.0
CONTACT_MARGIN = 1e-3
AGENT_SIZE = 0.15
SENSITIVITY = 5.0  # action -> force; agent mass is 1, so force is acceleration
ACTION_DIM = 5  # [no-op, left, right, down, up]
# movement of each discrete action (mpe2 sets u = +-1 on one axis, then scales by SENSITIVITY)
DISCRETE_MOVES = np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])


def _check_args(num_envs: int, num_agents: int, local_ratio: float, max_cycles: int) -> None:
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if num_agents < 2:
        raise ValueError(f"num_agents must be >= 2 (simple_spread is about spreading out), got {num_agents}")
    if not 0.0 <= local_ratio <= 1.0:
        raise ValueError(f"local_ratio must be in [0, 1], got {local_ratio}")
    if max_cycles < 1:
        raise ValueError(f"max_cycles must be >= 1, got {max_cycles}")


def _check_actions(actions, num_envs: int, num_agents: int, continuous: bool) -> np.ndarray:
    """Validate a batch of actions and bring it to what mpe2's action-space wrappers pass on.

    Continuous actions become float32 (the dtype of mpe2's Box action space) clipped to [0, 1], as
    mpe2's ClipOutOfBoundsWrapper does. Discrete actions must be integers in [0, 5); mpe2 asserts."""
    actions = np.asarray(actions)
    if continuous:
        if actions.shape != (num_envs, num_agents, ACTION_DIM):
            raise ValueError(
                f"continuous actions must have shape {(num_envs, num_agents, ACTION_DIM)}, got {actions.shape}"
            )
        return np.clip(actions.astype(np.float32), 0.0, 1.0)
    if actions.shape != (num_envs, num_agents):
        raise ValueError(f"discrete actions must have shape {(num_envs, num_agents)}, got {actions.shape}")
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"discrete actions must be integers, got dtype {actions.dtype}")
    if actions.min() < 0 or actions.max() >= ACTION_DIM:
        raise ValueError(
            f"discrete actions must be in [0, {ACTION_DIM}), got values in [{actions.min()}, {actions.max()}]"
        )
    return actions


def _norm(v: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last axis (size 2), rounded exactly like mpe2's np.sqrt(np.sum(np.square(v)))."""
    return np.sqrt(np.square(v[..., 0]) + np.square(v[..., 1]))


class SimpleSpreadVec(VecEnv):
    """B simple_spread_v3 environments stepped at once (numpy)."""

    def __init__(
        self,
        num_envs: int,
        num_agents: int = 3,
        continuous_actions: bool = True,
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        seed: int | None = None,
    ):
        _check_args(num_envs, num_agents, local_ratio, max_cycles)
        self.num_envs, self.num_agents = num_envs, num_agents
        self.continuous_actions, self.local_ratio, self.max_cycles = continuous_actions, local_ratio, max_cycles
        # own velocity and position, landmarks, other agents, and the silent agents' zero comm channels
        self.obs_dim = 2 + 2 + 2 * num_agents + 2 * (num_agents - 1) + 2 * (num_agents - 1)  # = 6N
        self.state_dim = num_agents * self.obs_dim
        self.action_dim = ACTION_DIM
        self._rng = np.random.default_rng(seed)
        # others[i]: the agents other than i in index order, the order in which mpe2 lists them in
        # observations and adds up their collision forces
        self._others = np.array([[j for j in range(num_agents) if j != i] for i in range(num_agents)])  # (N, N-1)
        # float64 state, like mpe2; landmarks never move
        self.agent_pos = np.zeros((num_envs, num_agents, 2))  # (B, N, 2)
        self.agent_vel = np.zeros((num_envs, num_agents, 2))  # (B, N, 2)
        self.landmark_pos = np.zeros((num_envs, num_agents, 2))  # (B, N, 2)
        self._steps = np.zeros(num_envs, dtype=np.int64)  # (B,) steps into the current episode
        self._returns = np.zeros((num_envs, num_agents))  # (B, N) each agent's summed reward so far
        self._obs = None  # (B, N, obs_dim) float32, the current observations; None until reset()

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)  # the generator mpe2 builds from a seed
        self._reset_envs(np.ones(self.num_envs, dtype=bool))
        self._obs = self._observe(*self._relative_positions())
        return self._obs.copy()

    def _reset_envs(self, mask: np.ndarray) -> None:
        # mpe2 draws each agent's position, then each landmark's; drawing the same numbers in one
        # call makes a seeded 1-env reset identical to mpe2's reset(seed)
        pos = self._rng.uniform(-1.0, 1.0, (int(mask.sum()), 2 * self.num_agents, 2))  # (b, 2N, 2)
        self.agent_pos[mask] = pos[:, : self.num_agents]
        self.landmark_pos[mask] = pos[:, self.num_agents :]
        self.agent_vel[mask] = 0.0
        self._steps[mask] = 0
        self._returns[mask] = 0.0

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        force = self._action_force(actions)  # (B, N, 2)
        force = self._add_collision_forces(force)
        # mpe2's World.integrate_state: position first (with the old velocity), then damping, then force
        self.agent_pos += self.agent_vel * DT
        self.agent_vel = self.agent_vel * (1 - DAMPING)
        self.agent_vel += force * DT  # mass is 1

        to_landmarks, to_others = self._relative_positions()
        rewards = self._rewards(to_landmarks, to_others)  # (B, N) float64
        obs = self._observe(to_landmarks, to_others)
        self._steps += 1
        self._returns += rewards
        dones = self._steps >= self.max_cycles  # (B,) truncation; simple_spread never terminates early
        info = {
            "final_obs": obs.copy(),  # a copy: obs stays the current observation when not done
            "episode_return": np.where(dones, self._returns.mean(axis=1), 0.0).astype(np.float32),
            "episode_length": self._steps.copy(),
        }
        if dones.any():  # auto-reset: the caller gets the first observation of the next episode
            self._reset_envs(dones)
            obs = self._observe(*self._relative_positions())
        self._obs = obs
        return obs.copy(), rewards.astype(np.float32), dones, info

    def _action_force(self, actions) -> np.ndarray:
        actions = _check_actions(actions, self.num_envs, self.num_agents, self.continuous_actions)
        if self.continuous_actions:
            # mpe2: u[0] += a[2] - a[1]; u[1] += a[4] - a[3]; the differences are taken in float32
            u = np.stack([actions[..., 2] - actions[..., 1], actions[..., 4] - actions[..., 3]], axis=-1)
            return u.astype(np.float64) * SENSITIVITY  # (B, N, 2)
        return DISCRETE_MOVES[actions] * SENSITIVITY  # (B, N, 2)

    def _add_collision_forces(self, force: np.ndarray) -> np.ndarray:
        """Add mpe2's soft contact force between every pair of agents (landmarks do not collide)."""
        delta = self.agent_pos[:, :, None] - self.agent_pos[:, self._others]  # (B, N, N-1, 2) own minus other
        dist = _norm(delta)  # (B, N, N-1)
        # a softplus of the overlap: ~0 when apart, ~linear in the overlap when touching
        penetration = np.logaddexp(0, -(dist - 2 * AGENT_SIZE) / CONTACT_MARGIN) * CONTACT_MARGIN
        pair_force = CONTACT_FORCE * delta / dist[..., None] * penetration[..., None]  # (B, N, N-1, 2)
        # mpe2 adds the pair forces to the action force one pair at a time, in increasing order of the
        # other agent's index; adding them in that same order gives bit-identical sums
        force = force.copy()
        for k in range(self.num_agents - 1):
            force += pair_force[:, :, k]
        return force

    def _relative_positions(self) -> tuple[np.ndarray, np.ndarray]:
        to_landmarks = self.landmark_pos[:, None] - self.agent_pos[:, :, None]  # (B, N, N, 2) landmark minus own
        to_others = self.agent_pos[:, self._others] - self.agent_pos[:, :, None]  # (B, N, N-1, 2) other minus own
        return to_landmarks, to_others

    def _rewards(self, to_landmarks: np.ndarray, to_others: np.ndarray) -> np.ndarray:
        # global: minus the sum over landmarks of the distance to the nearest agent. mpe2 sums in a
        # Python loop; cumsum adds in the same order (np.sum's pairwise summation would round
        # differently from 8 landmarks on)
        nearest = _norm(to_landmarks).min(axis=1)  # (B, N landmarks)
        global_reward = -np.cumsum(nearest, axis=1)[:, -1]  # (B,)
        # local: -1 for each other agent this agent overlaps
        local_reward = -(_norm(to_others) < 2 * AGENT_SIZE).sum(axis=2).astype(np.float64)  # (B, N)
        return global_reward[:, None] * (1 - self.local_ratio) + local_reward * self.local_ratio  # (B, N)

    def _observe(self, to_landmarks: np.ndarray, to_others: np.ndarray) -> np.ndarray:
        B, N = self.num_envs, self.num_agents
        comm = np.zeros((B, N, 2 * (N - 1)))  # silent agents: mpe2 observes their zero comm state
        obs = np.concatenate(
            [self.agent_vel, self.agent_pos, to_landmarks.reshape(B, N, -1), to_others.reshape(B, N, -1), comm], axis=-1
        )
        return obs.astype(np.float32)  # (B, N, obs_dim)

    def state(self) -> np.ndarray:
        """(B, N * obs_dim) float32: every agent's current observation, concatenated in agent order (mpe2's state())."""
        if self._obs is None:
            raise RuntimeError("call reset() before state()")
        return self._obs.reshape(self.num_envs, self.state_dim).copy()

    def get_world(self) -> dict:
        """Copies of the physical state: agent_pos, agent_vel, landmark_pos, each (B, N, 2) float64."""
        return {
            "agent_pos": self.agent_pos.copy(),
            "agent_vel": self.agent_vel.copy(),
            "landmark_pos": self.landmark_pos.copy(),
        }

    def set_world(self, env_ids, agent_pos=None, agent_vel=None, landmark_pos=None) -> None:
        """Overwrite the physical state of the environments `env_ids` (each given array is (len(env_ids), N, 2)).

        Step counters and returns are left alone. Call reset() first."""
        if self._obs is None:
            raise RuntimeError("call reset() before set_world()")
        for name, value in (("agent_pos", agent_pos), ("agent_vel", agent_vel), ("landmark_pos", landmark_pos)):
            if value is not None:
                getattr(self, name)[env_ids] = value
        self._obs = self._observe(*self._relative_positions())

    # what get_state / set_state (utils.VecEnv) copy besides the random stream
    _state_names = ("agent_pos", "agent_vel", "landmark_pos", "_steps", "_returns", "_obs")

    def close(self) -> None:
        """Nothing to release; here so both backends can be used the same way."""


class PettingZooMPE(VecEnv):
    """The real mpe2 simple_spread_v3.parallel_env (one per env, stepped in a Python loop) behind the
    same interface as SimpleSpreadVec (same constructor args, attributes, reset/step/state/close,
    same auto-reset and info semantics), for users who want the reference implementation and for the
    equivalence test."""

    def __init__(
        self,
        num_envs: int,
        num_agents: int = 3,
        continuous_actions: bool = True,
        local_ratio: float = 0.5,
        max_cycles: int = 25,
        seed: int | None = None,
    ):
        from mpe2 import simple_spread_v3  # only this backend needs mpe2 (and pygame, which it imports)

        _check_args(num_envs, num_agents, local_ratio, max_cycles)
        self.num_envs, self.num_agents = num_envs, num_agents
        self.continuous_actions, self.local_ratio, self.max_cycles = continuous_actions, local_ratio, max_cycles
        self.obs_dim = 6 * num_agents
        self.state_dim = num_agents * self.obs_dim
        self.action_dim = ACTION_DIM
        self.envs = [
            simple_spread_v3.parallel_env(
                N=num_agents, local_ratio=local_ratio, max_cycles=max_cycles, continuous_actions=continuous_actions
            )
            for _ in range(num_envs)
        ]
        self.agents = self.envs[0].possible_agents
        # applied at the first reset(), so that with one env both backends draw the same episodes
        self._seed = seed
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._returns = np.zeros((num_envs, num_agents))

    def _stack(self, per_agent: dict) -> np.ndarray:
        return np.stack([per_agent[a] for a in self.agents])

    def reset(self, seed: int | None = None) -> np.ndarray:
        seed = self._seed if seed is None else seed
        self._seed = None
        self._steps[:] = 0
        self._returns[:] = 0.0
        # env i gets seed + i; without a seed each env continues its own generator
        return np.stack(
            [self._stack(env.reset(seed=None if seed is None else seed + i)[0]) for i, env in enumerate(self.envs)]
        )  # (B, N, obs_dim) float32

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        actions = _check_actions(actions, self.num_envs, self.num_agents, self.continuous_actions)
        B, N = self.num_envs, self.num_agents
        obs = np.zeros((B, N, self.obs_dim), dtype=np.float32)
        final_obs = np.zeros((B, N, self.obs_dim), dtype=np.float32)
        rewards = np.zeros((B, N))
        dones = np.zeros(B, dtype=bool)
        for i, env in enumerate(self.envs):
            o, r, terminations, truncations, _ = env.step({a: actions[i, j] for j, a in enumerate(self.agents)})
            final_obs[i] = self._stack(o)
            rewards[i] = [r[a] for a in self.agents]
            dones[i] = all(terminations.values()) or all(truncations.values())
            obs[i] = self._stack(env.reset()[0]) if dones[i] else final_obs[i]
        self._steps += 1
        self._returns += rewards
        info = {
            "final_obs": final_obs,
            "episode_return": np.where(dones, self._returns.mean(axis=1), 0.0).astype(np.float32),
            "episode_length": self._steps.copy(),
        }
        self._steps[dones] = 0
        self._returns[dones] = 0.0
        return obs, rewards.astype(np.float32), dones, info

    def state(self) -> np.ndarray:
        return np.stack([env.state() for env in self.envs])  # (B, N * obs_dim) float32

    @staticmethod
    def _layers(env):
        """The parallel env and every wrapper below it down to mpe2's raw env (each holds some state)."""
        layers = [env]
        while hasattr(layers[-1], "aec_env") or "env" in vars(layers[-1]):
            layers.append(getattr(layers[-1], "aec_env", None) or vars(layers[-1])["env"])
        return layers

    def get_state(self) -> dict:
        """Copies of every layer of the mpe2 envs (their worlds, random generators and bookkeeping),
        without the links between the layers and the renderer's objects, and the episode counters."""
        skip = ("env", "aec_env", "screen", "game_font", "viewer")
        layers = [
            [{k: v for k, v in vars(layer).items() if k not in skip} for layer in self._layers(env)]
            for env in self.envs
        ]
        return copy.deepcopy({"layers": layers, "seed": self._seed, "steps": self._steps, "returns": self._returns})

    def set_state(self, state: dict) -> None:
        state = copy.deepcopy(state)
        for env, saved in zip(self.envs, state["layers"]):
            for layer, fields in zip(self._layers(env), saved):
                vars(layer).update(fields)
        self._seed, self._steps, self._returns = state["seed"], state["steps"], state["returns"]

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_env(
    num_envs: int,
    seed: int | None = None,
    backend: str = "numpy",
    num_agents: int = 3,
    continuous_actions: bool = True,
    local_ratio: float = 0.5,
    max_cycles: int = 25,
):
    """B simple_spread environments: backend 'numpy' -> SimpleSpreadVec, 'pettingzoo' -> PettingZooMPE."""
    backends = {"numpy": SimpleSpreadVec, "pettingzoo": PettingZooMPE}
    if backend not in backends:
        raise ValueError(f"unknown env backend {backend!r}; choose one of {sorted(backends)}")
    return backends[backend](
        num_envs,
        num_agents=num_agents,
        continuous_actions=continuous_actions,
        local_ratio=local_ratio,
        max_cycles=max_cycles,
        seed=seed,
    )
