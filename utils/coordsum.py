"""Batched CoordSum in numpy: the MAGPO paper's coordination benchmark (arXiv 2507.18059).

The official environment is a JAX/Jumanji class in the authors' Mava fork (`mava/coordsum/env.py` of
liyheng/MAGPO, wrapped by `CoordSumWrapper` in `mava/utils/make_env.py`). `CoordSumVec` keeps B
environments in arrays and reproduces its semantics step for step (read from that code, not inferred):

* N agents, K actions each (values 0..K-1), episodes of `max_steps` (official `time_limit`, 100) steps.
* At reset a target sequence of `max_steps + 1` values is drawn uniformly from {0..maxval-1}; the extra
  value is what the observation after the last step (`info["final_obs"]`) shows, as in the official env.
* Observation: every agent sees the same raw current target as a single number (official `agents_view`,
  shape (N, 1), int32; here float32, not normalised, not one-hot). So `obs_dim = 1`. The official
  observation also carries the step count separately, which Mava's networks do not read; it is left out.
  `obs_encoding="onehot"` gives a one-hot of the target over maxval values instead (`obs_dim = maxval`):
  the target is a category, and the training scripts use the one-hot so that a small MLP can map each
  target to its own action without first having to carve a scalar input into 30-100 intervals.
* State: the agents' observations concatenated (official `global_state`), so `state_dim = N * obs_dim`.
* Reward (shared, the same number for every agent): 0 if the actions do not sum to the target;
  otherwise 1 if agent 0's action equals the "guess", else 2. The guess is the action agent 0 has
  played most often *in this episode* under the current target's history row (argmax of the counts,
  ties -> lowest action, empty history -> 0).
* History update: after the reward is computed, agent 0's action is appended to the current target's
  row on *every* step, whether or not the sum was hit. The history is cleared at reset.
* Rows (`history="official"`): the official record has only K rows, and JAX clamps out-of-range
  indices (both the gather `record[target]` and `dynamic_update_slice`), so every target >= K-1 reads
  and writes row K-1: those targets share one history. `history="full"` gives every target value its
  own row (maxval rows), the evidently intended rule.

The history is kept as counts, (B, rows, K), which is all the argmax needs.
"""

from __future__ import annotations

import numpy as np

from utils import VecEnv

SCENARIOS = {"3x10": (3, 10, 30), "3x30": (3, 30, 50), "5x20": (5, 20, 80), "8x15": (8, 15, 100)}  # N, K, maxval
HISTORY_MODES = ("official", "full")
OBS_ENCODINGS = ("raw", "onehot")


class CoordSumVec(VecEnv):
    """B CoordSum environments stepped at once (numpy), with the common interface of `utils/__init__.py`."""

    def __init__(
        self,
        num_envs: int,
        scenario: str = "3x10",
        history: str = "official",
        max_steps: int = 100,
        seed: int | None = None,
        obs_encoding: str = "raw",
    ):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown CoordSum scenario {scenario!r}; choose one of {sorted(SCENARIOS)}")
        if history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {history!r}")
        if obs_encoding not in OBS_ENCODINGS:
            raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {obs_encoding!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
        self.num_envs = int(num_envs)
        self.scenario, self.history = scenario, history
        self.num_agents, self.action_dim, self.maxval = SCENARIOS[scenario]
        self.max_steps = int(max_steps)
        self.obs_encoding = obs_encoding
        self.obs_dim = 1 if obs_encoding == "raw" else self.maxval
        self.state_dim = self.num_agents * self.obs_dim
        self.num_rows = self.action_dim if history == "official" else self.maxval
        self._rng = np.random.default_rng(seed)
        B = self.num_envs
        self._targets = np.zeros((B, self.max_steps + 1), dtype=np.int64)  # (B, T+1)
        self.history_counts = np.zeros((B, self.num_rows, self.action_dim), dtype=np.int64)  # (B, rows, K)
        self._steps = np.zeros(B, dtype=np.int64)  # (B,) steps into the current episode
        self._returns = np.zeros(B, dtype=np.float64)  # (B,) team return so far
        self._arange = np.arange(B)
        self._obs = None  # (B, N, obs_dim) float32; None until reset()

    # ---- helpers that scripted policies and tests may use (a learner sees only obs) ----
    def current_target(self) -> np.ndarray:
        """(B,) int64: the target of the current step."""
        return self._targets[self._arange, self._steps].copy()

    def history_row(self, targets) -> np.ndarray:
        """The history row a target value uses: min(target, rows-1) (the JAX clamp in "official" mode)."""
        return np.minimum(np.asarray(targets), self.num_rows - 1)

    def guess(self) -> np.ndarray:
        """(B,) int64: agent 0's most frequent past action for the current target's row (ties -> lowest, empty -> 0)."""
        rows = self.history_row(self.current_target())
        return self.history_counts[self._arange, rows].argmax(axis=1)

    def set_targets(self, targets) -> np.ndarray:
        """Overwrite the current episodes' target sequences (for tests and hand-built episodes).

        `targets` is (B, max_steps + 1) or (B, max_steps) (then the final, observation-only target is
        set to 0); values in [0, maxval). Step counters, returns and histories are left alone. Call
        reset() first. Returns the current observations, which show the new targets."""
        if self._obs is None:
            raise RuntimeError("call reset() before set_targets()")
        targets = np.asarray(targets)
        T = self.max_steps
        if targets.ndim != 2 or targets.shape[0] != self.num_envs or targets.shape[1] not in (T, T + 1):
            raise ValueError(
                f"targets must have shape ({self.num_envs}, {T}) or ({self.num_envs}, {T + 1}), got {targets.shape}"
            )
        if not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0 or targets.max() >= self.maxval:
            raise ValueError(f"targets must be integers in [0, {self.maxval})")
        self._targets[:] = 0
        self._targets[:, : targets.shape[1]] = targets
        self._obs = self._observe()
        return self._obs.copy()

    # ---- environment interface ----
    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._reset_envs(np.ones(self.num_envs, dtype=bool))
        self._obs = self._observe()
        return self._obs.copy()

    def _reset_envs(self, mask: np.ndarray) -> None:
        self._targets[mask] = self._rng.integers(0, self.maxval, (int(mask.sum()), self.max_steps + 1))
        self.history_counts[mask] = 0
        self._steps[mask] = 0
        self._returns[mask] = 0.0

    def _observe(self) -> np.ndarray:
        target = self._targets[self._arange, self._steps]  # (B,)
        if self.obs_encoding == "raw":
            view = target.astype(np.float32)[:, None]  # (B, 1)
        else:
            view = np.eye(self.maxval, dtype=np.float32)[target]  # (B, maxval)
        return np.repeat(view[:, None, :], self.num_agents, axis=1)  # (B, N, obs_dim)

    def _check_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, self.num_agents):
            raise ValueError(f"actions must have shape {(self.num_envs, self.num_agents)}, got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        if actions.min() < 0 or actions.max() >= self.action_dim:
            raise ValueError(
                f"actions must be in [0, {self.action_dim}), got values in [{actions.min()}, {actions.max()}]"
            )
        return actions.astype(np.int64)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        actions = self._check_actions(actions)
        ar = self._arange
        target = self._targets[ar, self._steps]  # (B,)
        rows = self.history_row(target)  # (B,)
        guess = self.history_counts[ar, rows].argmax(axis=1)  # (B,) ties -> lowest, all-zero -> 0
        a0 = actions[:, 0]
        match = actions.sum(axis=1) == target
        reward = np.where(match, np.where(a0 == guess, 1.0, 2.0), 0.0)  # (B,)
        self.history_counts[ar, rows, a0] += 1  # after the reward, on every step (official)

        self._steps += 1
        self._returns += reward
        dones = self._steps >= self.max_steps
        obs = self._observe()  # shows target[T] after the last step, like the official env
        info = {
            "final_obs": obs.copy(),
            "episode_return": np.where(dones, self._returns, 0.0).astype(np.float32),
            "episode_length": self._steps.copy(),
        }
        if dones.any():  # auto-reset: the caller gets the first observation of the next episode
            self._reset_envs(dones)
            obs = self._observe()
        self._obs = obs
        rewards = np.repeat(reward[:, None], self.num_agents, axis=1).astype(np.float32)  # (B, N)
        return obs.copy(), rewards, dones, info

    def state(self) -> np.ndarray:
        """(B, N * obs_dim) float32: every agent's observation concatenated (official global_state)."""
        if self._obs is None:
            raise RuntimeError("call reset() before state()")
        return self._obs.reshape(self.num_envs, self.state_dim).copy()

    # what get_state / set_state (utils.VecEnv) copy besides the random stream
    _state_names = ("_targets", "history_counts", "_steps", "_returns", "_obs")

    def close(self) -> None:
        """Nothing to release; here so it can be used like the MPE backends."""


def make_env(
    num_envs: int,
    seed: int | None = None,
    scenario: str = "3x10",
    history: str = "official",
    max_steps: int = 100,
    obs_encoding: str = "raw",
) -> CoordSumVec:
    """B CoordSum environments (see CoordSumVec for the arguments)."""
    return CoordSumVec(num_envs, scenario, history=history, max_steps=max_steps, seed=seed, obs_encoding=obs_encoding)
