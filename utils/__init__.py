"""Environment wrappers shared by the training scripts, all behind one interface.

Every module here (`utils.mpe`, `utils.coordsum`, `utils.smax`) has a `make_env(num_envs, seed=None,
**task)` that returns a batch of B environments stepped together, with this interface
(tests/test_env_interface.py runs every wrapper through it):

attributes
    num_envs (B), num_agents (N), obs_dim, state_dim, action_dim (A: the number of discrete actions,
    or the size of a continuous action), continuous_actions (bool), has_wins (bool: the env reports
    won episodes, SMAX).
reset(seed=None) -> obs
    obs (B, N, obs_dim) float32. `seed` restarts the env's own random stream (built with seed=None,
    MPE and CoordSum draw fresh randomness, SMAX uses JAX key 0).
step(actions) -> obs, rewards, dones, info
    actions (B, N) integers, or (B, N, A) floats in [0, 1] for continuous actions. rewards (B, N)
    float32; dones (B,) bool. An env whose episode ended is reset at once: `obs` is then the first
    observation of its next episode and `info["final_obs"]` the last of the old one. info holds
    `episode_return` (B,) float32 (the mean over agents of their summed rewards; valid where done),
    `episode_length` (B,) int64 (the finished episode's length; valid where done, like `episode_return`),
    `final_obs` (B, N, obs_dim) and, where `has_wins`, `won` (B,) bool.
avail_actions() -> (B, N, A) bool
    the actions each agent may take now (all True where the env has no action masks).
state() -> (B, state_dim) float32
    the global state of the current step.
get_state() -> dict
    a copy of everything the env's next outputs depend on (its random stream: numpy Generator or JAX
    key; its episodes: positions, targets, step counters, running returns, ...), picklable with
    torch.save. What the training scripts' checkpoints hold (docs/usage.md, "Long runs").
set_state(state)
    restores it: on an env built with the same arguments, set_state(other.get_state()) makes every
    later reset()/step() give what `other`'s would.
close()

Everything is numpy; the scripts move it to their torch device.

`check_requirements(family, what)`: the light core install (requirements.txt) has no JAX; SMAX, jumanji's
environments and benchmark.py's Ray each come with their own requirements file, and a script that needs one
checks for it before it builds anything.
"""

import copy
import importlib.util

import numpy as np

# The optional families of requirements (requirements/requirements-<family>.txt, each installs the core too):
# the top-level packages each one brings that the code here imports
REQUIREMENTS = {"smax": ("jax", "jaxmarl", "flax"), "jumanji": ("jax", "jumanji"), "ray": ("ray",)}
ENV_FAMILY = {"smax": "smax", "rware": "jumanji", "lbf": "jumanji", "connector": "jumanji"}


def check_requirements(family: str, what: str) -> None:
    """Raise ValueError, with the install command, if a package of `family` (REQUIREMENTS) is missing; `what`
    is who needs it (`magpo_smax.py`, `--env lbf`). Looks the packages up without importing them."""
    missing = []
    for name in REQUIREMENTS[family]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or blocked package counts as missing
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise ValueError(
            f"{what} needs {', '.join(missing)}, not installed here: "
            f"pip install -r requirements/requirements-{family}.txt"
        )


class VecEnv:
    """What every wrapper shares: the default action mask and the random-policy baseline."""

    continuous_actions = False
    has_wins = False

    def avail_actions(self) -> np.ndarray:
        """All True: this env has no action masks."""
        return np.ones((self.num_envs, self.num_agents, self.action_dim), dtype=bool)

    # get_state / set_state for the numpy wrappers: their Generator `_rng` and the arrays named in
    # `_state_names`, as copies (SMAX and the PettingZoo backend define their own)
    _state_names = ()

    def get_state(self) -> dict:
        """Everything the next steps depend on, as copies: the random stream and the named arrays."""
        return {
            "rng": copy.deepcopy(self._rng.bit_generator.state),
            **{name: copy.deepcopy(getattr(self, name)) for name in self._state_names},
        }

    def set_state(self, state: dict) -> None:
        state = copy.deepcopy(state)
        self._rng.bit_generator.state = state.pop("rng")
        for name, value in state.items():
            setattr(self, name, value)


class JaxVecEnv(VecEnv):
    """What the JAX wrappers (utils/smax.py, utils/jumanji.py) share: they hold a batched JAX state
    (`_state`, None before reset and after close) and the current action masks (`_avail`), and check the
    actions they are given when `check_actions` is set."""

    def avail_actions(self) -> np.ndarray:
        """Legal actions (B, N, A) bool of the current step: the env's own action masks."""
        self._require_reset()
        return self._avail.copy()

    def _require_reset(self) -> None:
        if self._state is None:
            raise RuntimeError("call reset() before using the environments")

    def _checked_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, self.num_agents):
            raise ValueError(f"actions must have shape {(self.num_envs, self.num_agents)}, got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        if self.check_actions:
            if actions.min() < 0 or actions.max() >= self.action_dim:
                raise ValueError(
                    f"actions must be in [0, {self.action_dim}), got values in [{actions.min()}, {actions.max()}]"
                )
            legal = np.take_along_axis(self._avail, actions[..., None], axis=-1)[..., 0]
            if not legal.all():
                env, agent = np.argwhere(~legal)[0]
                raise ValueError(
                    f"unavailable action {actions[env, agent]} for agent {agent} in env {env} "
                    f"(legal: {np.flatnonzero(self._avail[env, agent]).tolist()})"
                )
        return actions


def random_actions(envs, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random actions for every env and agent: uniform in [0, 1]^A when continuous, else
    uniform over each agent's available actions."""
    if envs.continuous_actions:
        return rng.uniform(0.0, 1.0, (envs.num_envs, envs.num_agents, envs.action_dim))
    avail = envs.avail_actions()
    # argmax of i.i.d. uniforms over the available actions picks each of them with equal probability
    return np.where(avail, rng.random(avail.shape), -1.0).argmax(axis=-1)


def random_policy_score(envs, seed: int) -> tuple[float, float | None]:
    """Mean return and win rate (None where the env has no wins) of uniformly random actions over one
    episode per env: the floor to beat. Every training script calls this on its evaluation envs, so
    the same seed gives the same number in MAGPO and MAPPO runs."""
    rng = np.random.default_rng(seed)
    envs.reset()
    finished = np.zeros(envs.num_envs, dtype=bool)
    episode_return, won = np.zeros(envs.num_envs), np.zeros(envs.num_envs, dtype=bool)
    while not finished.all():
        _, _, dones, info = envs.step(random_actions(envs, rng))
        newly = dones & ~finished
        episode_return[newly] = info["episode_return"][newly]
        if envs.has_wins:
            won[newly] = info["won"][newly]
        finished |= dones
    return float(episode_return.mean()), (float(won.mean()) if envs.has_wins else None)


class EpisodeRecorder:
    """Wraps a VecEnv and keeps env 0's observations from each reset() to the end of its first
    episode, the final observation included (`episode`, a list of (N, obs_dim) arrays): what
    `--capture-video` draws. Everything else passes through to the wrapped env."""

    def __init__(self, envs):
        self.envs, self.episode, self._recording = envs, [], False

    def __getattr__(self, name):
        if name == "envs":  # not set yet (e.g. during copy.copy): no endless recursion
            raise AttributeError(name)
        return getattr(self.envs, name)

    def reset(self, seed=None):
        obs = self.envs.reset(seed)
        self.episode, self._recording = [obs[0].copy()], True
        return obs

    def step(self, actions):
        obs, rewards, dones, info = self.envs.step(actions)
        if self._recording:
            self.episode.append(info["final_obs"][0].copy() if dones[0] else obs[0].copy())
            self._recording = not dones[0]
        return obs, rewards, dones, info
