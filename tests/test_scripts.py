"""End-to-end checks of every training script as a user runs it, with the same strictness for each:
a tiny run (its TensorBoard tags, its model, what it prints), same seed -> same numbers, variants,
the random-policy floor shared by MAGPO and MAPPO, bad input as a one-line `error: ` with exit 1,
computed arguments that cannot be set, and (marker `slow`) every SMAX map and every jumanji task of the paper."""

import dataclasses
import glob
import importlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import tyro
from helpers import (
    CASES,
    ONE_RUN_CASES,
    REPO,
    WIN_TAGS,
    assert_same_numbers,
    child_env,
    only_run_dir,
    run_case,
    scalars,
)

import enjoy
from utils.jumanji import TASKS
from utils.smax import PAPER_MAPS

JUMANJI_TASKS = [(env, scenario) for env, tasks in TASKS.items() for scenario in tasks]


# Same seed, same numbers, for every script on every env family; the baseline on the JAX families is left out: its
# JAX envs are the MAGPO scripts' (checked here) and its numpy twin is mappo_mpe / mappo_coordsum (~40 s saved).
TWICE = [name for name in CASES if name not in ("mappo_smax", "mappo_jumanji")]


@pytest.fixture(params=TWICE)
def twice(request, seed7_runs):
    return seed7_runs(request.param)


@pytest.fixture(params=list(CASES))
def once(request, seed7_runs):
    return seed7_runs(request.param, runs=1)


@pytest.mark.xdist_group("seed7_runs")
def test_tiny_run_writes_tags_model_and_says_where(once):
    case, (run_dir,), (stdout,) = once
    assert os.path.basename(run_dir).startswith(f"{case.prefix}__7__"), run_dir
    tags = scalars(run_dir)
    assert case.tags <= set(tags), case.tags - set(tags)
    if not case.tags & WIN_TAGS:  # win rates only where the env has wins
        assert not {t for t in tags if "win_rate" in t}
    assert "losses/learner_bc_kl" not in tags, "KL(guider || learner) is logged once, as magpo/kl_guider_learner"
    # evaluation before training, at every interval and at the end
    assert [step for step, _ in tags["eval/learner_return"]] == case.eval_steps
    assert all(np.isfinite(v) for values in tags.values() for _, v in values)
    assert all(0.0 <= v <= 1.0 for tag in set(tags) & WIN_TAGS for _, v in tags[tag])
    name = os.path.basename(run_dir)
    assert f"run directory: runs/{name}" in stdout
    assert f"model saved to runs/{name}/{case.model}" in stdout
    eval_episodes = int(case.args[len(case.args) - 1 - case.args[::-1].index("--num-eval-episodes") + 1])
    deployed = "learner" if "magpo" in case.script else "policy" if "ctce" in case.script else "actor"
    assert f"absolute metric: best {deployed} over {10 * eval_episodes}" in stdout
    saved = torch.load(os.path.join(run_dir, case.model), weights_only=True)
    assert saved["script"] == case.script and {"args", *case.networks} <= set(saved)
    assert (
        saved["args"]["num_envs"] == 4
        and saved["args"]["batch_size"] == saved["args"]["num_envs"] * saved["args"]["num_steps"]
    )


@pytest.mark.xdist_group("seed7_runs")
def test_same_seed_same_numbers(twice):
    _, dirs, _ = twice
    assert_same_numbers(dirs)


@pytest.mark.xdist_group("seed7_runs")
@pytest.mark.parametrize("env", ["mpe", "coordsum", "smax", "jumanji"])
def test_random_policy_floor_is_the_same_for_magpo_and_mappo(seed7_runs, env):
    """One random-policy evaluation (utils.random_policy_score) on the same eval envs and seed: the
    same `eval/random_return` whichever script runs it."""
    (_, (magpo_dir,), _), (_, (mappo_dir,), _) = seed7_runs(f"magpo_{env}", runs=1), seed7_runs(f"mappo_{env}", runs=1)
    ours, theirs = scalars(magpo_dir), scalars(mappo_dir)
    assert ours["eval/random_return"] == theirs["eval/random_return"]
    if "eval/random_win_rate" in ours:
        assert ours["eval/random_win_rate"] == theirs["eval/random_win_rate"]


def ctds_checks(tags, stdout):
    """CTDS = `--delta inf --alpha 0`: no token is ever out of the band, so the masked KL is exactly 0
    and the guider is plain PPO; the learner's loss is the pure distillation KL."""
    assert all(v == 0.0 for _, v in tags["magpo/out_of_band_frac"])
    assert all(v == 0.0 for _, v in tags["losses/guider_kl_loss"])
    for (_, loss), (_, kl) in zip(tags["losses/learner_loss"], tags["magpo/kl_guider_learner"]):
        assert loss == pytest.approx(kl, rel=1e-6)


def rounding_checks(tags, stdout):
    """--total-timesteps 300 with 4 x 32 = 128-step rollouts: 2 rollouts, and the run says so."""
    assert "note: --total-timesteps 300 is rounded down to 2 rollouts of 128 steps = 256 steps" in stdout
    assert tags["eval/learner_return"][-1][0] == 256


VARIANTS = [
    ("magpo_mpe", ["--no-continuous-actions", "--total-timesteps", "300"], rounding_checks),
    ("magpo_mpe", ["--num-agents", "10"], None),
    ("magpo_mpe", ["--env-backend", "pettingzoo", "--capture-video"], "video"),
    ("magpo_mpe", ["--no-norm-value", "--no-norm-adv", "--no-clip-vloss"], None),
    ("magpo_mpe", ["--delta", "inf", "--alpha", "0"], ctds_checks),
    ("magpo_coordsum", ["--scenario", "5x20"], None),
    ("magpo_coordsum", ["--scenario", "8x15", "--coordsum-history", "full"], None),
    ("magpo_coordsum", ["--coordsum-obs", "raw"], None),
    ("magpo_coordsum", ["--delta", "inf", "--alpha", "0"], ctds_checks),
    ("magpo_smax", ["--guider-global-state"], None),
    # every MAGPO script with the guiders its CASES do not run (magpo_mpe_mat, magpo_coordsum_sable)
    ("magpo_mpe", ["--guider", "sable", "--sable-ffn", "init"], None),
    ("magpo_coordsum", ["--guider", "mat", "--guider-heads", "2", "--guider-blocks", "2"], None),
    ("magpo_smax", ["--guider", "mat"], None),
    ("magpo_smax", ["--guider", "sable", "--guider-heads", "2", "--timestep-chunk-size", "5"], None),
    ("magpo_jumanji", ["--guider", "mat"], None),
    ("magpo_jumanji", ["--guider", "sable"], None),
    ("mappo_mpe", ["--ippo", "--capture-video"], "video"),
    ("mappo_mpe", ["--no-continuous-actions", "--num-agents", "4"], None),
    ("mappo_coordsum", ["--ippo", "--scenario", "5x20", "--coordsum-obs", "raw"], None),
    ("mappo_smax", ["--ippo"], None),
    ("magpo_jumanji", ["--env", "connector", "--scenario", "con-5x5x3a", "--guider-global-state"], None),
    ("mappo_jumanji", ["--ippo"], None),
    # happo_baseline.py on the JAX families (CASES runs it on MPE and CoordSum), with the scheme and chunks each
    # case does not use
    ("happo_mpe", ["--happo-scheme", "official", "--no-continuous-actions", "--recurrent-chunk-size", "16"], None),
    ("happo_smax", [], None),
    ("happo_jumanji", [], None),
    ("happo_rware", ["--happo-scheme", "official", "--recurrent-chunk-size", "32"], None),
    ("happo_jumanji", ["--env", "connector", "--scenario", "con-5x5x3a", "--recurrent-chunk-size", "0"], None),
    # ctce_baseline.py on every family (CASES: MAT on MPE, Sable on CoordSum), each arch at least once
    ("ctce_mpe_mat", ["--arch", "sable", "--no-continuous-actions", "--agent-order", "official"], None),
    ("ctce_coordsum_sable", ["--arch", "mat", "--scenario", "5x20"], None),
    ("ctce_smax_sable", [], None),
    ("ctce_jumanji", [], None),
    ("ctce_rware", [], None),
    ("ctce_jumanji", ["--env", "connector", "--scenario", "con-5x5x3a"], None),
]


ALL_CASES = {**CASES, **ONE_RUN_CASES}


def variant_id(name, extra):
    return f"{name}:{' '.join(extra)}"


@pytest.fixture(scope="session")
def variant_runs(tmp_path_factory):
    """get(script) -> {variant id: (exit code, output, run dir or None)}: every variant of `script` run with
    --save-model, in one process (`run_many`: the imports and the JAX compilations paid once per script), the first
    time one of its tests asks; its tests share one worker (the `xdist_group` below)."""
    cache = {}

    def get(script):
        if script not in cache:
            jobs = {}
            for name, extra, _ in VARIANTS:
                if ALL_CASES[name].script == script:
                    cwd = tmp_path_factory.mktemp("variant")
                    jobs[variant_id(name, extra)] = (str(cwd), [*ALL_CASES[name].args, *extra, "--save-model"])
            results = run_many(script, jobs, timeout=1800)
            cache[script] = {
                key: (code, output, only_run_dir(jobs[key][0]) if code == 0 else None)
                for key, (code, output) in results.items()
            }
        return cache[script]

    return get


@pytest.mark.parametrize(
    "name, extra, check",
    [
        pytest.param(name, extra, check, id=variant_id(name, extra),
                     marks=pytest.mark.xdist_group(f"variants_{ALL_CASES[name].script}"))
        for name, extra, check in VARIANTS
    ],
)  # fmt: skip
def test_variants_run(variant_runs, name, extra, check):
    case = ALL_CASES[name]
    code, output, run_dir = variant_runs(case.script)[variant_id(name, extra)]
    assert code == 0, output[-3000:]
    tags = scalars(run_dir)
    assert case.tags <= set(tags), case.tags - set(tags)
    assert all(np.isfinite(v) for values in tags.values() for _, v in values)
    (model_path,) = glob.glob(os.path.join(run_dir, "*.cleanrl_model"))  # --ippo: ippo_baseline.cleanrl_model
    saved = torch.load(model_path, weights_only=True)
    if (
        name == "magpo_smax" and "--guider-global-state" in extra
    ):  # 2s3z's world state: 12 features x 10 units, embedded for every agent token
        assert saved["guider"]["state_embed.weight"].shape == (16, 120)
    if (
        name == "magpo_jumanji" and "--guider-global-state" in extra
    ):  # con-5x5x3a's global state: 3 agents' 54-feature vector observations
        assert saved["guider"]["state_embed.weight"].shape == (16, 3 * 54)
        assert (saved["args"]["env"], saved["args"]["scenario"]) == ("connector", "con-5x5x3a")
        assert saved["args"]["alpha"] == 4.0 and saved["args"]["learning_rate"] == 1e-3  # con-5x5x3a's row
        checkpoint = enjoy.load_checkpoint(model_path)
        _, guider, _ = enjoy.build_policy(checkpoint, "guider")  # enjoy.py rebuilds the state input too
        assert guider.state_embed is not None
    if "--ippo" in extra:  # IPPO's critic reads [one-hot id, own observation] (MAPPO: [id, global state])
        env = os.path.basename(run_dir).split("__")[0]
        obs_dim = {"simple_spread_3ag": 18, "coordsum_5x20": 1, "2s3z": 127, "2s-10x10-3p-3f": 18}[env]
        assert saved["critic"]["pre.0.weight"].shape[1] == saved["args"]["num_agents"] + obs_dim
    if check == "video":
        assert len(glob.glob(os.path.join(run_dir, "videos", "*.gif"))) == len(tags["eval/learner_return"])
    elif check is not None:
        check(tags, output)


# ----------------------------------------------------------------------------------- bad input
def module(case_or_script):
    return importlib.import_module(case_or_script.removesuffix(".py"))


COMMON_BAD = [
    ({"num_envs": 6, "num_minibatches": 4}, "--num-envs (6) must be divisible by --num-minibatches (4)"),
    ({"num_steps": 0}, "--num-steps must be >= 1"),
    ({"total_timesteps": 10}, "must be at least one rollout"),
    ({"num_eval_episodes": 0}, "--num-eval-episodes must be >= 1"),
    ({"gae_lambda": 1.5}, "--gae-lambda must be in [0, 1]"),
    ({"clip_coef": 0.0}, "--clip-coef must be > 0"),
    # checked first by every script (check_run_flags): numpy's seed range, one directory name, finite floats
    ({"seed": -1}, "--seed must be in [0, 4294967295] (numpy's seed range), got -1"),
    ({"seed": 2**32}, "--seed must be in [0, 4294967295] (numpy's seed range), got 4294967296"),
    ({"exp_name": "a/b"}, "--exp-name must be one directory name"),
    ({"exp_name": ".."}, "--exp-name must be one directory name"),
    ({"exp_name": ""}, "--exp-name must be one directory name"),
    ({"learning_rate": float("inf")}, "--learning-rate must be a finite number, got inf"),
    ({"gamma": float("nan")}, "--gamma must be a finite number, got nan"),
    ({"max_grad_norm": -float("inf")}, "--max-grad-norm must be a finite number, got -inf"),
]
MAGPO_BAD = [
    ({"guider": "sable", "guider_dim": 12, "guider_heads": 4}, "--guider sable needs an even --guider-dim whose head"),
    ({"sable_decay": -0.1}, "--sable-decay must be in [0, 1], got -0.1"),
    ({"delta": 1.0}, "--delta must be > 1"),
    ({"delta": float("nan")}, "--delta must be a finite number (or inf), got nan"),  # inf is allowed: no tether
    ({"alpha": -1.0}, "--alpha must be >= 0"),
    ({"guider_dim": 10, "guider_heads": 3}, "--guider-dim (10) must be divisible by --guider-heads (3)"),
]
BAD = {
    "magpo_mpe.py": COMMON_BAD + MAGPO_BAD + [({"num_agents": 1}, "--num-agents must be >= 2")],
    "magpo_coordsum.py": COMMON_BAD + MAGPO_BAD + [
        ({"scenario": "4x4"}, "unknown --scenario '4x4'"),
        ({"max_steps": 0}, "--max-steps must be >= 1"),
        ({"capture_video": True}, "--capture-video is not available for CoordSum"),
    ],
    "magpo_smax.py": COMMON_BAD + MAGPO_BAD + [
        ({"map_name": "2s3zz"}, "unknown SMAX map '2s3zz'; registered maps: 10m_vs_11m"),
        ({"capture_video": True}, "--capture-video is not available for SMAX"),
        ({"guider": "sable", "guider_global_state": True}, "--guider-global-state is for --guider mat-gru"),
    ],
    "mappo_baseline.py": COMMON_BAD + [
        ({"env": "smac"}, "unknown --env 'smac'; choose one of ['mpe', 'coordsum', 'smax', 'rware', 'lbf', 'connector']"),
        ({"num_agents": 1}, "--num-agents must be >= 2"),
        ({"env": "coordsum", "scenario": "4x4"}, "unknown --scenario '4x4'"),
        ({"env": "smax", "map_name": "9z"}, "unknown SMAX map '9z'; registered maps: 10m_vs_11m, "),
        ({"env": "coordsum", "capture_video": True}, "--capture-video is not available for --env coordsum"),
        ({"env": "coordsum", "num_agents": 4}, "--num-agents is a flag of --env mpe, not of --env coordsum"),
        ({"scenario": "9x9"}, "--scenario is a flag of --env coordsum, rware, lbf or connector, not of --env mpe"),
        ({"env": "smax", "scenario": "tiny-2ag"}, "--scenario is a flag of --env coordsum, rware, lbf or connector, not"),
        ({"env": "smax", "coordsum_obs": "raw"}, "--coordsum-obs is a flag of --env coordsum, not of --env smax"),
        ({"env": "coordsum", "map_name": "3m"}, "--map-name is a flag of --env smax, not of --env coordsum"),
        ({"env": "lbf", "scenario": "3x10"}, "unknown lbf task '3x10'; the paper's lbf tasks: 2s-8x8-2p-2f-coop, "),
        ({"env": "coordsum", "scenario": "tiny-2ag"}, "unknown --scenario 'tiny-2ag'"),
        ({"env": "rware", "num_agents": 4}, "--num-agents is a flag of --env mpe, not of --env rware"),
        ({"env": "connector", "capture_video": True}, "--capture-video is not available for --env connector: enjoy.py"),
    ],
    "happo_baseline.py": [(o, m) for o, m in COMMON_BAD if "num_minibatches" not in o] + [
        ({"num_envs": 6, "num_minibatches": 4}, "--num-envs x --num-steps / --recurrent-chunk-size (6 x 128 / 128) "
         "must be divisible by --num-minibatches (4)"),
        ({"recurrent_chunk_size": 48}, "--recurrent-chunk-size (48) must divide --num-steps (128)"),
        ({"recurrent_chunk_size": -8}, "--recurrent-chunk-size (-8) must divide --num-steps (128)"),
        ({"env": "smac"}, "unknown --env 'smac'; choose one of ['mpe', 'coordsum', 'smax', 'rware', 'lbf', 'connector']"),
        ({"num_agents": 1}, "--num-agents must be >= 2"),
        ({"env": "coordsum", "num_agents": 4}, "--num-agents is a flag of --env mpe, not of --env coordsum"),
        ({"env": "lbf", "scenario": "3x10"}, "unknown lbf task '3x10'; the paper's lbf tasks: 2s-8x8-2p-2f-coop, "),
        ({"env": "smax", "map_name": "9z"}, "unknown SMAX map '9z'; registered maps: 10m_vs_11m, "),
    ],
    "ctce_baseline.py": COMMON_BAD + [
        ({"env": "smac"}, "unknown --env 'smac'; choose one of ['mpe', 'coordsum', 'smax', 'rware', 'lbf', 'connector']"),
        ({"embed_dim": 10, "num_heads": 3}, "--embed-dim (10) must be divisible by --num-heads (3)"),
        ({"arch": "sable", "embed_dim": 12, "num_heads": 4}, "--arch sable needs an even --embed-dim whose head size"),
        ({"sable_decay": 1.5}, "--sable-decay must be in [0, 1], got 1.5"),
        ({"timestep_chunk_size": -1}, "--timestep-chunk-size must be >= 0, got -1"),
        ({"env": "coordsum", "num_agents": 4}, "--num-agents is a flag of --env mpe, not of --env coordsum"),
    ],
    "magpo_jumanji.py": COMMON_BAD + MAGPO_BAD + [
        ({"scenario": "tiny-3ag"}, "unknown rware task 'tiny-3ag'; the paper's rware tasks: tiny-2ag, "),
        ({"env": "lbf", "scenario": "con-5x5x3a"}, "unknown lbf task 'con-5x5x3a'"),
        ({"env": "smax"}, "unknown jumanji env 'smax'; choose one of rware, lbf, connector"),
        ({"capture_video": True}, "--capture-video is not available for jumanji: enjoy.py draws"),
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    "script, overrides, message", [(s, o, m) for s, cases in BAD.items() for o, m in cases], ids=lambda x: str(x)
)
def test_validate_args_rejects_bad_input(script, overrides, message):
    args_class, validate_args = module(script).Args, module(script).validate_args
    validate_args(args_class())  # the defaults are valid
    with pytest.raises(ValueError) as error:
        validate_args(args_class(**overrides))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name",
    ["magpo_mpe", "magpo_coordsum", "magpo_smax", "magpo_jumanji", "mappo_coordsum", "happo_coordsum", "ctce_mpe_mat"],
)
def test_bad_input_is_one_line_error_and_builds_nothing(tmp_path, name):
    """How a script exits on bad input (the messages are checked in-process above)."""
    # (happo_coordsum's chunks of 8 make 6 x 4 sequences, which 4 minibatches divide: whole sequences here)
    flags = ["--num-envs", "6", "--num-minibatches", "4", *(["--recurrent-chunk-size", "0"] if "happo" in name else [])]
    result = run_case(CASES[name], flags, tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "runs"), "nothing may be built before the input is checked"


# The edges that used to fail late: a numpy traceback after the run directory existed (--seed), a crash while
# saving the trained model (--exp-name), a run stopped by the non-finite guard (--learning-rate inf). Every flag
# through magpo_mpe.py, one through each other script (the messages of each are checked in-process above)
LATE_FAILURES = [
    ["--seed", "-1"],
    ["--seed", "4294967296"],
    ["--exp-name", "a/b", "--save-model"],
    ["--learning-rate", "inf"],
]
LATE_CASES = [("magpo_mpe", flags) for flags in LATE_FAILURES] + [
    (name, LATE_FAILURES[i % len(LATE_FAILURES)])
    for i, name in enumerate(["magpo_coordsum", "magpo_smax", "magpo_jumanji", "mappo_coordsum", "happo_mpe"])
]


@pytest.mark.parametrize("name, flags", LATE_CASES, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_flags_that_used_to_fail_late_are_one_line_errors(tmp_path, name, flags):
    result = run_case(CASES[name], flags, tmp_path, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith(f"error: {flags[0]} ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not os.path.exists(tmp_path / "runs"), "nothing may be written before the input is checked"


def test_the_largest_seed_runs(tmp_path):
    """The top of the range works end to end: the evaluation envs' seed (seed + 10,000) is past 2**32 - 1."""
    result = run_case(CASES["magpo_coordsum"], ["--seed", "4294967295"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("script", list(BAD))
def test_computed_arguments_cannot_be_set(script):
    """batch_size, minibatch_envs (happo_baseline.py: chunk, minibatch_sequences) and num_iterations are computed
    from other flags: not in the CLI."""
    args_class = module(script).Args
    computed = {f.name for f in dataclasses.fields(args_class) if not f.init}
    per_minibatch = {"chunk", "minibatch_sequences"} if script == "happo_baseline.py" else {"minibatch_envs"}
    assert computed == {"batch_size", "num_iterations", *per_minibatch}
    for name in computed:
        with pytest.raises(SystemExit):
            tyro.cli(args_class, args=[f"--{name.replace('_', '-')}", "8"])


# ------------------------------------------------------------------------------------ slow
# Every SMAX map and every jumanji task of the paper trains one update, end to end. The runs of one script go in one
# Python process, one after the other (`run_many`), so that the imports (torch, JAX, jumanji, TensorBoard: ~4 s) are
# paid once per script instead of once per task; each run still has its own directory, argv and exit code.
RUN_MANY = """
import contextlib, io, json, os, runpy, sys, traceback
script, jobs, prelude = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path.insert(0, os.path.dirname(script))
exec(prelude)
results = {}
for name, (cwd, argv) in jobs.items():
    os.chdir(cwd)
    sys.argv, out, code = [script, *argv], io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (print(stop.code) or 1)
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = (code, out.getvalue())
print("RESULTS " + json.dumps(results))
"""


def run_many(script, jobs, timeout, prelude=""):
    """Run `script` once per job, {name: (cwd, argv)}, in one Python process (SMAX and jumanji compile fast, as
    run_script's `fast_compile`), after the Python statements `prelude`: {name: (exit code, the run's output)}."""
    env = child_env(fast_compile=True)  # one repeat of the absolute metric (and of its greedy replay)
    result = subprocess.run([sys.executable, "-c", RUN_MANY, os.path.join(REPO, script), json.dumps(jobs), prelude],
                            capture_output=True, text=True, timeout=timeout, env=env)  # fmt: skip
    assert result.returncode == 0 and "RESULTS " in result.stdout, result.stderr[-3000:]
    return json.loads(result.stdout.split("RESULTS ", 1)[1])


ONE_UPDATE = ["--total-timesteps", "32", "--num-envs", "2", "--num-steps", "16", "--num-minibatches", "1",
              "--update-epochs", "1", "--eval-interval", "100000", "--learner-hidden", "16", "--guider-dim", "16"]  # fmt: skip


def run_every_task(script, tasks, tmp_path, timeout, prelude=""):
    """Run `script` once per {name: argv} in one process (`run_many`), each in its own folder; the failures as
    {name: the end of its output} and the run directories {name: dir} of the others."""
    jobs = {name: (str(tmp_path / name), argv) for name, argv in tasks.items()}
    for cwd, _ in jobs.values():
        os.makedirs(cwd)
    results = run_many(script, jobs, timeout=timeout, prelude=prelude)
    failed = {name: output[-3000:] for name, (code, output) in results.items() if code != 0}
    return failed, {name: only_run_dir(cwd) for name, (cwd, _) in jobs.items() if name not in failed}


# One test per script, not one per task: pytest 9.2 ignores pytest-xdist 3.8's `xdist_group` (it renames nodeids
# through an attribute pytest no longer reads), so a shared fixture could run once on each worker.
@pytest.mark.slow
def test_every_paper_map_builds_and_runs_one_update(tmp_path):
    """Each of the paper's 10 SMAX maps: one update on 2 envs, 1 minibatch, 1 epoch, evaluated before and after."""
    tasks = {name: ["--map-name", name, *ONE_UPDATE, "--num-eval-episodes", "2"] for name in PAPER_MAPS}
    failed, run_dirs = run_every_task("magpo_smax.py", tasks, tmp_path, timeout=1800)
    assert not failed, failed
    for map_name, run_dir in run_dirs.items():
        tags = scalars(run_dir)
        assert [step for step, _ in tags["eval/win_rate"]] == [0, 32], map_name
        assert np.isfinite(tags["losses/guider_loss"][0][1]) and np.isfinite(tags["losses/learner_loss"][0][1])


@pytest.mark.slow
def test_every_paper_jumanji_task_builds_and_runs_one_update(tmp_path):
    """Each of the 26 tasks with its tuned row (here on 2 envs, 1 minibatch, 1 epoch): one update, and an
    evaluation before and after it. RWARE's episodes are cut from 500 to 50 steps here: its five evaluations (before,
    after, the random policy, the absolute metric sampled and greedy) were ~98% of a one-update run's time; the
    500 is checked in tests/test_jumanji_env.py."""
    tasks = {scenario: ["--env", env, "--scenario", scenario, *ONE_UPDATE, "--num-eval-episodes", "1"]
             for env, scenario in JUMANJI_TASKS}  # fmt: skip
    failed, run_dirs = run_every_task(
        "magpo_jumanji.py",
        tasks,
        tmp_path,
        timeout=2400,
        prelude="import utils.jumanji; utils.jumanji.RWARE_TIME_LIMIT = 50",
    )
    assert not failed, failed
    assert len(run_dirs) == 26
    for scenario, run_dir in run_dirs.items():
        assert os.path.basename(run_dir).startswith(f"{scenario}__magpo_jumanji__1__")
        tags = scalars(run_dir)
        assert [step for step, _ in tags["eval/learner_return"]] == [0, 32], scenario
        assert np.isfinite(tags["losses/guider_loss"][0][1]) and np.isfinite(tags["losses/learner_loss"][0][1])


def test_run_many_reports_each_run_on_its_own(tmp_path):
    """A failing run (bad input: exit 1 with its error line) does not stop the next one, which succeeds."""
    args = CASES["magpo_coordsum"].args
    failed, run_dirs = run_every_task(
        "magpo_coordsum.py", {"bad": [*args, "--seed", "-1"], "good": args}, tmp_path, 300
    )
    assert list(failed) == ["bad"] and "error: --seed must be in" in failed["bad"]
    assert list(run_dirs) == ["good"] and not os.path.exists(tmp_path / "bad" / "runs")
