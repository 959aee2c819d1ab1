"""Checks of `plot.py` on synthetic TensorBoard logs with known values: the statistics, the grouping and
step alignment, and the CLI's outputs (PNGs, final table, marl-eval JSON) and errors, run as a user runs it."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from rliable import metrics
from torch.utils.tensorboard import SummaryWriter

import plot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "plot.py")
MAGPO_FINALS = [1.0, 2.0, 3.0, 4.0, 100.0]  # IQM (middle three) 3, mean 22


def write_run(root, name, scalars):
    """A run directory `root/runs/name` with `scalars` = {tag: [(step, value), ...]}."""
    writer = SummaryWriter(os.path.join(root, "runs", name))
    for tag, points in scalars.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Two algorithms on simple_spread_3ag and one on an SMAX map, as training writes them."""
    root = tmp_path_factory.mktemp("logs")
    for seed, final in enumerate(MAGPO_FINALS, start=1):
        # odd and even seeds evaluate at slightly different steps; the absolute metric is the final score
        steps = [0, 1000, 2000] if seed % 2 else [0, 1024, 2048]
        write_run(
            root,
            f"simple_spread_3ag__magpo_mpe__{seed}__{1764000000 + seed}",
            {
                "eval/learner_return": list(zip(steps, [0.0, final / 4, final / 2])),
                "eval/absolute_learner_return": [(steps[-1], final)],
                "charts/SPS": [(steps[-1], 500.0)],
            },
        )
    for seed in (1, 2, 3):  # identical seeds, no absolute metric: the final score is the last value
        write_run(
            root,
            f"simple_spread_3ag__ippo_rnn_baseline__{seed}__{1764000100 + seed}",
            {
                "eval/learner_return": [(0, 7.0), (1000, 7.0), (2000, 7.0)],
            },
        )
    for seed in (1, 2, 3):
        write_run(
            root,
            f"3m__magpo_mpe__{seed}__{1764000200 + seed}",
            {
                "eval/learner_return": [(0, 0.0), (1000, float(seed))],
            },
        )
    os.makedirs(root / "runs" / "notes")  # not a run: ignored
    return root


def run_cli(args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli(root):
    """One CLI run over all the synthetic runs, as a user starts it."""
    result = run_cli(
        ["--runs", "runs/*", "--out-dir", "plots", "--bootstrap-reps", "500", "--marl-eval-json", "out/results.json"],
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_iqm_is_rliable_trimmed_mean():
    scores = np.array(MAGPO_FINALS)
    assert plot.iqm(scores) == pytest.approx(3.0)
    assert plot.iqm(scores) == pytest.approx(scipy.stats.trim_mean(scores, 0.25))
    assert plot.iqm(scores) == pytest.approx(metrics.aggregate_iqm(scores[:, None]))
    # per step along the seed axis, the same as rliable at each step
    curves = np.random.default_rng(0).normal(size=(5, 7))
    np.testing.assert_allclose(plot.iqm(curves), [metrics.aggregate_iqm(curves[:, i]) for i in range(7)])


def test_bootstrap_ci_contains_iqm_is_reproducible_and_zero_for_identical_seeds():
    scores = np.array(MAGPO_FINALS)
    low, high = plot.bootstrap_ci(scores, reps=1000, seed=3)
    assert low <= 3.0 <= high and low < high
    assert (low, high) == plot.bootstrap_ci(scores, reps=1000, seed=3)
    assert plot.bootstrap_ci(np.full(5, 7.0), reps=1000, seed=3) == (7.0, 7.0)
    low, high = plot.bootstrap_ci(np.stack([scores, 2 * scores], axis=1), reps=1000, seed=3)
    assert low.shape == high.shape == (2,) and np.all(low <= [3.0, 6.0]) and np.all(high >= [3.0, 6.0])


def test_parse_run_name():
    assert plot.parse_run_name("simple_spread_3ag__magpo_mpe__1__1764000000") == (
        "simple_spread_3ag",
        "magpo_mpe",
        1,
        1764000000,
    )
    assert plot.parse_run_name("3m__my__exp__12__1764000000") == ("3m", "my__exp", 12, 1764000000)
    for not_a_run in ("notes", "a__b__c", "task__exp__one__1764000000", "task__exp__1__now"):
        assert plot.parse_run_name(not_a_run) is None


def test_load_group_and_align(root):
    groups = plot.group_runs(plot.load_runs(str(root / "runs" / "*")), "eval/learner_return")
    assert {key: [run.seed for run in runs] for key, runs in groups.items()} == {
        ("3m", "magpo_mpe"): [1, 2, 3],
        ("simple_spread_3ag", "ippo_rnn_baseline"): [1, 2, 3],
        ("simple_spread_3ag", "magpo_mpe"): [1, 2, 3, 4, 5],
    }
    runs = groups[("simple_spread_3ag", "magpo_mpe")]
    scores, tag, tags = plot.final_scores(runs, "eval/learner_return")
    assert tag == "eval/absolute_learner_return" and tags == [tag] * 5 and scores.tolist() == MAGPO_FINALS
    scores, tag, _ = plot.final_scores(groups[("simple_spread_3ag", "ippo_rnn_baseline")], "eval/learner_return")
    assert tag == "eval/learner_return" and scores.tolist() == [7.0, 7.0, 7.0]
    # evaluating at slightly different steps (2000 vs 2048, same count) is not being cut short
    assert all(plot.incomplete_runs(runs, "eval/learner_return") == {} for runs in groups.values())
    # seed 1's steps, inside every run's range; seed 2 (steps 0, 1024, 2048) interpolated onto them
    steps, values = plot.align(runs, "eval/learner_return")
    assert steps.tolist() == [0, 1000, 2000] and values.shape == (5, 3)
    assert values[1].tolist() == pytest.approx([0.0, 1000 / 1024 * 0.5, 0.5 + 976 / 1024 * 0.5])


def test_newest_run_of_a_seed_wins(tmp_path):
    for start, value in ((1764000001, 1.0), (1764000002, 2.0)):
        write_run(tmp_path, f"simple_spread_3ag__magpo_mpe__1__{start}", {"eval/learner_return": [(0, value)]})
    (run,) = plot.load_runs(str(tmp_path / "runs" / "*"))
    assert run.start_time == 1764000002 and run.scalars["eval/learner_return"][1].tolist() == [2.0]


def test_finished_run_of_a_seed_wins_over_a_newer_crashed_one(tmp_path, capsys):
    """A rerun of a seed that crashed (no `eval/absolute_*`: training logs it only at the very end) must not
    replace the finished run of that seed; a warning names the dropped run and why. Among finished runs, and
    among unfinished ones, the newest still wins."""
    finished = "simple_spread_3ag__magpo_mpe__1__1764000001"
    write_run(
        tmp_path,
        finished,
        {"eval/learner_return": [(0, 0.0), (1000, 5.0)], "eval/absolute_learner_return": [(1000, 6.0)]},
    )
    crashed = "simple_spread_3ag__magpo_mpe__1__1764000002"
    write_run(tmp_path, crashed, {"eval/learner_return": [(0, 0.0)]})
    (run,) = plot.load_runs(str(tmp_path / "runs" / "*"))
    assert run.start_time == 1764000001 and run.scalars["eval/absolute_learner_return"][1].tolist() == [6.0]
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"warning: dropped {tmp_path / 'runs' / crashed}: it logged no 'eval/absolute_*' tag")
    assert finished in warning
    # a newer finished run replaces the older finished one, as before
    write_run(
        tmp_path,
        "simple_spread_3ag__magpo_mpe__1__1764000003",
        {"eval/learner_return": [(0, 0.0), (1000, 7.0)], "eval/absolute_learner_return": [(1000, 8.0)]},
    )
    (run,) = plot.load_runs(str(tmp_path / "runs" / "*"))
    assert run.start_time == 1764000003
    assert len(capsys.readouterr().err.splitlines()) == 2  # one line per dropped run


def test_cli_writes_one_png_per_task(root, cli):
    for task in ("simple_spread_3ag", "3m"):
        with open(root / "plots" / f"{task}__eval_learner_return.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(root / "plots")) == [
        "3m__eval_learner_return.png",
        "final.md",
        "simple_spread_3ag__eval_learner_return.png",
    ]


def test_cli_final_table(root, cli):
    table = (root / "plots" / "final.md").read_text()
    assert table.strip() in cli.stdout
    rows = {
        tuple(cell.strip() for cell in line.split("|")[1:3]): line
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| task") and not line.startswith("| ---")
    }
    assert set(rows) == {
        ("3m", "magpo_mpe"),
        ("simple_spread_3ag", "ippo_rnn_baseline"),
        ("simple_spread_3ag", "magpo_mpe"),
    }
    magpo = rows[("simple_spread_3ag", "magpo_mpe")]
    assert magpo.startswith("| simple_spread_3ag | magpo_mpe | 5 | `eval/absolute_learner_return` | 22.00 | 3.00 | [")
    low, high = map(float, re.search(r"\[(.+), (.+)\]", magpo).groups())
    assert low <= 3.0 <= high and high - low > 1.0
    assert rows[("simple_spread_3ag", "ippo_rnn_baseline")] == (
        "| simple_spread_3ag | ippo_rnn_baseline | 3 | last `eval/learner_return` | 7.00 | 7.00 | [7.00, 7.00] "
        "| 7.00, 7.00, 7.00 |"
    )
    assert magpo.endswith("| 1.00, 2.00, 3.00, 4.00, 100.00 |")
    assert rows[("3m", "magpo_mpe")].startswith("| 3m | magpo_mpe | 3 | last `eval/learner_return` | 2.00 | 2.00 |")


def test_cli_marl_eval_json(root, cli):
    data = json.loads((root / "out" / "results.json").read_text())
    assert set(data) == {"MPE", "SMAX"}
    assert set(data["MPE"]) == {"simple_spread_3ag"} and set(data["SMAX"]) == {"3m"}
    assert set(data["MPE"]["simple_spread_3ag"]) == {"magpo_mpe", "ippo_rnn_baseline"}
    magpo = data["MPE"]["simple_spread_3ag"]["magpo_mpe"]
    assert set(magpo) == {f"seed_{seed}" for seed in range(1, 6)}
    assert magpo["seed_5"] == {
        "step_0": {"step_count": 0, "learner_return": [0.0]},
        "step_1": {"step_count": 1000, "learner_return": [25.0]},
        "step_2": {"step_count": 2000, "learner_return": [50.0]},
        "absolute_metrics": {"learner_return": [100.0]},
    }
    assert magpo["seed_2"]["step_2"]["step_count"] == 2048
    assert data["MPE"]["simple_spread_3ag"]["ippo_rnn_baseline"]["seed_1"]["absolute_metrics"] == {}
    assert data["SMAX"]["3m"]["magpo_mpe"]["seed_3"]["step_1"] == {"step_count": 1000, "learner_return": [3.0]}


def test_cli_from_json_redraws_the_same_curves_and_table(root, cli):
    """The committed values (docs/data/*.json) are enough to redraw a study: --from-json on the JSON the run
    directories gave makes the same table, byte for byte, and a curve per task."""
    result = run_cli(["--from-json", "out/results.json", "--out-dir", "from_json", "--bootstrap-reps", "500"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "from_json" / "final.md").read_text() == (root / "plots" / "final.md").read_text()
    assert sorted(os.listdir(root / "from_json")) == sorted(os.listdir(root / "plots"))


def test_cli_from_json_pools_several_files(root, cli):
    """A study finished over several sessions: its JSONs split by seed, given together, redraw the same table as
    the whole; a run that two files both hold is a one-line error, whichever order they come in."""
    data = json.loads((root / "out" / "results.json").read_text())
    magpo = data["MPE"]["simple_spread_3ag"]["magpo_mpe"]
    early = {"MPE": {"simple_spread_3ag": {"magpo_mpe": {k: magpo.pop(k) for k in ("seed_1", "seed_2")}}}}
    (root / "early.json").write_text(json.dumps(early))
    (root / "late.json").write_text(json.dumps(data))
    result = run_cli(["--from-json", "early.json", "late.json", "--out-dir", "pooled", "--bootstrap-reps", "500"], root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "pooled" / "final.md").read_text() == (root / "plots" / "final.md").read_text()
    for files in (["early.json", "out/results.json"], ["out/results.json", "early.json"]):
        bad = run_cli(["--from-json", *files, "--out-dir", "bad_pool"], root)
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1, bad.stderr
        assert bad.stderr.startswith("error: --from-json: simple_spread_3ag/magpo_mpe/seed_1 is in both "), bad.stderr
    assert not os.path.exists(root / "bad_pool")


def test_subtract_gives_the_gap_per_run_and_step(tmp_path):
    """`--subtract`: guider - learner at the guider's steps, the learner interpolated onto them; the
    final score is the last difference (there is no absolute metric of a difference)."""
    for seed, (guider, learner) in enumerate([([10.0, 20.0, 30.0], [4.0, 6.0]), ([5.0, 5.0, 5.0], [5.0, 1.0])], 1):
        write_run(
            tmp_path,
            f"coordsum_5x20__magpo_delta3__{seed}__{1764000000 + seed}",
            {
                "eval/guider_return": list(zip([0, 500, 1000], guider)),
                "eval/learner_return": list(zip([0, 1000], learner)),
                "eval/absolute_learner_return": [(1000, 99.0)],
            },
        )
    runs = plot.load_runs(str(tmp_path / "runs" / "*"))
    tag = plot.add_difference(runs, "eval/guider_return", "eval/learner_return")
    assert tag == "eval/guider_return_minus_learner_return"
    assert [run.scalars[tag][1].tolist() for run in runs] == [[6.0, 15.0, 24.0], [0.0, 2.0, 4.0]]
    result = run_cli(
        [
            "--metric",
            "eval/guider_return",
            "--subtract",
            "eval/learner_return",
            "--bootstrap-reps",
            "50",
            "--out-dir",
            "gap",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "| coordsum_5x20 | magpo_delta3 | 2 | last `eval/guider_return_minus_learner_return` | 14.00 |" in result.stdout
    )
    assert sorted(os.listdir(tmp_path / "gap")) == [
        "coordsum_5x20__eval_guider_return_minus_learner_return.png",
        "final.md",
    ]
    bad = run_cli(["--metric", "eval/guider_return", "--subtract", "eval/nothing", "--out-dir", "bad"], cwd=tmp_path)
    assert bad.returncode != 0 and bad.stderr == "error: no run logged 'eval/nothing' (--subtract)\n"
    assert plot.env_name("coordsum_5x20") == "CoordSum"


def test_marl_eval_env_names_are_the_papers():
    """The official configs' env_name for the jumanji tasks (mava/configs/env/{rware,lbf,connector}.yaml)."""
    from utils.jumanji import TASKS

    names = {"rware": "RobotWarehouse", "lbf": "LevelBasedForaging", "connector": "Connector"}
    for family, tasks in TASKS.items():
        assert {plot.env_name(task) for task in tasks} == {names[family]}, family
    assert [plot.env_name(t) for t in ("simple_spread_10ag", "coordsum_8x15", "2s3z", "smacv2_5_units")] == [
        "MPE",
        "CoordSum",
        "SMAX",
        "SMAX",
    ]


def test_help_answers_before_the_heavy_imports(tmp_path):
    """`--help` (and a mistyped flag) is parsed before matplotlib, scipy, rliable and TensorBoard are imported,
    which take seconds: `-X importtime` lists every module the process imported."""
    for args, returncode in ((["--help"], 0), (["--no-such-flag"], 2)):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", SCRIPT, *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == returncode, result.stderr[-3000:]
        imported = {
            line.rpartition("|")[2].strip().split(".")[0]
            for line in result.stderr.splitlines()
            if line.startswith("import time:")
        }
        assert "tyro" in imported  # the parsing did happen, and -X importtime reported it
        assert not imported & {"matplotlib", "scipy", "rliable", "tensorboard", "torch"}, args
    assert "--runs" in subprocess.run([sys.executable, SCRIPT, "--help"], capture_output=True, text=True).stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--runs", "nothing/*"],
            "error: no run directory <task>__<exp_name>__<seed>__<unix time> matches 'nothing/*'",
        ),
        (["--metric", "eval/win_rate"], "error: no run logged 'eval/win_rate'; the runs have: "),
        (["--from-json", "missing.json"], "error: --from-json missing.json: cannot read it (FileNotFoundError)"),
        (["--from-json", "out/results.json", "--subtract", "eval/learner_return"], "error: --subtract needs both"),
    ],
)
def test_cli_bad_input_is_one_line_error(root, args, message):
    result = run_cli(["--out-dir", "bad_plots", *args], cwd=root)
    assert result.returncode != 0
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not os.path.exists(root / "bad_plots")


# ----------------------------------------------------------------------------------- incomplete runs
def fake_run(seed, steps, values, absolute=None, task="simple_spread_3ag", algorithm="magpo_mpe"):
    """An in-memory Run of `eval/learner_return`, with `eval/absolute_learner_return` if `absolute` is given."""
    scalars = {"eval/learner_return": (np.array(steps), np.array(values, dtype=float))}
    if absolute is not None:
        scalars["eval/absolute_learner_return"] = (np.array(steps[-1:]), np.array([absolute]))
    return plot.Run(f"runs/{task}__{algorithm}__{seed}__1", task, algorithm, seed, 1, scalars)


def test_final_score_metric_never_switches_when_one_run_lacks_the_absolute_metric():
    """The old rule (absolute metric only if *every* run has it) switched the whole group to the last
    evaluation because of one interrupted run; now the group keeps the absolute metric and only that run,
    flagged incomplete, falls back to its last value."""
    runs = [
        fake_run(1, [0, 1000], [0.0, 9.0], absolute=10.0),
        fake_run(2, [0, 1000], [0.0, 19.0], absolute=20.0),
        fake_run(3, [0, 1000], [0.0, 50.0]),
    ]
    scores, tag, tags = plot.final_scores(runs, "eval/learner_return")
    assert tag == "eval/absolute_learner_return"
    assert tags == [tag, tag, "eval/learner_return"] and scores.tolist() == [10.0, 20.0, 50.0]
    assert plot.incomplete_runs(runs, "eval/learner_return") == {
        runs[2].path: "no 'eval/absolute_learner_return', which 2 of the group's 3 runs logged"
    }


def test_select_runs_leaves_out_incomplete_runs_and_empty_groups(capsys):
    full = [fake_run(seed, [0, 1000, 2000], [0.0, 1.0, 2.0]) for seed in (1, 2)]
    short = fake_run(3, [0, 1000], [0.0, 1.0])
    groups = {
        ("simple_spread_3ag", "magpo_mpe"): [*full, short],
        ("3m", "cut"): [
            fake_run(1, [0, 500], [0.0, 1.0], 5.0, "3m", "cut"),  # cut short, with absolute
            fake_run(2, [0, 500, 1000], [0.0, 1.0, 2.0], None, "3m", "cut"),
        ],
    }  # no absolute
    selected, incomplete = plot.select_runs(groups, "eval/learner_return", include_incomplete=False)
    assert selected == {("simple_spread_3ag", "magpo_mpe"): full}
    assert incomplete[short.path] == "2 evaluations up to step 1000, the group has 3 up to step 2000"
    assert set(incomplete) == {short.path, "runs/3m__cut__1__1", "runs/3m__cut__2__1"}
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        f"warning: incomplete run {short.path}: 2 evaluations up to step 1000, the group has 3 up to "
        "step 2000; left out (--include-incomplete keeps it)"
    )
    assert err[-1] == "warning: 3m / cut has no complete run; left out" and len(err) == 4
    # the curve of the complete runs is not cut at the short run's end
    steps, _ = plot.align(selected[("simple_spread_3ag", "magpo_mpe")], "eval/learner_return")
    assert steps.tolist() == [0, 1000, 2000]
    with pytest.raises(ValueError, match="no group has a complete run"):
        plot.select_runs({("3m", "cut"): groups[("3m", "cut")]}, "eval/learner_return", include_incomplete=False)
    capsys.readouterr()
    kept, _ = plot.select_runs(groups, "eval/learner_return", include_incomplete=True)
    assert kept == groups and all(
        line.endswith("; kept (--include-incomplete)") for line in capsys.readouterr().err.splitlines()
    )
    assert plot.align(kept[("simple_spread_3ag", "magpo_mpe")], "eval/learner_return")[0].tolist() == [0, 1000]


@pytest.fixture(scope="module")
def partial_root(tmp_path_factory):
    """simple_spread_3ag/magpo_mpe: seeds 1-3 finished, seed 4 cut short at step 1000, seed 5 evaluated to the end
    but without the absolute metric; 3m/solo: a single seed."""
    root = tmp_path_factory.mktemp("partial")
    for seed, final in ((1, 10.0), (2, 20.0), (3, 30.0)):
        write_run(
            root,
            f"simple_spread_3ag__magpo_mpe__{seed}__{1764000000 + seed}",
            {
                "eval/learner_return": [(0, 0.0), (1000, final / 2), (2000, final - 1)],
                "eval/absolute_learner_return": [(2000, final)],
            },
        )
    write_run(root, "simple_spread_3ag__magpo_mpe__4__1764000004", {"eval/learner_return": [(0, 0.0), (1000, 4.0)]})
    write_run(
        root,
        "simple_spread_3ag__magpo_mpe__5__1764000005",
        {"eval/learner_return": [(0, 0.0), (1000, 25.0), (2000, 50.0)]},
    )
    write_run(
        root,
        "3m__solo__1__1764000006",
        {"eval/learner_return": [(0, 0.0), (1000, 5.0)], "eval/absolute_learner_return": [(1000, 6.0)]},
    )
    return root


def table_rows(table):
    return {
        tuple(cell.strip() for cell in line.split("|")[1:3]): line
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| task") and not line.startswith("| ---")
    }


def test_cli_names_and_leaves_out_incomplete_runs(partial_root):
    result = run_cli(
        ["--bootstrap-reps", "200", "--out-dir", "default", "--marl-eval-json", "default/r.json"], cwd=partial_root
    )
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: incomplete run")]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        "warning: incomplete run runs/simple_spread_3ag__magpo_mpe__4__1764000004: "
        "2 evaluations up to step 1000, the group has 3 up to step 2000; no "
    )
    assert warnings[1].startswith(
        "warning: incomplete run runs/simple_spread_3ag__magpo_mpe__5__1764000005: "
        "no 'eval/absolute_learner_return', which 3 of the group's 5 runs logged"
    )
    assert all(line.endswith("; left out (--include-incomplete keeps it)") for line in warnings)
    table = (partial_root / "default" / "final.md").read_text()
    rows = table_rows(table)
    magpo = rows[("simple_spread_3ag", "magpo_mpe")]
    assert magpo.startswith("| simple_spread_3ag | magpo_mpe | 3 | `eval/absolute_learner_return` | 20.00 | 20.00 | [")
    assert magpo.endswith("| 10.00, 20.00, 30.00 |")
    assert "Left out as incomplete (--include-incomplete keeps them): `runs/simple_spread_3ag__magpo_mpe__4_" in table
    assert "`runs/simple_spread_3ag__magpo_mpe__5__1764000005` (no 'eval/absolute_learner_return'" in table
    data = json.loads((partial_root / "default" / "r.json").read_text())
    assert set(data["MPE"]["simple_spread_3ag"]["magpo_mpe"]) == {"seed_1", "seed_2", "seed_3"}


def test_cli_include_incomplete_keeps_them_and_says_which_metric_each_gives(partial_root):
    result = run_cli(["--bootstrap-reps", "200", "--out-dir", "all", "--include-incomplete"], cwd=partial_root)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: incomplete run")]
    assert len(warnings) == 2 and all(line.endswith("; kept (--include-incomplete)") for line in warnings)
    table = (partial_root / "all" / "final.md").read_text()
    magpo = table_rows(table)[("simple_spread_3ag", "magpo_mpe")]
    # mean of 10, 20, 30, 4, 50 is 22.8; IQM cuts 4 and 50
    assert magpo.startswith(
        "| simple_spread_3ag | magpo_mpe | 5 (2 incomplete) | `eval/absolute_learner_return`; "
        "last `eval/learner_return` for seeds 4, 5 | 22.80 | 20.00 | ["
    )
    assert magpo.endswith("| 10.00, 20.00, 30.00, 4.00*, 50.00* |")
    assert "`*` incomplete run, kept by --include-incomplete: `runs/simple_spread_3ag__magpo_mpe__4_" in table
    assert "Left out as incomplete" not in table


def test_cli_single_seed_has_no_interval(partial_root):
    result = run_cli(["--bootstrap-reps", "200", "--out-dir", "single", "--runs", "runs/3m__*"], cwd=partial_root)
    assert result.returncode == 0, result.stderr[-3000:]
    assert table_rows(result.stdout)[("3m", "solo")] == (
        "| 3m | solo | 1 | `eval/absolute_learner_return` | 6.00 | 6.00 | n/a (1 run) | 6.00 |"
    )
    assert "warning" not in result.stderr


# ----------------------------------------------------------------------------------- the aggregate across tasks
# A synthetic set whose answer is known: two tasks in two suites, random policy 0 and 10, best scores 10 and 30.
# "better" beats "worse" on every run of every task; "twin" equals "worse" run for run.
AGG = {
    ("simple_spread_3ag", "better"): [6.0, 8.0, 10.0],
    ("simple_spread_3ag", "worse"): [1.0, 2.0, 3.0],
    ("simple_spread_3ag", "twin"): [1.0, 2.0, 3.0],
    ("coordsum_3x10", "better"): [26.0, 28.0, 30.0],
    ("coordsum_3x10", "worse"): [12.0, 14.0, 16.0],
    ("coordsum_3x10", "twin"): [12.0, 14.0, 16.0],
}
RANDOM = {"simple_spread_3ag": 0.0, "coordsum_3x10": 10.0}


def aggregate_groups():
    groups = {}
    for (task, algorithm), finals in AGG.items():
        runs = []
        for seed, final in enumerate(finals, start=1):
            run = fake_run(seed, [0, 100], [RANDOM[task], final], absolute=final, task=task, algorithm=algorithm)
            run.scalars[plot.RANDOM_TAG] = (np.array([0]), np.array([RANDOM[task]]))
            runs.append(run)
        groups[(task, algorithm)] = runs
    return groups


def test_normalisation_bounds_are_the_random_score_and_the_best_seen():
    groups = aggregate_groups()
    bounds = plot.task_bounds(groups, "eval/learner_return")
    assert bounds == {"coordsum_3x10": (10.0, 30.0), "simple_spread_3ag": (0.0, 10.0)}
    matrices = plot.normalised_scores(groups, "eval/learner_return", bounds, ["coordsum_3x10", "simple_spread_3ag"])
    np.testing.assert_allclose(matrices["better"], [[0.8, 0.6], [0.9, 0.8], [1.0, 1.0]])
    np.testing.assert_allclose(matrices["worse"], [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]])


def test_aggregate_iqm_is_the_trimmed_mean_over_runs_and_tasks_with_a_ci_around_it():
    matrices = {"a": np.array([[0.0, 0.1], [0.2, 0.3], [0.4, 5.0], [0.5, 0.6]])}
    (point, low, high) = plot.aggregate_iqm(matrices, reps=500, seed=1)["a"]
    assert point == pytest.approx(scipy.stats.trim_mean(matrices["a"].ravel(), 0.25))  # 0.35: the 5.0 is cut
    assert low <= point <= high
    assert plot.aggregate_iqm(matrices, reps=500, seed=1)["a"] == (point, low, high)  # same seed, same CI


def test_probability_of_improvement_known_answers():
    groups = aggregate_groups()
    tasks = ["coordsum_3x10", "simple_spread_3ag"]
    matrices = plot.normalised_scores(
        groups, "eval/learner_return", plot.task_bounds(groups, "eval/learner_return"), tasks
    )
    probabilities = plot.improvement_probabilities(matrices, "better", reps=500, seed=1)
    assert probabilities["worse"] == (1.0, 1.0, 1.0)  # better on every pair of runs of every task
    twin = plot.improvement_probabilities(matrices, "twin", reps=500, seed=1)
    assert twin["worse"][0] == 0.5  # identical scores: a coin toss
    assert twin["better"][0] == 0.0
    # half the tasks won, half lost: 0.5
    split = {"x": np.array([[1.0, 0.0], [1.0, 0.0]]), "y": np.array([[0.0, 1.0], [0.0, 1.0]])}
    assert plot.improvement_probabilities(split, "x", reps=200, seed=1)["y"][0] == 0.5


def test_cli_aggregate_from_runs_and_from_json_with_its_bounds(tmp_path):
    for (task, algorithm), finals in AGG.items():
        for seed, final in enumerate(finals, start=1):
            write_run(
                tmp_path,
                f"{task}__{algorithm}__{seed}__{1764000000 + seed}",
                {
                    "eval/learner_return": [(0, RANDOM[task]), (100, final)],
                    "eval/absolute_learner_return": [(100, final)],
                    plot.RANDOM_TAG: [(0, RANDOM[task])],
                },
            )
    args = ["--aggregate", "--improvement-of", "better", "--bootstrap-reps", "300"]
    result = run_cli(["--runs", "runs/*", "--out-dir", "agg", "--marl-eval-json", "agg/all.json", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("aggregate.md", "bounds.json", "aggregate_iqm.png", "probability_of_improvement.png"):
        assert (tmp_path / "agg" / name).exists(), name
    text = (tmp_path / "agg" / "aggregate.md").read_text()
    assert "| CoordSum | 1 | better | 0.900 |" in text and "| MPE | 1 | better | 0.800 |" in text
    assert "| all tasks | 2 | worse | 0.200 |" in text and "| 1.000 | worse | [1.000, 1.000] |" in text
    assert json.loads((tmp_path / "agg" / "bounds.json").read_text()) == {
        "coordsum_3x10": [10.0, 30.0],
        "simple_spread_3ag": [0.0, 10.0],
    }
    # the committed form: the JSON and its bounds give the same aggregate, byte for byte
    missing = run_cli(["--from-json", "agg/all.json", "--out-dir", "agg2", *args], tmp_path)
    assert missing.returncode != 0 and missing.stderr.startswith("error: --aggregate with --from-json needs --bounds")
    again = run_cli(
        ["--from-json", "agg/all.json", "--bounds", "agg/bounds.json", "--out-dir", "agg2", *args], tmp_path
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "agg2" / "aggregate.md").read_text() == text
