"""SMAX speed (by hand, not a test): the wrapper's env-steps/s, its compile times, and the
training throughput of magpo_smax.py.

1. Wrapper: `utils/smax.py` with 64 envs, stepping random legal actions (drawn with numpy from
   `avail_actions()`, as a policy would) for 1 s, repeated; median and range of env-steps/s.
   One env-step is one step of one environment.
2. Compile: in a fresh process, the time to build the env, `reset()` and the first `step()`, with
   an empty persistent cache (cold) and then with the cache that run filled (warm).
3. Training: `magpo_smax.py` run as a user would for a few updates, reading the SPS it logs
   (`charts/SPS`: rollout + update, evaluation excluded); configurations interleaved over repeats.

    python benchmarks/bench_smax.py
    python benchmarks/bench_smax.py --repeats 5 --updates 4 --maps 2s3z 3m 27m_vs_30m
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as magpo_smax.py, before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from utils import random_actions  # noqa: E402
from utils.smax import make_env  # noqa: E402


def wrapper_steps_per_second(map_name, num_envs, repeats, seconds=1.0):
    envs = make_env(num_envs, seed=0, map_name=map_name)
    envs.reset()
    rng = np.random.default_rng(0)

    def act():
        return random_actions(envs, rng)

    for _ in range(5):  # compile and warm up
        envs.step(act())
    results = []
    for _ in range(repeats):
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            envs.step(act())
            steps += 1
        results.append(steps * num_envs / (time.perf_counter() - start))
    return results


COMPILE_SNIPPET = """
import time
import numpy as np
start = time.perf_counter()
from utils.smax import make_env
envs = make_env({num_envs}, seed=0, map_name={map_name!r})
built = time.perf_counter()
envs.reset()
reset = time.perf_counter()
envs.step(np.full(({num_envs}, envs.num_agents), 4))
print(built - start, reset - built, time.perf_counter() - reset)
"""


def compile_times(map_name, num_envs, cache_dir):
    env = {**os.environ, "MAGPO_JAX_CACHE_DIR": cache_dir, "PYTHONPATH": REPO}
    out = subprocess.run(
        [sys.executable, "-c", COMPILE_SNIPPET.format(map_name=map_name, num_envs=num_envs)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [float(x) for x in out.split()]  # import + build, reset (compile), first step (compile)


def training_sps(extra, updates, num_envs=64, num_steps=128):
    with tempfile.TemporaryDirectory() as cwd:
        cmd = [
            sys.executable,
            os.path.join(REPO, "magpo_smax.py"),
            "--total-timesteps",
            str(updates * num_envs * num_steps),
            "--num-envs",
            str(num_envs),
            "--num-steps",
            str(num_steps),
            "--eval-interval",
            "100000000",
            "--num-eval-episodes",
            str(num_envs),
            *extra,
        ]
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
        (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
        acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        acc.Reload()
        return acc.Scalars("charts/SPS")[-1].value


def table(rows, header):
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        print(row)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--updates", type=int, default=3, help="updates (64 envs x 128 steps each) per training run")
    parser.add_argument(
        "--maps", nargs="+", default=["2s3z", "3m", "27m_vs_30m"], help="maps for the wrapper benchmark"
    )
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)

    rows = []
    for map_name in args.maps:
        values = wrapper_steps_per_second(map_name, 64, max(args.repeats, 5))
        rows.append(f"| {map_name} | 64 | {statistics.median(values):,.0f} | {min(values):,.0f} - {max(values):,.0f} |")
    table(rows, f"| map | envs | env-steps/s (median of {max(args.repeats, 5)} x 1 s) | min - max |")

    print()
    with tempfile.TemporaryDirectory() as cache:
        cold = compile_times("2s3z", 64, cache)
        warm = compile_times("2s3z", 64, cache)
    table(
        [
            f"| {name} | {c[0]:.1f} | {c[1]:.1f} | {c[2]:.1f} |"
            for name, c in (("empty (cold)", cold), ("filled (warm)", warm))
        ],
        "| 2s3z, 64 envs, persistent cache | import + build (s) | reset incl. compile (s) | first step incl. compile (s) |",
    )

    if args.skip_training:
        return
    print()
    configs = {
        "2s3z (default)": [],
        "2s3z --guider-global-state": ["--guider-global-state"],
    }
    results = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, extra in configs.items():
            results[name].append(training_sps(extra, args.updates))
    rows = []
    for name, values in results.items():
        median = statistics.median(values)
        rows.append(
            f"| {name} | {median:,.0f} | {min(values):,.0f} - {max(values):,.0f} | {5e6 / median / 60:.0f} min |"
        )
    table(rows, f"| configuration | training env-steps/s (median of {args.repeats}) | min - max | 5M steps take |")


if __name__ == "__main__":
    main()
