"""Load a trained model, evaluate it, and watch it: no training file needs editing.

    python enjoy.py --model-path runs/simple_spread_3ag__magpo_mpe__1__1764000000/magpo_mpe.cleanrl_model
    python enjoy.py --model-path ... --policy guider --greedy --num-episodes 320

The networks are rebuilt by importing them from the script that trained the model (its name and
arguments are stored in the checkpoint by `--save-model`), on the same environment settings. The
learner is evaluated as it is deployed: decentralised, each agent on its own observation history.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as in the training scripts

import importlib
import sys
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import tyro

from utils.coordsum import CoordSumVec
from utils.mpe import make_env

# Scripts whose models enjoy.py can rebuild, and the environment family of each (mappo_baseline.py
# stores its family in its args: `--env`).
SUPPORTED_SCRIPTS = {
    "magpo_mpe.py": "mpe", "magpo_coordsum.py": "coordsum", "magpo_smax.py": "smax", "mappo_baseline.py": None,
}
# Scripts with discrete actions only: their Learner and Guider take no `continuous` flag.
DISCRETE_ONLY = ("magpo_coordsum.py", "magpo_smax.py")


@dataclass
class Args:
    model_path: str
    """path of a model written by `--save-model`: runs/<run>/<exp_name>.cleanrl_model"""
    policy: Literal["learner", "guider"] = "learner"
    """`learner`: the decentralised policy that is deployed; `guider`: the centralised one that trained it"""
    checkpoint: Literal["best", "final"] = "best"
    """which learner: `best` = the best evaluated during training (the absolute metric's), `final` = the last;
    the guider is always the last"""
    num_episodes: int = 32
    """number of evaluation episodes"""
    greedy: bool = False
    """take each action distribution's mode instead of sampling (the paper samples)"""
    seed: int = 1
    """seed of the evaluation episodes and of the sampled actions"""
    gif: bool = True
    """write a GIF of the first episode next to the model (MPE only; CoordSum and SMAX have no renderer here)"""
    torch_threads: int = 1
    """torch intra-op threads"""


def load_checkpoint(path):
    """The checkpoint dict written by a training script's `--save-model`; ValueError if it is not one."""
    if not os.path.isfile(path):
        raise ValueError(f"no model file at {path!r} (train with --save-model; it writes runs/<run>/<exp_name>.cleanrl_model)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises different errors for different kinds of wrong file
        raise ValueError(f"{path!r} is not a model saved by --save-model ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict) or not {"script", "args", "learner", "best_learner"} <= set(checkpoint):
        raise ValueError(f"{path!r} is not a model saved by --save-model of this project's training scripts")
    if checkpoint["script"] not in SUPPORTED_SCRIPTS:
        raise ValueError(
            f"{path!r} was saved by {checkpoint['script']!r}; enjoy.py can load models from {sorted(SUPPORTED_SCRIPTS)}"
        )
    return checkpoint


def env_family(checkpoint):
    """'mpe', 'coordsum' or 'smax': the environment the checkpoint's policy was trained on."""
    return SUPPORTED_SCRIPTS[checkpoint["script"]] or checkpoint["args"]["env"]


def build_policy(checkpoint, policy="learner", which="best"):
    """(training module, network with the saved weights, its hidden size, the eval-env factory)."""
    module = importlib.import_module(checkpoint["script"][: -len(".py")])
    saved, family = checkpoint["args"], env_family(checkpoint)

    def make_eval_envs(num_envs, seed):
        if family == "mpe":
            return make_env(
                saved["env_backend"], num_envs, num_agents=saved["num_agents"],
                continuous_actions=saved["continuous_actions"], local_ratio=saved["local_ratio"],
                max_cycles=saved["max_cycles"], seed=seed,
            )
        if family == "smax":
            from utils.smax import make_env as make_smax_env  # imports JAX: only for SMAX models

            envs = make_smax_env(saved["map_name"], num_envs, seed=seed)
            envs.continuous_actions = False
            return envs
        return CoordSumVec(num_envs, saved["scenario"], history=saved["coordsum_history"],
                           max_steps=saved.get("max_steps", 100), obs_encoding=saved["coordsum_obs"], seed=seed)

    probe = make_eval_envs(1, 0)
    dims = (probe.obs_dim, probe.num_agents, probe.action_dim)
    state_dim = probe.state_dim if saved.get("guider_global_state") else 0  # magpo_smax.py's guider option
    if checkpoint["script"] not in DISCRETE_ONLY:
        dims = (*dims, probe.continuous_actions)
    probe.close()
    if policy == "learner":
        network, hidden = module.Learner(*dims, saved["learner_hidden"]), saved["learner_hidden"]
        network.load_state_dict(checkpoint["best_learner" if which == "best" else "learner"])
    else:
        if "guider" not in checkpoint:
            raise ValueError(f"{checkpoint['script']} trains no guider; its deployed policy is --policy learner")
        sizes = (saved["guider_dim"], saved["guider_heads"], saved["guider_blocks"])
        network = module.Guider(*dims, *sizes, *((state_dim,) if state_dim else ()))
        network.load_state_dict(checkpoint["guider"])
        hidden = saved["guider_dim"]
    return module, network.eval(), hidden, make_eval_envs


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        if args.num_episodes < 1:
            raise ValueError(f"--num-episodes must be >= 1, got {args.num_episodes}")
        checkpoint = load_checkpoint(args.model_path)
    except ValueError as error:
        sys.exit(f"error: {error}")
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    try:
        module, network, hidden, make_eval_envs = build_policy(checkpoint, args.policy, args.checkpoint)
    except ValueError as error:
        sys.exit(f"error: {error}")

    envs = make_eval_envs(args.num_episodes, args.seed)
    gif = args.gif and env_family(checkpoint) == "mpe"  # only MPE has something to draw
    episode = [] if gif else None
    options = {"record": episode} if gif else {}
    if checkpoint["script"] == "magpo_smax.py" and args.policy == "guider":
        options["use_state"] = bool(checkpoint["args"].get("guider_global_state"))
    result = module.evaluate(network, envs, torch.device("cpu"), hidden, deterministic=args.greedy, **options)
    envs.close()
    # magpo_mpe.py and magpo_coordsum.py return the returns; magpo_smax.py and mappo_baseline.py
    # (returns, win flags), the flags None on an env without wins
    returns, won = result if isinstance(result, tuple) else (result, None)
    name = f"{args.policy}" + (f" ({args.checkpoint})" if args.policy == "learner" else "")
    mode = "greedy" if args.greedy else "sampled"
    print(f"{checkpoint['script']} {name}, {mode} actions: return {returns.mean():.2f} ± {returns.std():.2f} "
          f"(mean ± std over {len(returns)} episodes)" + ("" if won is None else f", win rate {won.mean():.3f}"))

    if gif:
        from utils.render import save_gif

        gif_path = os.path.join(os.path.dirname(os.path.abspath(args.model_path)), f"enjoy_{args.policy}.gif")
        save_gif(episode, gif_path, title=f"{name}, return {returns[0]:.1f}")
        print(f"GIF of the first episode: {gif_path}")
