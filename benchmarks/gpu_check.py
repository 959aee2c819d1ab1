"""The `--cuda` path on a real GPU (by hand, whenever one is at hand; no GPU has been lent to this project yet).

For each training configuration (CONFIGS below: every MAGPO script, mappo_baseline.py on each of their envs, and
happo_baseline.py on MPE, CoordSum and LBF, magpo_mpe.py with the Sable guider, ctce_baseline.py's MAT on MPE and
Sable on CoordSum):

1. **Check.** The script trains for exactly 2 updates twice, from the same seed, each in a fresh temporary
   directory: on the CPU (no `--cuda`), and on the device (`--cuda`). Their TensorBoard scalars under `losses/`,
   `magpo/` and `eval/` are compared point by point: *close* means that every `losses/*` value of the first
   update agrees within rtol 1e-2 / atol 1e-3 (why those, at RTOL below); the table also gives the largest
   relative difference over every compared point, and the wall time of both runs (process start to exit).
   torch's CUDA generator draws other numbers than its CPU one from the same seed, so the device run draws its
   random numbers on the CPU (`random_numbers_from_the_cpu`: the scripts' three draws, moved to the device);
   without that the runs would sample other actions from the first step and could not be compared at all.
2. **Throughput.** Env-steps/s of training at `--envs-list` (64, 256 and 1,024) environments, 2 updates of
   `--num-steps` 128 each, on the CPU and on the device, row by row. The script runs as it is (`--cuda`, its own
   random draws). The rate is the second update's env steps over its wall time, from the timestamps of the two
   `charts/SPS` events (rollout + update, as benchmarks/bench_train.py measures: no start-up, no CUDA warm-up,
   no evaluation, which happens only at step 0 and at the end with `--eval-interval` 10^9).

The result, two Markdown tables headed by the torch version, the device's name, the CPU count and the command,
is printed and written to `--out` (default plots/gpu_check.md, which git ignores); copy it into
docs/benchmarks.md, section "GPU check". On a GPU machine (Python 3.11; torch's CUDA build first, as the README's
"Install" says, then the SMAX and jumanji families, which keep that torch):

    pip install --index-url https://pypi.org/simple torch==2.13.0
    pip install -r requirements/requirements-smax.txt -r requirements/requirements-jumanji.txt
    python benchmarks/gpu_check.py                            # everything, on cuda
    python benchmarks/gpu_check.py --steps-cap 32768          # 1,024 envs x 32 steps: under half the CPU time
    python benchmarks/gpu_check.py --scripts magpo_mpe mappo_mpe --envs-list 64

    python benchmarks/gpu_check.py --device cpu --quick       # no GPU: this script itself, ~5 min on 2 cores

How long: 14 configurations x (2 check runs + 3 throughput runs per side) = 112 runs with the CPU side. The CPU
runs go `--jobs` at once (default: half the cores), the cuda runs one at a time beside them. On the CPU, training
runs at ~800-2,800 env-steps/s (one core, docs/benchmarks.md), so a 1,024-env run of 2 x 128 steps (262,144
steps) takes 1.5-5.5 min, and every run pays its start-up (~8 s; ~20 s for SMAX and LBF, whose JAX envs compile).
On the project's 2-core box `--device cpu --steps-cap 16384` took 19 min for the first 8 (docs/benchmarks.md, "GPU
check");
on a 16-core GPU box expect ~10 min (an estimate: no GPU run has been made yet), less with `--steps-cap 32768`,
and split it by `--scripts` (the 4 MAGPO, then the 4 MAPPO and 3 HAPPO configurations) to fit a short GPU lease.
`--device cpu` runs everything on the CPU: the check then compares two CPU runs, which must be equal (the
repository's scripts give the same numbers for the same seed on the same machine), so this script can be tested
without a GPU (tests/test_gpu_check.py).

A run that fails (a non-zero exit, e.g. a family not installed, or `--timeout`) is reported in the tables with its
exit code and the last line of its stderr, and the others go on; the script exits 1 at the end if any run failed or
any check is not close. Bad input is one `error: ...` line and exit 1, before anything runs or is written.
"""

import datetime
import glob
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field

import tyro

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
UPDATES = 2
LBF = ["--env", "lbf", "--scenario", "2s-8x8-2p-2f-coop"]
# name (for --scripts) -> (script, its flags): each MAGPO script on its default task, MAPPO on the same envs
CONFIGS = {
    "magpo_mpe": ("magpo_mpe.py", []),
    "magpo_coordsum": ("magpo_coordsum.py", []),
    "magpo_smax": ("magpo_smax.py", []),
    "magpo_jumanji": ("magpo_jumanji.py", LBF),
    "mappo_mpe": ("mappo_baseline.py", ["--env", "mpe"]),
    "mappo_coordsum": ("mappo_baseline.py", ["--env", "coordsum"]),
    "mappo_smax": ("mappo_baseline.py", ["--env", "smax"]),
    "mappo_jumanji": ("mappo_baseline.py", LBF),
    "happo_mpe": ("happo_baseline.py", ["--env", "mpe"]),
    "happo_coordsum": ("happo_baseline.py", ["--env", "coordsum", "--happo-scheme", "official"]),
    "happo_jumanji": ("happo_baseline.py", LBF),
    "magpo_mpe_sable": ("magpo_mpe.py", ["--guider", "sable"]),  # the paper's guider, its memory across rollouts
    "ctce_mpe": ("ctce_baseline.py", ["--env", "mpe", "--arch", "mat"]),
    "ctce_coordsum": ("ctce_baseline.py", ["--env", "coordsum", "--arch", "sable"]),
}
JAX_ENVS = {
    "magpo_smax",
    "magpo_jumanji",
    "mappo_smax",
    "mappo_jumanji",
    "happo_jumanji",
}  # SMAX 2s3z and LBF: episodes of ~100 steps
# --quick: tests/helpers.py's tiny networks, 2 epochs, 20-step CoordSum episodes
QUICK_FLAGS = {
    "magpo": ["--learner-hidden", "16", "--guider-dim", "16", "--update-epochs", "2"],
    "mappo": ["--learner-hidden", "16", "--critic-hidden", "16", "--update-epochs", "2"],
    "happo": ["--learner-hidden", "16", "--critic-hidden", "16", "--update-epochs", "2"],
    "ctce": ["--embed-dim", "16", "--update-epochs", "2"],
    "coordsum": ["--max-steps", "20"],
}

# Compared tags and the tolerance. GPU and CPU agree only to float32 rounding: cuDNN's GRU and the matmuls sum in
# other orders, and cuDNN may use TF32 (10-bit mantissa, ~5e-4 relative) in float32 RNNs. Each logged loss is a
# mean over the update's minibatch steps (4 minibatches x 5 epochs at the scripts' defaults) of means over the
# minibatch's ~1e3 tokens, so rounding should move the first update's losses by ~1e-4-1e-3 relative: rtol 1e-2
# leaves a margin of ~10x (an expectation, not yet measured on a GPU). atol 1e-3 is for the losses near 0 (policy
# loss, approx_kl, clipfrac), whose relative difference means little. A device bug (a tensor left on the CPU, a
# wrong mask or reset, another random stream) moves them by O(1), or crashes the run. Later points (the second
# update, the evaluations after training) are reported but not judged: by then the parameters have drifted, and a
# discrete action or a win can flip on a near-tie.
COMPARED = ("losses/", "magpo/", "happo/", "eval/")
RTOL, ATOL = 1e-2, 1e-3
# torch's random draws in the training scripts (tests/test_gpu_check.py checks that there are no others)
DRAWS = ("randn_like", "rand", "multinomial")


@dataclass
class Args:
    device: str = "cuda"
    """`cuda`: compare each script's `--cuda` run with its CPU run, and time both; `cpu`: run everything on the
    CPU (the check then compares two CPU runs, which must be equal), to test this script without a GPU"""
    scripts: tuple[str, ...] = tuple(CONFIGS)
    """the configurations to run: magpo_mpe, magpo_coordsum, magpo_smax, magpo_jumanji (LBF 2s-8x8-2p-2f-coop),
    mappo_mpe, mappo_coordsum, mappo_smax, mappo_jumanji (LBF 2s-8x8-2p-2f-coop), happo_mpe, happo_coordsum (the
    official scheme), happo_jumanji (LBF 2s-8x8-2p-2f-coop), magpo_mpe_sable (--guider sable), ctce_mpe (MAT),
    ctce_coordsum (Sable)"""
    envs_list: tuple[int, ...] | None = None
    """--num-envs of the throughput runs (default 64 256 1024; 4 8 with --quick)"""
    num_steps: int | None = None
    """--num-steps of the throughput runs (default 128; 32 with --quick)"""
    steps_cap: int = 0
    """at most this many env steps per update in a throughput run (0: no cap): a larger run gets
    --num-steps cut to steps-cap // num-envs (32768: 1,024 envs x 32 steps); the table heads give the steps"""
    num_minibatches: int | None = None
    """--num-minibatches of the throughput runs, a divisor of every --envs-list entry (default 4; 2 with --quick)"""
    cpu_throughput: bool = True
    """with --device cuda, also measure the throughput on the CPU, side by side (`--no-cpu-throughput`: device only)"""
    jobs: int = max(1, len(os.sched_getaffinity(0)) // 2)
    """CPU runs at once (one torch thread each); the device runs go one at a time beside them"""
    timeout: float = 900.0
    """seconds a run may take; a run still going then is stopped and reported as failed"""
    out: str = "plots/gpu_check.md"
    """where the tables are written (Markdown)"""
    quick: bool = False
    """tiny networks and sizes (tests/helpers.py's TINY): tests this script (all 14 configurations; the first 11
    took ~7 min on 2 cores), measures nothing"""


class InputError(Exception):
    """Bad input: reported as one `error: ...` line."""


@dataclass
class Plan:
    """What Args resolve to: the configurations, the throughput sizes, the flags of every run."""

    names: list[str]
    cuda: bool
    envs_list: list[int]
    steps: dict[int, int]  # num_envs -> num_steps of its throughput run
    num_minibatches: int
    quick: bool

    def check_flags(self, name):
        """The check's run: 2 updates of a small batch, evaluated after each (eval/* at 0, 1 and 2 updates)."""
        jax_env = name in JAX_ENVS
        envs, steps = (4, 64 if jax_env else 32) if self.quick else (16, 64)  # 2 x 64 steps: SMAX/LBF episodes end
        episodes = (envs if jax_env else 2) if self.quick else 8  # quick: eval envs = train envs, one JAX compile
        return self.flags(name, envs, steps, 2 if self.quick else 4, envs * steps, episodes)

    def throughput_flags(self, name, num_envs):
        episodes = 2 if self.quick else 4  # the step-0 and final evaluations: outside the measured update
        return self.flags(name, num_envs, self.steps[num_envs], self.num_minibatches, 10**9, episodes)

    def flags(self, name, envs, steps, minibatches, eval_interval, episodes):
        script, flags = CONFIGS[name]
        if self.quick:
            flags = [*flags, *QUICK_FLAGS[name.split("_")[0]]]
            flags += QUICK_FLAGS["coordsum"] if name.endswith("coordsum") else []
        sizes = {"--seed": 1, "--num-envs": envs, "--num-steps": steps, "--num-minibatches": minibatches,
                 "--total-timesteps": UPDATES * envs * steps, "--eval-interval": eval_interval,
                 "--num-eval-episodes": episodes}  # fmt: skip
        return [*flags, *(str(x) for item in sizes.items() for x in item)]


def resolve(args):
    """Validate `args` (InputError) and resolve them."""
    unknown = [name for name in args.scripts if name not in CONFIGS]
    if unknown or not args.scripts:
        raise InputError(f"--scripts: unknown configuration {' '.join(unknown) or '(none given)'}; "
                         f"choose from {' '.join(CONFIGS)}")  # fmt: skip
    if args.device not in ("cuda", "cpu"):
        raise InputError(f"--device must be cuda or cpu, got {args.device!r}")
    envs_list = list(args.envs_list or ((4, 8) if args.quick else (64, 256, 1024)))
    num_steps = args.num_steps or (32 if args.quick else 128)
    minibatches = args.num_minibatches or (2 if args.quick else 4)
    if min(*envs_list, num_steps, minibatches, args.jobs) < 1 or args.steps_cap < 0 or args.timeout <= 0:
        raise InputError("--envs-list, --num-steps, --num-minibatches and --jobs must be >= 1, --steps-cap >= 0, "
                         "--timeout > 0")  # fmt: skip
    if bad := [n for n in envs_list if n % minibatches]:
        raise InputError(f"--envs-list {' '.join(map(str, bad))}: not a multiple of --num-minibatches {minibatches}")
    if args.steps_cap and (bad := [n for n in envs_list if n > args.steps_cap]):
        raise InputError(f"--steps-cap {args.steps_cap} is below one step of --envs-list {bad[0]}")
    steps = {n: min(num_steps, args.steps_cap // n) if args.steps_cap else num_steps for n in envs_list}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: torch sees no CUDA device; use --device cpu to check the script itself")
    names = list(dict.fromkeys(args.scripts))
    return Plan(names, args.device == "cuda", list(dict.fromkeys(envs_list)), steps, minibatches, args.quick)


@contextmanager
def random_numbers_from_the_cpu():
    """Within it, torch.randn_like, torch.rand and torch.multinomial (DRAWS: the training scripts' only random
    draws) draw from torch's CPU generator whatever the device, then move the result to it, so that a `--cuda`
    run samples what the CPU run samples. On the CPU they are unchanged: same numbers, same generator state."""
    import torch

    randn_like, rand, multinomial = originals = torch.randn_like, torch.rand, torch.multinomial

    def cpu_randn_like(input, *, device=None, **kwargs):
        return randn_like(input, device="cpu", **kwargs).to(device or input.device)

    def cpu_rand(*size, device=None, **kwargs):
        sample = rand(*size, **kwargs)
        return sample if device is None else sample.to(device)

    def cpu_multinomial(input, num_samples, *args, **kwargs):
        return multinomial(input.cpu(), num_samples, *args, **kwargs).to(input.device)

    torch.randn_like, torch.rand, torch.multinomial = cpu_randn_like, cpu_rand, cpu_multinomial
    try:
        yield
    finally:
        torch.randn_like, torch.rand, torch.multinomial = originals


# `python -c LAUNCHER <script> <flags>`: the script as `python <script> <flags>` runs it, its draws from the CPU
LAUNCHER = f"""
import os, runpy, sys
sys.path[0] = {BENCHMARKS!r}
from gpu_check import random_numbers_from_the_cpu
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])
with random_numbers_from_the_cpu():
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass
class Result:
    wall: float  # seconds, process start to exit
    failure: str | None = None  # "exit 1: <last stderr line>" or "timed out ..." when the run failed
    scalars: dict = field(default_factory=dict)  # {tag: [(step, wall_time, value), ...]}


def read_scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    return {tag: [(e.step, e.wall_time, e.value) for e in accumulator.Scalars(tag)] for tag in tags}


def train(script, flags, cuda, cpu_draws, quick_jax, timeout):
    """One training run in a fresh temporary directory -> Result."""
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what the scripts set themselves (the launcher imports torch first)
    if quick_jax:  # tests/helpers.py's fast XLA compile: right for tiny runs only
        env.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
    start = [sys.executable, "-c", LAUNCHER] if cpu_draws else [sys.executable]
    command = [*start, os.path.join(REPO, script), *flags, *(["--cuda"] if cuda else [])]
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as cwd:
        begin = time.monotonic()
        try:
            process = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Result(time.monotonic() - begin, f"timed out after {timeout:g} s")
        wall = time.monotonic() - begin
        if process.returncode != 0:
            lines = [line.strip() for line in process.stderr.splitlines() if line.strip()] or ["(no stderr)"]
            return Result(wall, f"exit {process.returncode}: {lines[-1][:200]}")
        run_dirs = glob.glob(os.path.join(cwd, "runs", "*"))
        if len(run_dirs) != 1:
            return Result(wall, f"exit 0 but {len(run_dirs)} run directories under runs/")
        return Result(wall, scalars=read_scalars(run_dirs[0]))


def relative(x, y):
    """|x - y| / max(|x|, ATOL / RTOL): relative, with values under 0.1 in size counted as 0.1, so that a difference
    is <= RTOL exactly where it is within rtol (of |x|) or atol; NaN against NaN counts as equal."""
    if x == y or (math.isnan(x) and math.isnan(y)):
        return 0.0
    if math.isnan(x) or math.isnan(y):
        return math.inf
    return abs(x - y) / max(abs(x), ATOL / RTOL)


def compare(cpu, device, exact):
    """(ok, text): `device`'s scalars under COMPARED against `cpu`'s. `exact`: every point must be equal; else every
    `losses/*` point of the first update must be within RTOL / ATOL (`relative` <= RTOL)."""
    logs = [{tag: [(s, v) for s, _, v in events] for tag, events in run.items() if tag.startswith(COMPARED)}
            for run in (cpu, device)]  # fmt: skip
    if not logs[0]:
        return False, "NOT comparable: no losses/, magpo/ or eval/ scalars"
    if only := " ".join(sorted(logs[0].keys() ^ logs[1].keys())):
        return False, f"NOT comparable: tags logged by one run only: {only}"
    points = []  # (relative difference, tag, step)
    for tag in sorted(logs[0]):
        if [s for s, _ in logs[0][tag]] != [s for s, _ in logs[1][tag]]:
            return False, f"NOT comparable: {tag} logged at other steps"
        points += [(relative(x, y), tag, s) for (s, x), (_, y) in zip(logs[0][tag], logs[1][tag])]
    worst = max(points)
    overall = f"all {len(points)} points equal"
    if worst[0] > 0:
        overall = f"max rel diff {worst[0]:.1e} over all {len(points)} points ({worst[1]} @ {worst[2]})"
    if exact:
        differ = sum(diff > 0 for diff, _, _ in points)
        return differ == 0, ("equal: " if differ == 0 else f"NOT equal: {differ} points differ, ") + overall
    first = min(step for _, tag, step in points if tag.startswith("losses/"))
    judged = max(p for p in points if p[1].startswith("losses/") and p[2] == first)
    ok = judged[0] <= RTOL
    verdict = "close" if ok else "NOT close"
    return ok, f"{verdict}: first update's losses max rel diff {judged[0]:.1e} ({judged[1]}); {overall}"


def steady_rate(result):
    """Env-steps/s of the second update: steps over wall time between the two charts/SPS events."""
    events = result.scalars.get("charts/SPS", [])
    if len(events) < 2:
        return math.nan
    (first_step, first_time, _), (last_step, last_time, _) = events[0], events[-1]
    return (last_step - first_step) / (last_time - first_time) if last_time > first_time else math.nan


def cell(text):
    return text.replace("|", "\\|")


def machine():
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def header(device_name):
    import torch

    try:
        git = ["git", "-C", REPO, "describe", "--always", "--dirty"]
        revision = subprocess.run(git, capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        revision = "unknown"
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    cpus = f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable here), {machine()}"
    return [
        "# GPU check (benchmarks/gpu_check.py)",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- date: {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; revision {revision}",
        f"- torch {torch.__version__}{cuda}; python {platform.python_version()}; {cpus}",
        f"- device: {device_name}",
    ]


def label(name):
    script, flags = CONFIGS[name]
    return f"{name} (`{shlex.join([script, *flags])}`)"


def check_table(plan, results):
    """(Markdown lines, number of checks that are not close)."""
    other = "cuda" if plan.cuda else "2nd CPU"  # the run whose random numbers the launcher draws on the CPU
    judge = f"first update's losses within rtol {RTOL}, atol {ATOL}" if plan.cuda else "two CPU runs: must be equal"
    lines = [f"## Check: {UPDATES} updates, CPU run vs {other} run, same seed", ""]
    lines += [f"| configuration | check ({judge}) | CPU wall (s) | {other} wall (s) |", "|---|---|---|---|"]
    not_close = 0
    for name in plan.names:
        runs = {"CPU": results["check", name, "cpu"], other: results["check", name, "device"]}
        if failures := [f"{side} run failed ({run.failure})" for side, run in runs.items() if run.failure]:
            text = "; ".join(failures)
        else:
            ok, text = compare(*(run.scalars for run in runs.values()), exact=not plan.cuda)
            not_close += not ok
        walls = " | ".join(f"{run.wall:.1f}" for run in runs.values())
        lines.append(f"| {label(name)} | {cell(text)} | {walls} |")
    sizes = " ".join(plan.check_flags(plan.names[0])[len(CONFIGS[plan.names[0]][1]) :])
    lines += [
        "",
        "Check runs: each configuration's flags, then "
        + ("--quick's tiny networks and sizes (`Plan.check_flags`)" if plan.quick else f"`{sizes}`")
        + f"; the {other} run {'adds `--cuda` and ' if plan.cuda else ''}draws its random numbers on the CPU "
        f"(`random_numbers_from_the_cpu`). Compared: every `losses/`, `magpo/` and `eval/` point; max rel diff = "
        f"|{other} - CPU| / max(|CPU|, {ATOL / RTOL:g}). Wall: process start to exit, with the JAX envs' compile where "
        "~/.cache/magpo_jax does not have it yet (the first run of SMAX or LBF at a batch size).",
    ]
    return lines, not_close


def throughput_table(plan, results, sides, jobs):
    heads = " | ".join(f"{n} envs × {plan.steps[n]} steps" for n in plan.envs_list)
    lines = [f"## Throughput: training env-steps/s ({UPDATES} updates, the second one timed)", ""]
    lines += [f"| configuration | device | {heads} |", "|---|---|" + "---|" * len(plan.envs_list)]
    for name in plan.names:
        for side in sides:
            cells = []
            for n in plan.envs_list:
                result = results["throughput", name, side, n]
                cells.append(cell(f"failed ({result.failure})") if result.failure else f"{steady_rate(result):,.0f}")
            lines.append(f"| {name} | {side} | {' | '.join(cells)} |")
    lines += [
        "",
        "Env-steps/s: the second update's env steps over its wall time, from the timestamps of the two "
        "`charts/SPS` events (rollout + update; no start-up, no evaluation: `--eval-interval 1000000000`); "
        f"`--num-minibatches {plan.num_minibatches}`, each script's other defaults"
        + (", --quick's tiny networks" if plan.quick else "")
        + f"; {jobs} CPU run(s) at once"
        + (", beside the one cuda run." if plan.cuda else "."),
    ]
    return lines


def main(args):
    plan = resolve(args)  # InputError before anything runs or is written
    device = "cuda" if plan.cuda else "cpu"
    if plan.cuda:
        import torch

        device_name = f"cuda: {torch.cuda.get_device_name(0)}"
    else:
        device_name = "cpu (--device cpu: the check compares two CPU runs)"
    sides = ["cpu", device] if plan.cuda and args.cpu_throughput else [device]

    # key -> (pool, script, flags, --cuda, random numbers from the CPU, fast XLA compile)
    runs = {}
    for name in plan.names:
        script, quick_jax = CONFIGS[name][0], plan.quick and name in JAX_ENVS
        runs["check", name, "cpu"] = ("cpu", script, plan.check_flags(name), False, False, quick_jax)
        runs["check", name, "device"] = (device, script, plan.check_flags(name), plan.cuda, True, quick_jax)
    for n in sorted(plan.envs_list, reverse=True):  # the longest first: the CPU pool finishes sooner
        for name in plan.names:
            script, quick_jax = CONFIGS[name][0], plan.quick and name in JAX_ENVS
            flags = plan.throughput_flags(name, n)
            for side in sides:
                runs["throughput", name, side, n] = (side, script, flags, side == "cuda", False, quick_jax)
    also = ", the cuda runs one at a time beside them" if plan.cuda else ""
    print(f"{len(runs)} runs, {args.jobs} CPU run(s) at once{also}", file=sys.stderr, flush=True)
    results = {}
    with ThreadPoolExecutor(args.jobs) as cpu_pool, ThreadPoolExecutor(1) as cuda_pool:
        pools = {"cpu": cpu_pool, "cuda": cuda_pool}
        futures = {pools[pool].submit(train, *run, args.timeout): key for key, (pool, *run) in runs.items()}
        try:
            for i, future in enumerate(as_completed(futures), 1):
                key, result = futures[future], future.result()
                results[key] = result
                status = result.failure or f"{result.wall:.1f} s"
                print(f"[{i}/{len(runs)}] {' '.join(map(str, key))}: {status}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:  # Ctrl-C reaches the running scripts too; start no more
            for future in futures:
                future.cancel()
            raise

    checks, not_close = check_table(plan, results)
    lines = [*header(device_name), "", *checks, "", *throughput_table(plan, results, sides, args.jobs)]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"written to {args.out}", file=sys.stderr)
    failed = sum(result.failure is not None for result in results.values())
    if failed or not_close:
        print(f"{failed} run(s) failed, {not_close} check(s) not {'close' if plan.cuda else 'equal'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(tyro.cli(Args)))
    except InputError as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        sys.exit("interrupted: nothing written")
