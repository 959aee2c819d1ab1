"""Load a trained model, evaluate it, and watch it: no training file needs editing.

    python enjoy.py --model-path runs/simple_spread_3ag__magpo_mpe__1__1764000000/magpo_mpe.cleanrl_model
    python enjoy.py --model-path ... --policy guider --greedy --num-episodes 320
    python enjoy.py --model-path runs/tiny-2ag__magpo_jumanji__1__1764000000/magpo_jumanji.cleanrl_model

The networks are rebuilt by importing them from the script that trained the model (its name and
arguments are stored in the checkpoint by `--save-model`), on the same environment settings. The
learner is evaluated as it is deployed: decentralised, each agent on its own observation history.
The model file is loaded with `weights_only=True` (tensors and plain values), so it runs no code.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch, as in the training scripts

import importlib
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import tyro

# Scripts whose models enjoy.py can rebuild, and the environment family of each (magpo_jumanji.py and the
# baselines store their family in their args: `--env`).
SUPPORTED_SCRIPTS = {
    "magpo_mpe.py": "mpe",
    "magpo_coordsum.py": "coordsum",
    "magpo_smax.py": "smax",
    "magpo_jumanji.py": None,
    "mappo_baseline.py": None,
    "happo_baseline.py": None,
    "ctce_baseline.py": None,
}
JUMANJI_FAMILIES = ("rware", "lbf", "connector")  # drawn by jumanji's own viewer (utils/jumanji.py)
REQUIRED_KEYS = ("script", "args", "learner", "best_learner")


@dataclass
class Args:
    model_path: str
    """path of a model written by `--save-model`: runs/<run>/<exp_name>.cleanrl_model. It is read with
    `torch.load(weights_only=True)`: tensors and plain values only, so loading a file runs no code from it"""
    policy: Literal["learner", "guider"] = "learner"
    """`learner`: the policy that is deployed (decentralised; ctce_baseline.py's: its joint policy, acting centrally);
    `guider`: the centralised one that trained a MAGPO learner"""
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
    """write a GIF of the first episode next to the model, named after --policy, --checkpoint and --greedy
    (MPE: drawn by utils/render.py; RWARE, LBF, Connector: by jumanji's viewer, ~0.15 s a frame, so up to
    ~75 s for a 500-step RWARE episode; CoordSum and SMAX have no renderer here)"""
    torch_threads: int = 1
    """torch intra-op threads"""


MAX_SEED = 2**32 - 1  # numpy seeds from [0, 2**32 - 1], as the training scripts check


def check_args(args: Args) -> None:
    """Reject a flag value of the right type that enjoy.py cannot use (ValueError naming the flag), before
    anything is loaded or written: numpy's own error for a negative seed names no flag, a seed above numpy's
    range is refused as the training scripts refuse it (so one --seed means the same everywhere), and torch
    answers `--torch-threads 0` with a traceback."""
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if args.seed > MAX_SEED:
        raise ValueError(f"--seed must be <= {MAX_SEED} (numpy's seed range is [0, 2**32 - 1]), got {args.seed}")
    for name in ("num_episodes", "torch_threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")


# Parse and check the command line before the heavy imports below (torch, TensorBoard, and JAX for SMAX), so
# that `--help`, a mistyped flag and a bad value answer at once instead of after seconds of imports.
if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        check_args(args)
    except ValueError as error:
        sys.exit(f"error: {error}")

import torch

from utils import ENV_FAMILY, EpisodeRecorder, check_requirements


def load_checkpoint(path):
    """The checkpoint dict written by a training script's `--save-model`; ValueError if it is not one."""
    if not os.path.isfile(path):
        raise ValueError(
            f"no model file at {path!r} (train with --save-model; it writes runs/<run>/<exp_name>.cleanrl_model)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises different errors for different kinds of wrong file
        raise ValueError(f"{path!r} is not a model saved by --save-model ({type(error).__name__})") from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path!r} is not a model saved by --save-model of this project's training scripts")
    for key in REQUIRED_KEYS:
        if key not in checkpoint:
            raise ValueError(f"{path!r} has no {key!r} entry: it is not a model saved by --save-model")
    if checkpoint["script"] not in SUPPORTED_SCRIPTS:
        raise ValueError(
            f"{path!r} was saved by {checkpoint['script']!r}; enjoy.py can load models from {sorted(SUPPORTED_SCRIPTS)}"
        )
    return checkpoint


def env_family(checkpoint):
    """'mpe', 'coordsum', 'smax', 'rware', 'lbf' or 'connector': the environment the checkpoint's policy was
    trained on."""
    return SUPPORTED_SCRIPTS[checkpoint["script"]] or saved_arg(checkpoint, "env")


def saved_arg(checkpoint, name):
    """One of the training run's saved arguments (ValueError naming it if the checkpoint lacks it)."""
    if name not in checkpoint["args"]:
        raise ValueError(f"the model's saved args have no {name!r} entry (saved by another version of the script?)")
    return checkpoint["args"][name]


def make_eval_envs(checkpoint, num_envs, seed):
    """The training run's environment, from the saved args: mappo_baseline.py's `make_envs` builds every
    family from the same flag names the MAGPO scripts save."""
    from mappo_baseline import ENV_FLAGS, make_envs

    family = env_family(checkpoint)
    flags = {name: saved_arg(checkpoint, name) for name in ENV_FLAGS[family]}
    return make_envs(SimpleNamespace(env=family, **flags), num_envs, seed)


GUIDER_DEFAULTS = dict(guider="mat-gru", sable_decay=0.8, sable_ffn="zero", timestep_chunk_size=0)


def build_policy(checkpoint, policy="learner", which="best"):
    """(training module, network with the saved weights, its hidden size)."""
    module = importlib.import_module(checkpoint["script"][: -len(".py")])
    probe = make_eval_envs(checkpoint, 1, 0)
    dims = (probe.obs_dim, probe.num_agents, probe.action_dim, probe.continuous_actions)
    # magpo_smax.py's and magpo_jumanji.py's option
    state_dim = probe.state_dim if checkpoint["args"].get("guider_global_state") else 0
    probe.close()
    if policy == "learner" and checkpoint["script"] == "ctce_baseline.py":  # MAT / Sable: the joint policy, central
        saved = SimpleNamespace(**checkpoint["args"])
        network, hidden = module.make_network(saved, *dims), saved_arg(checkpoint, "embed_dim")
        weights = checkpoint["best_learner" if which == "best" else "learner"]
    elif policy == "learner":
        hidden = saved_arg(checkpoint, "learner_hidden")
        # happo_baseline.py deploys one Learner per agent (`Actors`, the same interface); the others one shared
        policy_class = getattr(module, "Actors", module.Learner)
        network, weights = policy_class(*dims, hidden), checkpoint["best_learner" if which == "best" else "learner"]
    else:
        if "guider" not in checkpoint:
            raise ValueError(f"{checkpoint['script']} trains no guider; its deployed policy is --policy learner")
        hidden = saved_arg(checkpoint, "guider_dim")
        for name in ("guider_heads", "guider_blocks"):
            saved_arg(checkpoint, name)
        # --guider and Sable's flags, with their defaults for models saved before the flags existed (mat-gru)
        saved = SimpleNamespace(**{**GUIDER_DEFAULTS, **checkpoint["args"]})
        network, weights = module.make_guider(saved, *dims, *((state_dim,) if state_dim else ())), checkpoint["guider"]
    try:
        network.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"the saved {policy} weights do not fit {checkpoint['script']}'s network: {first_line}"
        ) from None
    return module, network.eval(), hidden


if __name__ == "__main__":
    try:
        checkpoint = load_checkpoint(args.model_path)
        family = env_family(checkpoint)
        if family in ENV_FAMILY:  # SMAX and jumanji run in JAX, which the light core install lacks
            check_requirements(ENV_FAMILY[family], f"a {family} model")
        torch.set_num_threads(args.torch_threads)
        torch.manual_seed(args.seed)
        module, network, hidden = build_policy(checkpoint, args.policy, args.checkpoint)
        envs = make_eval_envs(checkpoint, args.num_episodes, args.seed)
    except ValueError as error:
        sys.exit(f"error: {error}")

    gif = args.gif and family in ("mpe", *JUMANJI_FAMILIES)  # CoordSum and SMAX have nothing to draw
    if gif and family == "mpe":
        envs = EpisodeRecorder(envs)
    elif gif:
        from utils.jumanji import StateRecorder

        envs = StateRecorder(envs)  # also keeps env 0's jumanji states, for jumanji's viewer
    options = {}
    if checkpoint["script"] == "ctce_baseline.py":  # decodes in its training runs' order scheme
        options["agent_order"] = checkpoint["args"]["agent_order"]
    if "guider_global_state" in checkpoint["args"] and args.policy == "guider":  # the SMAX and jumanji guiders
        options["use_state"] = bool(checkpoint["args"]["guider_global_state"])
    returns, won = module.evaluate(network, envs, torch.device("cpu"), hidden, deterministic=args.greedy, **options)
    name = f"{args.policy}" + (f" ({args.checkpoint})" if args.policy == "learner" else "")
    mode = "greedy" if args.greedy else "sampled"
    print(
        f"{checkpoint['script']} {name}, {mode} actions: return {returns.mean():.3f} ± {returns.std():.3f} "
        f"(mean ± std over {len(returns)} episodes)" + ("" if won is None else f", win rate {won.mean():.3f}")
    )

    if gif:
        from utils.render import save_gif

        which = f"_{args.checkpoint}" if args.policy == "learner" else ""
        gif_name = f"enjoy_{args.policy}{which}_{mode}_seed{args.seed}.gif"
        gif_path = os.path.join(os.path.dirname(os.path.abspath(args.model_path)), gif_name)
        if family == "mpe":
            save_gif(envs.episode, gif_path, title=f"{name}, {mode}, return {returns[0]:.1f}")
        else:
            envs.save_animation(envs.states, gif_path)
        print(f"GIF of the first episode: {gif_path}")
    envs.close()
