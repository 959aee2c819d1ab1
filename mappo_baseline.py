"""Recurrent MAPPO (and IPPO) on the MAGPO scripts' environments and protocol, in one file.

MAPPO: Yu et al., "The Surprising Effectiveness of PPO in Cooperative Multi-Agent Games" (NeurIPS 2022).
IPPO: de Witt et al., "Is Independent Learning All You Need in the StarCraft Multi-Agent Challenge?" (2020).
Both are the CTDE baselines of MAGPO (Li, Xie, Lu, arXiv 2507.18059); `docs/algorithm.md` describes
MAGPO and the protocol shared with it (cited below as "algorithm.md §n").

The story of this file, top to bottom:
  Args -> pure math (GAE, the PPO loss, value normalisation, action distributions) -> networks (the
  actor, which is MAGPO's learner, and a recurrent critic) -> infrastructure (environment glue, the
  only environment-specific code; evaluation; input checks) -> main: seeding, envs, rollout with the
  actor, per-agent GAE, PPO update of actor and critic by BPTT over whole sequences, logging,
  absolute metric. Blocks marked `# ALGO LOGIC:` are the algorithm; `# INFRA:` can be skipped.

The runs are meant to be compared with `magpo_mpe.py` / `magpo_coordsum.py` / `magpo_smax.py` /
`magpo_jumanji.py` curve for curve, so everything but the training algorithm is the same: the env wrappers in `utils/`, the
actor (MAGPO's `Learner`, copied verbatim: [one-hot id, own obs] -> MLP -> GRU -> MLP -> head, masked
with the agent's available actions), the rollout size, the budget, the random-policy floor, the
decentralised evaluation, the absolute metric and the TensorBoard tags. The actor plays MAGPO's
learner's part, so its evaluation is logged as `eval/learner_return` (and, on SMAX, `eval/win_rate`).

MAPPO's critic sees the global state `envs.state()` with a one-hot agent id (one value per agent,
because MPE rewards differ per agent); `--ippo` gives it the agent's own observation instead. The
actor collects its own data (on-policy PPO), unlike MAGPO's learner, which learns from a guider.
"""

import os

# Must be set before torch is imported: OpenMP threads that spin while waiting cost 59-96x on a
# 2-core machine when numpy, the env and torch take turns (measured, see docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import copy
import math
import random
import re
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import tyro

# ENV-SPECIFIC: a new environment gets its flags here, in Args, and in "Environment glue"
ENV_FLAGS = {
    "mpe": ("num_agents", "continuous_actions", "local_ratio", "max_cycles", "env_backend"),
    "coordsum": ("scenario", "coordsum_history", "coordsum_obs", "max_steps"),
    "smax": ("map_name",),
    # the paper's jumanji tasks (utils/jumanji.py): `--scenario` names the task, as in magpo_jumanji.py
    "rware": ("scenario",),
    "lbf": ("scenario",),
    "connector": ("scenario",),
}


@dataclass
class Args:
    exp_name: str | None = None
    """the name of this experiment; default `mappo_baseline`, or `ippo_baseline` with `--ippo` (so that
    plot.py, which groups runs by exp_name, keeps the two apart)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """`torch.backends.cudnn.deterministic` (on by default; `--no-torch-deterministic` turns it off)"""
    cuda: bool = False
    """if toggled, run the networks on the GPU (an error if none is available)"""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for these small networks on a 2-core CPU"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "magpo"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    save_model: bool = False
    """whether to save the actor (final and best), the critic and the args to `runs/{run_name}`"""
    checkpoint_interval: int = 0
    """write the full training state to `runs/{run_name}/checkpoint.pt` every this many environment steps
    (0: every --eval-interval), at the end of the run and on Ctrl-C / SIGTERM (docs/usage.md, "Long runs")"""
    resume: str | None = None
    """continue the run in this directory (`runs/<run>`) from its checkpoint.pt, with its saved arguments;
    only --total-timesteps, --checkpoint-interval, --torch-threads, --track, --wandb-*, --save-model may change"""
    capture_video: bool = False
    """whether to save a GIF of the actor's first evaluation episode at every evaluation to
    `runs/{run_name}/videos` (MPE only: there is no CoordSum or SMAX renderer, and enjoy.py draws jumanji's)"""

    # Algorithm variant
    ippo: bool = False
    """if toggled, IPPO: the critic sees the agent's own observation instead of the global state"""

    # Environment (ENV-SPECIFIC). A flag of another env than `--env` is an error.
    env: str = "mpe"
    """`mpe` (simple_spread, utils/mpe.py), `coordsum` (the paper's coordination benchmark, utils/coordsum.py),
    `smax` (JaxMARL's StarCraft-like SMAX with heuristic enemies, utils/smax.py; metric: win rate), or jumanji's
    `rware`, `lbf` or `connector` (RobotWarehouse, LevelBasedForaging, Connector: utils/jumanji.py)"""
    num_agents: int = 3
    """MPE: number of agents (and landmarks) in simple_spread (CoordSum and SMAX: set by the scenario / map)"""
    continuous_actions: bool = True
    """MPE: continuous 5-dim actions in [0, 1] as in the paper; `--no-continuous-actions` for Discrete(5)"""
    local_ratio: float = 0.5
    """MPE: weight of each agent's local (collision) reward against the shared landmark reward"""
    max_cycles: int = 25
    """MPE: episode length (episodes end by truncation)"""
    env_backend: Literal["numpy", "pettingzoo"] = "numpy"
    """MPE: `numpy` = batched simple_spread (utils/mpe.py, same numbers as mpe2); `pettingzoo` = the real mpe2"""
    scenario: str | None = None
    """CoordSum scenario NxK (N agents, K actions): 3x10 (the default), 3x30, 5x20 or 8x15. RWARE, LBF,
    Connector: the paper's task (default tiny-2ag, 2s-8x8-2p-2f-coop, con-5x5x3a; all 26 in utils/jumanji.py)"""
    coordsum_history: Literal["official", "full"] = "official"
    """CoordSum: `official` = K history rows, targets >= K-1 share the last one (the official JAX clamp);
    `full` = one row per target value"""
    coordsum_obs: Literal["onehot", "raw"] = "onehot"
    """CoordSum: `onehot` = the target as a one-hot over maxval values (as magpo_coordsum.py);
    `raw` = the official single float"""
    max_steps: int = 100
    """CoordSum: episode length (the official time limit)"""
    map_name: str = "2s3z"
    """SMAX: the map (any map registered in JaxMARL; the paper's ten are in utils/smax.py's PAPER_MAPS)"""

    # Algorithm (defaults: recurrent MAPPO of Yu et al. 2022, with MAGPO's rollout, budget and lr)
    protocol: Literal["default", "paper"] = "default"
    """`paper`: the official code's set-up for this task (utils/protocol.py, docs/environments.md): the
    params.csv row of MAPPO / IPPO where the paper tuned one (CoordSum), else rec_mappo.yaml's defaults; 2 x 64
    envs per update (`--num-envs 128`), 20M steps evaluated every 10 updates, `vf_coef` 0.5, `--no-norm-value` (the
    value clip in raw units) and, on CoordSum, `--coordsum-obs raw`; flags given on the command line win"""
    total_timesteps: int = 2_000_000
    """total environment steps (one step of one environment counts one), rounded down to whole rollouts of
    num_envs x num_steps (the run says so when it rounds); the same as magpo_mpe.py"""
    learning_rate: float = 5e-4
    """Adam's learning rate for actor and critic (Yu et al.: 7e-4 on MPE, 5e-4 on SMAC; 5e-4 is also
    magpo_mpe.py's, so the two scripts differ in the algorithm only)"""
    anneal_lr: bool = False
    """toggle learning rate annealing (Yu et al. do not anneal)"""
    num_envs: int = 64
    """the number of parallel environments (as magpo_mpe.py)"""
    num_steps: int = 128
    """the rollout length per environment per update (as magpo_mpe.py)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of minibatches; each holds whole `num_steps` sequences of `num_envs / num_minibatches` envs.
    5 epochs x 4 minibatches = magpo_mpe.py's schedule: 20 gradient steps per 8,192 env steps (Yu et al.:
    10 epochs x 1 minibatch on 3,200-step rollouts, i.e. ~26 per 8,192)"""
    update_epochs: int = 5
    """the K epochs to update the policy (10 epochs x 1 minibatch, Yu et al.'s, ran at half the speed of
    magpo_mpe.py on a CPU; 5 x 4 runs faster than it)"""
    norm_adv: bool = True
    """toggles advantage normalisation (per minibatch, over all agent tokens, as magpo_mpe.py)"""
    clip_coef: float = 0.2
    """the PPO clip epsilon (also clips the value update), Yu et al.'s 0.2"""
    clip_vloss: bool = True
    """toggles the clipped value loss (Yu et al.)"""
    ent_coef: float = 0.01
    """coefficient of the entropy bonus, Yu et al.'s 0.01 (continuous MPE: the bonus is on the pre-tanh
    Gaussian's entropy, which 0.01 slowly raises: +0.3 nats in 300k steps, while 0.001 lowers it; the
    returns at 300k steps were the same)"""
    vf_coef: float = 1.0
    """coefficient of the value loss (Yu et al.'s 1; actor and critic share no parameters and are clipped
    separately, so this only scales the critic's gradient before Adam)"""
    norm_value: bool = True
    """learn standardised returns (running mean/std: Yu et al.'s ValueNorm, as magpo_mpe.py); `--no-norm-value` for raw"""
    max_grad_norm: float = 10.0
    """the maximum norm for the gradient clipping, applied to actor and critic separately (Yu et al.'s 10)"""

    # Networks
    learner_hidden: int = 128
    """width of the actor's MLP and GRU (MAGPO's learner, the official 128)"""
    critic_hidden: int = 128
    """width of the critic's MLP and GRU"""

    # Evaluation (as magpo_mpe.py)
    eval_interval: int = 100_000
    """evaluate the actor every this many environment steps"""
    num_eval_episodes: int = 32
    """episodes per evaluation; the absolute metric re-scores the best actor on 10x as many"""

    # computed at runtime from the fields above, not settable
    batch_size: int = field(default=0, init=False)
    """environment steps per rollout, num_envs x num_steps"""
    minibatch_envs: int = field(default=0, init=False)
    """environments per minibatch, num_envs / num_minibatches"""
    num_iterations: int = field(default=0, init=False)
    """rollout-and-update iterations, total_timesteps // batch_size"""


# Parse the command line before the heavy imports below (torch, TensorBoard, and JAX for SMAX), so that
# `--help` and a mistyped flag answer at once instead of after seconds of imports.
if __name__ == "__main__":
    args = tyro.cli(Args)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from utils import ENV_FAMILY, EpisodeRecorder, check_requirements, random_policy_score
from utils.coordsum import SCENARIOS
from utils.jumanji import DEFAULT_SCENARIOS, FAMILIES, check_task
from utils.protocol import apply_paper_protocol, as_flags
from utils.render import save_gif


# ---------------------------------------------------------------------------------------------
# ALGO LOGIC: pure math, imported by tests/test_mappo_baseline.py (GAE and value normalisation are
# magpo_mpe.py's, copied; tests/test_copies.py checks that they still are)
# ---------------------------------------------------------------------------------------------
def compute_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    """Generalised advantage estimation, per agent (algorithm.md §8).

    rewards, values: (T, B, N); dones: (T, B, 1) or (T, B, N), `dones[t] = 1` when observation t is
    the first of a new episode (CleanRL's convention); next_value (B, N), next_done (B, 1) or (B, N):
    the value and done flag of the observation after the rollout. The time limit is treated as
    termination: the fixed-length episode return is the task's objective.
    Returns (advantages, returns), each (T, B, N).
    """
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(rewards[0])
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal, nextvalues = 1.0 - next_done, next_value
        else:
            nextnonterminal, nextvalues = 1.0 - dones[t + 1], values[t + 1]
        td_error = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = td_error + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages, advantages + values


def normalize(x):
    """Per-minibatch advantage normalisation over all tokens (algorithm.md §8)."""
    return (x - x.mean()) / (x.std() + 1e-8)


class RunningMeanStd:
    """Running mean and variance of every value seen (parallel-update formula, as CleanRL's), for
    value normalisation (algorithm.md §6). `enabled=False` makes every method the identity."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x):
        if not self.enabled:
            return
        batch_mean, batch_var, n = x.mean().item(), x.var(unbiased=False).item(), x.numel()
        diff, total = batch_mean - self.mean, self.count + n
        self.mean += diff * n / total
        self.var = (self.var * self.count + batch_var * n + diff**2 * self.count * n / total) / total
        self.count = total

    def normalize(self, x):
        return (x - self.mean) / math.sqrt(self.var + 1e-8) if self.enabled else x

    def denormalize(self, x):
        return x * math.sqrt(self.var + 1e-8) + self.mean if self.enabled else x


def ppo_loss(
    *,
    logp,
    logp_old,
    advantages,
    entropy,
    value,
    value_old,
    returns,
    clip_coef,
    ent_coef,
    vf_coef,
    norm_adv=True,
    clip_vloss=True,
):
    """MAPPO's loss: clipped surrogate + clipped value loss - entropy bonus. Returns (loss, stats).

    Every argument but the scalars is a per-token tensor (any shape, one entry per (t, env, agent)):
    logp = log pi(a|own history) of the current actor, logp_old = the log-prob stored at rollout,
    entropy = H(pi), value = the current critic's prediction, value_old = the one stored at rollout,
    returns = the value targets (A_raw + V_old, in the critic's space: standardised with --norm-value).
    """
    adv = normalize(advantages) if norm_adv else advantages
    logratio = logp - logp_old
    ratio = logratio.exp()
    pg_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip_coef, 1 + clip_coef) * adv).mean()

    if clip_vloss:  # the value may move at most clip_coef from its rollout-time prediction
        v_clipped = value_old + (value - value_old).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((value - returns) ** 2).mean()

    entropy_mean = entropy.mean()
    loss = pg_loss - ent_coef * entropy_mean + vf_coef * v_loss
    with torch.no_grad():
        stats = {
            "policy_loss": pg_loss.item(),
            "value_loss": v_loss.item(),
            "entropy": entropy_mean.item(),
            "learner_entropy": entropy_mean.item(),  # the same, under the tag MAGPO's learner logs (the policy deployed)
            "approx_kl": ((ratio - 1) - logratio).mean().item(),
            "clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean().item(),
        }
    return loss, stats


# Action distributions, magpo_mpe.py's (copied). `params` is one tensor per token: discrete -> logits
# (..., A), in which unavailable actions already carry MASKED_LOGIT (see `masked_logits`); continuous
# -> [mean, log_std] (..., 2A) of a Gaussian over the pre-tanh action u. Continuous actions are
# stored as u; the env gets (tanh(u) + 1) / 2 in [0, 1].
LOG_2PI = math.log(2 * math.pi)
# A large finite number rather than -inf: softmax gives the masked actions probability exactly 0
# (exp(-1e9) underflows in float32 and float64), and the entropy and KL terms p * log p and
# p * (log p - log q) are then 0 * (finite) = 0, where -inf would give 0 * -inf = nan.
MASKED_LOGIT = -1e9


def masked_logits(logits, avail):
    """logits (..., A), avail (..., A) bool -> logits with the unavailable actions at MASKED_LOGIT.
    At least one action must be available; where all are (envs without masks) nothing changes."""
    return logits.masked_fill(~avail, MASKED_LOGIT)


def dist_sample(params, continuous, deterministic=False):
    if continuous:
        mean, log_std = params.chunk(2, dim=-1)
        return mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
    if deterministic:
        return params.argmax(-1)
    return torch.multinomial(params.softmax(-1).reshape(-1, params.shape[-1]), 1).reshape(params.shape[:-1])


def tanh_gaussian_log_prob(u, mean, log_std):
    """log-density of a = tanh(u), u ~ N(mean, exp(log_std)^2), summed over action dims.

    Change of variables: log p(a) = log N(u) - sum log(1 - tanh(u)^2), with the stable form
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """
    log_normal = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * LOG_2PI
    log_det = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (log_normal - log_det).sum(-1)


def dist_log_prob(params, action, continuous):
    if continuous:
        mean, log_std = params.chunk(2, dim=-1)
        return tanh_gaussian_log_prob(action, mean, log_std)
    return params.log_softmax(-1).gather(-1, action.unsqueeze(-1)).squeeze(-1)


def dist_entropy(params, continuous):
    """Categorical: exact, over the available actions (masked ones contribute 0 * finite = 0).
    Tanh-Gaussian: no closed form, so the entropy of the pre-tanh Gaussian."""
    if continuous:
        _, log_std = params.chunk(2, dim=-1)
        return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)
    logp = params.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


# ---------------------------------------------------------------------------------------------
# ALGO LOGIC: networks
# ---------------------------------------------------------------------------------------------
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


def gru_unroll(gru, x, h, starts):
    """Run `gru` over a sequence whose rows reset at episode starts; exact BPTT.

    x (T, M, H) inputs, h (M, H) state before step 0, starts (T, M) bool: row m starts a new
    episode at step t, so its state is zeroed before step t. Rather than a Python loop over T, the
    fused nn.GRU runs over each stretch with no reset in any row (docs/benchmarks.md has the gain).
    """
    num_steps = x.shape[0]
    if num_steps == 1:  # a rollout step: one stretch, without nonzero() (a host sync on a GPU)
        cuts = [0, 1]
    else:
        cuts = [0] + (torch.nonzero(starts[1:].any(dim=1)).flatten() + 1).tolist() + [num_steps]
    lengths = [end - begin for begin, end in zip(cuts[:-1], cuts[1:])]
    outputs = []
    # split(), not slicing: its backward is one cat, where each slice's would zero-fill all of x.
    for begin, piece in zip(cuts[:-1], x.split(lengths)):
        h = h * (~starts[begin]).unsqueeze(-1).to(h.dtype)
        out, h = gru(piece, h.unsqueeze(0))
        h = h.squeeze(0)
        outputs.append(out)
    return torch.cat(outputs), h


class Learner(nn.Module):
    """Decentralised recurrent policy pi(a^i | own observation history), parameters shared by all
    agents: [one-hot id, obs] -> MLP -> GRU -> MLP -> head (the official architecture, algorithm.md §7).
    Discrete logits are masked with the agent's own available actions."""

    def __init__(self, obs_dim, num_agents, action_dim, continuous, hidden=128):
        super().__init__()
        self.continuous = continuous
        self.register_buffer("agent_ids", torch.eye(num_agents))
        self.pre = nn.Sequential(layer_init(nn.Linear(num_agents + obs_dim, hidden)), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden)
        self.post = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), nn.ReLU())
        self.head = layer_init(nn.Linear(hidden, action_dim), std=0.01)
        if continuous:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, obs, h, starts, avail=None):
        """obs (T, B, N, obs_dim), h (B, N, hidden), starts (T, B), avail (T, B, N, A) bool or None
        -> params (T, B, N, P), new h."""
        T, B, N, _ = obs.shape
        x = self.pre(torch.cat([self.agent_ids.expand(T, B, N, N), obs], dim=-1))  # (T, B, N, hidden)
        x, h = gru_unroll(self.gru, x.reshape(T, B * N, -1), h.reshape(B * N, -1), starts.repeat_interleave(N, dim=1))
        out = self.head(self.post(x)).reshape(T, B, N, -1)
        if self.continuous:
            out = torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        elif avail is not None:
            out = masked_logits(out, avail)
        return out, h.reshape(B, N, -1)

    @torch.no_grad()
    def act(self, obs, h, starts, avail=None, deterministic=False):
        """One decentralised step: obs (B, N, obs_dim), avail (B, N, A) or None -> action (B, N[, A]), new h."""
        params, h = self(obs.unsqueeze(0), h, starts.unsqueeze(0), None if avail is None else avail.unsqueeze(0))
        return dist_sample(params[0], self.continuous, deterministic), h


def critic_inputs(obs, state, ippo):
    """What the critic sees, per agent: obs (..., N, obs_dim), state (..., state_dim) -> (..., N, D).

    MAPPO: the global state, the same for every agent (the critic's one-hot id tells them apart,
    which MPE needs: each agent has its own collision reward); IPPO: the agent's own observation.
    """
    if ippo:
        return obs
    return state.unsqueeze(-2).expand(*obs.shape[:-1], state.shape[-1])


class Critic(nn.Module):
    """Recurrent critic V(history of the critic's input) per agent, parameters shared by all agents:
    [one-hot id, input] -> MLP -> GRU -> MLP -> value, the actor's architecture with a scalar head.
    The input is the global state (MAPPO) or the agent's own observation (IPPO), see `critic_inputs`."""

    def __init__(self, input_dim, num_agents, hidden=128):
        super().__init__()
        self.register_buffer("agent_ids", torch.eye(num_agents))
        self.pre = nn.Sequential(layer_init(nn.Linear(num_agents + input_dim, hidden)), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden)
        self.post = nn.Sequential(layer_init(nn.Linear(hidden, hidden)), nn.ReLU())
        self.head = layer_init(nn.Linear(hidden, 1), std=1.0)

    def forward(self, x, h, starts):
        """x (T, B, N, input_dim), h (B, N, hidden), starts (T, B) -> values (T, B, N), new h."""
        T, B, N, _ = x.shape
        x = self.pre(torch.cat([self.agent_ids.expand(T, B, N, N), x], dim=-1))  # (T, B, N, hidden)
        x, h = gru_unroll(self.gru, x.reshape(T, B * N, -1), h.reshape(B * N, -1), starts.repeat_interleave(N, dim=1))
        return self.head(self.post(x)).reshape(T, B, N), h.reshape(B, N, -1)


def to_env_action(action, continuous):
    """Policy action -> what the env takes: (tanh(u) + 1) / 2 in [0, 1]^A, or the index, as numpy."""
    return ((torch.tanh(action) + 1.0) / 2.0).cpu().numpy() if continuous else action.cpu().numpy()


# ---------------------------------------------------------------------------------------------
# INFRA: environment glue (ENV-SPECIFIC: everything the main loop needs to know about an environment)
# ---------------------------------------------------------------------------------------------
SCENARIO_DEFAULTS = {"coordsum": "3x10", **DEFAULT_SCENARIOS}  # --scenario's default per env


def task_name(args):
    """The run-name prefix plot.py groups by: simple_spread_{N}ag, coordsum_{scenario}, the SMAX map or
    the paper's jumanji task, as in magpo_mpe.py, magpo_coordsum.py, magpo_smax.py and magpo_jumanji.py."""
    if args.env == "mpe":
        return f"simple_spread_{args.num_agents}ag"
    if args.env == "smax":
        return args.map_name
    if args.env in FAMILIES:
        return args.scenario
    return f"coordsum_{args.scenario}"


def make_envs(args, num_envs, seed):
    """A batch of `num_envs` environments of `--env`, from that wrapper's `make_env` (every wrapper has
    the interface of utils/__init__.py). The env modules are imported here, so an MPE run never
    imports JAX."""
    if args.env == "mpe":
        from utils.mpe import make_env

        task = dict(
            backend=args.env_backend,
            num_agents=args.num_agents,
            continuous_actions=args.continuous_actions,
            local_ratio=args.local_ratio,
            max_cycles=args.max_cycles,
        )
    elif args.env == "coordsum":
        from utils.coordsum import make_env

        task = dict(
            scenario=args.scenario,
            history=args.coordsum_history,
            max_steps=args.max_steps,
            obs_encoding=args.coordsum_obs,
        )
    elif args.env == "smax":
        from utils.smax import make_env

        task = dict(map_name=args.map_name)
    else:
        from utils.jumanji import make_env

        task = dict(env=args.env, scenario=args.scenario)
    return make_env(num_envs, seed=seed, **task)


# ---------------------------------------------------------------------------------------------
# INFRA: evaluation (algorithm.md §10) and input checks; skip on a first read
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(policy, eval_envs, device, hidden_size, deterministic=False):
    """Undiscounted returns (B,) and win flags (B,) (None where the env has no wins) of the actor
    over one episode in each of the B eval envs, acting decentralised (own observation history and
    own available actions only) and sampling actions as the paper does (`deterministic` takes the
    mode instead). The same protocol as the MAGPO scripts' learner evaluation."""
    B, N = eval_envs.num_envs, eval_envs.num_agents
    obs = torch.from_numpy(eval_envs.reset()).to(device)
    h = torch.zeros(B, N, hidden_size, device=device)
    starts = torch.ones(B, dtype=torch.bool, device=device)
    finished = np.zeros(B, dtype=bool)
    episode_return, won = np.zeros(B, dtype=np.float64), np.zeros(B, dtype=bool)
    while not finished.all():
        avail = torch.from_numpy(eval_envs.avail_actions()).to(device)
        action, h = policy.act(obs, h, starts, avail, deterministic)
        next_obs, _, dones, info = eval_envs.step(to_env_action(action, policy.continuous))
        newly = dones & ~finished
        episode_return[newly] = info["episode_return"][newly]
        if eval_envs.has_wins:
            won[newly] = info["won"][newly]
        finished |= dones
        obs = torch.from_numpy(next_obs).to(device)
        starts = torch.from_numpy(dones).to(device)
    return episode_return, (won if eval_envs.has_wins else None)


def evaluate_and_log(learner, eval_envs, device, args, writer, step, video_dir=None):
    """Evaluate the actor once, log and print the result; returns its score for keeping the best
    actor: (win rate, return) where the env has wins (ties broken by the return, as magpo_smax.py),
    else (return,)."""
    episode_return, won = evaluate(learner, eval_envs, device, args.learner_hidden)
    if video_dir is not None:  # eval_envs is an EpisodeRecorder: draw the actor's first episode
        save_gif(eval_envs.episode, f"{video_dir}/learner_step{step}.gif", title=f"actor, step {step}")
    writer.add_scalar("eval/learner_return", episode_return.mean(), step)
    if won is None:
        print(f"global_step={step}, eval/learner_return={episode_return.mean():.3f}")
        return (episode_return.mean(),)
    writer.add_scalar("eval/win_rate", won.mean(), step)
    print(f"global_step={step}, eval/win_rate={won.mean():.3f}, eval/learner_return={episode_return.mean():.3f}")
    return (won.mean(), episode_return.mean())


def absolute_metric(best_learner, eval_envs, device, args, writer, step):
    """The paper's absolute metric (algorithm.md §10): the best evaluated actor re-scored on 10x the episodes; then
    the same episodes again (the eval envs' state put back) with greedy actions, a diagnostic beside the paper's
    sampled score: the difference is what the actor's own randomness costs or gains."""
    start = eval_envs.get_state()
    scores = [evaluate(best_learner, eval_envs, device, args.learner_hidden) for _ in range(ABSOLUTE_REPEATS)]
    end = eval_envs.get_state()
    eval_envs.set_state(start)
    greedy = [
        evaluate(best_learner, eval_envs, device, args.learner_hidden, deterministic=True)
        for _ in range(ABSOLUTE_REPEATS)
    ]
    eval_envs.set_state(end)  # the run goes on from where the sampled episodes left the envs
    absolute, greedy_return = (np.concatenate([r for r, _ in x]).mean() for x in (scores, greedy))
    writer.add_scalar("eval/absolute_learner_return", absolute, step)
    writer.add_scalar("eval/absolute_learner_return_greedy", greedy_return, step)
    if not eval_envs.has_wins:
        print(
            f"absolute metric: best actor over {ABSOLUTE_REPEATS * args.num_eval_episodes} episodes: return {absolute:.3f}"
        )
        print(f"absolute metric, greedy actions on the same episodes: return {greedy_return:.3f}")
        return
    absolute_win_rate, greedy_win_rate = (np.concatenate([w for _, w in x]).mean() for x in (scores, greedy))
    writer.add_scalar("eval/absolute_win_rate", absolute_win_rate, step)
    writer.add_scalar("eval/absolute_win_rate_greedy", greedy_win_rate, step)
    print(
        f"absolute metric: best actor over {ABSOLUTE_REPEATS * args.num_eval_episodes} episodes: "
        f"win rate {absolute_win_rate:.3f}, return {absolute:.3f}"
    )
    print(
        f"absolute metric, greedy actions on the same episodes: win rate {greedy_win_rate:.3f}, return {greedy_return:.3f}"
    )


# ---------------------------------------------------------------------------------------------
# INFRA: long runs: checkpoints, --resume, Ctrl-C, the non-finite guard, progress (docs/usage.md, "Long runs");
# the same in every training script
# ---------------------------------------------------------------------------------------------
CHECKPOINT_VERSION = 1
# The flags a resumed run may change: they extend the run or change how it is watched or saved, never
# what it computes. Any other flag given with --resume must keep the run's saved value.
RESUMABLE_FLAGS = ("total_timesteps", "checkpoint_interval", "torch_threads", "track", "wandb_project_name",
                   "wandb_entity", "save_model", "resume")  # fmt: skip
# Test hook of the non-finite guard (tests/test_resume.py): MAGPO_INJECT_NAN_AT=<iteration> makes one
# reward of that iteration's rollout NaN. Unset (0) in any real run.
INJECT_NAN_AT = int(os.environ.get("MAGPO_INJECT_NAN_AT", "0"))
# Test hook of the one-update runs over every task (tests/test_scripts.py): MAGPO_ABSOLUTE_REPEATS=<k> re-scores the
# best policy on k, not 10, times the evaluation episodes (the greedy replay too). Unset (10) in any real run.
ABSOLUTE_REPEATS = int(os.environ.get("MAGPO_ABSOLUTE_REPEATS", "10"))
STOP = {}  # {"signal": signum} once SIGINT or SIGTERM asked the run to stop


def on_signal(signum, frame):
    """SIGINT / SIGTERM: the run stops at its next safe point (after the current rollout or minibatch
    step) and writes the state of the last finished iteration; a second signal kills it at once."""
    STOP["signal"] = signum
    signal.signal(signum, signal.SIG_DFL)


class RunWriter(SummaryWriter):
    """A SummaryWriter that keeps the scalars logged at the latest step (`latest`), for the checkpoint.
    A resumed run's writer purges every point from the checkpoint's step on (purge_step: what the
    interrupted run logged after its checkpoint, at that step too, is dropped) and logs the kept
    points of that step again, so the run's curves have no gap and no duplicate."""

    def __init__(self, log_dir, checkpoint=None):
        super().__init__(log_dir, purge_step=None if checkpoint is None else checkpoint["global_step"])
        self.latest_step, self.latest = None, []
        for tag, value, step in [] if checkpoint is None else checkpoint["scalars"]:
            self.add_scalar(tag, value, step)

    def add_scalar(self, tag, scalar_value, global_step=None, **kwargs):
        super().add_scalar(tag, scalar_value, global_step, **kwargs)
        if self.latest_step is None or global_step > self.latest_step:
            self.latest_step, self.latest = global_step, []
        if global_step == self.latest_step:
            self.latest.append((tag, float(scalar_value), global_step))


def rng_states(device):
    """Every global random stream: python, numpy, torch (CPU, and CUDA when used)."""
    cuda = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_states(states, device):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path, state, writer):
    """Write `state` atomically: the TensorBoard points up to it are flushed first, then a temporary
    file in the same directory is written and renamed over `path` (os.replace), so a crash while
    writing leaves the previous checkpoint whole."""
    writer.flush()
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".checkpoint.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stop_run(boundary, path, writer):
    """After SIGINT/SIGTERM: write the last iteration boundary's state, say how to resume, exit 128 + signal."""
    save_checkpoint(path, boundary, writer)
    writer.close()
    run_dir = os.path.dirname(path)
    print(f"interrupted at step {boundary['global_step']}; resume with: python {boundary['script']} --resume {run_dir}")
    sys.exit(128 + STOP["signal"])


def given_flags(argv):
    """The Args fields the command line sets (`--num-envs 8`, `--num-envs=8`, `--no-cuda`): how --resume
    tells a flag the user gave (even at its default value) from one left out."""
    names, given = {f.name for f in fields(Args) if f.init}, set()
    for token in argv:
        if token.startswith("--"):
            name = token[2:].split("=")[0].replace("-", "_")
            given.add(name[3:] if name not in names and name.startswith("no_") else name)
    return given & names


def load_checkpoint(run_dir, script, argv, args):
    """--resume: the checkpoint of `run_dir` and the args to continue with, the saved ones with the
    RESUMABLE_FLAGS the command line gives. Raises ValueError for a missing, unreadable or foreign
    checkpoint and for a changed flag outside RESUMABLE_FLAGS (before anything is written)."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.isfile(path):
        raise ValueError(f"--resume {run_dir}: there is no checkpoint {path}")
    try:  # our own file: a pickle (numpy and JAX states), so weights_only=False
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise ValueError(
            f"--resume {run_dir}: {path} is truncated or not a checkpoint ({type(error).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise ValueError(f"--resume {run_dir}: {path} is not a training checkpoint")
    if checkpoint.get("script") != script:
        raise ValueError(f"--resume {run_dir}: the checkpoint was written by {checkpoint.get('script')}, not {script}")
    if checkpoint["format_version"] != CHECKPOINT_VERSION:
        raise ValueError(
            f"--resume {run_dir}: the checkpoint has format version {checkpoint['format_version']}; this {script} "
            f"reads version {CHECKPOINT_VERSION}"
        )
    saved, given = checkpoint["args"], given_flags(argv)
    for name in sorted(given - set(RESUMABLE_FLAGS)):
        if getattr(args, name) != saved[name]:
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} {getattr(args, name)} differs from the resumed run's {saved[name]}: that would be another "
                f"run (a resumed run may change only --{', --'.join(n.replace('_', '-') for n in RESUMABLE_FLAGS if n != 'resume')})"
            )
    resumed = Args(**{f.name: saved[f.name] for f in fields(Args) if f.init})
    for name in given & set(RESUMABLE_FLAGS):
        setattr(resumed, name, getattr(args, name))
    resumed.resume = run_dir
    return checkpoint, resumed


def check_resumable(checkpoint, task, args):
    """--resume: the checkpoint is this task's and the run has iterations left (raises ValueError)."""
    if checkpoint is None:
        return
    if checkpoint["task"] != task:
        raise ValueError(f"--resume {args.resume}: the checkpoint is for task {checkpoint['task']}, not {task}")
    if args.num_iterations <= checkpoint["iteration"]:
        raise ValueError(
            f"--resume {args.resume}: the run has done all its {checkpoint['iteration']} iterations "
            f"({checkpoint['global_step']} steps); give a larger --total-timesteps to extend it"
        )


def check_finite(iteration, network, stats):
    """The non-finite guard: stop the run (exit 1) at the first NaN or inf among a network's loss terms
    and gradient norm, before the optimiser steps; the last checkpoint is left as it was."""
    for term, value in stats.items():
        if not math.isfinite(value):
            sys.exit(
                f"error: non-finite {term} ({value}) in the {network}'s update at iteration {iteration}; the run stops "
                "here and its last checkpoint (if any) is kept"
            )


def progress(global_step, total_steps, start_step, start_time, last_eval):
    """(env-steps/s of this session, the progress text: steps done / total, time left, last evaluation)."""
    sps = (global_step - start_step) / max(time.time() - start_time, 1e-9)
    left = int((total_steps - global_step) / max(sps, 1e-9))
    step, score = last_eval
    score = " ".join(f"{x:.3f}" for x in np.atleast_1d(score))
    eta = f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}"
    return int(sps), f"{global_step}/{total_steps} steps, ETA {eta}, last eval {score} at step {step}"


# INFRA: what every training script checks first, so that these fail before a run directory exists rather
# than late: numpy seeds its global generator from [0, 2**32 - 1]; the exp_name becomes part of one directory
# name; and a NaN or inf in a float flag would only show up as the non-finite guard stopping the run.
EXP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")
MAX_SEED = 2**32 - 1


def check_run_flags(args, infinite_ok=("delta",)):
    """The flags every training script shares, checked before anything is built (raises ValueError): the seed,
    the exp_name, and every float flag finite (`--delta inf`, MAGPO without the tether, is the one inf allowed)."""
    if not 0 <= args.seed <= MAX_SEED:
        raise ValueError(f"--seed must be in [0, {MAX_SEED}] (numpy's seed range), got {args.seed}")
    if args.exp_name is not None and not EXP_NAME.fullmatch(args.exp_name):
        raise ValueError(
            f"--exp-name must be one directory name, 1-100 of the characters A-Z a-z 0-9 _ . + - (not starting "
            f"with . + -), got {args.exp_name!r}"
        )
    for f in fields(args):
        value = getattr(args, f.name)
        if isinstance(value, float) and not math.isfinite(value) and not (f.name in infinite_ok and value == math.inf):
            allowed = " (or inf)" if f.name in infinite_ok else ""
            raise ValueError(f"--{f.name.replace('_', '-')} must be a finite number{allowed}, got {value}")


def validate_args(args: Args) -> None:
    """Reject bad input before any environment or network is built (raises ValueError)."""
    check_run_flags(args)
    # ENV-SPECIFIC checks first: a flag of another env, changed from its default, would be ignored
    if args.env not in ENV_FLAGS:
        raise ValueError(f"unknown --env {args.env!r}; choose one of {list(ENV_FLAGS)}")
    defaults, owners = {f.name: f.default for f in fields(Args)}, {}
    for env, names in ENV_FLAGS.items():
        for name in names:
            owners.setdefault(name, []).append(env)
    for name, envs in owners.items():  # a resumed run's saved args hold the env's own agent count and action kind
        if args.resume is None and args.env not in envs and getattr(args, name) != defaults[name]:
            envs = envs[0] if len(envs) == 1 else f"{', '.join(envs[:-1])} or {envs[-1]}"
            raise ValueError(f"--{name.replace('_', '-')} is a flag of --env {envs}, not of --env {args.env}")
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "max_cycles", "max_steps",
                 "eval_interval", "num_eval_episodes", "torch_threads"):  # fmt: skip
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    checks = [
        (args.num_agents >= 2, f"--num-agents must be >= 2, got {args.num_agents}"),
        (0.0 <= args.local_ratio <= 1.0, f"--local-ratio must be in [0, 1], got {args.local_ratio}"),
        (
            args.env != "coordsum" or (args.scenario or SCENARIO_DEFAULTS["coordsum"]) in SCENARIOS,
            f"unknown --scenario {args.scenario!r}; choose one of {sorted(SCENARIOS)}",
        ),
        (
            args.env in ("mpe", *FAMILIES) or not args.capture_video,
            f"--capture-video is not available for --env {args.env}: this repository has no {args.env} renderer",
        ),
        (
            args.env not in FAMILIES or not args.capture_video,
            f"--capture-video is not available for --env {args.env}: enjoy.py draws a saved model's episode with "
            "jumanji's viewer",
        ),
        # the rest holds for every environment
        (
            args.num_envs % args.num_minibatches == 0,
            f"--num-envs ({args.num_envs}) must be divisible by --num-minibatches ({args.num_minibatches}): "
            "minibatches are groups of whole environment sequences",
        ),
        (
            args.total_timesteps >= args.num_envs * args.num_steps,
            f"--total-timesteps ({args.total_timesteps}) must be at least one rollout "
            f"(--num-envs x --num-steps = {args.num_envs * args.num_steps})",
        ),
        (args.learning_rate > 0.0, f"--learning-rate must be > 0, got {args.learning_rate}"),
        (args.clip_coef > 0.0, f"--clip-coef must be > 0, got {args.clip_coef}"),
        (0.0 < args.gamma <= 1.0, f"--gamma must be in (0, 1], got {args.gamma}"),
        (0.0 <= args.gae_lambda <= 1.0, f"--gae-lambda must be in [0, 1], got {args.gae_lambda}"),
        (args.ent_coef >= 0.0 and args.vf_coef >= 0.0, "--ent-coef and --vf-coef must be >= 0"),
        (args.max_grad_norm > 0.0, f"--max-grad-norm must be > 0, got {args.max_grad_norm}"),
        (min(args.learner_hidden, args.critic_hidden) >= 1, "network sizes must be >= 1"),
        (not args.cuda or torch.cuda.is_available(), "--cuda was given but torch sees no CUDA device"),
        (args.checkpoint_interval >= 0, f"--checkpoint-interval must be >= 0, got {args.checkpoint_interval}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if args.env == "smax":
        from utils.smax import check_map_name

        check_map_name(args.map_name)  # against JaxMARL's registry, copied in utils/smax.py (no JAX import)
    if args.env in FAMILIES:
        check_task(args.env, args.scenario or SCENARIO_DEFAULTS[args.env])  # the paper's tasks (no JAX import)
    if args.env in ENV_FAMILY:  # SMAX and jumanji run in JAX, which the light core install does not have
        check_requirements(ENV_FAMILY[args.env], f"--env {args.env}")


if __name__ == "__main__":
    # INFRA: --resume continues a run from its checkpoint, with its saved args
    checkpoint = None
    if args.resume is not None:
        try:
            checkpoint, args = load_checkpoint(args.resume, os.path.basename(__file__), sys.argv[1:], args)
        except ValueError as error:
            sys.exit(f"error: {error}")
    if args.exp_name is None:
        args.exp_name = "ippo_baseline" if args.ippo else "mappo_baseline"
    if checkpoint is None and args.protocol == "paper":  # a resumed run has its protocol in its saved args
        paper_task = {"mpe": task_name(args), "smax": args.map_name}.get(args.env)
        paper_task = paper_task or args.scenario or SCENARIO_DEFAULTS[args.env]  # CoordSum and jumanji: the scenario
        note, changed = apply_paper_protocol(
            args, "ippo" if args.ippo else "mappo", paper_task, given_flags(sys.argv[1:])
        )
        print(f"--protocol paper ({note}) sets: {as_flags(changed)}")
    try:
        validate_args(args)
    except ValueError as error:
        sys.exit(f"error: {error}")
    if args.scenario is None:
        args.scenario = SCENARIO_DEFAULTS.get(args.env)  # saved with the run: enjoy.py rebuilds the same env
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_envs = args.num_envs // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations * args.batch_size != args.total_timesteps:
        print(
            f"note: --total-timesteps {args.total_timesteps} is rounded down to {args.num_iterations} rollouts of "
            f"{args.batch_size} steps = {args.num_iterations * args.batch_size} steps"
        )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")

    # Envs: training, and a separate batch for evaluation (one episode per env per round). Built
    # before the run is named so that the saved args describe the env actually run (CoordSum and
    # SMAX fix the number of agents and are discrete).
    envs = make_envs(args, args.num_envs, seed=args.seed)
    eval_envs = make_envs(args, args.num_eval_episodes, seed=args.seed + 10_000)
    args.num_agents, args.continuous_actions = envs.num_agents, envs.continuous_actions
    N, obs_dim, action_dim, continuous = envs.num_agents, envs.obs_dim, envs.action_dim, envs.continuous_actions
    critic_dim = obs_dim if args.ippo else envs.state_dim

    task = task_name(args)
    try:
        check_resumable(checkpoint, task, args)
    except ValueError as error:
        sys.exit(f"error: {error}")
    run_name = os.path.basename(os.path.normpath(args.resume)) if args.resume else None
    run_name = run_name or f"{task}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = args.resume or f"runs/{run_name}"
    if checkpoint is not None:
        print(
            f"resumed {os.path.normpath(run_dir)} at step {checkpoint['global_step']} "
            f"(iteration {checkpoint['iteration']} of {args.num_iterations})"
        )
    # INFRA: tracking
    if args.track:
        try:
            import wandb
        except ImportError:
            sys.exit("error: --track needs Weights and Biases: pip install wandb")
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    writer = RunWriter(run_dir, checkpoint)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )
    print(f"run directory: {run_dir} (tensorboard --logdir runs)")
    if args.capture_video:
        eval_envs = EpisodeRecorder(eval_envs)
    video_dir = f"{run_dir}/videos" if args.capture_video else None
    if video_dir is not None:
        os.makedirs(video_dir, exist_ok=True)

    learner = Learner(obs_dim, N, action_dim, continuous, args.learner_hidden).to(device)
    critic = Critic(critic_dim, N, args.critic_hidden).to(device)
    # One Adam over both networks: they share no parameters and Adam is per-parameter, so this is
    # two optimisers with one learning rate; the gradient norms are clipped per network below.
    optimizer = torch.optim.Adam([*learner.parameters(), *critic.parameters()], lr=args.learning_rate, eps=1e-5)
    value_norm = RunningMeanStd(enabled=args.norm_value)

    # ALGO LOGIC: rollout storage, (T, B, N, ...) with T = num_steps
    T, B = args.num_steps, args.num_envs
    action_shape = (action_dim,) if continuous else ()
    obs = torch.zeros((T, B, N, obs_dim), device=device)
    states = torch.zeros((T, B, envs.state_dim), device=device)
    avails = torch.zeros((T, B, N, action_dim), device=device, dtype=torch.bool)
    actions = torch.zeros((T, B, N, *action_shape), device=device, dtype=torch.float32 if continuous else torch.long)
    logprobs = torch.zeros((T, B, N), device=device)
    rewards = torch.zeros((T, B, N), device=device)
    starts = torch.zeros((T, B), device=device, dtype=torch.bool)
    values = torch.zeros((T, B, N), device=device)

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs = torch.from_numpy(envs.reset(seed=args.seed)).to(device)  # (B, N, obs_dim)
    next_state = torch.from_numpy(envs.state()).to(device)  # (B, state_dim)
    next_avail = torch.from_numpy(envs.avail_actions()).to(device)  # (B, N, A)
    next_start = torch.ones(B, dtype=torch.bool, device=device)
    actor_h = torch.zeros(B, N, args.learner_hidden, device=device)
    critic_h = torch.zeros(B, N, args.critic_hidden, device=device)
    # INFRA: from here on SIGINT / SIGTERM stop the run at its next safe point (on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # INFRA: a new run logs the random-policy floor and the step-0 evaluation; a resumed one restores
    # every network, optimiser, statistic, random stream, env and carried tensor as the checkpoint holds them
    modules = dict(learner=learner, critic=critic, optimizer=optimizer)
    if checkpoint is None:
        random_return, random_win_rate = random_policy_score(eval_envs, seed=args.seed)
        if random_win_rate is None:
            print(f"random policy: eval return {random_return:.3f}")
        else:
            print(f"random policy: eval return {random_return:.3f}, win rate {random_win_rate:.3f}")
            writer.add_scalar("eval/random_win_rate", random_win_rate, 0)
        writer.add_scalar("eval/random_return", random_return, 0)
        best_score = evaluate_and_log(learner, eval_envs, device, args, writer, 0, video_dir)
        best_learner = copy.deepcopy(learner)
        next_eval = args.eval_interval
        iteration, last_eval = 0, (0, best_score)
    else:
        for name, module in modules.items():
            module.load_state_dict(checkpoint[name])
        best_learner = copy.deepcopy(learner)
        best_learner.load_state_dict(checkpoint["best_learner"])
        value_norm.mean, value_norm.var, value_norm.count = checkpoint["value_norm"]
        envs.set_state(checkpoint["envs"])
        eval_envs.set_state(checkpoint["eval_envs"])
        next_obs, next_state, next_avail, next_start, actor_h, critic_h = (
            x.to(device) for x in checkpoint["carried"].values()
        )
        iteration, global_step, next_eval = checkpoint["iteration"], checkpoint["global_step"], checkpoint["next_eval"]
        best_score, last_eval = checkpoint["best_score"], checkpoint["last_eval"]
        set_rng_states(checkpoint["rng"], device)

    def training_state():
        """INFRA: everything the run continues from, as copies: what checkpoint.pt holds."""
        return copy.deepcopy(
            {
                **dict(
                    format_version=CHECKPOINT_VERSION, script=os.path.basename(__file__), task=task, args=asdict(args)
                ),
                **dict(iteration=iteration, global_step=global_step, next_eval=next_eval, best_score=best_score),
                **{name: module.state_dict() for name, module in modules.items()},
                "best_learner": best_learner.state_dict(),
                "last_eval": last_eval,
                "value_norm": (value_norm.mean, value_norm.var, value_norm.count),
                "envs": envs.get_state(),
                "eval_envs": eval_envs.get_state(),
                "carried": {
                    "next_obs": next_obs,
                    "next_state": next_state,
                    "next_avail": next_avail,
                    "next_start": next_start,
                    "actor_h": actor_h,
                    "critic_h": critic_h,
                },
                "rng": rng_states(device),
                "scalars": writer.latest,
            }
        )

    # INFRA: an interrupt rolls back to the last iteration boundary, `boundary`; checkpoints every
    # --checkpoint-interval steps (default: --eval-interval), at the end, and on SIGINT / SIGTERM
    boundary, checkpoint_path = training_state(), f"{run_dir}/checkpoint.pt"
    checkpoint_interval = args.checkpoint_interval or args.eval_interval
    next_checkpoint = (global_step // checkpoint_interval + 1) * checkpoint_interval
    start_step = global_step

    for iteration in range(iteration + 1, args.num_iterations + 1):
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate
        # BPTT in the update starts from the recurrent states at the rollout's start.
        actor_h0, critic_h0 = actor_h.clone(), critic_h.clone()

        # ALGO LOGIC: rollout with the actor
        for step in range(T):
            if STOP:  # INFRA: SIGINT / SIGTERM: back to the last iteration boundary
                stop_run(boundary, checkpoint_path, writer)
            global_step += B
            obs[step], states[step], avails[step], starts[step] = next_obs, next_state, next_avail, next_start
            with torch.no_grad():
                params, actor_h = learner(
                    next_obs.unsqueeze(0), actor_h, next_start.unsqueeze(0), next_avail.unsqueeze(0)
                )
                action = dist_sample(params[0], continuous)  # (B, N[, A])
                logprob = dist_log_prob(params[0], action, continuous)  # (B, N)
                value, critic_h = critic(
                    critic_inputs(next_obs, next_state, args.ippo).unsqueeze(0), critic_h, next_start.unsqueeze(0)
                )
            actions[step], logprobs[step], values[step] = action, logprob, value[0]

            next_obs, reward, done, info = envs.step(to_env_action(action, continuous))
            rewards[step] = torch.from_numpy(reward).to(device)
            next_obs = torch.from_numpy(next_obs).to(device)
            next_state = torch.from_numpy(envs.state()).to(device)
            next_avail = torch.from_numpy(envs.avail_actions()).to(device)
            next_start = torch.from_numpy(done).to(device)
            if done.any():
                writer.add_scalar("charts/episodic_return", info["episode_return"][done].mean(), global_step)
                writer.add_scalar("charts/episodic_length", info["episode_length"][done].mean(), global_step)
                if envs.has_wins:
                    writer.add_scalar("charts/win_rate", info["won"][done].mean(), global_step)

        if iteration == INJECT_NAN_AT:  # INFRA: the non-finite guard's test hook
            rewards[0, 0, 0] = float("nan")

        # ALGO LOGIC: per-agent GAE from the critic's per-agent values
        with torch.no_grad():
            next_value, _ = critic(
                critic_inputs(next_obs, next_state, args.ippo).unsqueeze(0), critic_h, next_start.unsqueeze(0)
            )
            # With --norm-value the critic predicts standardised returns (identity otherwise).
            raw_values, next_value = value_norm.denormalize(values), value_norm.denormalize(next_value[0])
            dones = starts.float().unsqueeze(-1)  # (T, B, 1)
            advantages, returns = compute_gae(
                rewards, raw_values, dones, next_value, next_start.float().unsqueeze(-1), args.gamma, args.gae_lambda
            )
            value_norm.update(returns)
            value_targets = value_norm.normalize(returns)
            critic_in = critic_inputs(obs, states, args.ippo)  # (T, B, N, critic_dim)

        # ALGO LOGIC: update: epochs x minibatches of whole environment sequences, BPTT from the stored states
        env_inds = np.arange(B)
        stats_sum = {}
        num_minibatch_steps = 0
        for epoch in range(args.update_epochs):
            np.random.shuffle(env_inds)
            for begin in range(0, B, args.minibatch_envs):
                if STOP:  # INFRA: SIGINT / SIGTERM: back to the last iteration boundary
                    stop_run(boundary, checkpoint_path, writer)
                mb = torch.from_numpy(env_inds[begin : begin + args.minibatch_envs]).to(device)
                mb_starts = starts[:, mb]
                params, _ = learner(obs[:, mb], actor_h0[mb], mb_starts, avails[:, mb])
                new_logp = dist_log_prob(params, actions[:, mb], continuous)  # (T, M, N)
                new_value, _ = critic(critic_in[:, mb], critic_h0[mb], mb_starts)  # (T, M, N)
                loss, stats = ppo_loss(
                    logp=new_logp,
                    logp_old=logprobs[:, mb],
                    advantages=advantages[:, mb],
                    entropy=dist_entropy(params, continuous),
                    value=new_value,
                    value_old=values[:, mb],
                    returns=value_targets[:, mb],
                    clip_coef=args.clip_coef,
                    ent_coef=args.ent_coef,
                    vf_coef=args.vf_coef,
                    norm_adv=args.norm_adv,
                    clip_vloss=args.clip_vloss,
                )
                optimizer.zero_grad()
                loss.backward()
                actor_grad_norm = nn.utils.clip_grad_norm_(learner.parameters(), args.max_grad_norm)
                critic_grad_norm = nn.utils.clip_grad_norm_(critic.parameters(), args.max_grad_norm)
                # INFRA: the non-finite guard, before any parameter moves
                actor_terms = ("policy_loss", "entropy", "approx_kl")
                check_finite(
                    iteration, "actor", {**{k: stats[k] for k in actor_terms}, "grad_norm": actor_grad_norm.item()}
                )
                check_finite(
                    iteration, "critic", {"value_loss": stats["value_loss"], "grad_norm": critic_grad_norm.item()}
                )
                optimizer.step()

                for key, value in stats.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + value
                num_minibatch_steps += 1

        y_pred, y_true = raw_values.flatten().cpu().numpy(), returns.flatten().cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        for key, total in stats_sum.items():
            writer.add_scalar(f"losses/{key}", total / num_minibatch_steps, global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps, text = progress(global_step, args.num_iterations * args.batch_size, start_step, start_time, last_eval)
        writer.add_scalar("charts/SPS", sps, global_step)
        print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} SPS={sps}, {text}")

        # INFRA: periodic evaluation, keeping the best actor for the absolute metric
        if global_step >= next_eval:
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval
            score = evaluate_and_log(learner, eval_envs, device, args, writer, global_step, video_dir)
            if score > best_score:
                best_score, best_learner = score, copy.deepcopy(learner)
            last_eval = (global_step, score)

        # INFRA: the iteration boundary (what an interrupt rolls back to); a checkpoint when one is due and
        # at the end, before the final evaluation: a longer run resumed from it does not have that evaluation
        boundary = training_state()
        if global_step >= next_checkpoint or iteration == args.num_iterations:
            next_checkpoint = (global_step // checkpoint_interval + 1) * checkpoint_interval
            save_checkpoint(checkpoint_path, boundary, writer)

    # INFRA: the final evaluation (unless the last iteration had one), absolute metric and saving
    if last_eval[0] != global_step:
        score = evaluate_and_log(learner, eval_envs, device, args, writer, global_step, video_dir)
        if score > best_score:
            best_score, best_learner = score, copy.deepcopy(learner)
    absolute_metric(best_learner, eval_envs, device, args, writer, global_step)
    if args.save_model:
        model_path = f"{run_dir}/{args.exp_name}.cleanrl_model"
        checkpoint = {
            "script": os.path.basename(__file__),
            "args": asdict(args),
            "learner": learner.state_dict(),
            "best_learner": best_learner.state_dict(),
            "critic": critic.state_dict(),
        }
        torch.save(checkpoint, model_path)
        print(f"model saved to {model_path}")

    envs.close()
    eval_envs.close()
    writer.close()
