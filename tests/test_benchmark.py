"""benchmark.py as a user runs it, in a temporary directory: a tiny CoordSum grid (2 tasks x 2 seeds, plus
a task whose runs fail) on a local Ray instance with 2 CPUs, then again on a Ray cluster (started here, once
for the module) to show what is skipped and what restarts; `--dry-run` against explicit lists and against
the shell loops that docs/reproduction.md had before benchmark.py; bad input. ~1.5 min on 2 cores, most
of it Ray's start-up and the tiny runs' imports."""

import glob
import json
import logging
import os
import re
import shlex
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray", reason="benchmark.py needs ray: pip install -r requirements/requirements-ray.txt")

from helpers import REPO  # noqa: E402

import benchmark  # noqa: E402

# one rollout of 4 envs x 32 steps, one evaluation of 2 episodes: ~5 s a run, nearly all of it imports
TINY = (
    "--total-timesteps 128 --num-envs 4 --num-steps 32 --num-minibatches 2 --update-epochs 1 --eval-interval 128 "
    "--num-eval-episodes 2 --max-steps 20 --learner-hidden 16 --guider-dim 16"
)
# 3x10 and 3x30 run; 4x4 is no CoordSum scenario, so its two runs fail (magpo_coordsum.py exits 1)
GRID = [
    "--scripts",
    "magpo_coordsum.py",
    "--task-flag",
    "scenario",
    "--tasks",
    "3x10",
    "3x30",
    "4x4",
    "--seeds",
    "1",
    "2",
    f"--extra={TINY}",
]
BAD_LINE = "error: unknown --scenario '4x4'; choose one of ['3x10', '3x30', '5x20', '8x15']"


def bench(args, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmark.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_dirs(cwd):
    return sorted(os.path.basename(d) for d in glob.glob(os.path.join(cwd, "runs", "*__*")))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def first(workdir):
    """The grid, once, on benchmark.py's default: a new local Ray instance (here with 2 CPUs)."""
    return bench([*GRID, "--workers", "2"], workdir)


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster with 2 CPUs, started by this process (and stopped with it); its address."""
    auth = os.environ.get("RAY_AUTH_MODE")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    # ray.init turned token authentication on (RAY_AUTH_MODE=token, token in ~/.ray/auth_token); the
    # benchmark processes inherit the variable, which Ray needs to join a cluster by explicit address
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    os.environ.pop("RAY_AUTH_MODE", None) if auth is None else os.environ.update(RAY_AUTH_MODE=auth)


def test_dry_run_lists_the_commands(tmp_path):
    result = bench([*GRID, "--dry-run"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"python magpo_coordsum.py --scenario {task} --seed {seed} {TINY} --torch-threads 1"
        for task in ["3x10", "3x30", "4x4"]
        for seed in [1, 2]
    ]
    assert not os.path.exists(tmp_path / "runs")


def test_grid_runs_reports_the_failures_and_is_aggregated(first, workdir):
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "6 runs: 0 done before (skipped), 6 to run" in out
    assert "on a local Ray instance with 2 CPUs" in out
    done = re.findall(r"^\[\d/6\] done in \d+ s, [\d,]+ env-steps/s: (runs/\S+)$", out, re.M)
    assert sorted(os.path.basename(d) for d in done) == run_dirs(workdir)
    # the two failures: exit code, command, last log line; the other four finished
    failed = re.findall(
        r"^\[\d/6\] FAILED \(exit code 1\): python magpo_coordsum.py --scenario 4x4 --seed (\d) .*\n"
        r"    last line: (.*)\n    log: (\S+)$",
        out,
        re.M,
    )
    assert sorted(seed for seed, _, _ in failed) == ["1", "2"]
    for _, line, log in failed:
        assert line == BAD_LINE and BAD_LINE in open(workdir / log).read()
    names = run_dirs(workdir)
    assert [re.sub(r"__\d+$", "", n) for n in names] == [
        f"coordsum_{task}__magpo_coordsum__{seed}" for task in ["3x10", "3x30"] for seed in [1, 2]
    ]
    assert "6 runs: 4 done, 2 failed, 0 skipped, 0 running" in out
    # summary rows: done runs with their env-steps/s, failed ones with their exit code and command
    assert len(re.findall(r"^done +0 +\d+ s +[\d,]+  runs/coordsum_3x[13]0__", out, re.M)) == 4
    assert len(re.findall(r"^failed +1 +\d+ s +-  python magpo_coordsum.py --scenario 4x4", out, re.M)) == 2
    # aggregated by plot.py: both tasks, 2 seeds each, curves and marl-eval JSON
    table = open(workdir / "plots" / "final.md").read()
    for task in ["coordsum_3x10", "coordsum_3x30"]:
        assert re.search(rf"^\| {task} \| magpo_coordsum \| 2 \| `eval/absolute_learner_return` \|", table, re.M)
        assert os.path.isfile(workdir / "plots" / f"{task}__eval_learner_return.png")
    marl = json.load(open(workdir / "plots" / "marl_eval.json"))
    assert {task: sorted(algos["magpo_coordsum"]) for task, algos in marl["CoordSum"].items()} == {
        "coordsum_3x10": ["seed_1", "seed_2"],
        "coordsum_3x30": ["seed_1", "seed_2"],
    }
    # each finished run is where the command run by hand would have put it, with its final tag
    for name in names:
        (events,) = glob.glob(str(workdir / "runs" / name / "events.out.tfevents.*"))
        assert b"eval/absolute_learner_return" in open(events, "rb").read()


def test_rerun_on_a_cluster_skips_what_is_done(first, workdir, cluster):
    before = run_dirs(workdir)
    result = bench([*GRID, "--address", cluster, "--no-plot"], workdir)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 runs: 4 done before (skipped), 2 to run" in result.stdout
    assert f"on the Ray cluster at {cluster} with 2 CPUs" in result.stdout
    assert result.stdout.count("FAILED (exit code 1)") == 2 and result.stdout.count(f"last line: {BAD_LINE}") == 2
    assert "6 runs: 0 done, 2 failed, 4 skipped, 0 running" in result.stdout
    assert run_dirs(workdir) == before  # nothing ran again


def test_interrupted_and_deleted_runs_restart_on_a_cluster(first, workdir, cluster):
    """Seed 3 left as an interruption leaves it (a record with a half-written run directory, no
    result.json), seed 2's run directory deleted by hand: both run again, on a cluster worker, and their
    run directories come back here; seed 1 is skipped. Then nothing is left to run."""
    import tyro

    args = [
        "--scripts",
        "magpo_coordsum.py",
        "--task-flag",
        "scenario",
        "--tasks",
        "3x10",
        "--seeds",
        "1",
        "2",
        "3",
        f"--extra={TINY}",
        "--no-plot",
    ]
    seed1, seed2, seed3 = benchmark.expand(tyro.cli(benchmark.Args, args=args))
    stale = workdir / "runs" / "benchmark" / seed3.key / "runs" / "coordsum_3x10__magpo_coordsum__3__1000000000"
    stale.mkdir(parents=True)
    (stale / "events.out.tfevents.half").write_text("")
    (deleted,) = [n for n in run_dirs(workdir) if n.startswith("coordsum_3x10__magpo_coordsum__2__")]
    os.rename(workdir / "runs" / deleted, workdir / deleted)  # out of runs/: as good as deleted
    before = run_dirs(workdir)
    result = bench([*args, "--address", cluster], workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 runs: 1 done before (skipped), 2 to run" in result.stdout
    new = sorted(set(run_dirs(workdir)) - set(before))
    assert [re.sub(r"__\d+$", "", n) for n in new] == [f"coordsum_3x10__magpo_coordsum__{s}" for s in [2, 3]]
    assert not stale.exists()
    assert json.load(open(workdir / "runs" / "benchmark" / seed3.key / "result.json"))["exit_code"] == 0
    again = bench([*args, "--address", cluster], workdir)
    assert again.returncode == 0 and "3 runs: 3 done before (skipped), 0 to run" in again.stdout
    assert "Ray" not in again.stdout  # nothing to run: Ray is not even joined


def test_interrupted_local_run_continues_from_its_checkpoint(tmp_path):
    """A local record left with a run directory and its checkpoint (here: the same command stopped after
    its first rollout, as if interrupted) is continued with --resume, not restarted: the finished run
    keeps its first evaluations and its log keeps the first part."""
    import tyro

    args = ["--scripts", "magpo_coordsum.py", "--task-flag", "scenario", "--tasks", "3x10", "--seeds", "4",
            f"--extra={TINY.replace('--total-timesteps 128', '--total-timesteps 256')}", "--no-plot", "--workers", "1"]  # fmt: skip
    (run,) = benchmark.expand(tyro.cli(benchmark.Args, args=args))
    record = tmp_path / "runs" / "benchmark" / run.key
    record.mkdir(parents=True)
    (record / "command.txt").write_text(run.text + "\n")
    first_part = [*run.command[1:], "--total-timesteps", "128"]  # stops at the checkpoint after rollout 1
    with open(record / "log.txt", "w") as log:
        subprocess.run([sys.executable, run.script_path, *first_part], cwd=record, stdout=log, check=True)
    (interrupted,) = glob.glob(str(record / "runs" / "*"))
    result = bench(args, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"continuing an interrupted run from its checkpoint: {run.text} --resume runs/" in result.stdout
    (finished,) = glob.glob(str(tmp_path / "runs" / "coordsum_3x10__*"))
    assert os.path.basename(finished) == os.path.basename(interrupted)  # the same run, moved up when done
    log = open(record / "log.txt").read()
    assert "iteration 1/1 " in log and "iteration 2/2 " in log and "iteration 1/2 " not in log


# docs/reproduction.md's shell loops before benchmark.py replaced them (commit 80eb294), verbatim
OLD_LOOPS = """
B="--total-timesteps 1000000 --eval-interval 100000"
for seed in 1 2 3; do
  python magpo_coordsum.py --seed $seed $B                                          # MAGPO: δ 1.3, α 2
  python magpo_coordsum.py --seed $seed --delta inf --alpha 0 --exp-name ctds_coordsum $B   # CTDS
  python mappo_baseline.py --env coordsum --seed $seed $B
  python mappo_baseline.py --env coordsum --ippo --seed $seed $B
done
B="--total-timesteps 5000000 --eval-interval 250000"
for seed in 1 2 3; do
  python magpo_coordsum.py --seed $seed $B
  python mappo_baseline.py --env coordsum --seed $seed $B
  python mappo_baseline.py --env coordsum --ippo --seed $seed $B
done
B="--total-timesteps 5000000 --eval-interval 250000"
for seed in 1 2 3; do
  python magpo_coordsum.py --seed $seed --delta inf --alpha 0 --exp-name ctds_coordsum $B
done
B="--total-timesteps 1000000 --eval-interval 100000"
for seed in 1 2 3; do for delta in 1.1 3 inf; do
  python magpo_coordsum.py --delta $delta --seed $seed --exp-name magpo_delta$delta $B
done; done
B="--total-timesteps 1000000 --eval-interval 100000"
for seed in 1 2; do for delta in 1.1 1.5 3 inf; do     # seed 2 ran δ 1.1 and 1.5 only (see below)
  python magpo_coordsum.py --scenario 5x20 --alpha 4 --delta $delta --seed $seed --exp-name magpo_delta$delta $B
done; done
P="--scenario 5x20 --alpha 4 --learning-rate 5e-4 --num-minibatches 8 --update-epochs 15 --clip-coef 0.2 --ent-coef 0.01 --max-grad-norm 0.5"
B="--total-timesteps 1000000 --eval-interval 100000"
for seed in 1 2 3; do for delta in 1.1 1.5 3 inf; do
  python magpo_coordsum.py --delta $delta --seed $seed --exp-name magpo_paper_delta$delta $P $B
done; done
"""


def normalized(command):
    """`python <script> <flags>` -> (script, its flags as sorted (flag, value) pairs), without the
    `--torch-threads 1` that benchmark.py adds (the scripts' default); no flag may appear twice."""
    words = shlex.split(command)
    assert words[0] == "python", command
    flags, i = {}, 2
    while i < len(words):
        takes_value = i + 1 < len(words) and not words[i + 1].startswith("--")
        assert words[i].startswith("--") and words[i] not in flags, command
        flags[words[i]] = words[i + 1] if takes_value else None
        i += 2 if takes_value else 1
    if flags.get("--torch-threads") == "1":
        del flags["--torch-threads"]
    return words[1], tuple(sorted(flags.items()))


def dry_run(args, cwd):
    result = bench([*args, "--dry-run"], cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_paper_coordsum_is_the_docs_old_loops(tmp_path):
    loops = subprocess.run(
        ["bash", "-c", 'python() { echo python "$@"; }\n' + OLD_LOOPS], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(loops) == 12 + 9 + 3 + 9 + 8 + 12
    grid = dry_run(["--grid", "paper-coordsum"], tmp_path)
    assert [normalized(c) for c in grid] == [normalized(c) for c in loops]


def test_docs_benchmark_commands_are_the_paper_coordsum_grid(tmp_path):
    """docs/reproduction.md's `python benchmark.py ...` lines of the paper-coordsum sections, together, run exactly
    the paper-coordsum grid (its other lines are the c2-protocol study's, the guider ablation's and the teaching kit's data)."""
    text = open(os.path.join(REPO, "docs", "reproduction.md")).read()
    lines = [line.split("#")[0] for line in re.findall(r"^python benchmark\.py .*$", text, re.M)]
    others = [line.split()[3] for line in lines if line.split()[3] not in benchmark.GRIDS["paper-coordsum"]]
    assert sorted(set(others)) == ["c2-protocol", "guider-ablation", "teaching-data"]
    lines = [line for line in lines if line.split()[3] in benchmark.GRIDS["paper-coordsum"]]
    assert len(lines) == 6
    commands = []
    for line in lines:
        commands += [c for c in dry_run(shlex.split(line)[2:], tmp_path) if c not in commands]
    assert commands == dry_run(["--grid", "paper-coordsum"], tmp_path)


def test_paper_all_covers_every_task_and_every_command_parses(tmp_path):
    import tyro

    import magpo_coordsum
    import magpo_mpe
    import magpo_smax
    import mappo_baseline
    from utils.coordsum import SCENARIOS
    from utils.smax import PAPER_MAPS

    assert benchmark.SMAX_MAPS == list(PAPER_MAPS)
    commands = dry_run(["--grid", "paper-all"], tmp_path)
    assert len(commands) == 3 * (3 + len(PAPER_MAPS) + len(SCENARIOS)) * 3
    modules = {m.__name__ + ".py": m for m in (magpo_coordsum, magpo_mpe, magpo_smax, mappo_baseline)}
    seen = set()
    for command in commands:
        words = shlex.split(command)
        module = modules[words[1]]
        args = tyro.cli(module.Args, args=words[2:])  # the script's own parser: a bad flag fails here
        module.validate_args(args)
        env = getattr(args, "env", {"magpo_mpe": "mpe", "magpo_smax": "smax"}.get(module.__name__, "coordsum"))
        task = getattr(args, {"mpe": "num_agents", "smax": "map_name", "coordsum": "scenario"}[env])
        exp_name = args.exp_name or ("ippo_baseline" if args.ippo else "mappo_baseline")  # as mappo_baseline.py's main
        seen.add((env, str(task), exp_name, args.seed))
    for env, tasks, magpo in [
        ("mpe", ["3", "5", "10"], "magpo_mpe"),
        ("smax", PAPER_MAPS, "magpo_smax"),
        ("coordsum", SCENARIOS, "magpo_coordsum"),
    ]:
        for algorithm in [magpo, "mappo_baseline", "ippo_baseline"]:
            assert {(env, t, algorithm, s) for t in tasks for s in [1, 2, 3]} <= seen, (env, algorithm)


def test_section_names_are_unique_across_grids():
    names = [name for sections in benchmark.GRIDS.values() for name in sections]
    assert len(names) == len(set(names)) and not set(names) & set(benchmark.GRIDS)


def test_help_lists_every_grid_with_a_description_and_its_sections(tmp_path):
    """`--help` is where a user looks for what `--grid` takes: every grid on a line of its own with what it
    runs, and the sections that can be run alone."""
    result = bench(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.strip() for line in result.stdout.splitlines()]
    for grid, sections in benchmark.GRIDS.items():
        (line,) = [line for line in lines if line.startswith(f"{grid} ")]
        assert len(line) > len(grid) + 20, line  # a description follows the name
        for section in sections:
            assert re.search(rf"[ ,]{re.escape(section)}(,|$)", result.stdout, re.MULTILINE), section


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--grid", "nope"],
            "error: unknown grid 'nope'; choose one of: paper-coordsum, c2-protocol, jumanji-results, happo-results, ctce-results, teaching-data, guider-ablation, paper-all",
        ),
        (["--grid", "paper-all", "--scripts", "magpo_mpe.py"], "error: give either --grid NAME or --scripts"),
        ([], "error: give either --grid NAME or --scripts"),
        (["--scripts", "no_such.py"], "error: no such script: 'no_such.py'"),
        (["--scripts", "magpo_mpe.py", "--tasks", "3"], "error: --tasks and --task-flag go together"),
        (["--scripts", "magpo_mpe.py", "--extra=--seed 4"], "error: give seeds with --seeds, not as a flag"),
        (["--scripts", "magpo_mpe.py", "--seeds", "1", "1"], "error: --seeds needs distinct seeds, got [1, 1]"),
        (["--scripts", "magpo_mpe.py", "--extra=--exp-name 'x"], "error: cannot split --extra"),
        (["--scripts", "magpo_mpe.py", "--extra=--torch-threads 0"], "error: --torch-threads must be a whole number"),
        (["--grid", "c2-5m", "--address", "auto", "--workers", "2"], "error: --workers sizes the local Ray instance"),
    ],
)
def test_bad_input_is_one_error_line(args, message, tmp_path):
    result = bench(args, tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
