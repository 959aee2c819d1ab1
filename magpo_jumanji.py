"""MAGPO (Multi-Agent Guided Policy Optimization) on RWARE, LBF and Connector (jumanji), in one file.

Paper: Li, Xie, Lu, "Multi-Agent Guided Policy Optimization", arXiv 2507.18059 (ICLR 2026).
Official code: a JAX fork of Mava, `mava/systems/gpo/anakin/rec_magpo.py`.
`docs/algorithm.md` explains every term with its formula, the paper's reference, the line range
here and the official line (cited below as "algorithm.md §n"), and lists every deliberate
difference from the official code.

The story of this file, top to bottom:
  Args -> pure math (GAE, guider loss, learner loss, action distributions) -> networks (guider,
  learner) -> infrastructure (evaluation, input checks) -> main: seeding, envs, rollout with the
  guider, per-agent GAE, update of both networks from the same batch, logging, absolute metric.
Blocks marked `# ALGO LOGIC:` are MAGPO; blocks marked `# INFRA:` (checks, evaluation, saving,
tracking) can be skipped on a first read.

A centralised *guider* (autoregressive joint policy) collects the data and is trained with PPO, but
a double clip keeps its per-agent ratio to the decentralised *learner* inside [1/delta, delta] and a
masked KL pulls it back where it drifts out. The *learner* (one recurrent policy per agent, shared
parameters) is trained by KL(guider || learner) plus alpha x an off-policy PPO loss on the guider's
data. Only the learner is deployed: `eval/learner_return` is the number that matters.

The paper's 26 jumanji tasks (InstaDeep's JAX environments, `utils/jumanji.py`): `--env rware` (15
RobotWarehouse layouts), `--env lbf` (7 LevelBasedForaging tasks) or `--env connector` (4 Connector
grids), `--scenario <the paper's task name>`. Discrete actions with jumanji's action masks, so both
policies are masked categoricals as on SMAX: illegal actions get probability exactly 0, are never
sampled, and KL and entropy run over the available actions only. Every agent gets the team reward; the
metric is the episode return (the official configs' `eval_metric`), there are no wins.
Each task's defaults are the paper's tuned MAGPO row for it (`utils/paper_params.csv`, see
`paper_defaults`); a flag given on the command line wins over the row.
This file is a sibling of magpo_smax.py: `diff magpo_smax.py magpo_jumanji.py` shows what jumanji
changes (the task flags and their tuned rows, no wins, enjoy.py draws the episodes).
"""

import os

# Must be set before torch is imported: OpenMP threads that spin while waiting cost 59-96x on a
# 2-core machine when JAX (the env) and torch take turns (measured, see docs/benchmarks.md).
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
from typing import Annotated, Literal, get_args

import tyro

# The fields a task's tuned row sets: `--help` says so instead of showing tiny-2ag's values (those written
# below) as if they were every task's defaults
ROW = tyro.conf.arg(help_behavior_hint="(default: the --scenario's tuned MAGPO row, utils/paper_params.csv)")


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """`torch.backends.cudnn.deterministic` (on by default; `--no-torch-deterministic` turns it off)"""
    cuda: bool = False
    """if toggled, run the networks on the GPU (an error if none is available); jumanji itself runs in JAX on the CPU"""
    torch_threads: int = 1
    """torch intra-op threads; 1 is fastest for these small networks on a 2-core CPU"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "magpo"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""
    save_model: bool = False
    """whether to save the learner, the guider and the args to `runs/{run_name}`"""
    checkpoint_interval: int = 0
    """write the full training state to `runs/{run_name}/checkpoint.pt` every this many environment steps
    (0: every --eval-interval), at the end of the run and on Ctrl-C / SIGTERM (docs/usage.md, "Long runs")"""
    resume: str | None = None
    """continue the run in this directory (`runs/<run>`) from its checkpoint.pt, with its saved arguments;
    only --total-timesteps, --checkpoint-interval, --torch-threads, --track, --wandb-*, --save-model may change"""
    capture_video: bool = False
    """not available here (an error): `enjoy.py` draws a saved model's episode with jumanji's own viewer"""

    # Environment
    env: Literal["rware", "lbf", "connector"] = "rware"
    """the jumanji environment: `rware` (RobotWarehouse), `lbf` (LevelBasedForaging) or `connector`"""
    scenario: str | None = None
    """the paper's task (default: tiny-2ag, 2s-8x8-2p-2f-coop or con-5x5x3a). RWARE: tiny-2ag, tiny-2ag-hard,
    tiny-4ag, tiny-4ag-hard, small-4ag, small-4ag-hard, medium-4ag, medium-4ag-hard, medium-6ag, large-4ag,
    large-4ag-hard, large-8ag, large-8ag-hard, xlarge-4ag, xlarge-4ag-hard; LBF: 2s-8x8-2p-2f-coop,
    8x8-2p-2f-coop, 2s-10x10-3p-3f, 10x10-3p-3f, 15x15-3p-5f, 15x15-4p-3f, 15x15-4p-5f; Connector: con-5x5x3a,
    con-7x7x5a, con-10x10x10a, con-15x15x23a"""
    guider_global_state: bool = False
    """also give the guider the global state (every agent's observation, concatenated: the official default):
    it is added to every agent token, as if concatenated to each agent's observation (the paper's guider
    sees the observations only)"""

    # Algorithm. Defaults: the task's tuned MAGPO row (`paper_defaults`: minibatches, epochs, lr, clip, entropy,
    # max-grad-norm, alpha, delta, envs; the values below are tiny-2ag's), except the budget and value
    # normalisation; a flag given on the command line wins over the row
    protocol: Literal["default", "paper"] = "default"
    """`paper`: the official code's set-up for this task (utils/protocol.py, docs/environments.md): its
    params.csv row (minibatches, epochs, lr, clip, entropy, max-grad-norm, alpha, delta, guider sizes), 2 x 64
    envs per update (`--num-envs 128`), 20M steps evaluated every 10 updates, `--no-norm-value` (the value clip in
    raw units), `--agent-order official`; flags given on the command line win"""
    total_timesteps: int = 5_000_000
    """total environment steps (one step of one environment counts one), rounded down to whole rollouts of
    num_envs x num_steps (the run says so when it rounds); the paper uses 20M"""
    learning_rate: Annotated[float, ROW] = 1e-3
    """the learning rate of both Adam optimisers (the row's actor_lr)"""
    anneal_lr: bool = False
    """toggle learning rate annealing (the paper does not anneal)"""
    num_envs: Annotated[int, ROW] = 64
    """the number of parallel environments (the row's, 64 for every task)"""
    num_steps: int = 128
    """the rollout length per environment per update"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: Annotated[int, ROW] = 1
    """the number of minibatches; each holds whole `num_steps` sequences of `num_envs / num_minibatches` envs
    (the row's, counted per official update-batch copy: algorithm.md §14)"""
    update_epochs: Annotated[int, ROW] = 5
    """the K epochs to update the policy (the row's ppo_epochs)"""
    norm_adv: bool = True
    """toggles advantage normalisation (per minibatch, over all agent tokens, algorithm.md §8)"""
    clip_coef: Annotated[float, ROW] = 0.05
    """the PPO clip epsilon (also clips the value update and the learner's off-policy ratio; the row's clip_eps)"""
    clip_vloss: bool = True
    """toggles the clipped value loss (algorithm.md §6)"""
    ent_coef: Annotated[float, ROW] = 0.01
    """coefficient of the guider's entropy bonus (the learner has none; the row's)"""
    vf_coef: float = 0.5
    """coefficient of the guider's value loss"""
    norm_value: bool = True
    """learn standardised returns (running mean/std, as MAPPO's ValueNorm); `--no-norm-value` as the official code"""
    max_grad_norm: Annotated[float, ROW] = 5.0
    """the maximum norm for the gradient clipping (applied to each network separately; the row's)"""
    delta: Annotated[float, ROW] = 1.5
    """delta > 1: the guider's per-agent ratio to the learner is kept in [1/delta, delta]; `inf` removes the tether
    (the row's)"""
    alpha: Annotated[float, ROW] = 2.0
    """weight of the learner's off-policy PPO loss beside KL(guider || learner); 0 gives pure distillation (the row's)"""
    agent_order: Literal["random", "official"] = "random"
    """the guider's decoding order (algorithm.md §3): `random` = a random order per env and step, stored and
    re-used in training; `official` = index order in rollouts and one random order per epoch in training"""

    # Networks
    guider: Literal["mat-gru", "mat", "sable"] = "mat-gru"
    """the guider network (algorithm.md §16): `mat-gru` = a MAT-style encoder-decoder on a per-agent GRU (this
    repository's, the default); `mat` = the memoryless Multi-Agent Transformer; `sable` = Sable, retention over
    agents and time (the paper's guider, which `--protocol paper` selects)"""
    learner_hidden: int = 128
    """width of the learner's MLP and GRU (the official 128)"""
    guider_dim: int = 64
    """width of the guider's embeddings, GRU and transformer (MAT's 64; the row's Sable sizes are not used, as on
    SMAX: algorithm.md §12)"""
    guider_heads: int = 1
    """attention heads in the guider"""
    guider_blocks: int = 1
    """transformer blocks in the guider's encoder and decoder"""
    sable_decay: float = 0.8
    """Sable's decay scaling factor in [0, 1]: each head's decay per timestep is multiplied by it (official 0.8)"""
    sable_ffn: Literal["zero", "init"] = "zero"
    """Sable's SwiGLU layers: `zero` = zero-initialised as the official code, so they never train (algorithm.md
    §16); `init` = torch's default initialisation, so they train"""
    timestep_chunk_size: int = 0
    """timesteps per chunk of Sable's chunkwise training pass (0: chunks of at most 512 agent tokens); speed and
    memory only, the numbers are the same"""

    # Evaluation
    eval_interval: int = 100_000
    """evaluate the learner (and the guider) every this many environment steps"""
    num_eval_episodes: int = 32
    """episodes per evaluation; the absolute metric re-scores the best learner on 10x as many"""

    # computed at runtime from the fields above, not settable
    batch_size: int = field(default=0, init=False)
    """environment steps per rollout, num_envs x num_steps"""
    minibatch_envs: int = field(default=0, init=False)
    """environments per minibatch, num_envs / num_minibatches"""
    num_iterations: int = field(default=0, init=False)
    """rollout-and-update iterations, total_timesteps // batch_size"""


# Parse the command line before the heavy imports below (torch, TensorBoard, and JAX for jumanji), so that
# `--help` and a mistyped flag answer at once instead of after seconds of imports.
if __name__ == "__main__":
    args = tyro.cli(Args)

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter

from utils import check_requirements, random_policy_score
from utils.jumanji import DEFAULT_SCENARIOS, check_task, make_env
from utils.protocol import PARAMS_CSV, apply_paper_protocol, as_flags, read_rows


# ---------------------------------------------------------------------------------------------
# ALGO LOGIC: pure math, imported by tests/test_magpo_math.py (the same in every MAGPO script)
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


def tethered_ratio(logp, logp_learner, logp_behaviour, delta):
    """MAGPO's double clip (algorithm.md §4), per token: r~ = clip(mu/pi, 1/delta, delta) * pi/beta from the log-probs of
    the sampled action under the current guider mu, the learner pi (a constant: the caller detaches it) and the behaviour
    policy beta. Inside the band, 1/delta <= mu/pi <= delta, r~ = mu/beta, the plain PPO ratio; outside, r~ does not
    depend on mu."""
    log_delta = math.log(delta)
    return ((logp - logp_learner).clamp(-log_delta, log_delta) + logp_learner - logp_behaviour).exp()


def masked_kl(logp, logp_learner, kl_to_learner, delta):
    """MAGPO's masked KL (algorithm.md §5): the tokens whose sampled-action ratio mu/pi left [1/delta, delta] are pulled
    back towards the learner by kl_to_learner = KL(mu || stopgrad pi) per token, averaged over *all* tokens, masked
    zeros included, as the official code. Returns (loss, out_of_band: 1.0 where the token left the band, else 0.0)."""
    out_of_band = ((logp - logp_learner).detach().abs() > math.log(delta)).float()
    return (out_of_band * kl_to_learner).mean(), out_of_band


def guider_loss(
    *,
    logp,
    logp_behaviour,
    logp_learner,
    advantages,
    kl_to_learner,
    entropy,
    value,
    value_old,
    returns,
    clip_coef,
    delta,
    ent_coef,
    vf_coef,
    norm_adv=True,
    clip_vloss=True,
):
    """The guider's loss (algorithm.md §4-§6): PPO with MAGPO's double clip, masked KL, value and entropy.

    Every argument but the scalars is a per-token tensor (any shape, one entry per (t, env, agent)):
    logp = log mu(a|...) of the current guider, logp_behaviour = the log-prob stored at rollout,
    logp_learner = log pi(a|own history) of the current learner (treated as a constant here),
    kl_to_learner = KL(mu || stopgrad pi) over the full per-agent action distributions (the caller
    must detach the learner side), entropy = H(mu). Returns (loss, stats dict of floats).
    """
    logp_learner = logp_learner.detach()
    adv = normalize(advantages) if norm_adv else advantages

    # Plain PPO ratio to the behaviour policy.
    logratio = logp - logp_behaviour
    ratio = logratio.exp()
    # L_pg, the double clip (algorithm.md §4): r~ = clip(mu/pi, 1/delta, delta) * pi/beta. Inside the
    # band r~ == r, so the guider is plain PPO. Outside it r~ is constant in mu, so the min() below
    # drops the gradient that would push mu further from the learner, except where r itself has left
    # [1 - eps, 1 + eps] on the side PPO does not clip (r < 1 - eps with adv > 0, r > 1 + eps with
    # adv < 0): there r * adv is the smaller term and keeps its gradient, as in plain PPO.
    ratio_tethered = tethered_ratio(logp, logp_learner, logp_behaviour, delta)
    pg_loss = -torch.min(ratio * adv, ratio_tethered.clamp(1 - clip_coef, 1 + clip_coef) * adv).mean()

    # L_kl, the masked KL (algorithm.md §5): tokens whose sampled-action ratio mu/pi left
    # [1/delta, delta] are pulled back towards the learner.
    kl_loss, out_of_band = masked_kl(logp, logp_learner, kl_to_learner, delta)

    # L_v, the value loss (algorithm.md §6) with returns R = A_raw + V_old; clipped with the
    # policy's epsilon unless --no-clip-vloss.
    if clip_vloss:
        v_clipped = value_old + (value - value_old).clamp(-clip_coef, clip_coef)
        v_loss = 0.5 * torch.max((value - returns) ** 2, (v_clipped - returns) ** 2).mean()
    else:
        v_loss = 0.5 * ((value - returns) ** 2).mean()

    # The entropy bonus H(mu) keeps the guider exploring (algorithm.md §6); the learner has none.
    entropy_mean = entropy.mean()
    loss = pg_loss + kl_loss - ent_coef * entropy_mean + vf_coef * v_loss
    with torch.no_grad():
        stats = {
            "guider_pg_loss": pg_loss.item(),
            "guider_kl_loss": kl_loss.item(),
            "value_loss": v_loss.item(),
            "entropy": entropy_mean.item(),
            "guider_loss": loss.item(),
            "approx_kl": ((ratio - 1) - logratio).mean().item(),
            "clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean().item(),
            "out_of_band_frac": out_of_band.mean().item(),
        }
    return loss, stats


def learner_loss(*, logp_learner, logp_behaviour, advantages, kl_from_guider, clip_coef, alpha, norm_adv=True):
    """The learner's loss (algorithm.md §7): alpha * off-policy PPO + KL(stopgrad mu || pi).

    logp_learner = log pi(a|own history) of the guider's sampled action; logp_behaviour = the
    guider's stored log-prob (so the ratio corrects for learning off the guider's data);
    kl_from_guider = KL(mu || pi) per token with the guider side detached by the caller: the
    *forward* KL, i.e. behaviour cloning of the current guider. No entropy, no critic.
    """
    adv = normalize(advantages) if norm_adv else advantages
    # L_rl: PPO on the guider's data, ratio pi/beta (the guider's advantages, not the learner's own).
    ratio = (logp_learner - logp_behaviour).exp()
    rl_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip_coef, 1 + clip_coef) * adv).mean()
    # L_bc: distillation of the current guider into the learner.
    bc_loss = kl_from_guider.mean()
    loss = alpha * rl_loss + bc_loss
    with torch.no_grad():
        stats = {
            "learner_rl_loss": rl_loss.item(),
            "kl_guider_learner": bc_loss.item(),
            "learner_loss": loss.item(),
            "learner_clipfrac": ((ratio - 1.0).abs() > clip_coef).float().mean().item(),
        }
    return loss, stats


# Action distributions. `params` is one tensor per token so it can be permuted, detached and
# sliced like any other: discrete -> logits (..., A), in which unavailable actions already carry
# MASKED_LOGIT (see `masked_logits`); continuous -> [mean, log_std] (..., 2A) of a Gaussian over
# the pre-tanh action u. Continuous actions are stored as u; the env gets (tanh(u) + 1) / 2 in [0, 1].
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


def dist_kl(p, q, continuous):
    """KL(p || q) per token. Categorical: p and q carry the same mask, so it runs over the available
    actions. Continuous: tanh is a bijection, so the KL of the squashed distributions equals the
    closed-form KL of the underlying Gaussians (exact, not an approximation)."""
    if continuous:
        mean_p, log_std_p = p.chunk(2, dim=-1)
        mean_q, log_std_q = q.chunk(2, dim=-1)
        var_ratio = (2 * (log_std_p - log_std_q)).exp()
        mahalanobis = ((mean_p - mean_q) / log_std_q.exp()) ** 2
        return 0.5 * (var_ratio + mahalanobis - 1.0 - 2 * (log_std_p - log_std_q)).sum(-1)
    logp_p, logp_q = p.log_softmax(-1), q.log_softmax(-1)
    return (logp_p.exp() * (logp_p - logp_q)).sum(-1)


def tether_kls(guider_params, learner_params, continuous):
    """The two KLs that tie MAGPO's networks together (algorithm.md §5, §7), per token over the full per-agent action
    distributions. Both are KL(mu || pi), the guider's distribution against the learner's; they differ in which side
    is a constant. Returns kl_to_learner = KL(mu || stopgrad pi), the guider's masked KL (the guider moves towards a
    fixed learner), and kl_from_guider = KL(stopgrad mu || pi), the learner's distillation (it imitates a fixed guider)."""
    kl_to_learner = dist_kl(guider_params, learner_params.detach(), continuous)
    kl_from_guider = dist_kl(guider_params.detach(), learner_params, continuous)
    return kl_to_learner, kl_from_guider


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


def to_positions(x, perm):
    """Agent order -> decoding order: out[:, j] = x[:, perm[:, j]]. x (M, N, ...), perm (M, N)."""
    index = perm.reshape(*perm.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


def to_agents(x, perm):
    """Decoding order -> agent order (the inverse of `to_positions`)."""
    return to_positions(x, perm.argsort(dim=1))


def action_features(action, action_dim, continuous):
    """What a decoder reads of an action: tanh(u) for continuous actions, the one-hot index otherwise."""
    return torch.tanh(action) if continuous else F.one_hot(action, action_dim).float()


def shifted_tokens(actions, action_dim, continuous, dtype):
    """Decoder inputs for teacher forcing: actions (M, N[, A]) in decoding order -> tokens (M, N, A+1), position 0
    holding the start flag and position j the features of position j-1's action (actions shifted right by one)."""
    M, N = actions.shape[:2]
    tokens = torch.zeros(M, N, action_dim + 1, device=actions.device, dtype=dtype)
    tokens[:, 0, 0] = 1.0
    tokens[:, 1:, 1:] = action_features(actions[:, :-1], action_dim, continuous)  # (M, N-1, A)
    return tokens


def sample_in_order(guider, rep, avail, deterministic):
    """Autoregressive sampling for the guiders whose decoder re-reads the whole token sequence (mat-gru, mat):
    rep (B, N, dim) and avail (B, N, A) or None in decoding order -> actions (B, N[, A]) and their log-probs
    (B, N), in decoding order. The decoder is causal, so the positions > j do not matter yet at position j."""
    B, N = rep.shape[:2]
    tokens = torch.zeros(B, N, guider.action_dim + 1, device=rep.device, dtype=rep.dtype)
    tokens[:, 0, 0] = 1.0
    actions, logps = [], []
    for j in range(N):
        params = guider.decode(tokens, rep, avail)[:, j]
        action = dist_sample(params, guider.continuous, deterministic)
        actions.append(action)
        logps.append(dist_log_prob(params, action, guider.continuous))
        if j + 1 < N:  # (B, A): position j's action, fed to j+1
            tokens[:, j + 1, 1:] = action_features(action, guider.action_dim, guider.continuous)
    return torch.stack(actions, dim=1), torch.stack(logps, dim=1)


def teacher_forced(guider, rep, actions, avail):
    """One decoder pass with the stored actions shifted right (mat-gru, mat): rep (M, N, dim), actions
    (M, N[, A]), avail (M, N, A) or None, all in decoding order -> params (M, N, P), logp (M, N), entropy (M, N)."""
    params = guider.decode(shifted_tokens(actions, guider.action_dim, guider.continuous, rep.dtype), rep, avail)
    return params, dist_log_prob(params, actions, guider.continuous), dist_entropy(params, guider.continuous)


class Attention(nn.Module):
    """Multi-head attention over the N agent tokens. N is tiny (<= 10), so plain matrix products
    (docs/benchmarks.md: nn.MultiheadAttention's packed projection was slower here)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.query = layer_init(nn.Linear(dim, dim), std=1.0)
        self.key_value = layer_init(nn.Linear(dim, 2 * dim), std=1.0)
        self.out = layer_init(nn.Linear(dim, dim), std=1.0)

    def forward(self, x, context, mask=None):
        """x (M, N, dim) queries, context (M, N, dim) keys/values, mask (N, N) True = blocked."""
        M, N, dim = x.shape
        q = self.query(x).view(M, N, self.heads, -1).transpose(1, 2)  # (M, heads, N, dim/heads)
        k, v = self.key_value(context).view(M, N, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (M, heads, N, N)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        y = scores.softmax(dim=-1) @ v  # (M, heads, N, dim/heads)
        return self.out(y.transpose(1, 2).reshape(M, N, dim))


class EncoderBlock(nn.Module):
    """Pre-LN transformer block: self-attention over the agent tokens (no positional encoding:
    the encoder is permutation-equivariant, agent identity comes from the one-hot id)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(layer_init(nn.Linear(dim, dim)), nn.GELU(), layer_init(nn.Linear(dim, dim)))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    """Causal self-attention over the decoding positions, then cross-attention to every agent's
    encoding: position j sees all observations and only the actions of positions < j."""

    def __init__(self, dim, heads):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.mlp = nn.Sequential(layer_init(nn.Linear(dim, dim)), nn.GELU(), layer_init(nn.Linear(dim, dim)))

    def forward(self, x, rep, causal_mask):
        h = self.ln1(x)
        x = x + self.self_attn(h, h, causal_mask)
        x = x + self.cross_attn(self.ln2(x), rep)
        return x + self.mlp(self.ln3(x))


class Guider(nn.Module):
    """Centralised autoregressive joint policy mu(a^j | all observations, a^{<j}) with a value per agent.

    MAT-style encoder-decoder over agent tokens, with per-agent memory underneath: a GRU shared by
    all agents runs over each agent's own (id, observation) history, so every recurrent learner is
    representable by the guider (the theory's backtracking step, algorithm.md §2 and §11).
    With `state_dim > 0` (`--guider-global-state`, beyond the paper) every agent token's input is [id,
    obs, world state]; the state's share of the first linear layer is computed once per env and
    broadcast to the N tokens (the same function as concatenating the state to each observation).

    Agent order (algorithm.md §3): decoding runs over positions j = 0..N-1 of an order `perm`, drawn
    at random per env and per step during rollouts and stored, so that training re-scores each
    action under the order it was sampled in (the stored and recomputed log-probs then agree).
    """

    def __init__(self, obs_dim, num_agents, action_dim, continuous, dim=64, heads=1, blocks=1, state_dim=0):
        super().__init__()
        self.num_agents, self.action_dim, self.continuous = num_agents, action_dim, continuous
        self.register_buffer("agent_ids", torch.eye(num_agents))
        self.register_buffer("causal_mask", torch.triu(torch.ones(num_agents, num_agents, dtype=torch.bool), 1))
        self.obs_embed = layer_init(nn.Linear(num_agents + obs_dim, dim))
        self.state_embed = layer_init(nn.Linear(state_dim, dim)) if state_dim > 0 else None
        self.gru = nn.GRU(dim, dim)
        self.encoder = nn.ModuleList([EncoderBlock(dim, heads) for _ in range(blocks)])
        self.encoder_ln = nn.LayerNorm(dim)
        self.value_head = nn.Sequential(
            layer_init(nn.Linear(dim, dim)), nn.ReLU(), layer_init(nn.Linear(dim, 1), std=1.0)
        )
        # Decoder input at position j: [is_start, features of the action at position j-1].
        self.action_embed = layer_init(nn.Linear(action_dim + 1, dim))
        self.decoder = nn.ModuleList([DecoderBlock(dim, heads) for _ in range(blocks)])
        self.decoder_ln = nn.LayerNorm(dim)
        self.policy_head = nn.Sequential(
            layer_init(nn.Linear(dim, dim)), nn.ReLU(), layer_init(nn.Linear(dim, action_dim), std=0.01)
        )
        if continuous:
            self.log_std = nn.Parameter(torch.zeros(action_dim))  # state-independent

    def memory(self, obs, h, starts, state=None):
        """obs (T, B, N, obs_dim), h (B, N, dim), starts (T, B), state (T, B, S) or None -> (T, B, N, dim), new h."""
        T, B, N, _ = obs.shape
        x = self.obs_embed(torch.cat([self.agent_ids.expand(T, B, N, N), obs], dim=-1))  # (T, B, N, dim)
        if self.state_embed is not None:
            x = x + self.state_embed(state).unsqueeze(2)  # (T, B, 1, dim) broadcast to every agent
        x = F.relu(x)
        x, h = gru_unroll(self.gru, x.reshape(T, B * N, -1), h.reshape(B * N, -1), starts.repeat_interleave(N, dim=1))
        return x.reshape(T, B, N, -1), h.reshape(B, N, -1)

    def initial_state(self, num_envs):
        """The memory before any step: one GRU state per agent, (B, N, dim) zeros."""
        return torch.zeros(num_envs, self.num_agents, self.gru.hidden_size, device=self.agent_ids.device)

    def value(self, obs, h, starts, state=None):
        """Values (B, N) of one step, for the GAE bootstrap: obs (B, N, obs_dim), h (B, N, dim), starts (B,)."""
        mem, _ = self.memory(obs.unsqueeze(0), h, starts.unsqueeze(0), None if state is None else state.unsqueeze(0))
        return self.encode(mem[0])[1]  # the encoder is permutation-equivariant

    def encode(self, x):
        """x (M, N, dim) in decoding order -> representations (M, N, dim), values (M, N)."""
        for block in self.encoder:
            x = block(x)
        rep = self.encoder_ln(x)
        return rep, self.value_head(rep).squeeze(-1)

    def decode(self, tokens, rep, avail=None):
        """tokens (M, N, A+1) shifted actions, rep (M, N, dim), avail (M, N, A) bool or None
        -> distribution params (M, N, P), discrete logits masked by avail."""
        x = self.action_embed(tokens) + rep
        for block in self.decoder:
            x = block(x, rep, self.causal_mask)
        out = self.policy_head(self.decoder_ln(x))
        if self.continuous:
            return torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out if avail is None else masked_logits(out, avail)

    @torch.no_grad()
    def act(self, obs, h, starts, perm, avail=None, deterministic=False, state=None):
        """Sample a joint action agent by agent in the order `perm`.

        obs (B, N, obs_dim), h (B, N, dim), starts (B,), perm (B, N), avail (B, N, A) or None, state (B, S) ->
        action (B, N[, A]), logp (B, N), value (B, N), all in agent order, and the new h.
        """
        mem, h = self.memory(obs.unsqueeze(0), h, starts.unsqueeze(0), None if state is None else state.unsqueeze(0))
        rep, value = self.encode(to_positions(mem[0], perm))  # (B, N, dim), (B, N)
        avail = None if avail is None else to_positions(avail, perm)
        action, logp = sample_in_order(self, rep, avail, deterministic)
        return to_agents(action, perm), to_agents(logp, perm), to_agents(value, perm), h

    def evaluate(self, obs, h, starts, actions, perm, avail=None, state=None):
        """Teacher-forced pass over stored sequences (BPTT from the stored state h).

        obs (T, M, N, obs_dim), h (M, N, dim), starts (T, M), actions (T, M, N[, A]), perm (T, M, N),
        avail (T, M, N, A) or None, state (T, M, S) or None
        -> params (T, M, N, P), logp, entropy, value (T, M, N), all in agent order.
        """
        T, M, N = perm.shape
        mem, _ = self.memory(obs, h, starts, state)
        perm = perm.reshape(T * M, N)
        rep, value = self.encode(to_positions(mem.reshape(T * M, N, -1), perm))
        avail = None if avail is None else to_positions(avail.reshape(T * M, N, -1), perm)
        actions = to_positions(actions.reshape(T * M, *actions.shape[2:]), perm)
        params, logp, entropy = teacher_forced(self, rep, actions, avail)  # (T*M, N, P), (T*M, N), (T*M, N)
        outputs = [to_agents(x, perm) for x in (params, logp, entropy, value)]
        return [x.reshape(T, M, *x.shape[1:]) for x in outputs]


# ---------------------------------------------------------------------------------------------
# ALGO LOGIC: the paper's two other guiders, `--guider mat` and `--guider sable` (algorithm.md §16), built as the
# official code builds them; the same interface as the Guider: initial_state, act, evaluate, value
# ---------------------------------------------------------------------------------------------
def linear_no_bias(in_dim, out_dim, std):
    layer = nn.Linear(in_dim, out_dim, bias=False)
    torch.nn.init.orthogonal_(layer.weight, std)
    return layer


def gelu():
    return nn.GELU(approximate="tanh")  # flax's gelu, which the official networks use


class MATAttention(nn.Module):
    """MAT's attention: queries from `query`, keys and values from `context`, projections orthogonal(0.01),
    `mask` (N, N) True = blocked (the causal mask of the decoder's two attentions)."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.query = layer_init(nn.Linear(dim, dim), std=0.01)
        self.key = layer_init(nn.Linear(dim, dim), std=0.01)
        self.value = layer_init(nn.Linear(dim, dim), std=0.01)
        self.proj = layer_init(nn.Linear(dim, dim), std=0.01)

    def forward(self, query, context, mask=None):
        M, N, dim = query.shape
        q = self.query(query).view(M, N, self.heads, -1).transpose(1, 2)  # (M, heads, N, dim/heads)
        k = self.key(context).view(M, N, self.heads, -1).transpose(1, 2)
        v = self.value(context).view(M, N, self.heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (M, heads, N, N)
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        return self.proj((scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(M, N, dim))


class MATBlock(nn.Module):
    """A post-LN block of MAT. Encoder (`cross=False`): self-attention over the agents, then an MLP. Decoder
    (`cross=True`): causal self-attention over the action path, then a causal cross-attention whose queries are
    the observation representations `rep` and whose residual is `rep` (MAT's wiring, not a textbook decoder's),
    then an MLP. Position j thus sees every observation and the actions of positions < j only."""

    def __init__(self, dim, heads, cross):
        super().__init__()
        self.attn = MATAttention(dim, heads)
        self.cross_attn = MATAttention(dim, heads) if cross else None
        self.norms = nn.ModuleList([nn.LayerNorm(dim, eps=1e-6) for _ in range(3 if cross else 2)])
        self.mlp = nn.Sequential(layer_init(nn.Linear(dim, dim)), gelu(), layer_init(nn.Linear(dim, dim), std=0.01))

    def forward(self, x, rep=None, mask=None):
        x = self.norms[0](x + self.attn(x, x, mask))
        if self.cross_attn is not None:
            x = self.norms[1](rep + self.cross_attn(rep, x, mask))
        return self.norms[-1](x + self.mlp(x))


class MAT(nn.Module):
    """`--guider mat`: the Multi-Agent Transformer (Wen et al. 2022) as the official code builds it, memoryless.

    Encoder over the N agents' current (id, observation) tokens, no positional encoding (permutation-equivariant),
    a value per agent from it; an autoregressive decoder over the decoding positions (algorithm.md §3, §16).
    It has no memory: `initial_state` is an empty (B, 0) tensor, so the loops carry it like any other state.
    """

    def __init__(self, obs_dim, num_agents, action_dim, continuous, dim=64, heads=1, blocks=1):
        super().__init__()
        self.num_agents, self.action_dim, self.continuous = num_agents, action_dim, continuous
        self.register_buffer("agent_ids", torch.eye(num_agents))
        self.register_buffer("causal_mask", torch.triu(torch.ones(num_agents, num_agents, dtype=torch.bool), 1))
        in_dim = num_agents + obs_dim
        self.obs_embed = nn.Sequential(nn.LayerNorm(in_dim, eps=1e-6), layer_init(nn.Linear(in_dim, dim)), gelu())
        self.encoder_ln = nn.LayerNorm(dim, eps=1e-6)
        self.encoder = nn.ModuleList([MATBlock(dim, heads, cross=False) for _ in range(blocks)])
        self.value_head = nn.Sequential(
            layer_init(nn.Linear(dim, dim)),
            gelu(),
            nn.LayerNorm(dim, eps=1e-6),
            layer_init(nn.Linear(dim, 1), std=0.01),
        )
        # Decoder input at position j: [is_start, features of the action at position j-1] (bias: continuous only)
        embed = (
            layer_init(nn.Linear(action_dim + 1, dim))
            if continuous
            else linear_no_bias(action_dim + 1, dim, np.sqrt(2))
        )
        self.action_embed = nn.Sequential(embed, gelu())
        self.decoder_ln = nn.LayerNorm(dim, eps=1e-6)
        self.decoder = nn.ModuleList([MATBlock(dim, heads, cross=True) for _ in range(blocks)])
        self.policy_head = nn.Sequential(
            layer_init(nn.Linear(dim, dim)), gelu(), nn.LayerNorm(dim, eps=1e-6),
            layer_init(nn.Linear(dim, action_dim), std=0.01),
        )  # fmt: skip
        if continuous:
            self.log_std = nn.Parameter(torch.zeros(action_dim))  # state-independent, as the other guiders

    def initial_state(self, num_envs):
        return torch.zeros(num_envs, 0, device=self.agent_ids.device)  # no memory

    def encode(self, obs):
        """obs (M, N, obs_dim) in agent order -> representations (M, N, dim), values (M, N), in agent order."""
        M, N, _ = obs.shape
        x = self.encoder_ln(self.obs_embed(torch.cat([self.agent_ids.expand(M, N, N), obs], dim=-1)))
        for block in self.encoder:
            x = block(x)
        return x, self.value_head(x).squeeze(-1)

    def decode(self, tokens, rep, avail=None):
        """tokens (M, N, A+1), rep (M, N, dim), avail (M, N, A) or None, in decoding order -> params (M, N, P)."""
        x = self.decoder_ln(self.action_embed(tokens))
        for block in self.decoder:
            x = block(x, rep, self.causal_mask)
        out = self.policy_head(x)
        if self.continuous:
            return torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out if avail is None else masked_logits(out, avail)

    @torch.no_grad()
    def act(self, obs, h, starts, perm, avail=None, deterministic=False):
        """As Guider.act: obs (B, N, obs_dim), h (B, 0), starts (B,), perm (B, N), avail (B, N, A) or None ->
        action (B, N[, A]), logp (B, N), value (B, N) in agent order, and h."""
        rep, value = self.encode(obs)
        avail = None if avail is None else to_positions(avail, perm)
        action, logp = sample_in_order(self, to_positions(rep, perm), avail, deterministic)
        return to_agents(action, perm), to_agents(logp, perm), value, h

    def evaluate(self, obs, h, starts, actions, perm, avail=None):
        """As Guider.evaluate: (T, M, ...) -> params (T, M, N, P), logp, entropy, value (T, M, N), in agent order."""
        T, M, N = perm.shape
        perm = perm.reshape(T * M, N)
        rep, value = self.encode(obs.reshape(T * M, N, -1))
        avail = None if avail is None else to_positions(avail.reshape(T * M, N, -1), perm)
        actions = to_positions(actions.reshape(T * M, *actions.shape[2:]), perm)
        params, logp, entropy = teacher_forced(self, to_positions(rep, perm), actions, avail)
        outputs = [to_agents(x, perm) for x in (params, logp, entropy)] + [value]
        return [x.reshape(T, M, *x.shape[1:]) for x in outputs]

    def value(self, obs, h, starts):
        """Values (B, N) of one step, for the GAE bootstrap."""
        return self.encode(obs)[1]


def retention_decays(heads, scale):
    """Sable's per-head decay per timestep: kappa_h = (1 - exp(linspace(ln 1/32, ln 1/512, heads))_h) * scale."""
    return (1.0 - np.exp(np.linspace(math.log(1 / 32), math.log(1 / 512), heads))) * scale  # (heads,) numpy


def timestep_encoding(count, dim):
    """Sinusoidal encoding (..., dim) of the within-episode step count (...,): sin at even, cos at odd channels."""
    div = torch.exp(torch.arange(0, dim, 2, dtype=count.dtype, device=count.device) * (-math.log(10000.0) / dim))
    x = count.unsqueeze(-1) * div  # (..., dim/2)
    return torch.stack([torch.sin(x), torch.cos(x)], dim=-1).flatten(-2)


def retention_step(q, k, v, state):
    """The recurrent form for tokens entering together: q, k, v (B, H, n, d), state (B, H, d, d) already decayed
    to this timestep -> out (B, H, n, d), new state. The encoder enters a timestep's N agents at once (each sees
    all of them); the decoder one token at a time (each sees itself and the earlier positions)."""
    state = state + k.transpose(-1, -2) @ v
    return q @ state, state


def retention_chunk(q, k, v, state, starts, kappa, num_agents, causal):
    """The chunkwise form over Tc timesteps of N tokens (time-major, C = Tc x N), equal to `retention_step` run
    timestep by timestep (algorithm.md §16; tests/test_guiders.py checks it in float64).

    q, k, v (B, H, C, d); state (B, H, d, d) carried in from before the chunk; starts (B, Tc) True where a
    timestep starts an episode; kappa (H,) -> out (B, H, C, d), the state after the chunk. Decay counts
    timesteps, not tokens: a token at step t sees one at step t' <= t with weight kappa^(t - t') unless an
    episode starts in (t', t]; the carried state reaches only the steps before the chunk's first start, as
    kappa^(t + 1). `causal` (the decoder) also hides the later positions of the same timestep.
    """
    B, H, C, d = q.shape
    Tc = C // num_agents
    t = torch.arange(Tc, device=q.device, dtype=q.dtype)
    episode = starts.long().cumsum(dim=1)  # (B, Tc): starts seen up to t, so equal values = same episode
    lag = t.unsqueeze(1) - t.unsqueeze(0)  # (Tc, Tc)
    decay = kappa.view(H, 1, 1) ** lag.clamp(min=0) * (lag >= 0)  # (H, Tc, Tc)
    same = (episode.unsqueeze(2) == episode.unsqueeze(1)).unsqueeze(1)  # (B, 1, Tc, Tc)
    D = (decay * same).repeat_interleave(num_agents, dim=2).repeat_interleave(num_agents, dim=3)  # (B, H, C, C)
    if causal:
        D = D.tril()
    inner = ((q @ k.transpose(-1, -2)) * D) @ v
    xi = kappa.view(1, H, 1) ** (t + 1) * (episode == 0).unsqueeze(1)  # (B, H, Tc)
    out = inner + (q @ state) * xi.repeat_interleave(num_agents, dim=2).unsqueeze(-1)
    # the state after the chunk: what the last timestep's tokens see, decayed to it
    weight = kappa.view(1, H, 1) ** (Tc - 1 - t) * (episode == episode[:, -1:]).unsqueeze(1)  # (B, H, Tc)
    carried = kappa.view(1, H, 1, 1) ** Tc * (episode[:, -1] == 0).view(B, 1, 1, 1)
    new_state = k.transpose(-1, -2) @ (v * weight.repeat_interleave(num_agents, dim=2).unsqueeze(-1)) + state * carried
    return out, new_state


class MultiScaleRetention(nn.Module):
    """Sable's multi-scale retention: per head q = x W_q, k, v (no 1/sqrt(d) scaling, weights N(0, 1/dim^2)),
    one decay per head, the timestep encoding added to key, query and value; the heads' outputs go through a
    GroupNorm over head_size/heads-channel sub-groups (the official layout) and a swish gate on the key."""

    def __init__(self, dim, heads, decay, causal):
        super().__init__()
        self.heads, self.head_size, self.causal = heads, dim // heads, causal
        self.w_q, self.w_k, self.w_v, self.w_g, self.w_o = (nn.Linear(dim, dim, bias=False) for _ in range(5))
        for layer in (self.w_q, self.w_k, self.w_v, self.w_g, self.w_o):
            torch.nn.init.normal_(layer.weight, std=1.0 / dim)
        self.group_norm = nn.GroupNorm(heads, self.head_size, eps=1e-6)
        self.register_buffer("kappa", torch.tensor(retention_decays(heads, decay), dtype=torch.float32))

    def forward(self, key, query, value, encoding, state, starts=None):
        """Recurrent form (`starts` None): tokens (B, n, dim) of one timestep, state already decayed. Chunkwise
        form: tokens (B, Tc, N, dim), starts (B, Tc). encoding broadcasts to the tokens. -> out, new state."""
        key, query, value = key + encoding, query + encoding, value + encoding
        B, H, d = value.shape[0], self.heads, self.head_size
        q, k, v = (w(x).reshape(B, -1, H, d).transpose(1, 2) for w, x in zip((self.w_q, self.w_k, self.w_v), (query, key, value)))  # fmt: skip
        if starts is None:
            ret, state = retention_step(q, k, v, state)  # (B, H, n, d)
        else:
            ret, state = retention_chunk(q, k, v, state, starts, self.kappa, value.shape[2], self.causal)
        ret = self.group_norm(ret.transpose(1, 2).reshape(-1, d)).reshape(value.shape)
        return self.w_o(F.silu(self.w_g(key)) * ret), state


class SwiGLU(nn.Module):
    """Sable's feed-forward layer, (swish(x W_gate) * x W_linear) W_output. The official code starts all three
    weights at zero, so its output and all three gradients are exactly zero and it never trains (algorithm.md §16);
    `zero_init=False` (`--sable-ffn init`) keeps torch's default initialisation, so it trains."""

    def __init__(self, dim, zero_init):
        super().__init__()
        self.gate, self.linear, self.output = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        if zero_init:
            for layer in (self.gate, self.linear, self.output):
                torch.nn.init.zeros_(layer.weight)

    def forward(self, x):
        return self.output(F.silu(self.gate(x)) * self.linear(x))


class SableEncoderBlock(nn.Module):
    """x <- RMSNorm(x + retention(x)) over all agents of each timestep and the past; x <- RMSNorm(x + FFN(x))."""

    def __init__(self, dim, heads, decay, zero_ffn):
        super().__init__()
        self.retention = MultiScaleRetention(dim, heads, decay, causal=False)
        self.ln1, self.ln2 = nn.RMSNorm(dim, eps=1e-6), nn.RMSNorm(dim, eps=1e-6)
        self.ffn = SwiGLU(dim, zero_ffn)

    def forward(self, x, encoding, state, starts=None):
        ret, state = self.retention(x, x, x, encoding, state, starts)
        x = self.ln1(x + ret)
        return self.ln2(x + self.ffn(x)), state


class SableDecoderBlock(nn.Module):
    """Causal self-retention over the action path, then causal cross-retention with the observation path `rep`
    as queries (and as the residual), then the FFN: MAT's wiring with retention in place of attention."""

    def __init__(self, dim, heads, decay, zero_ffn):
        super().__init__()
        self.retention = MultiScaleRetention(dim, heads, decay, causal=True)
        self.cross_retention = MultiScaleRetention(dim, heads, decay, causal=True)
        self.ln1, self.ln2, self.ln3 = (nn.RMSNorm(dim, eps=1e-6) for _ in range(3))
        self.ffn = SwiGLU(dim, zero_ffn)

    def forward(self, x, rep, encoding, self_state, cross_state, starts=None):
        ret, self_state = self.retention(x, x, x, encoding, self_state, starts)
        x = self.ln1(x + ret)
        ret, cross_state = self.cross_retention(x, rep, x, encoding, cross_state, starts)
        y = self.ln2(rep + ret)
        return self.ln3(y + self.ffn(y)), self_state, cross_state


class Sable(nn.Module):
    """`--guider sable`: Sable (Mahjoub et al. 2025), the paper's guider, as the official code builds it.

    MAT's encoder-decoder with retention over (timesteps x agents) in place of attention: a memory carried
    across steps and rollouts, reset at episode starts, and the within-episode step count it needs for its
    timestep encoding carried with it. Rollouts use the recurrent form agent by agent; training the chunkwise
    form over whole env sequences from the state stored at the rollout's start, in chunks of `chunk_steps`
    timesteps (the same numbers as the recurrent form; only speed and memory change). Facts about the official
    network, and where this one differs, are in algorithm.md §16.
    """

    def __init__(self, obs_dim, num_agents, action_dim, continuous, dim=64, heads=1, blocks=1, decay=0.8,
                 zero_ffn=True, chunk_steps=0):  # fmt: skip
        super().__init__()
        self.num_agents, self.action_dim, self.continuous = num_agents, action_dim, continuous
        self.dim, self.heads, self.blocks, self.head_size = dim, heads, blocks, dim // heads
        self.chunk_steps = chunk_steps or max(1, 512 // num_agents)  # default: chunks of at most 512 tokens
        self.register_buffer("agent_ids", torch.eye(num_agents))
        self.register_buffer("kappa", torch.tensor(retention_decays(heads, decay), dtype=torch.float32))
        in_dim = num_agents + obs_dim
        self.obs_embed = nn.Sequential(nn.RMSNorm(in_dim, eps=1e-6), linear_no_bias(in_dim, dim, np.sqrt(2)), gelu())
        self.encoder_ln = nn.RMSNorm(dim, eps=1e-6)  # before every encoder block (one norm, shared)
        self.encoder = nn.ModuleList([SableEncoderBlock(dim, heads, decay, zero_ffn) for _ in range(blocks)])
        self.value_head = nn.Sequential(
            layer_init(nn.Linear(dim, dim)), gelu(), nn.RMSNorm(dim, eps=1e-6), layer_init(nn.Linear(dim, 1), std=0.01)
        )
        embed = (
            layer_init(nn.Linear(action_dim + 1, dim))
            if continuous
            else linear_no_bias(action_dim + 1, dim, np.sqrt(2))
        )
        self.action_embed = nn.Sequential(embed, gelu())
        self.decoder_ln = nn.RMSNorm(dim, eps=1e-6)
        self.decoder = nn.ModuleList([SableDecoderBlock(dim, heads, decay, zero_ffn) for _ in range(blocks)])
        self.policy_head = nn.Sequential(
            layer_init(nn.Linear(dim, dim)), gelu(), nn.RMSNorm(dim, eps=1e-6),
            layer_init(nn.Linear(dim, action_dim), std=0.01),
        )  # fmt: skip
        if continuous:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def initial_state(self, num_envs):
        """(B, 3 x blocks x heads x d x d + 1): per block the encoder's, the decoder self-retention's and its
        cross-retention's states, then the within-episode step count of the last step, packed in one tensor."""
        size = 3 * self.blocks * self.heads * self.head_size**2 + 1
        return torch.zeros(num_envs, size, device=self.agent_ids.device)

    def unpack(self, h):
        """h (B, S) -> states (B, 3, blocks, heads, d, d), step count (B,)."""
        return h[:, :-1].reshape(-1, 3, self.blocks, self.heads, self.head_size, self.head_size), h[:, -1]

    def embed(self, obs):
        """obs (..., N, obs_dim) -> (..., N, dim) in agent order (the id is each agent's own)."""
        return self.obs_embed(torch.cat([self.agent_ids.expand(*obs.shape[:-1], self.num_agents), obs], dim=-1))

    def policy(self, x, avail):
        out = self.policy_head(x)
        if self.continuous:
            return torch.cat([out, self.log_std.expand_as(out)], dim=-1)
        return out if avail is None else masked_logits(out, avail)

    def begin_step(self, h, starts):
        """The memory at a new timestep: zeroed where an episode starts, else decayed once (per head); the step
        count 0 at a start, +1 otherwise. h (B, S), starts (B,) -> states (B, 3, blocks, heads, d, d), count (B,)."""
        states, count = self.unpack(h)
        keep = (~starts).to(h.dtype)
        return states * self.kappa.view(1, 1, 1, -1, 1, 1) * keep.view(-1, 1, 1, 1, 1, 1), (count + 1) * keep

    def encode_step(self, obs, states, count, perm):
        """The encoder's recurrent step over the N agents (in decoding order; it is permutation-equivariant)."""
        encoding = timestep_encoding(count, self.dim).unsqueeze(1)  # (B, 1, dim)
        x = to_positions(self.embed(obs), perm)  # (B, N, dim)
        for i, block in enumerate(self.encoder):
            x, states[:, 0, i] = block(self.encoder_ln(x), encoding, states[:, 0, i])
        return x, self.value_head(x).squeeze(-1), encoding

    @torch.no_grad()
    def act(self, obs, h, starts, perm, avail=None, deterministic=False):
        """As Guider.act, in the recurrent form: obs (B, N, obs_dim), h (B, S), starts (B,), perm (B, N), avail
        (B, N, A) or None -> action (B, N[, A]), logp (B, N), value (B, N) in agent order, and the new h."""
        states, count = self.begin_step(h, starts)
        rep, value, encoding = self.encode_step(obs, states, count, perm)  # (B, N, dim), (B, N)
        avail = None if avail is None else to_positions(avail, perm)
        B = obs.shape[0]
        token = torch.zeros(B, 1, self.action_dim + 1, device=obs.device, dtype=rep.dtype)
        token[:, 0, 0] = 1.0  # the start flag, at the first position of every timestep
        actions, logps = [], []
        for j in range(self.num_agents):
            x = self.decoder_ln(self.action_embed(token))  # (B, 1, dim)
            for i, block in enumerate(self.decoder):
                x, states[:, 1, i], states[:, 2, i] = block(
                    x, rep[:, j : j + 1], encoding, states[:, 1, i], states[:, 2, i]
                )
            params = self.policy(x[:, 0], None if avail is None else avail[:, j])
            action = dist_sample(params, self.continuous, deterministic)
            actions.append(action)
            logps.append(dist_log_prob(params, action, self.continuous))
            token = torch.zeros_like(token)  # the last position's action never enters the memory (as officially)
            token[:, 0, 1:] = action_features(action, self.action_dim, self.continuous)
        action, logp = torch.stack(actions, dim=1), torch.stack(logps, dim=1)
        h = torch.cat([states.flatten(1), count.unsqueeze(1)], dim=1)
        return to_agents(action, perm), to_agents(logp, perm), to_agents(value, perm), h

    def sequence(self, obs, h, starts, actions, perm, avail=None):
        """Teacher-forced chunkwise pass over stored sequences from the state h stored at their start.

        obs (T, M, N, obs_dim), h (M, S), starts (T, M), actions (T, M, N[, A]), perm (T, M, N), avail
        (T, M, N, A) or None -> params (T, M, N, P), value (T, M, N) in agent order, and the state after step T-1.
        """
        T, M, N = perm.shape
        states, count0 = self.unpack(h)
        # the step count of every stored step: steps since the last start, or the stored count + t + 1 before any
        t = torch.arange(T, device=h.device).unsqueeze(1)
        last_start = torch.where(starts, t, -1).cummax(dim=0).values  # (T, M)
        count = torch.where(last_start >= 0, t - last_start, count0.long() + t + 1).to(h.dtype).T  # (M, T)
        flat_perm = perm.reshape(T * M, N)

        def positions(x):  # (T, M, N, ...) agent order -> (M, T, N, ...) decoding order
            return to_positions(x.reshape(T * M, N, *x.shape[3:]), flat_perm).reshape(T, M, N, *x.shape[3:]).transpose(0, 1)  # fmt: skip

        x = positions(self.embed(obs))  # (M, T, N, dim)
        tokens = shifted_tokens(to_positions(actions.reshape(T * M, *actions.shape[2:]), flat_perm), self.action_dim, self.continuous, x.dtype)  # fmt: skip
        tokens = tokens.reshape(T, M, N, -1).transpose(0, 1)  # (M, T, N, A+1)
        encoding = timestep_encoding(count, self.dim).unsqueeze(2)  # (M, T, 1, dim)
        starts = starts.T  # (M, T)
        encoder_states = [states[:, 0, i] for i in range(self.blocks)]
        self_states = [states[:, 1, i] for i in range(self.blocks)]
        cross_states = [states[:, 2, i] for i in range(self.blocks)]
        reps, outs = [], []
        for begin in range(0, T, self.chunk_steps):
            piece = slice(begin, begin + self.chunk_steps)
            rep, enc, chunk_starts = x[:, piece], encoding[:, piece], starts[:, piece]
            for i, block in enumerate(self.encoder):
                rep, encoder_states[i] = block(self.encoder_ln(rep), enc, encoder_states[i], chunk_starts)
            y = self.decoder_ln(self.action_embed(tokens[:, piece]))
            for i, block in enumerate(self.decoder):
                y, self_states[i], cross_states[i] = block(y, rep, enc, self_states[i], cross_states[i], chunk_starts)
            reps.append(rep)
            outs.append(y)
        rep, y = torch.cat(reps, dim=1), torch.cat(outs, dim=1)  # (M, T, N, dim)
        params = self.policy(y, None if avail is None else positions(avail))
        value = self.value_head(rep).squeeze(-1)

        def agents(x):  # (M, T, N, ...) decoding order -> (T, M, N, ...) agent order
            return to_agents(x.transpose(0, 1).reshape(T * M, N, *x.shape[3:]), flat_perm).reshape(T, M, N, *x.shape[3:])  # fmt: skip

        states = torch.stack([torch.stack(s, dim=1) for s in (encoder_states, self_states, cross_states)], dim=1)
        last_count = count[:, -1]
        return agents(params), agents(value), torch.cat([states.flatten(1), last_count.unsqueeze(1)], dim=1)

    def evaluate(self, obs, h, starts, actions, perm, avail=None):
        """As Guider.evaluate: (T, M, ...) -> params (T, M, N, P), logp, entropy, value (T, M, N), in agent order."""
        params, value, _ = self.sequence(obs, h, starts, actions, perm, avail)
        return params, dist_log_prob(params, actions, self.continuous), dist_entropy(params, self.continuous), value

    @torch.no_grad()
    def value(self, obs, h, starts):
        """Values (B, N) of one step, for the GAE bootstrap (the encoder's recurrent step)."""
        states, count = self.begin_step(h, starts)
        perm = torch.arange(self.num_agents, device=obs.device).expand(obs.shape[0], -1)
        return self.encode_step(obs, states, count, perm)[1]


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


def to_env_action(action, continuous):
    """Policy action -> what the env takes: (tanh(u) + 1) / 2 in [0, 1]^A, or the index, as numpy."""
    return ((torch.tanh(action) + 1.0) / 2.0).cpu().numpy() if continuous else action.cpu().numpy()


def random_perm(num_envs, num_agents, device):
    """An independent random decoding order per environment (B, N) (algorithm.md §3)."""
    return torch.rand(num_envs, num_agents, device=device).argsort(dim=1)


def decoding_order(num_envs, num_agents, device, agent_order):
    """The guider's decoding order (B, N) for one rollout or evaluation step (algorithm.md §3): `random` draws
    one per environment; `official` is index order 0..N-1, as the official rollouts decode."""
    if agent_order == "official":
        return torch.arange(num_agents, device=device).expand(num_envs, num_agents)
    return random_perm(num_envs, num_agents, device)


def make_guider(args, obs_dim, num_agents, action_dim, continuous, state_dim=0):
    """The guider `--guider` names (algorithm.md §16); all three share one interface: initial_state(B),
    act(obs, h, starts, perm, avail, deterministic), evaluate(obs, h, starts, actions, perm, avail), value(obs, h, starts)."""
    sizes = dict(dim=args.guider_dim, heads=args.guider_heads, blocks=args.guider_blocks)
    if args.guider == "mat":
        return MAT(obs_dim, num_agents, action_dim, continuous, **sizes)
    if args.guider == "sable":
        ffn = dict(zero_ffn=args.sable_ffn == "zero", chunk_steps=args.timestep_chunk_size)
        return Sable(obs_dim, num_agents, action_dim, continuous, **sizes, decay=args.sable_decay, **ffn)
    return Guider(obs_dim, num_agents, action_dim, continuous, **sizes, state_dim=state_dim)


# ---------------------------------------------------------------------------------------------
# INFRA: evaluation (algorithm.md §10) and input checks; skip on a first read
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(policy, eval_envs, device, hidden_size, deterministic=False, agent_order="random", use_state=False):
    """Undiscounted returns (B,) and win flags (B,) (None where the env has no wins) of `policy` over
    one episode in each of the B eval envs, sampling actions as the paper does (`deterministic`
    takes the mode instead). A Learner acts decentralised (own observation history, own available
    actions); the Guider acts centrally, decoding in `agent_order` as in its rollouts, and with
    `use_state` also sees the world state."""
    B, N = eval_envs.num_envs, eval_envs.num_agents
    obs = torch.from_numpy(eval_envs.reset()).to(device)
    h = torch.zeros(B, N, hidden_size, device=device) if isinstance(policy, Learner) else policy.initial_state(B)
    starts = torch.ones(B, dtype=torch.bool, device=device)
    finished = np.zeros(B, dtype=bool)
    episode_return, won = np.zeros(B, dtype=np.float64), np.zeros(B, dtype=bool)
    while not finished.all():
        avail = torch.from_numpy(eval_envs.avail_actions()).to(device)
        if isinstance(policy, Learner):
            action, h = policy.act(obs, h, starts, avail, deterministic)
        else:
            state = {"state": torch.from_numpy(eval_envs.state()).to(device)} if use_state else {}
            perm = decoding_order(B, N, device, agent_order)
            action, _, _, h = policy.act(obs, h, starts, perm, avail, deterministic, **state)
        next_obs, _, dones, info = eval_envs.step(to_env_action(action, policy.continuous))
        newly = dones & ~finished
        episode_return[newly] = info["episode_return"][newly]
        if eval_envs.has_wins:
            won[newly] = info["won"][newly]
        finished |= dones
        obs = torch.from_numpy(next_obs).to(device)
        starts = torch.from_numpy(dones).to(device)
    return episode_return, (won if eval_envs.has_wins else None)


def evaluate_and_log(learner, guider, eval_envs, device, args, writer, step):
    """Evaluate the learner and the guider once, log and print the results; returns the learner's
    score for keeping the best learner (its mean return)."""
    learner_return, _ = evaluate(learner, eval_envs, device, args.learner_hidden)
    guider_return, _ = evaluate(
        guider, eval_envs, device, args.guider_dim, agent_order=args.agent_order, use_state=args.guider_global_state
    )
    writer.add_scalar("eval/learner_return", learner_return.mean(), step)
    writer.add_scalar("eval/guider_return", guider_return.mean(), step)
    print(
        f"global_step={step}, eval/learner_return={learner_return.mean():.3f}, eval/guider_return={guider_return.mean():.3f}"
    )
    return learner_return.mean()


def absolute_metric(best_learner, eval_envs, device, args, writer, step):
    """The paper's absolute metric (algorithm.md §10): the best evaluated learner re-scored on 10x the episodes; then
    the same episodes again (the eval envs' state put back) with greedy actions, a diagnostic beside the paper's
    sampled score: the difference is what the learner's own randomness costs or gains."""
    start = eval_envs.get_state()
    scores = [evaluate(best_learner, eval_envs, device, args.learner_hidden)[0] for _ in range(ABSOLUTE_REPEATS)]
    absolute = np.concatenate(scores).mean()
    writer.add_scalar("eval/absolute_learner_return", absolute, step)
    print(
        f"absolute metric: best learner over {ABSOLUTE_REPEATS * args.num_eval_episodes} episodes: return {absolute:.3f}"
    )
    end = eval_envs.get_state()
    eval_envs.set_state(start)
    greedy = [
        evaluate(best_learner, eval_envs, device, args.learner_hidden, deterministic=True)[0]
        for _ in range(ABSOLUTE_REPEATS)
    ]
    eval_envs.set_state(end)  # the run goes on from where the sampled episodes left the envs
    writer.add_scalar("eval/absolute_learner_return_greedy", np.concatenate(greedy).mean(), step)
    print(f"absolute metric, greedy actions on the same episodes: return {np.concatenate(greedy).mean():.3f}")


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


# ---------------------------------------------------------------------------------------------
# INFRA: each task's defaults, the paper's tuned MAGPO row (algorithm.md §14)
# ---------------------------------------------------------------------------------------------
# Args field <- params.csv column. The row's Sable sizes (n_embd, n_block, n_head, decay_scaling_factor) do not
# apply to this guider (algorithm.md §12) and its budget (num_updates 1220 of 2 x 64 x 128 steps = 20M) is
# --total-timesteps's to choose.
PAPER_COLUMNS = {
    "num_minibatches": "num_minibatches", "update_epochs": "ppo_epochs", "clip_coef": "clip_eps",
    "ent_coef": "ent_coef", "max_grad_norm": "max_grad_norm", "learning_rate": "actor_lr", "alpha": "alpha",
    "delta": "delta", "num_envs": "num_envs",
}  # fmt: skip


def paper_defaults(scenario):
    """{Args field: value} of the task's tuned MAGPO row in utils/paper_params.csv, the official params.csv
    (ValueError if it has no such row)."""
    row = read_rows().get(("magpo", scenario))
    if row is None:
        raise ValueError(f"{PARAMS_CSV} has no MAGPO row for task {scenario!r}")
    types = {f.name: get_args(f.type)[0] for f in fields(Args) if f.name in PAPER_COLUMNS}  # Annotated[type, ROW]
    return {name: types[name](row[column]) for name, column in PAPER_COLUMNS.items()}


def apply_paper_defaults(args, given):
    """Resolve --scenario (None: the family's first task) and give every field in PAPER_COLUMNS that the
    command line does not set (`given`, from given_flags) the task's tuned value."""
    args.scenario = args.scenario or DEFAULT_SCENARIOS.get(args.env)
    check_task(args.env, args.scenario)
    for name, value in paper_defaults(args.scenario).items():
        if name not in given:
            setattr(args, name, value)


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
    """Reject bad input before any environment or network is built (raises ValueError).

    The task is checked against the table of the paper's tasks in utils/jumanji.py (no JAX import)."""
    check_run_flags(args)
    for name in ("num_envs", "num_steps", "num_minibatches", "update_epochs", "eval_interval",
                 "num_eval_episodes", "torch_threads"):  # fmt: skip
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    checks = [
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
        (args.delta > 1.0, f"--delta must be > 1 (the band is [1/delta, delta]), got {args.delta}"),
        (args.alpha >= 0.0, f"--alpha must be >= 0, got {args.alpha}"),
        (args.learning_rate > 0.0, f"--learning-rate must be > 0, got {args.learning_rate}"),
        (args.clip_coef > 0.0, f"--clip-coef must be > 0, got {args.clip_coef}"),
        (0.0 < args.gamma <= 1.0, f"--gamma must be in (0, 1], got {args.gamma}"),
        (0.0 <= args.gae_lambda <= 1.0, f"--gae-lambda must be in [0, 1], got {args.gae_lambda}"),
        (args.ent_coef >= 0.0 and args.vf_coef >= 0.0, "--ent-coef and --vf-coef must be >= 0"),
        (args.max_grad_norm > 0.0, f"--max-grad-norm must be > 0, got {args.max_grad_norm}"),
        (
            not args.capture_video,
            "--capture-video is not available for jumanji: enjoy.py draws a saved model's episode with jumanji's viewer",
        ),
        (
            min(args.learner_hidden, args.guider_dim, args.guider_heads, args.guider_blocks) >= 1,
            "network sizes must be >= 1",
        ),
        (
            args.guider_dim % max(args.guider_heads, 1) == 0,
            f"--guider-dim ({args.guider_dim}) must be divisible by --guider-heads ({args.guider_heads})",
        ),
        (0.0 <= args.sable_decay <= 1.0, f"--sable-decay must be in [0, 1], got {args.sable_decay}"),
        (args.timestep_chunk_size >= 0, f"--timestep-chunk-size must be >= 0, got {args.timestep_chunk_size}"),
        (
            args.guider != "sable"
            or (args.guider_dim % 2 == 0 and args.guider_dim // args.guider_heads % args.guider_heads == 0),
            f"--guider sable needs an even --guider-dim whose head size (--guider-dim / --guider-heads = "
            f"{args.guider_dim // max(args.guider_heads, 1)}) is divisible by --guider-heads ({args.guider_heads}): its "
            "timestep encoding pairs channels, and its GroupNorm splits each head into --guider-heads groups",
        ),
        (
            args.guider == "mat-gru" or not args.guider_global_state,
            "--guider-global-state is for --guider mat-gru: MAT and Sable read the agents' observations only, as officially",
        ),
        (not args.cuda or torch.cuda.is_available(), "--cuda was given but torch sees no CUDA device"),
        (args.checkpoint_interval >= 0, f"--checkpoint-interval must be >= 0, got {args.checkpoint_interval}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    check_task(args.env, args.scenario or DEFAULT_SCENARIOS.get(args.env))
    check_requirements("jumanji", "magpo_jumanji.py")  # JAX and jumanji: the light core install has neither


if __name__ == "__main__":
    # INFRA: --resume continues a run from its checkpoint, with its saved args; a new run takes the task's
    # tuned row for every flag it does not give
    checkpoint = None
    try:
        if args.resume is not None:
            checkpoint, args = load_checkpoint(args.resume, os.path.basename(__file__), sys.argv[1:], args)
        else:
            apply_paper_defaults(args, given_flags(sys.argv[1:]))
    except ValueError as error:
        sys.exit(f"error: {error}")
    if checkpoint is None and args.protocol == "paper":  # a resumed run has its protocol in its saved args
        note, changed = apply_paper_protocol(args, "magpo", args.scenario, given_flags(sys.argv[1:]))
        print(f"--protocol paper ({note}) sets: {as_flags(changed)}")
    try:
        validate_args(args)
    except ValueError as error:
        sys.exit(f"error: {error}")
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_envs = args.num_envs // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations * args.batch_size != args.total_timesteps:
        print(
            f"note: --total-timesteps {args.total_timesteps} is rounded down to {args.num_iterations} rollouts of "
            f"{args.batch_size} steps = {args.num_iterations * args.batch_size} steps"
        )
    task = args.scenario  # the paper's task name (the 26 are distinct across the three families)
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

    # TRY NOT TO MODIFY: seeding (the envs draw from JAX keys made from the seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(args.torch_threads)
    device = torch.device("cuda" if args.cuda else "cpu")

    # Envs: training, and a separate batch for evaluation (one episode per env per round). The
    # first build of a task compiles its jitted functions (seconds; less from JAX's persistent cache).
    env_kwargs = dict(env=args.env, scenario=args.scenario)
    envs = make_env(args.num_envs, seed=args.seed, **env_kwargs)
    eval_envs = make_env(args.num_eval_episodes, seed=args.seed + 10_000, **env_kwargs)
    N, obs_dim, action_dim, continuous = envs.num_agents, envs.obs_dim, envs.action_dim, envs.continuous_actions
    state_dim = envs.state_dim if args.guider_global_state else 0

    guider = make_guider(args, obs_dim, N, action_dim, continuous, state_dim).to(device)

    def world_state(x):
        """The guider's world-state keyword: the state (B, S) or (T, M, S) with --guider-global-state, else none."""
        return {"state": x} if state_dim else {}

    learner = Learner(obs_dim, N, action_dim, continuous, args.learner_hidden).to(device)
    guider_optimizer = torch.optim.Adam(guider.parameters(), lr=args.learning_rate, eps=1e-5)
    learner_optimizer = torch.optim.Adam(learner.parameters(), lr=args.learning_rate, eps=1e-5)
    value_norm = RunningMeanStd(enabled=args.norm_value)

    # ALGO LOGIC: rollout storage, (T, B, N, ...) with T = num_steps
    T, B = args.num_steps, args.num_envs
    action_shape = (action_dim,) if continuous else ()
    obs = torch.zeros((T, B, N, obs_dim), device=device)
    avails = torch.zeros((T, B, N, action_dim), device=device, dtype=torch.bool)
    world_states = torch.zeros((T, B, state_dim), device=device)  # (T, B, 0) without --guider-global-state
    actions = torch.zeros((T, B, N, *action_shape), device=device, dtype=torch.float32 if continuous else torch.long)
    perms = torch.zeros((T, B, N), device=device, dtype=torch.long)
    logprobs = torch.zeros((T, B, N), device=device)
    rewards = torch.zeros((T, B, N), device=device)
    starts = torch.zeros((T, B), device=device, dtype=torch.bool)
    values = torch.zeros((T, B, N), device=device)

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs = torch.from_numpy(envs.reset(seed=args.seed)).to(device)  # (B, N, obs_dim)
    next_avail = torch.from_numpy(envs.avail_actions()).to(device)  # (B, N, A)
    next_state = torch.from_numpy(envs.state()).to(device)[:, :state_dim]  # (B, state_dim)
    next_start = torch.ones(B, dtype=torch.bool, device=device)
    guider_h = guider.initial_state(B)
    learner_h = torch.zeros(B, N, args.learner_hidden, device=device)
    # INFRA: from here on SIGINT / SIGTERM stop the run at its next safe point (on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # INFRA: a new run logs the random-policy floor and the step-0 evaluation; a resumed one restores
    # every network, optimiser, statistic, random stream, env and carried tensor as the checkpoint holds them
    modules = dict(
        guider=guider, learner=learner, guider_optimizer=guider_optimizer, learner_optimizer=learner_optimizer
    )
    if checkpoint is None:
        random_return, _ = random_policy_score(eval_envs, seed=args.seed)
        print(f"random policy: eval return {random_return:.3f}")
        writer.add_scalar("eval/random_return", random_return, 0)

        best_score = evaluate_and_log(learner, guider, eval_envs, device, args, writer, 0)
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
        next_obs, next_avail, next_state, next_start, guider_h, learner_h = (
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
                    "next_avail": next_avail,
                    "next_state": next_state,
                    "next_start": next_start,
                    "guider_h": guider_h,
                    "learner_h": learner_h,
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
            lrnow = (1.0 - (iteration - 1.0) / args.num_iterations) * args.learning_rate
            for optimizer in (guider_optimizer, learner_optimizer):
                optimizer.param_groups[0]["lr"] = lrnow
        # BPTT in the update starts from the recurrent states at the rollout's start.
        guider_h0, learner_h0 = guider_h.clone(), learner_h.clone()

        # ALGO LOGIC: rollout with the guider
        for step in range(T):
            if STOP:  # INFRA: SIGINT / SIGTERM: back to the last iteration boundary
                stop_run(boundary, checkpoint_path, writer)
            global_step += B
            obs[step], avails[step], world_states[step], starts[step] = next_obs, next_avail, next_state, next_start
            perm = decoding_order(B, N, device, args.agent_order)
            with torch.no_grad():
                action, logprob, value, guider_h = guider.act(
                    next_obs, guider_h, next_start, perm, next_avail, **world_state(next_state)
                )
                # The learner's memory is advanced on the guider's trajectory too, so its stored
                # state matches what BPTT recomputes (the official code's late bug fix, algorithm.md §7).
                _, learner_h = learner(next_obs.unsqueeze(0), learner_h, next_start.unsqueeze(0))
            actions[step], logprobs[step], values[step], perms[step] = action, logprob, value, perm

            next_obs, reward, done, info = envs.step(to_env_action(action, continuous))
            rewards[step] = torch.from_numpy(reward).to(device)
            next_obs = torch.from_numpy(next_obs).to(device)
            next_avail = torch.from_numpy(envs.avail_actions()).to(device)
            next_state = torch.from_numpy(envs.state()).to(device)[:, :state_dim]
            next_start = torch.from_numpy(done).to(device)
            if done.any():
                writer.add_scalar("charts/episodic_return", info["episode_return"][done].mean(), global_step)
                writer.add_scalar("charts/episodic_length", info["episode_length"][done].mean(), global_step)

        if iteration == INJECT_NAN_AT:  # INFRA: the non-finite guard's test hook
            rewards[0, 0, 0] = float("nan")

        # ALGO LOGIC: per-agent GAE from the guider's per-agent values (algorithm.md §8). Every agent gets
        # the team reward; an episode's end (jumanji's `last()`: the task done, an RWARE collision or the time
        # limit) is treated as terminal, as the official code does.
        with torch.no_grad():
            next_value = guider.value(next_obs, guider_h, next_start, **world_state(next_state))
            # With --norm-value the value head predicts standardised returns (identity otherwise).
            raw_values, next_value = value_norm.denormalize(values), value_norm.denormalize(next_value)
            dones = starts.float().unsqueeze(-1)  # (T, B, 1)
            advantages, returns = compute_gae(
                rewards, raw_values, dones, next_value, next_start.float().unsqueeze(-1), args.gamma, args.gae_lambda
            )
            value_norm.update(returns)
            value_targets = value_norm.normalize(returns)

        # ALGO LOGIC: update (algorithm.md §9): epochs x minibatches of whole environment sequences;
        # both networks step on gradients computed from the same pre-update parameters.
        env_inds = np.arange(B)
        stats_sum = {}
        num_minibatch_steps = 0
        for epoch in range(args.update_epochs):
            np.random.shuffle(env_inds)
            # --agent-order official re-scores the whole batch under one random order per epoch, as the official
            # code does; its rollouts decoded in index order, so r != 1 before the first step (algorithm.md §3)
            train_perms = perms if args.agent_order == "random" else random_perm(1, N, device).expand(T, B, N)
            for begin in range(0, B, args.minibatch_envs):
                if STOP:  # INFRA: SIGINT / SIGTERM: back to the last iteration boundary
                    stop_run(boundary, checkpoint_path, writer)
                mb = torch.from_numpy(env_inds[begin : begin + args.minibatch_envs]).to(device)
                mb_obs, mb_starts, mb_actions, mb_avail = obs[:, mb], starts[:, mb], actions[:, mb], avails[:, mb]
                g_params, g_logp, g_entropy, g_value = guider.evaluate(
                    mb_obs,
                    guider_h0[mb],
                    mb_starts,
                    mb_actions,
                    train_perms[:, mb],
                    mb_avail,
                    **world_state(world_states[:, mb]),
                )
                l_params, _ = learner(mb_obs, learner_h0[mb], mb_starts, mb_avail)  # (T, M, N, P)
                l_logp = dist_log_prob(l_params, mb_actions, continuous)
                # KL(mu || sg pi) pulls the guider towards the learner, KL(sg mu || pi) the learner towards the guider
                kl_to_learner, kl_from_guider = tether_kls(g_params, l_params, continuous)

                g_loss, g_stats = guider_loss(
                    logp=g_logp,
                    logp_behaviour=logprobs[:, mb],
                    logp_learner=l_logp,
                    advantages=advantages[:, mb],
                    kl_to_learner=kl_to_learner,
                    entropy=g_entropy,
                    value=g_value,
                    value_old=values[:, mb],
                    returns=value_targets[:, mb],
                    clip_coef=args.clip_coef,
                    delta=args.delta,
                    ent_coef=args.ent_coef,
                    vf_coef=args.vf_coef,
                    norm_adv=args.norm_adv,
                    clip_vloss=args.clip_vloss,
                )
                l_loss, l_stats = learner_loss(
                    logp_learner=l_logp,
                    logp_behaviour=logprobs[:, mb],
                    advantages=advantages[:, mb],
                    kl_from_guider=kl_from_guider,
                    clip_coef=args.clip_coef,
                    alpha=args.alpha,
                    norm_adv=args.norm_adv,
                )
                # the deployed policy's own randomness, beside the guider's (losses/entropy); the learner has no bonus
                l_stats["learner_entropy"] = dist_entropy(l_params.detach(), continuous).mean().item()
                guider_optimizer.zero_grad()
                learner_optimizer.zero_grad()
                # The cross terms are detached, so one backward gives each network only its own loss.
                (g_loss + l_loss).backward()
                guider_grad_norm = nn.utils.clip_grad_norm_(guider.parameters(), args.max_grad_norm)
                learner_grad_norm = nn.utils.clip_grad_norm_(learner.parameters(), args.max_grad_norm)
                # INFRA: the non-finite guard, before any parameter moves
                check_finite(iteration, "guider", {**g_stats, "grad_norm": guider_grad_norm.item()})
                check_finite(iteration, "learner", {**l_stats, "grad_norm": learner_grad_norm.item()})
                guider_optimizer.step()
                learner_optimizer.step()

                for key, value in {**g_stats, **l_stats}.items():
                    stats_sum[key] = stats_sum.get(key, 0.0) + value
                num_minibatch_steps += 1

        y_pred, y_true = raw_values.flatten().cpu().numpy(), returns.flatten().cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        writer.add_scalar("charts/learning_rate", guider_optimizer.param_groups[0]["lr"], global_step)
        for key, total in stats_sum.items():
            group = "magpo" if key in ("out_of_band_frac", "kl_guider_learner", "learner_clipfrac") else "losses"
            writer.add_scalar(f"{group}/{key}", total / num_minibatch_steps, global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        sps, text = progress(global_step, args.num_iterations * args.batch_size, start_step, start_time, last_eval)
        writer.add_scalar("charts/SPS", sps, global_step)
        print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} SPS={sps}, {text}")

        # INFRA: periodic evaluation, keeping the best learner for the absolute metric
        if global_step >= next_eval:
            next_eval = (global_step // args.eval_interval + 1) * args.eval_interval
            score = evaluate_and_log(learner, guider, eval_envs, device, args, writer, global_step)
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
        score = evaluate_and_log(learner, guider, eval_envs, device, args, writer, global_step)
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
            "guider": guider.state_dict(),
        }
        torch.save(checkpoint, model_path)
        print(f"model saved to {model_path}")

    envs.close()
    eval_envs.close()
    writer.close()
