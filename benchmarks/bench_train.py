"""Training throughput of magpo_mpe.py (by hand, not a test): env-steps/s of whole training runs.

Runs `magpo_mpe.py` as a user would, for a few updates per configuration, and reads the SPS it
logs (`charts/SPS`, environment steps per second including the rollout and the update, excluding
evaluation). Configurations are interleaved across repeats and the median is reported, so that
machine noise hits every configuration alike.

    python benchmarks/bench_train.py                 # N = 3, 5, 10 on the numpy backend, + mpe2 at N = 3
    python benchmarks/bench_train.py --repeats 5 --updates 4
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_sps(extra, updates, num_envs=64, num_steps=128):
    with tempfile.TemporaryDirectory() as cwd:
        cmd = [
            sys.executable,
            os.path.join(REPO, "magpo_mpe.py"),
            "--total-timesteps",
            str(updates * num_envs * num_steps),
            "--num-envs",
            str(num_envs),
            "--num-steps",
            str(num_steps),
            "--eval-interval",
            "100000000",
            "--num-eval-episodes",
            "4",
            *extra,
        ]
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
        acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        acc.Reload()
        return acc.Scalars("charts/SPS")[-1].value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=4, help="updates (64 envs x 128 steps each) per run")
    args = parser.parse_args()
    configs = {
        "N=3 continuous (default)": [],
        "N=3 discrete": ["--no-continuous-actions"],
        "N=3 8 minibatches (paper)": ["--num-minibatches", "8"],
        "N=5 continuous": ["--num-agents", "5"],
        "N=10 continuous": ["--num-agents", "10"],
        "N=3 continuous, mpe2 backend": ["--env-backend", "pettingzoo"],
    }
    results = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, extra in configs.items():
            results[name].append(run_sps(extra, args.updates))
    print(f"| configuration | training env-steps/s (median of {args.repeats}) | min - max | 2M steps take |")
    print("|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f} - {max(values):,.0f} | {2e6 / median / 60:.1f} min |")


if __name__ == "__main__":
    main()
