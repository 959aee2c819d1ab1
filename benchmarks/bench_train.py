"""Training throughput, side by side (by hand, not a test): env-steps/s, start-up and memory of whole runs.

Every speed claim in docs/benchmarks.md is a ratio measured here in one run: each configuration is
trained by each revision in turn (interleaved, `--repeats` rounds), so machine noise hits both alike,
and the medians are compared. A revision is any git revision (exported with `git archive` into a
temporary directory) or WORKTREE, the working tree as it is now.

    python benchmarks/bench_train.py                                   # HEAD vs the working tree, all scripts
    python benchmarks/bench_train.py --revisions 80eb294 HEAD --repeats 3 --updates 3
    python benchmarks/bench_train.py --suite mpe-variants              # agent counts, discrete, mpe2 backend
    python benchmarks/bench_train.py --suite happo --revisions WORKTREE  # HAPPO's cost beside MAPPO's
    python benchmarks/bench_train.py --suite guiders --revisions WORKTREE  # the guiders and MAT / Sable beside both
    python benchmarks/bench_train.py --scaling 64 128 256 512 1024     # --num-envs sweep, minibatch fixed

Each run is the script as a user runs it (its defaults, evaluation every 10^9 steps so only the step-0
one happens), pinned to one CPU (`--cpu`, default the first one this process may use; torch already
uses 1 thread by default). From its tensorboard events and its process:
- steady env-steps/s: steps between the first and the last `charts/SPS` event over the wall time
  between them (the updates after the first: rollout + update, no evaluation, no start-up);
- start-up: from starting the process to the end of its first update (imports, env build, the
  random-policy floor, the step-0 evaluation, the first rollout and update), in seconds;
- peak RSS of the process, in MB.
"""

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKTREE = "WORKTREE"
SUITES = {
    # what issue 21 compares: every training script at its defaults, MAGPO next to MAPPO on each env
    "scripts": {
        "magpo_mpe.py": ("magpo_mpe.py", []),
        "mappo_baseline.py --env mpe": ("mappo_baseline.py", ["--env", "mpe"]),
        "magpo_coordsum.py": ("magpo_coordsum.py", []),
        "mappo_baseline.py --env coordsum": ("mappo_baseline.py", ["--env", "coordsum"]),
        "magpo_smax.py (2s3z)": ("magpo_smax.py", []),
        "mappo_baseline.py --env smax (2s3z)": ("mappo_baseline.py", ["--env", "smax"]),
    },
    # issue 32: HAPPO's cost per env step against MAPPO's, both at their defaults (the same rollout and schedule)
    "happo": {
        "mappo_baseline.py --env mpe": ("mappo_baseline.py", ["--env", "mpe"]),
        "happo_baseline.py --env mpe": ("happo_baseline.py", ["--env", "mpe"]),
        "happo_baseline.py --env mpe --happo-scheme official": (
            "happo_baseline.py",
            ["--env", "mpe", "--happo-scheme", "official"],
        ),
        "mappo_baseline.py --env coordsum": ("mappo_baseline.py", ["--env", "coordsum"]),
        "happo_baseline.py --env coordsum": ("happo_baseline.py", ["--env", "coordsum"]),
        "mappo_baseline.py --env lbf": ("mappo_baseline.py", ["--env", "lbf"]),
        "happo_baseline.py --env lbf": ("happo_baseline.py", ["--env", "lbf"]),
    },
    # issue 33: each guider and each CTCE arch against the MAT-GRU default and MAPPO, all at their defaults (the same
    # rollout and 4 x 5 schedule), on MPE, CoordSum and SMAX 2s3z
    "guiders": {
        f"{env} {label}": (
            script,
            [*(["--env", env] if script == "mappo_baseline.py" or "ctce" in script else []), *flags],
        )
        for env, magpo in [("mpe", "magpo_mpe.py"), ("coordsum", "magpo_coordsum.py"), ("smax", "magpo_smax.py")]
        for label, script, flags in [
            ("magpo --guider mat-gru", magpo, []),
            ("magpo --guider mat", magpo, ["--guider", "mat"]),
            ("magpo --guider sable", magpo, ["--guider", "sable"]),
            ("mappo", "mappo_baseline.py", []),
            ("ctce --arch mat", "ctce_baseline.py", ["--arch", "mat"]),
            ("ctce --arch sable", "ctce_baseline.py", ["--arch", "sable"]),
        ]
    },
    # simple_spread variants of magpo_mpe.py
    "mpe-variants": {
        "N=3 continuous (default)": ("magpo_mpe.py", []),
        "N=3 discrete": ("magpo_mpe.py", ["--no-continuous-actions"]),
        "N=3 8 minibatches (paper)": ("magpo_mpe.py", ["--num-minibatches", "8"]),
        "N=5 continuous": ("magpo_mpe.py", ["--num-agents", "5"]),
        "N=10 continuous": ("magpo_mpe.py", ["--num-agents", "10"]),
        "N=3 continuous, mpe2 backend": ("magpo_mpe.py", ["--env-backend", "pettingzoo"]),
    },
}
SCALING_SCRIPTS = {"MPE": "magpo_mpe.py", "CoordSum": "magpo_coordsum.py", "SMAX 2s3z": "magpo_smax.py"}


def export(revision, into):
    """The files of `revision` in directory `into` (WORKTREE: the repository itself, as it is)."""
    if revision == WORKTREE:
        return REPO
    os.makedirs(into, exist_ok=True)
    archive = subprocess.run(["git", "-C", REPO, "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def run(tree, script, extra, updates, num_envs, num_steps, cpu):
    """One training run of `updates` updates -> (steady env-steps/s, start-up s, peak RSS MB)."""
    with tempfile.TemporaryDirectory() as cwd:
        cmd = [sys.executable, os.path.join(tree, script), *extra]
        cmd += ["--num-envs", str(num_envs), "--num-steps", str(num_steps)]
        cmd += ["--total-timesteps", str(updates * num_envs * num_steps), "--eval-interval", str(10**9)]
        start = time.time()
        process = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr.decode()[-2000:]}")
        (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
        accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
        accumulator.Reload()
        events = accumulator.Scalars("charts/SPS")
        first, last = events[0], events[-1]
        steady = (last.step - first.step) / (last.wall_time - first.wall_time)
        return steady, first.wall_time - start, usage.ru_maxrss / 1024


def median(values):
    return statistics.median(values) if values else float("nan")


def compare(args, cpu):
    configs = {name: config for name, config in SUITES[args.suite].items() if args.only in name}
    if not configs:
        sys.exit(f"error: no configuration of --suite {args.suite} contains {args.only!r}")
    with tempfile.TemporaryDirectory() as tmp:
        trees = {rev: export(rev, os.path.join(tmp, str(i))) for i, rev in enumerate(args.revisions)}
        results = {(name, rev): [] for name in configs for rev in args.revisions}
        for repeat in range(args.repeats):
            for name, (script, extra) in configs.items():
                for rev, tree in trees.items():
                    result = run(tree, script, extra, args.updates, args.num_envs, args.num_steps, cpu)
                    results[name, rev].append(result)
                    print(f"round {repeat + 1}, {name}, {rev}: {result[0]:,.0f} env-steps/s, "
                          f"start-up {result[1]:.1f} s, {result[2]:,.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
    first, last = args.revisions[0], args.revisions[-1]
    head = " | ".join(f"{rev} env-steps/s" for rev in args.revisions)
    print(f"\n| configuration | {head} | {last} / {first} | start-up (s) | peak RSS (MB) |")
    print("|---|" + "---|" * len(args.revisions) + "---|---|---|")
    for name in configs:
        sps = {rev: median([r[0] for r in results[name, rev]]) for rev in args.revisions}
        startup = " vs ".join(f"{median([r[1] for r in results[name, rev]]):.1f}" for rev in args.revisions)
        rss = " vs ".join(f"{median([r[2] for r in results[name, rev]]):,.0f}" for rev in args.revisions)
        cells = " | ".join(f"{sps[rev]:,.0f}" for rev in args.revisions)
        print(f"| {name} | {cells} | {sps[last] / sps[first]:.2f}x | {startup} | {rss} |")


def scaling(args, cpu):
    with tempfile.TemporaryDirectory() as tmp:
        tree = export(args.revisions[-1], tmp)
        results = {(name, n): [] for name in SCALING_SCRIPTS for n in args.scaling}
        for repeat in range(args.repeats):
            for name, script in SCALING_SCRIPTS.items():
                for n in args.scaling:
                    if n % args.minibatch_envs:
                        sys.exit(f"error: --num-envs {n} is not a multiple of --minibatch-envs {args.minibatch_envs}")
                    extra = ["--num-minibatches", str(n // args.minibatch_envs)]
                    result = run(tree, script, extra, args.updates, n, args.num_steps, cpu)
                    results[name, n].append(result)
                    print(f"round {repeat + 1}, {name}, {n} envs: {result[0]:,.0f} env-steps/s, {result[2]:,.0f} MB",
                          file=sys.stderr, flush=True)  # fmt: skip
    cells = " | ".join(str(n) for n in args.scaling)
    print(f"\n| env-steps/s by --num-envs ({args.minibatch_envs} envs per minibatch) | {cells} |")
    print("|---|" + "---|" * len(args.scaling))
    for name in SCALING_SCRIPTS:
        row = " | ".join(f"{median([r[0] for r in results[name, n]]):,.0f}" for n in args.scaling)
        print(f"| {name} | {row} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--revisions", nargs="+", default=["HEAD", WORKTREE], help=f"git revisions or {WORKTREE}")
    parser.add_argument("--suite", choices=sorted(SUITES), default="scripts")
    parser.add_argument("--only", default="", help="run only the configurations whose name contains this")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; every configuration runs once per round")
    parser.add_argument("--updates", type=int, default=3, help="updates per run (>= 2: the first is start-up)")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=128)
    parser.add_argument("--cpu", type=int, default=min(os.sched_getaffinity(0)), help="the CPU every run is pinned to")
    parser.add_argument("--scaling", type=int, nargs="+", help="sweep --num-envs over these (last revision only)")
    parser.add_argument("--minibatch-envs", type=int, default=16, help="envs per minibatch in the sweep")
    args = parser.parse_args()
    if args.updates < 2:
        sys.exit("error: --updates must be >= 2 (steady state is measured after the first update)")
    if args.repeats < 1:
        sys.exit("error: --repeats must be >= 1")
    (scaling if args.scaling else compare)(args, args.cpu)


if __name__ == "__main__":
    main()
