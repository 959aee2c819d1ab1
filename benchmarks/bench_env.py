"""Speed of simple_spread: mpe2 stepped in a Python loop vs the batched numpy SimpleSpreadVec.

A by-hand benchmark, not a test; results go in docs/benchmarks.md. One env-step is one step of one
environment (all N agents act). Actions are random and continuous, episodes auto-reset every
25 steps as in training. Each configuration runs for --seconds, --repeats times, interleaved so
that all of them see the same machine load; the table gives the median and the speed-up over mpe2.

    python benchmarks/bench_env.py [--agents 3 5 10] [--repeats 5] [--seconds 1.0]
"""

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from utils.mpe import PettingZooMPE, SimpleSpreadVec  # noqa: E402


def mpe2_loop(num_envs, N):
    """The plain mpe2 way: a list of parallel_envs, stepped one after the other."""
    from mpe2 import simple_spread_v3

    envs = [simple_spread_v3.parallel_env(N=N, continuous_actions=True) for _ in range(num_envs)]
    agents = envs[0].possible_agents
    for i, env in enumerate(envs):
        env.reset(seed=i)

    def step(actions):  # actions (num_envs, N, 5)
        for i, env in enumerate(envs):
            _, _, _, truncations, _ = env.step({a: actions[i, j] for j, a in enumerate(agents)})
            if all(truncations.values()):
                env.reset()

    return step


def batched(env_class, num_envs, N):
    env = env_class(num_envs, N, continuous_actions=True, seed=0)
    env.reset()
    return env.step


def env_steps_per_second(step, num_envs, actions, seconds):
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in actions:  # check the clock every len(actions) steps only
            step(batch)
        steps += len(actions)
    return steps * num_envs / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="+", default=[3, 5, 10], help="values of N")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per configuration")
    parser.add_argument("--seconds", type=float, default=1.0, help="duration of one measurement")
    parser.add_argument("--mpe2-envs", type=int, default=4, help="environments in the mpe2 loop")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256], help="B of SimpleSpreadVec")
    args = parser.parse_args()

    cpu = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    print(
        f"CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, numpy {np.__version__}; "
        f"median of {args.repeats} x {args.seconds:g} s, continuous random actions\n"
    )
    print("| N | implementation | envs | env-steps/s | min - max | x mpe2 |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for N in args.agents:
        configs = [
            ("mpe2 parallel_env, Python loop", args.mpe2_envs, mpe2_loop(args.mpe2_envs, N)),
            ("PettingZooMPE (mpe2 backend)", args.mpe2_envs, batched(PettingZooMPE, args.mpe2_envs, N)),
        ]
        configs += [("SimpleSpreadVec (numpy)", B, batched(SimpleSpreadVec, B, N)) for B in args.batch_sizes]
        # a pool of actions made in advance, so that drawing them is not timed
        pools = [rng.uniform(0.0, 1.0, (16, B, N, 5)).astype(np.float32) for _, B, _ in configs]
        for (_, B, step), pool in zip(configs, pools):  # warm-up (caches, lazy imports, CPU clock)
            env_steps_per_second(step, B, pool, args.seconds / 2)
        rates = [[] for _ in configs]
        for _ in range(args.repeats):
            for (_, B, step), pool, r in zip(configs, pools, rates):
                r.append(env_steps_per_second(step, B, pool, args.seconds))
        baseline = statistics.median(rates[0])
        for (name, B, _), r in zip(configs, rates):
            median = statistics.median(r)
            print(f"| {N} | {name} | {B} | {median:,.0f} | {min(r):,.0f} - {max(r):,.0f} | {median / baseline:.1f} |")


if __name__ == "__main__":
    main()
