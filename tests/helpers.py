"""What the end-to-end tests of the training scripts share: run a script as a user would, find its
run directory, read its TensorBoard scalars."""

import dataclasses
import glob
import os
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(fast_compile=False, absolute_repeats=1, **extra):
    """The environment of a script run by a test: this one's, plus

    `fast_compile` (SMAX and jumanji runs): XLA's backend optimisation level 0, which compiles SMAX 2-3x faster
    and runs it ~3x slower (docs/benchmarks.md): right for tiny runs, not for learning;
    `absolute_repeats`: how many times the absolute metric re-scores the best policy (MAGPO_ABSOLUTE_REPEATS; the
    scripts' default is 10). One, unless the test reads the metric: the shared tiny runs check the 10x re-scoring
    (tests/conftest.py) and the learning checks' thresholds were measured over 10 x 32 episodes.
    Both are set for the child process only, so they never leak into the rest of the test session."""
    env = {**os.environ, "MAGPO_ABSOLUTE_REPEATS": str(absolute_repeats), **extra}
    if fast_compile:
        env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    return env


def run_script(script, args, cwd, timeout=300, fast_compile=False, absolute_repeats=1):
    """`python <script> <args>` from `cwd` (so `runs/` lands there), with `child_env`; the CompletedProcess, text
    mode."""
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(fast_compile, absolute_repeats),
    )


def scalars(run_dir):
    """{tag: [(step, value), ...]} of every scalar a run logged."""
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def only_run_dir(cwd):
    """The single run directory under `cwd/runs` (fails if there are none or several)."""
    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    return run_dir


def assert_same_numbers(run_dirs, prefixes=("losses/", "eval/", "magpo/")):
    """Two runs of the same command and seed logged identical values under every tag that starts
    with one of `prefixes` (charts/SPS and friends are timing, so they are left out)."""
    logs = [{k: v for k, v in scalars(d).items() if k.startswith(prefixes)} for d in run_dirs]
    assert logs[0].keys() == logs[1].keys() and logs[0]
    for tag in logs[0]:
        assert logs[0][tag] == logs[1][tag], tag


# The training scripts' tiny runs: every script and env, shared by the test modules that run them
TINY = [
    "--total-timesteps", "256", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
    "--update-epochs", "2", "--eval-interval", "128", "--num-eval-episodes", "2", "--learner-hidden", "16",
]  # fmt: skip
# SMAX episodes last up to 101 steps: 2 rollouts of 64 steps end some; 4 eval envs = 4 train envs,
# so the evaluation batch reuses the training batch's compiled step
TINY_SMAX = [*TINY[:6], "--num-steps", "64", *TINY[8:], "--total-timesteps", "512", "--eval-interval", "256",
             "--num-eval-episodes", "4"]  # fmt: skip
# LBF (jumanji) episodes last up to 100 steps: TINY_SMAX's 2 rollouts of 64 steps end every env's first one
TINY_LBF = [*TINY_SMAX, "--env", "lbf", "--scenario", "2s-10x10-3p-3f"]
MAGPO_NETS = ["--guider-dim", "16"]
COORDSUM = ["--max-steps", "20"]  # 20-step episodes: several end in a tiny run

# What every MAGPO script logs; SMAX adds win rates; the baseline logs PPO's losses instead.
MAGPO_TAGS = {
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
    "losses/guider_pg_loss", "losses/guider_kl_loss", "losses/value_loss", "losses/entropy",
    "losses/guider_loss", "losses/learner_rl_loss", "losses/learner_loss",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
    "magpo/out_of_band_frac", "magpo/kl_guider_learner", "magpo/learner_clipfrac",
    "eval/learner_return", "eval/guider_return", "eval/random_return", "eval/absolute_learner_return",
    "losses/learner_entropy", "eval/absolute_learner_return_greedy",
}  # fmt: skip
WIN_TAGS = {
    "charts/win_rate", "eval/win_rate", "eval/random_win_rate", "eval/absolute_win_rate", "eval/absolute_win_rate_greedy",
}  # fmt: skip
MAPPO_TAGS = {
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
    "losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl", "losses/clipfrac",
    "losses/explained_variance", "eval/learner_return", "eval/random_return", "eval/absolute_learner_return",
    "losses/learner_entropy", "eval/absolute_learner_return_greedy",
}  # fmt: skip
HAPPO_TAGS = MAPPO_TAGS | {"happo/factor_mean", "happo/factor_max", "happo/factor_frac_above_2"}
# happo_baseline.py: CoordSum runs the authors' scheme on contiguous chunks, MPE the reference one (the JAX
# families run once each, as tests/test_scripts.py's variants of these two)
HAPPO = ["--critic-hidden", "16"]
HAPPO_OFFICIAL = ["--happo-scheme", "official", "--recurrent-chunk-size", "8"]
CTCE = ["--embed-dim", "16", "--num-heads", "2"]


def ctce(args):
    """A tiny argument list for ctce_baseline.py, which has no --learner-hidden, plus its network's sizes."""
    i = args.index("--learner-hidden")
    return [*args[:i], *args[i + 2 :], *CTCE]


@dataclasses.dataclass
class Case:
    script: str
    args: list
    prefix: str  # run directory name before the seed
    tags: set
    model: str  # the model file --save-model writes
    networks: tuple  # what the model holds besides the args
    eval_steps: list

    @property
    def fast_compile(self):
        """The JAX environments: SMAX and jumanji's (magpo_smax.py, magpo_jumanji.py, or --env of the baseline)."""
        env = self.args[self.args.index("--env") + 1] if "--env" in self.args else None
        return self.script in ("magpo_smax.py", "magpo_jumanji.py") or env in ("smax", "rware", "lbf", "connector")


CASES = {
    "magpo_mpe": Case("magpo_mpe.py", TINY + MAGPO_NETS, "simple_spread_3ag__magpo_mpe", MAGPO_TAGS,
                      "magpo_mpe.cleanrl_model", ("learner", "best_learner", "guider"), [0, 128, 256]),
    "magpo_coordsum": Case("magpo_coordsum.py", TINY + MAGPO_NETS + COORDSUM, "coordsum_3x10__magpo_coordsum",
                           MAGPO_TAGS, "magpo_coordsum.cleanrl_model", ("learner", "best_learner", "guider"),
                           [0, 128, 256]),
    "magpo_smax": Case("magpo_smax.py", TINY_SMAX + MAGPO_NETS, "2s3z__magpo_smax",
                       MAGPO_TAGS | WIN_TAGS | {"eval/guider_win_rate"}, "magpo_smax.cleanrl_model",
                       ("learner", "best_learner", "guider"), [0, 256, 512]),
    "magpo_jumanji": Case("magpo_jumanji.py", TINY_LBF + MAGPO_NETS, "2s-10x10-3p-3f__magpo_jumanji", MAGPO_TAGS,
                          "magpo_jumanji.cleanrl_model", ("learner", "best_learner", "guider"), [0, 256, 512]),
    # the two other guiders (docs/algorithm.md §16): MAT on continuous MPE; Sable, whose memory a resumed run must
    # restore, on CoordSum in 16-step chunks (so its training pass carries the state from chunk to chunk)
    "magpo_mpe_mat": Case("magpo_mpe.py", TINY + MAGPO_NETS + ["--guider", "mat"], "simple_spread_3ag__magpo_mpe",
                          MAGPO_TAGS, "magpo_mpe.cleanrl_model", ("learner", "best_learner", "guider"), [0, 128, 256]),
    "magpo_coordsum_sable": Case("magpo_coordsum.py", TINY + MAGPO_NETS + COORDSUM + ["--guider", "sable",
                                 "--timestep-chunk-size", "16"], "coordsum_3x10__magpo_coordsum", MAGPO_TAGS,
                                 "magpo_coordsum.cleanrl_model", ("learner", "best_learner", "guider"), [0, 128, 256]),
    "mappo_mpe": Case("mappo_baseline.py", TINY + ["--critic-hidden", "16"], "simple_spread_3ag__mappo_baseline",
                      MAPPO_TAGS, "mappo_baseline.cleanrl_model", ("learner", "best_learner", "critic"),
                      [0, 128, 256]),
    "mappo_coordsum": Case("mappo_baseline.py", TINY + ["--critic-hidden", "16", "--env", "coordsum"] + COORDSUM,
                           "coordsum_3x10__mappo_baseline", MAPPO_TAGS, "mappo_baseline.cleanrl_model",
                           ("learner", "best_learner", "critic"), [0, 128, 256]),
    "mappo_smax": Case("mappo_baseline.py", TINY_SMAX + ["--critic-hidden", "16", "--env", "smax"],
                       "2s3z__mappo_baseline", MAPPO_TAGS | WIN_TAGS, "mappo_baseline.cleanrl_model",
                       ("learner", "best_learner", "critic"), [0, 256, 512]),
    "mappo_jumanji": Case("mappo_baseline.py", TINY_LBF + ["--critic-hidden", "16"], "2s-10x10-3p-3f__mappo_baseline",
                          MAPPO_TAGS, "mappo_baseline.cleanrl_model", ("learner", "best_learner", "critic"),
                          [0, 256, 512]),
    "happo_mpe": Case("happo_baseline.py", TINY + HAPPO, "simple_spread_3ag__happo_baseline", HAPPO_TAGS,
                      "happo_baseline.cleanrl_model", ("learner", "best_learner", "critic"), [0, 128, 256]),
    "happo_coordsum": Case("happo_baseline.py", TINY + HAPPO + HAPPO_OFFICIAL + ["--env", "coordsum"] + COORDSUM,
                           "coordsum_3x10__happo_baseline", HAPPO_TAGS, "happo_baseline.cleanrl_model",
                           ("learner", "best_learner", "critic"), [0, 128, 256]),
    # ctce_baseline.py (MAT and Sable, acting centrally): MAT on continuous MPE, Sable on CoordSum in 16-step chunks
    "ctce_mpe_mat": Case("ctce_baseline.py", ctce(TINY) + ["--arch", "mat"], "simple_spread_3ag__mat_baseline",
                         MAPPO_TAGS, "mat_baseline.cleanrl_model", ("learner", "best_learner"), [0, 128, 256]),
    "ctce_coordsum_sable": Case("ctce_baseline.py", ctce(TINY) + ["--arch", "sable", "--env", "coordsum",
                                "--timestep-chunk-size", "16"] + COORDSUM, "coordsum_3x10__sable_baseline", MAPPO_TAGS,
                                "sable_baseline.cleanrl_model", ("learner", "best_learner"), [0, 128, 256]),
}  # fmt: skip


# happo_baseline.py on the JAX families: run once each (tests/test_scripts.py's variants), not by every module
ONE_RUN_CASES = {
    "happo_smax": Case("happo_baseline.py", TINY_SMAX + HAPPO + ["--env", "smax"], "2s3z__happo_baseline",
                       HAPPO_TAGS | WIN_TAGS, "happo_baseline.cleanrl_model", ("learner", "best_learner", "critic"),
                       [0, 256, 512]),
    "happo_jumanji": Case("happo_baseline.py", TINY_LBF + HAPPO + HAPPO_OFFICIAL, "2s-10x10-3p-3f__happo_baseline",
                          HAPPO_TAGS, "happo_baseline.cleanrl_model", ("learner", "best_learner", "critic"),
                          [0, 256, 512]),
    # RWARE's episodes last 500 steps: none ends in a tiny run, so it logs no episodic return while training
    "happo_rware": Case("happo_baseline.py", TINY_SMAX + HAPPO + ["--env", "rware", "--scenario", "tiny-2ag"],
                        "tiny-2ag__happo_baseline", HAPPO_TAGS - {"charts/episodic_return", "charts/episodic_length"},
                        "happo_baseline.cleanrl_model", ("learner", "best_learner", "critic"), [0, 256, 512]),
    # ctce_baseline.py on the JAX families, each arch once
    "ctce_smax_sable": Case("ctce_baseline.py", ctce(TINY_SMAX) + ["--arch", "sable", "--env", "smax"],
                            "2s3z__sable_baseline", MAPPO_TAGS | WIN_TAGS, "sable_baseline.cleanrl_model",
                            ("learner", "best_learner"), [0, 256, 512]),
    "ctce_rware": Case("ctce_baseline.py", ctce(TINY_SMAX) + ["--arch", "sable", "--env", "rware", "--scenario",
                       "tiny-2ag"], "tiny-2ag__sable_baseline", MAPPO_TAGS - {"charts/episodic_return",
                       "charts/episodic_length"}, "sable_baseline.cleanrl_model", ("learner", "best_learner"),
                       [0, 256, 512]),
    "ctce_jumanji": Case("ctce_baseline.py", ctce(TINY_LBF), "2s-10x10-3p-3f__mat_baseline", MAPPO_TAGS,
                         "mat_baseline.cleanrl_model", ("learner", "best_learner"), [0, 256, 512]),
}  # fmt: skip

# One tiny run of every training script, the quick check's end-to-end part (tests/conftest.py)
QUICK_RUNS = ("magpo_mpe", "magpo_coordsum", "magpo_smax", "magpo_jumanji", "mappo_coordsum", "happo_coordsum")


def run_case(case, args, cwd, timeout=300, absolute_repeats=1):
    """Run a case's script with its tiny arguments and `args` from `cwd`."""
    return run_script(
        case.script, [*case.args, *args], cwd, timeout=timeout, fast_compile=case.fast_compile,
        absolute_repeats=absolute_repeats,
    )  # fmt: skip
