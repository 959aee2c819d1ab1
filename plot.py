"""Aggregate the TensorBoard logs of several runs into curves, a final-performance table and marl-eval JSON.

    python plot.py --runs "runs/*" --out-dir plots [--metric eval/learner_return] [--marl-eval-json results.json]
    python plot.py --runs "runs/*" --metric eval/guider_return --subtract eval/learner_return   # the gap
    python plot.py --runs "runs/*" --include-incomplete   # keep interrupted runs (marked) instead of leaving them out
    python plot.py --from-json docs/data/c2_protocol/e1_raw.json   # redraw from committed values, no run directories
    python plot.py --from-json seeds_1.json seeds_2_3.json --marl-eval-json all.json   # pool the runs of several
    python plot.py --runs "runs/*" --aggregate --improvement-of magpo_coordsum   # across tasks, as the paper
    python plot.py --from-json all.json --bounds plots/bounds.json --aggregate   # the same from committed values

Runs are the directories `runs/<task>__<exp_name>__<seed>__<unix time>` that `magpo_mpe.py` writes; the
algorithm is the exp_name. Runs are grouped by (task, algorithm), one run per seed. When a seed was run
twice, a finished run (one that logged an `eval/absolute_*` tag, which training does once, at the very end)
is kept over an unfinished one, so a rerun that crashed never hides a finished run; among runs equally
finished, the newest is kept. A `warning:` line names each run left out. For each group:
  - a sample-efficiency curve: the IQM over seeds at each evaluation step with a 95% bootstrap band, one
    figure per task (`<out-dir>/<task>__<metric>.png`);
  - a row of the final-performance table (stdout and `<out-dir>/final.md`): seeds, mean, IQM and its 95% CI
    of the final score per seed (no CI for a single seed: the row says "n/a (1 run)");
  - optionally, its runs' raw values in the marl-eval (InstaDeep) JSON layout, for their plotting tools.

Statistics, as rliable defines them (Agarwal et al., "Deep RL at the Edge of the Statistical Precipice"):
  - IQM = interquartile mean = scipy.stats.trim_mean(x, 0.25): the mean after cutting int(0.25 n) values
    from each end, so 5 seeds average the middle 3 and 3 seeds keep all of them.
  - CI = 95% percentile bootstrap over seeds with `rliable.library.get_interval_estimates`: seeds are
    resampled with replacement within each task (stratified), and each table cell and curve is one task.
Two quirks of rliable 1.2.0 with arch 7.2.0, verified here, shape `bootstrap_ci`: its StratifiedBootstrap
draws indices from the global `np.random` and ignores `random_state` (which arch also deprecates with a
FutureWarning), so the global generator is seeded instead; and `metrics.aggregate_iqm` flattens all axes, so
`iqm` computes the same trimmed mean per step along the seed axis in one call (a curve of 50 steps with 2000
resamples: 0.6 s instead of 8.5 s calling aggregate_iqm per step).

Step alignment: runs of one group may evaluate at slightly different steps (another rollout size, a run cut
short that --include-incomplete keeps). The common grid is the evaluation steps of the group's lowest seed
that lie in the range every run covers, and each run is linearly interpolated onto it (np.interp); nothing
is extrapolated, so a curve ends where its shortest run ends. When all runs log at the same steps, which is
the usual case, this is exact.

Final score: `eval/absolute_<name>` for metric `eval/<name>` (for `eval/learner_return`, the absolute metric
of Gorsane et al. 2022: the best learner re-scored on 10x the episodes) when any run of the group logged it,
else the last logged value of the metric. The table names the one used in each row; a group's metric never
changes because one of its runs lacks the absolute metric (that run is incomplete, below).

Incomplete runs: a run is incomplete next to the rest of its group if it has fewer evaluations of the metric
*and* its last one is at an earlier step (it was cut short; runs that only evaluate at slightly different
steps are not), or if it lacks the absolute metric that another run of the group logged (training logs it
once, at the very end). Each is named in a `warning:` line on stderr, and by default left out of the curves,
the table and the JSON (final.md lists them). `--include-incomplete` keeps them: they are marked `*` in the
table, and one without the absolute metric contributes the last value of the metric, which its row says
("last `eval/learner_return` for seed 5").

`--aggregate` summarises across tasks as the paper does (its Figures 2 and 3; rliable's definitions): each run's
final score is min-max normalised per task, between the random policy's score (the mean of the task's runs'
`eval/random_return`, which every training script logs at step 0) and the best final score of any run of any
algorithm on the task; the bounds are printed and saved (`bounds.json`), and a marl-eval JSON, which holds no
random score, is aggregated with `--bounds bounds.json`. For each environment suite (MPE, SMAX, CoordSum, RWARE,
LBF, Connector) and over all tasks: the IQM of the normalised scores over runs and tasks with a 95%
stratified-bootstrap CI (runs resampled within each task); with `--improvement-of X`, the probability of
improvement P(X > Y) for each other algorithm Y (per task the Mann-Whitney U statistic over pairs of runs, averaged
over tasks) with its CI. Every algorithm must have run every task of a suite. Written to `aggregate.md`,
`aggregate_iqm.png` and `probability_of_improvement.png`.

`--subtract TAG` aggregates the difference metric - TAG of each run instead, TAG interpolated onto the
metric's steps: with the guider's and the learner's returns (evaluated at the same steps) it is the
guider-learner gap (docs/algorithm.md §11), and its final score is the last difference.
"""

import glob
import json
import os
import sys
from dataclasses import dataclass

import tyro


@dataclass
class Args:
    runs: str = "runs/*"
    """glob of run directories `<task>__<exp_name>__<seed>__<unix time>` (quote it so the shell leaves it alone)"""
    metric: str = "eval/learner_return"
    """the scalar tag to aggregate"""
    subtract: str | None = None
    """a second tag to subtract from `metric` in every run (e.g. `eval/learner_return` from `eval/guider_return`)"""
    out_dir: str = "plots"
    """where the PNG curves and final.md go"""
    bootstrap_reps: int = 2000
    """number of bootstrap resamples for each confidence interval"""
    seed: int = 1
    """seed of the bootstrap, so the confidence intervals are reproducible"""
    marl_eval_json: str | None = None
    """if given, also write the runs' values to this path in the marl-eval JSON layout"""
    from_json: tuple[str, ...] = ()
    """read the runs from one or more marl-eval JSONs that `--marl-eval-json` wrote (e.g. under docs/data/)
    instead of from `--runs`: the same curves and table, redrawn without the run directories; `--metric` picks
    its value. Several files are pooled (a study finished over several sessions); a run in two is an error"""
    aggregate: bool = False
    """also aggregate across tasks as the paper does (its Figures 2 and 3): each task's final scores min-max
    normalised between the random policy's score and the best score seen on that task, the IQM of the normalised
    scores with a 95% stratified-bootstrap CI per environment suite and over all tasks, and the probability of
    improvement of `--improvement-of` over each other algorithm (`aggregate.md`, `bounds.json` and two PNGs)"""
    improvement_of: str | None = None
    """with --aggregate: the algorithm (exp_name) whose probability of improvement over each other one is computed"""
    bounds: str | None = None
    """with --aggregate: a bounds.json ({task: [random score, best score]}) to normalise with, instead of the runs'
    own; needed with --from-json, whose files hold no random-policy score (--aggregate on the runs writes one)"""
    include_incomplete: bool = False
    """keep incomplete runs (cut short, or no absolute metric where others of their group have it), marked `*`.
    A kept run without the absolute metric contributes the metric's last value, and its table row says so.
    Without this flag they are named in a warning and left out of the curves, the table and the JSON."""


# Parse the command line before the heavy imports below (matplotlib, scipy, rliable, TensorBoard: ~2 s), so
# that `--help` and a mistyped flag answer at once, as in the training scripts. `import plot` (the tests)
# skips the parsing and gets every function.
if __name__ == "__main__":
    args = tyro.cli(Args)

import matplotlib

matplotlib.use("Agg")  # headless: write PNGs, never open a window

import matplotlib.pyplot as plt
import numpy as np
import scipy.stats
from rliable import library as rly
from rliable import metrics
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from utils.jumanji import ENV_NAMES, family_of  # the paper's jumanji task names (a table: no JAX import)


@dataclass
class Run:
    path: str
    task: str
    algorithm: str
    seed: int
    start_time: int
    scalars: dict[str, tuple[np.ndarray, np.ndarray]]
    """tag -> (steps, values), sorted by step"""


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean over seeds (axis 0), for each remaining index: rliable's 25% trimmed mean."""
    return scipy.stats.trim_mean(scores, proportiontocut=0.25, axis=0)


def bootstrap_ci(scores: np.ndarray, reps: int, seed: int, size: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of the IQM over seeds (axis 0) of `scores`, shaped (seeds,) or (seeds, steps).

    Returns (low, high), each shaped like one seed's scores.
    """
    scores = np.asarray(scores, dtype=float)
    # rliable's StratifiedBootstrap resamples with the global np.random and ignores `random_state`.
    np.random.seed(seed)
    _, intervals = rly.get_interval_estimates(
        {"scores": scores[:, None]},  # rliable's layout: (runs, tasks, ...), here one task
        lambda resampled: np.atleast_1d(iqm(resampled[:, 0])),
        reps=reps,
        confidence_interval_size=size,
    )
    low, high = intervals["scores"].reshape(2, *scores.shape[1:])
    return low, high


def parse_run_name(name: str) -> tuple[str, str, int, int] | None:
    """`<task>__<exp_name>__<seed>__<unix time>` -> (task, exp_name, seed, time); None if it is not one.

    The task never holds `__`, the exp_name may (it is everything between the task and the seed).
    """
    parts = name.split("__")
    if len(parts) < 4 or not parts[-2].isdigit() or not parts[-1].isdigit():
        return None
    return parts[0], "__".join(parts[1:-2]), int(parts[-2]), int(parts[-1])


def read_scalars(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar of a run directory's event files: tag -> (steps, values)."""
    accumulator = EventAccumulator(path, size_guidance={"scalars": 0})  # 0 = keep all, no subsampling
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["scalars"]:
        events = sorted(accumulator.Scalars(tag), key=lambda event: event.step)
        scalars[tag] = (np.array([e.step for e in events]), np.array([e.value for e in events], dtype=float))
    return scalars


def is_finished(run: Run) -> bool:
    """Whether the run got to its end: training logs an absolute metric (`eval/absolute_*`) once, last."""
    return any(tag.startswith("eval/absolute_") for tag in run.scalars)


def load_runs(pattern: str) -> list[Run]:
    """The runs whose directories match `pattern`, one per (task, algorithm, seed): a finished run wins over an
    unfinished one, whatever their ages (a rerun that crashed must not hide the seed's finished run), and
    among runs equally finished the newest wins (a rerun after a fix replaces the old run)."""
    runs: dict[tuple[str, str, int], Run] = {}
    for path in sorted(glob.glob(pattern)):
        parsed = parse_run_name(os.path.basename(os.path.normpath(path)))
        if not os.path.isdir(path) or parsed is None:
            continue
        run = Run(path, *parsed, scalars=read_scalars(path))
        key = (run.task, run.algorithm, run.seed)
        if key in runs:
            dropped, run = sorted([runs[key], run], key=lambda r: (is_finished(r), r.start_time))
            if is_finished(dropped) == is_finished(run):
                print(f"warning: {dropped.path} and {run.path} repeat a seed; using the newer", file=sys.stderr)
            else:
                print(
                    f"warning: dropped {dropped.path}: it logged no 'eval/absolute_*' tag (it did not finish), "
                    f"and {run.path} repeats its seed and did; using that one",
                    file=sys.stderr,
                )
        runs[key] = run
    if not runs:
        raise ValueError(f"no run directory <task>__<exp_name>__<seed>__<unix time> matches {pattern!r}")
    return sorted(runs.values(), key=lambda r: (r.task, r.algorithm, r.seed))


def load_json_runs(path: str, metric: str) -> list[Run]:
    """The runs of a marl-eval JSON written by `marl_eval_results`, with `metric` (and its absolute metric,
    where the run had one) as their only scalars; a run's path is `<json>:<task>/<algorithm>/seed_<k>`."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"--from-json {path}: cannot read it ({type(error).__name__})") from None
    name, runs = metric.rpartition("/")[2], []
    for tasks in data.values():
        for task, algorithms in tasks.items():
            for algorithm, seeds in algorithms.items():
                for seed_key, entry in seeds.items():
                    points = sorted((e["step_count"], e[name][0]) for k, e in entry.items() if k.startswith("step_"))
                    scalars = {}
                    if points:
                        scalars[metric] = (np.array([p[0] for p in points]), np.array([p[1] for p in points], float))
                    absolute = entry.get("absolute_metrics", {}).get(name)
                    if points and absolute:
                        scalars[absolute_tag(metric)] = (np.array([points[-1][0]]), np.array(absolute[-1:], float))
                    seed = int(seed_key.removeprefix("seed_"))
                    runs.append(Run(f"{path}:{task}/{algorithm}/{seed_key}", task, algorithm, seed, 0, scalars))
    if not runs:
        raise ValueError(f"--from-json {path}: it holds no runs")
    return sorted(runs, key=lambda r: (r.task, r.algorithm, r.seed))


def pool_json_runs(paths: tuple[str, ...], metric: str) -> list[Run]:
    """The runs of several marl-eval JSONs together (`load_json_runs` each). A (task, algorithm, seed) in two
    of them raises: which copy to keep is the user's call, not the order of the arguments."""
    runs, seen = [], {}
    for path in paths:
        for run in load_json_runs(path, metric):
            key = (run.task, run.algorithm, run.seed)
            if key in seen:
                raise ValueError(
                    f"--from-json: {run.task}/{run.algorithm}/seed_{run.seed} is in both {seen[key]} and {path}"
                )
            seen[key] = path
            runs.append(run)
    return sorted(runs, key=lambda r: (r.task, r.algorithm, r.seed))


def group_runs(runs: list[Run], metric: str) -> dict[tuple[str, str], list[Run]]:
    """(task, algorithm) -> its runs that logged `metric`, by seed. Raises if none did."""
    if not any(metric in run.scalars for run in runs):
        tags = sorted({tag for run in runs for tag in run.scalars})
        raise ValueError(f"no run logged {metric!r}; the runs have: {', '.join(tags) or 'no scalars'}")
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if metric in run.scalars:
            groups.setdefault((run.task, run.algorithm), []).append(run)
        else:  # e.g. a run that died before its first evaluation
            print(f"warning: {run.path} has no {metric!r}; skipped", file=sys.stderr)
    return groups


def add_difference(runs: list[Run], metric: str, other: str) -> str:
    """Give every run that logged both tags a scalar `metric` - `other` at `metric`'s steps, `other`
    interpolated onto them (np.interp; steps outside `other`'s range are dropped). Returns the new tag,
    `eval/guider_return_minus_learner_return` for `eval/guider_return` minus `eval/learner_return`."""
    tag = f"{metric}_minus_{other.rpartition('/')[2]}"
    for run in runs:
        if metric in run.scalars and other in run.scalars:
            (steps, values), (other_steps, other_values) = run.scalars[metric], run.scalars[other]
            inside = (steps >= other_steps[0]) & (steps <= other_steps[-1])
            if inside.any():
                run.scalars[tag] = (steps[inside], values[inside] - np.interp(steps[inside], other_steps, other_values))
    return tag


def incomplete_runs(runs: list[Run], metric: str) -> dict[str, str]:
    """path -> why, for the runs of one group that look unfinished next to the others (module docstring)."""
    counts = [len(run.scalars[metric][0]) for run in runs]
    ends = [int(run.scalars[metric][0][-1]) for run in runs]
    absolute = absolute_tag(metric)
    num_absolute = sum(absolute in run.scalars for run in runs)
    reasons = {}
    for run, count, end in zip(runs, counts, ends):
        why = []
        if count < max(counts) and end < max(ends):
            why.append(f"{count} evaluations up to step {end}, the group has {max(counts)} up to step {max(ends)}")
        if num_absolute and absolute not in run.scalars:
            why.append(f"no {absolute!r}, which {num_absolute} of the group's {len(runs)} runs logged")
        if why:
            reasons[run.path] = "; ".join(why)
    return reasons


def select_runs(
    groups: dict[tuple[str, str], list[Run]], metric: str, include_incomplete: bool
) -> tuple[dict[tuple[str, str], list[Run]], dict[str, str]]:
    """Warn about every incomplete run and, unless `include_incomplete`, leave it out (a group with none left
    goes too; raises if no group is left). Returns the groups to use and {path: why} of all incomplete runs."""
    incomplete = {path: why for runs in groups.values() for path, why in incomplete_runs(runs, metric).items()}
    action = "kept (--include-incomplete)" if include_incomplete else "left out (--include-incomplete keeps it)"
    for path, why in incomplete.items():
        print(f"warning: incomplete run {path}: {why}; {action}", file=sys.stderr)
    if include_incomplete:
        return groups, incomplete
    selected = {}
    for (task, algorithm), runs in groups.items():
        complete = [run for run in runs if run.path not in incomplete]
        if complete:
            selected[(task, algorithm)] = complete
        else:
            print(f"warning: {task} / {algorithm} has no complete run; left out", file=sys.stderr)
    if not selected:
        raise ValueError("no group has a complete run (the warnings say why); --include-incomplete keeps them")
    return selected, incomplete


def align(runs: list[Run], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The runs' `metric` on a common step grid (see the module docstring): (steps, values (seeds, steps))."""
    curves = [run.scalars[metric] for run in runs]
    start = max(steps[0] for steps, _ in curves)
    stop = min(steps[-1] for steps, _ in curves)
    grid = curves[0][0][(curves[0][0] >= start) & (curves[0][0] <= stop)]
    if grid.size == 0:
        raise ValueError(f"the runs {[run.path for run in runs]} share no step range of {metric!r}")
    return grid, np.stack([np.interp(grid, steps, values) for steps, values in curves])


def absolute_tag(metric: str) -> str:
    """`eval/learner_return` -> `eval/absolute_learner_return`, the tag of its absolute metric."""
    prefix, _, name = metric.rpartition("/")
    return f"{prefix}/absolute_{name}" if prefix else f"absolute_{name}"


def final_scores(runs: list[Run], metric: str) -> tuple[np.ndarray, str, list[str]]:
    """One final score per seed, the group's tag (the absolute metric if any run has it, else `metric`) and
    the tag each score comes from: the group's, or `metric`'s last value for a run without the absolute one."""
    absolute = absolute_tag(metric)
    group_tag = absolute if any(absolute in run.scalars for run in runs) else metric
    tags = [group_tag if group_tag in run.scalars else metric for run in runs]
    return np.array([run.scalars[tag][1][-1] for run, tag in zip(runs, tags)]), group_tag, tags


def final_table(
    groups: dict[tuple[str, str], list[Run]],
    metric: str,
    reps: int,
    seed: int,
    incomplete: dict[str, str] | None = None,
) -> str:
    """Markdown table of the final score per (task, algorithm): seeds, mean, IQM and its 95% CI, and each
    seed's score (in seed order). `incomplete` ({path: why}, from `select_runs`): those in `groups` are
    marked `*`, the others are listed as left out."""
    incomplete = incomplete or {}
    lines = [
        f"## Final performance: {metric}",
        "",
        "| task | algorithm | seeds | final score | mean | IQM | IQM 95% CI | per seed |",
        "| --- | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for (task, algorithm), runs in sorted(groups.items()):
        scores, group_tag, tags = final_scores(runs, metric)
        source = f"{'last ' if group_tag == metric else ''}`{group_tag}`"
        fallback = [str(run.seed) for run, tag in zip(runs, tags) if tag != group_tag]
        if fallback:
            source += f"; last `{metric}` for seed{'s' if len(fallback) > 1 else ''} {', '.join(fallback)}"
        marked = [run for run in runs if run.path in incomplete]
        seeds = f"{len(runs)} ({len(marked)} incomplete)" if marked else f"{len(runs)}"
        if len(runs) == 1:
            ci = "n/a (1 run)"
        else:
            low, high = bootstrap_ci(scores, reps, seed)
            ci = f"[{float(low):.2f}, {float(high):.2f}]"
        per_seed = ", ".join(f"{score:.2f}{'*' if run.path in incomplete else ''}" for run, score in zip(runs, scores))
        lines.append(
            f"| {task} | {algorithm} | {seeds} | {source} | {scores.mean():.2f} | {float(iqm(scores)):.2f} | {ci} "
            f"| {per_seed} |"
        )
    lines += [
        "",
        f"Final score: `{absolute_tag(metric)}` (absolute metric) where the group's runs logged it, else the last "
        f"`{metric}`. IQM: 25% trimmed mean over seeds. CI: percentile bootstrap over seeds "
        f"(rliable, {reps} resamples, seed {seed}).",
    ]
    used = {run.path for runs in groups.values() for run in runs}
    kept = [f"`{path}` ({why})" for path, why in incomplete.items() if path in used]
    left_out = [f"`{path}` ({why})" for path, why in incomplete.items() if path not in used]
    if kept:
        lines += ["", "`*` incomplete run, kept by --include-incomplete: " + "; ".join(kept) + "."]
    if left_out:
        lines += ["", "Left out as incomplete (--include-incomplete keeps them): " + "; ".join(left_out) + "."]
    return "\n".join(lines)


def plot_curves(
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], metric: str, out_dir: str, reps: int, seed: int
) -> list[str]:
    """One PNG per task from `align`ed curves: each algorithm's IQM over seeds and its 95% bootstrap band."""
    paths = []
    for task in sorted({task for task, _ in curves}):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for (group_task, algorithm), (steps, values) in sorted(curves.items()):
            if group_task != task:
                continue
            label = f"{algorithm} ({len(values)} seed{'' if len(values) == 1 else 's'})"
            (line,) = ax.plot(steps, iqm(values), label=label)
            if len(values) > 1:  # one seed: nothing to resample, no band
                low, high = bootstrap_ci(values, reps, seed)
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set(title=task, xlabel="environment steps", ylabel=f"{metric} (IQM, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(out_dir, f"{task}__{metric.replace('/', '_')}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def env_name(task: str) -> str:
    """marl-eval's environment name: MPE tasks are named `simple_*` (simple_spread_3ag), CoordSum ones
    `coordsum_*` (coordsum_3x10); the paper's jumanji tasks (tiny-2ag, 2s-8x8-2p-2f-coop, con-5x5x3a, ...) get
    the official configs' names, RobotWarehouse, LevelBasedForaging and Connector; SMAX maps are the rest."""
    if task.startswith("coordsum"):
        return "CoordSum"
    if family_of(task) is not None:
        return ENV_NAMES[family_of(task)]
    return "MPE" if task.startswith("simple") else "SMAX"


def marl_eval_results(groups: dict[tuple[str, str], list[Run]], metric: str) -> dict:
    """Every run's raw `metric` in the marl-eval layout (instadeepai/marl-eval README and its JsonLogger):
    {env: {task: {algorithm: {"seed_<k>": {"step_<i>": {"step_count": int, name: [value]},
    "absolute_metrics": {name: [value]}}}}}}, with name the metric's last part (`learner_return`);
    `absolute_metrics` is empty for a run without the absolute metric, as marl-eval's JsonLogger leaves it."""
    name = metric.rpartition("/")[2]
    results: dict = {}
    for (task, algorithm), runs in sorted(groups.items()):
        for run in runs:
            steps, values = run.scalars[metric]
            entry = {
                f"step_{i}": {"step_count": int(step), name: [float(value)]}
                for i, (step, value) in enumerate(zip(steps, values))
            }
            absolute = run.scalars.get(absolute_tag(metric))
            entry["absolute_metrics"] = {name: [float(absolute[1][-1])]} if absolute is not None else {}
            by_algorithm = results.setdefault(env_name(task), {}).setdefault(task, {}).setdefault(algorithm, {})
            by_algorithm[f"seed_{run.seed}"] = entry
    return results


# ---------------------------------------------------------------------------------------------- across tasks
RANDOM_TAG = "eval/random_return"  # every training script logs the uniformly random policy's return at step 0


def task_bounds(groups: dict[tuple[str, str], list[Run]], metric: str) -> dict[str, tuple[float, float]]:
    """{task: (random score, best score)}: the mean of the task's runs' `eval/random_return`, and the highest final
    score of any run of any algorithm on it, the paper's min-max normalisation bounds. Raises if a task's runs
    logged no random score or the two bounds coincide."""
    bounds = {}
    for task in sorted({task for task, _ in groups}):
        runs = [run for (t, _), group in groups.items() if t == task for run in group]
        randoms = [run.scalars[RANDOM_TAG][1][0] for run in runs if RANDOM_TAG in run.scalars]
        if not randoms:
            raise ValueError(f"no run of {task} logged {RANDOM_TAG!r}: pass --bounds (a bounds.json) to normalise")
        best = max(float(final_scores(group, metric)[0].max()) for (t, _), group in groups.items() if t == task)
        bounds[task] = (float(np.mean(randoms)), best)
        if bounds[task][1] <= bounds[task][0]:
            raise ValueError(
                f"{task}: the best score {best:.3f} is not above the random policy's {bounds[task][0]:.3f}"
            )
    return bounds


def normalised_scores(
    groups: dict[tuple[str, str], list[Run]], metric: str, bounds: dict[str, tuple[float, float]], tasks: list[str]
) -> dict[str, np.ndarray]:
    """{algorithm: (runs, tasks)}: each final score min-max normalised, (score - random) / (best - random), in
    rliable's layout. An algorithm must have run every task; with unequal seed counts, each task keeps its
    first (lowest) seeds, as many as the algorithm's smallest count (a warning says so)."""
    matrices = {}
    for algorithm in sorted({a for _, a in groups}):
        columns = []
        for task in tasks:
            if (task, algorithm) not in groups:
                raise ValueError(f"{algorithm} has no run of {task}: the aggregate needs every algorithm on every task")
            if task not in bounds:
                raise ValueError(f"--bounds has no entry for {task}")
            low, high = bounds[task]
            columns.append((final_scores(groups[(task, algorithm)], metric)[0] - low) / (high - low))
        runs = min(len(c) for c in columns)
        if any(len(c) != runs for c in columns):
            print(f"warning: {algorithm} has unequal seed counts across tasks; each task keeps {runs}", file=sys.stderr)
        matrices[algorithm] = np.stack([c[:runs] for c in columns], axis=1)
    return matrices


def aggregate_iqm(matrices: dict[str, np.ndarray], reps: int, seed: int) -> dict[str, tuple[float, float, float]]:
    """{algorithm: (IQM, CI low, CI high)} of its normalised scores over all runs and tasks, with rliable's
    stratified bootstrap (runs resampled within each task) and a 95% percentile CI."""
    np.random.seed(seed)  # rliable's StratifiedBootstrap draws from the global np.random (module docstring)
    points, intervals = rly.get_interval_estimates(
        matrices, lambda x: np.array([scipy.stats.trim_mean(x.ravel(), 0.25)]), reps=reps
    )
    return {a: (float(points[a][0]), float(intervals[a][0, 0]), float(intervals[a][1, 0])) for a in matrices}


def improvement_probabilities(
    matrices: dict[str, np.ndarray], of: str, reps: int, seed: int
) -> dict[str, tuple[float, float, float]]:
    """{other algorithm: (P(of > other), CI low, CI high)}: rliable's probability of improvement (the Mann-Whitney
    U statistic per task, averaged over tasks) with its stratified-bootstrap 95% CI."""
    if of not in matrices:
        raise ValueError(f"--improvement-of {of!r} is not one of the algorithms: {', '.join(sorted(matrices))}")
    pairs = {other: (matrices[of], matrices[other]) for other in sorted(matrices) if other != of}
    if not pairs:
        raise ValueError("--improvement-of needs at least two algorithms")
    np.random.seed(seed)
    points, intervals = rly.get_interval_estimates(
        pairs, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=reps
    )
    return {o: (float(points[o][0]), float(intervals[o][0, 0]), float(intervals[o][1, 0])) for o in pairs}


def aggregate(groups, metric, bounds, improvement_of, reps, seed):
    """The cross-task summary: (markdown, {suite: {algorithm: (iqm, low, high)}}, {other: (p, low, high)} or None).
    Suites are the environments (env_name) and "all tasks"; the probability of improvement is over all tasks."""
    tasks = sorted({task for task, _ in groups})
    suites = {env_name(task): [] for task in tasks}
    for task in tasks:
        suites[env_name(task)].append(task)
    if len(suites) > 1:
        suites["all tasks"] = tasks
    iqms = {}
    for suite, members in suites.items():
        in_suite = {key: runs for key, runs in groups.items() if key[0] in members}
        iqms[suite] = aggregate_iqm(normalised_scores(in_suite, metric, bounds, members), reps, seed)
    lines = [f"## Aggregate over tasks: {metric}, min-max normalised", ""]
    lines += ["| task | random policy (0) | best score seen (1) |", "| --- | ---: | ---: |"]
    lines += [f"| {task} | {bounds[task][0]:.3f} | {bounds[task][1]:.3f} |" for task in tasks]
    lines += ["", "| suite | tasks | algorithm | IQM | IQM 95% CI |", "| --- | ---: | --- | ---: | --- |"]
    for suite, by_algorithm in iqms.items():
        for algorithm, (point, low, high) in sorted(by_algorithm.items()):
            lines.append(f"| {suite} | {len(suites[suite])} | {algorithm} | {point:.3f} | [{low:.3f}, {high:.3f}] |")
    improvement = None
    if improvement_of is not None:
        matrices = normalised_scores(groups, metric, bounds, tasks)
        improvement = improvement_probabilities(matrices, improvement_of, reps, seed)
        lines += ["", f"| P({improvement_of} > Y), over {len(tasks)} tasks | Y | 95% CI |", "| ---: | --- | --- |"]
        lines += [f"| {p:.3f} | {other} | [{low:.3f}, {high:.3f}] |" for other, (p, low, high) in improvement.items()]
    lines += [
        "",
        "Normalised score: (final score - random policy's) / (best final score of any run on the task - random "
        f"policy's). IQM over runs and tasks; CI: rliable's stratified bootstrap ({reps} resamples, seed {seed}). "
        "Probability of improvement: P(X > Y) per task (Mann-Whitney U / (n_X n_Y)), averaged over tasks.",
    ]
    return "\n".join(lines), iqms, improvement


def plot_aggregate(iqms, improvement, improvement_of, metric, out_dir) -> list[str]:
    """aggregate_iqm.png (one panel per suite: each algorithm's IQM and CI) and, if computed,
    probability_of_improvement.png (P(X > Y) and CI per other algorithm, with the 0.5 line)."""
    paths = []
    fig, axes = plt.subplots(1, len(iqms), figsize=(4.2 * len(iqms), 0.5 + 0.45 * max(map(len, iqms.values()))))
    for ax, (suite, by_algorithm) in zip(np.atleast_1d(axes), iqms.items()):
        names = sorted(by_algorithm)
        points = [by_algorithm[a][0] for a in names]
        errors = [
            [by_algorithm[a][0] - by_algorithm[a][1] for a in names],
            [by_algorithm[a][2] - by_algorithm[a][0] for a in names],
        ]
        ax.errorbar(points, range(len(names)), xerr=errors, fmt="o", capsize=3)
        ax.set(yticks=range(len(names)), yticklabels=names, title=suite, xlabel="IQM of normalised score")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(out_dir, "aggregate_iqm.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if improvement:
        names = list(improvement)
        fig, ax = plt.subplots(figsize=(5.2, 0.8 + 0.45 * len(names)))
        points = [improvement[o][0] for o in names]
        errors = [
            [improvement[o][0] - improvement[o][1] for o in names],
            [improvement[o][2] - improvement[o][0] for o in names],
        ]
        ax.errorbar(points, range(len(names)), xerr=errors, fmt="o", capsize=3)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set(yticks=range(len(names)), yticklabels=names, xlim=(0, 1), xlabel=f"P({improvement_of} > Y)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "probability_of_improvement.png"))
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


if __name__ == "__main__":
    try:
        if args.bootstrap_reps < 1:
            raise ValueError(f"--bootstrap-reps must be >= 1, got {args.bootstrap_reps}")
        if args.improvement_of is not None and not args.aggregate:
            raise ValueError("--improvement-of needs --aggregate")
        if args.bounds is not None and not args.aggregate:
            raise ValueError("--bounds needs --aggregate")
        if args.aggregate and args.from_json and args.bounds is None:
            raise ValueError(
                "--aggregate with --from-json needs --bounds: a marl-eval JSON holds no random-policy score"
            )
        if args.from_json and args.subtract is not None:
            raise ValueError("--subtract needs both tags, and a marl-eval JSON holds one: use it with --runs")
        runs = load_runs(args.runs) if not args.from_json else pool_json_runs(args.from_json, args.metric)
        if args.subtract is not None:
            group_runs(runs, args.metric)  # a one-line error if no run logged the metric itself
            if not any(args.subtract in run.scalars for run in runs):
                raise ValueError(f"no run logged {args.subtract!r} (--subtract)")
            args.metric = add_difference(runs, args.metric, args.subtract)
        groups, incomplete = select_runs(group_runs(runs, args.metric), args.metric, args.include_incomplete)
        curves = {key: align(runs, args.metric) for key, runs in groups.items()}
        if args.aggregate:
            if args.bounds is not None:
                try:
                    with open(args.bounds) as f:
                        bounds = {task: tuple(pair) for task, pair in json.load(f).items()}
                except (OSError, ValueError) as error:
                    raise ValueError(f"--bounds {args.bounds}: cannot read it ({type(error).__name__})") from None
            else:
                bounds = task_bounds(groups, args.metric)
            summary = aggregate(groups, args.metric, bounds, args.improvement_of, args.bootstrap_reps, args.seed)
    except ValueError as error:
        sys.exit(f"error: {error}")

    os.makedirs(args.out_dir, exist_ok=True)
    written = plot_curves(curves, args.metric, args.out_dir, args.bootstrap_reps, args.seed)
    table = final_table(groups, args.metric, args.bootstrap_reps, args.seed, incomplete)
    print(table)
    table_path = os.path.join(args.out_dir, "final.md")
    with open(table_path, "w") as f:
        f.write(table + "\n")
    written.append(table_path)
    if args.aggregate:
        text, iqms, improvement = summary
        print("\n" + text)
        for name, content in (("aggregate.md", text + "\n"), ("bounds.json", json.dumps(bounds, indent=1) + "\n")):
            with open(os.path.join(args.out_dir, name), "w") as f:
                f.write(content)
            written.append(os.path.join(args.out_dir, name))
        written += plot_aggregate(iqms, improvement, args.improvement_of, args.metric, args.out_dir)
    if args.marl_eval_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.marl_eval_json)), exist_ok=True)
        with open(args.marl_eval_json, "w") as f:
            json.dump(marl_eval_results(groups, args.metric), f, indent=2)
        written.append(args.marl_eval_json)
    print("\nwrote " + ", ".join(written))
