"""What the end-to-end tests of the training scripts share: run a script as a user would, find its
run directory, read its TensorBoard scalars."""

import glob
import os
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, args, cwd, timeout=300, fast_compile=False):
    """`python <script> <args>` from `cwd` (so `runs/` lands there); the CompletedProcess, text mode.

    `fast_compile` (SMAX runs): XLA's backend optimisation level 0, which compiles SMAX 2-3x faster
    and runs it ~3x slower (docs/benchmarks.md): right for tiny runs, not for learning. It is set
    for the child process only, so it never leaks into the rest of the test session."""
    env = dict(os.environ)
    if fast_compile:
        env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


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


def same_seed_run_dirs(run, args, tmp_path):
    """Run `run(args + --seed 7, cwd)` twice in fresh directories; their two run directories."""
    dirs = []
    for name in ("a", "b"):
        cwd = tmp_path / name
        cwd.mkdir()
        result = run([*args, "--seed", "7"], cwd)
        assert result.returncode == 0, result.stderr[-3000:]
        dirs.append(only_run_dir(cwd))
    return dirs


# What every MAGPO training script logs (magpo_mpe.py, magpo_coordsum.py, magpo_smax.py; SMAX adds win rates).
MAGPO_TAGS = {
    "charts/episodic_return", "charts/episodic_length", "charts/SPS", "charts/learning_rate",
    "losses/guider_pg_loss", "losses/guider_kl_loss", "losses/value_loss", "losses/entropy",
    "losses/guider_loss", "losses/learner_rl_loss", "losses/learner_bc_kl", "losses/learner_loss",
    "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
    "magpo/out_of_band_frac", "magpo/kl_guider_learner", "magpo/learner_clipfrac",
    "eval/learner_return", "eval/guider_return", "eval/random_return", "eval/absolute_learner_return",
}
