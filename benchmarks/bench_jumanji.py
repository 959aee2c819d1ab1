"""jumanji speed (by hand, not a test): the bridge's env-steps/s against jumanji's own auto-reset, and the
training throughput of magpo_jumanji.py, per family.

1. Bridge: `utils/jumanji.py` with 64 envs, random legal actions drawn with numpy from `avail_actions()` (as a
   policy's would be), against jumanji's `AutoResetWrapper` under jit(vmap) stepped from the same kind of
   loop (actions as int32 numpy, outputs copied with np.array: the bridge's own hand-over). Every reset size
   of the bridge is compiled first (`compile_all`). The two are interleaved, `--repeats` times `--seconds`;
   the table gives medians of env-steps per wall-clock second and per CPU second of this process (the second
   is steadier on a shared machine). One env-step is one step of one environment.
2. Training (`--train`): `magpo_jumanji.py` run as a user would with the task's tuned row, for `--updates`
   updates of 64 x 128 steps, reading the SPS it logs (`charts/SPS`: rollout + update; the evaluation before
   training is included, so steady state is slightly faster).

Run it on one core, as docs/benchmarks.md does:

    taskset -c 1 python benchmarks/bench_jumanji.py
    taskset -c 1 python benchmarks/bench_jumanji.py --tasks rware:tiny-2ag lbf:15x15-4p-5f --train
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

import numpy as np  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from utils import random_actions  # noqa: E402
from utils.jumanji import check_task, make_env  # noqa: E402

DEFAULT_TASKS = ["rware:tiny-2ag", "rware:xlarge-4ag", "lbf:2s-8x8-2p-2f-coop", "lbf:15x15-4p-5f",
                 "connector:con-5x5x3a", "connector:con-15x15x23a"]  # fmt: skip


def rate(step, num_envs, seconds):
    """(env-steps per wall second, per CPU second of this process) of `step` called for `seconds`."""
    steps, wall, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall < seconds:
        step()
        steps += 1
    return steps * num_envs / (time.perf_counter() - wall), steps * num_envs / (time.process_time() - cpu)


def bridge_stepper(env, scenario, num_envs):
    envs = make_env(num_envs, seed=0, env=env, scenario=scenario)
    envs.reset()
    envs.compile_all()
    rng = np.random.default_rng(0)
    return envs, lambda: envs.step(random_actions(envs, rng))


def reference_stepper(envs, num_envs):
    """jumanji's AutoResetWrapper on the same env, jit(vmap)-ed: it computes a reset for every env at every step
    and keeps the ones of the envs that ended."""
    import jax
    from jumanji.wrappers import AutoResetWrapper

    wrapped = AutoResetWrapper(envs._env)
    step = jax.jit(jax.vmap(wrapped.step))
    state, timestep = jax.vmap(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), num_envs))
    carry = {"state": state, "mask": np.array(timestep.observation.action_mask)}
    rng = np.random.default_rng(0)
    view = "grid" if envs.env == "connector" else "agents_view"

    def one():
        mask = carry["mask"]
        actions = np.where(mask, rng.random(mask.shape), -1.0).argmax(-1).astype(np.int32)
        carry["state"], timestep = step(carry["state"], actions)
        observation = timestep.observation
        carry["mask"] = np.array(observation.action_mask)
        np.array(getattr(observation, view)), np.array(timestep.reward), np.array(timestep.last())

    one()  # compile
    return one


def training_sps(env, scenario, updates, cwd):
    """charts/SPS of magpo_jumanji.py after `updates` updates with the task's row (one run)."""
    command = [sys.executable, os.path.join(REPO, "magpo_jumanji.py"), "--env", env, "--scenario", scenario,
               "--total-timesteps", str(updates * 64 * 128), "--eval-interval", str(10**9),
               "--num-eval-episodes", "8"]  # fmt: skip
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True)
    (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator.Scalars("charts/SPS")[-1].value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, help="env:scenario pairs")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved measurements per configuration")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of one measurement")
    parser.add_argument("--train", action="store_true", help="also measure magpo_jumanji.py's training SPS")
    parser.add_argument("--updates", type=int, default=2, help="updates per training measurement")
    args = parser.parse_args()
    tasks = [task.split(":", 1) for task in args.tasks]
    for env, scenario in tasks:
        check_task(env, scenario)

    B = args.num_envs
    print(f"{B} envs, random legal actions; median of {args.repeats} x {args.seconds:g} s, interleaved\n")
    print("| task | bridge env-steps/s (per CPU-s) | vmapped AutoResetWrapper (per CPU-s) | bridge / wrapper (CPU) |")
    print("|---|---|---|---|")
    for env, scenario in tasks:
        envs, ours = bridge_stepper(env, scenario, B)
        theirs = reference_stepper(envs, B)
        results = {"bridge": [], "wrapper": []}
        for _ in range(args.repeats):
            results["bridge"].append(rate(ours, B, args.seconds))
            results["wrapper"].append(rate(theirs, B, args.seconds))
        (b_wall, b_cpu), (w_wall, w_cpu) = (
            tuple(statistics.median(x[i] for x in results[k]) for i in range(2)) for k in ("bridge", "wrapper")
        )
        print(
            f"| {env} {scenario} | {b_wall:,.0f} ({b_cpu:,.0f}) | {w_wall:,.0f} ({w_cpu:,.0f}) | {b_cpu / w_cpu:.2f} |"
        )
        sys.stdout.flush()

    if args.train:
        print(f"\n| task | magpo_jumanji.py training env-steps/s ({args.updates} updates of {64 * 128} steps) |")
        print("|---|---|")
        for env, scenario in tasks:
            with tempfile.TemporaryDirectory() as cwd:
                print(f"| {env} {scenario} | {training_sps(env, scenario, args.updates, cwd):,.0f} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
