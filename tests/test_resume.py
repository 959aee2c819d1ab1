"""Long runs (docs/usage.md, "Long runs: checkpoints and resume"): N updates + --resume + N updates is bit-identical
to 2N updates straight (every losses/, eval/, magpo/ point and the final parameters) for every training
script; Ctrl-C and SIGTERM on a real run, then --resume, reach the same numbers as an uninterrupted run;
the non-finite guard; bad checkpoints and changed flags are refused without writing anything."""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from helpers import CASES, REPO, assert_same_numbers, child_env, only_run_dir, run_case, run_script

import magpo_mpe

# The straight run has 2 iterations and evaluates at 0 and at its end only: the first leg's end-of-run
# evaluation and absolute metric (at 1 iteration) are points the straight run does not have, which the
# resumed run must drop.
# mappo_coordsum: a run off MPE saves its env's agent count and action kind, which --resume must accept.
# happo_mpe / happo_coordsum: one Adam per actor (and per critic under the official scheme), all in the checkpoint.
RESUME_CASES = ("magpo_mpe", "magpo_coordsum", "magpo_smax", "magpo_jumanji", "mappo_mpe", "mappo_coordsum",
                "happo_mpe", "happo_coordsum", "magpo_coordsum_sable", "ctce_mpe_mat", "ctce_coordsum_sable")  # fmt: skip


def batch(case):
    """Environment steps per rollout of a case's tiny arguments."""
    last = {flag: value for flag, value in zip(case.args, case.args[1:])}  # a repeated flag: its last value wins
    return int(last["--num-envs"]) * int(last["--num-steps"])


def model(run_dir):
    (path,) = glob.glob(os.path.join(run_dir, "*.cleanrl_model"))
    return torch.load(path, weights_only=False)


def assert_same_parameters(run_dirs):
    a, b = (model(d) for d in run_dirs)
    nets = [k for k in a if k not in ("script", "args")]
    assert nets and all(a[k].keys() == b[k].keys() for k in nets)
    for k in nets:
        for name in a[k]:
            assert torch.equal(a[k][name], b[k][name]), (k, name)


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def legs(tmp_path_factory):
    """get(name) -> (straight run dir, resumed run dir, first leg's stdout, second leg's stdout), each case run
    once per module."""
    cache = {}

    def get(name):
        if name not in cache:
            case, n = CASES[name], batch(CASES[name])
            common = ["--eval-interval", str(2 * n), "--seed", "5", "--save-model"]
            straight_cwd, legs_cwd = (
                tmp_path_factory.mktemp(name + "-straight"),
                tmp_path_factory.mktemp(name + "-legs"),
            )
            ok(run_case(case, [*common, "--total-timesteps", str(2 * n)], straight_cwd))
            first = ok(run_case(case, [*common, "--total-timesteps", str(n)], legs_cwd))
            run_dir = only_run_dir(legs_cwd)
            resume = ["--resume", os.path.relpath(run_dir, legs_cwd), "--total-timesteps", str(2 * n), "--save-model"]
            second = ok(run_script(case.script, resume, legs_cwd, fast_compile=case.fast_compile))
            cache[name] = only_run_dir(straight_cwd), run_dir, first.stdout, second.stdout
        return cache[name]

    return get


@pytest.mark.parametrize("name", RESUME_CASES)
def test_resume_is_bit_identical_to_a_straight_run(legs, name):
    straight, resumed, first_stdout, second_stdout = legs(name)
    assert "absolute metric" in first_stdout  # the first leg did end with its own final evaluation ...
    # the resumed leg says so, with where it continues from (a one-iteration first leg of two)
    assert f"resumed runs/{os.path.basename(resumed)} at step {batch(CASES[name])} (iteration 1 of 2)" in second_stdout
    assert_same_numbers([straight, resumed])  # ... which the resumed run dropped (and nothing else)
    assert_same_parameters([straight, resumed])
    checkpoint = torch.load(os.path.join(resumed, "checkpoint.pt"), weights_only=False)
    assert checkpoint["script"] == CASES[name].script and checkpoint["iteration"] == 2
    assert checkpoint["format_version"] == magpo_mpe.CHECKPOINT_VERSION
    assert not glob.glob(os.path.join(resumed, ".checkpoint.*"))  # no temporary file left behind


def start(script, args, cwd):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def interrupt_after(process, iterations, signum):
    """Send `signum` once the run printed `iterations` more iteration lines; (returncode, stdout, stderr)."""
    seen, lines = 0, []
    for line in process.stdout:
        lines.append(line)
        seen += line.startswith("iteration ")
        if seen == iterations:
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=120)
    return process.returncode, "".join(lines) + out, err


def test_sigint_and_sigterm_then_resume_reach_the_same_numbers(tmp_path):
    """A real run is stopped by SIGINT, resumed and stopped by SIGTERM, resumed again to its end: the same
    numbers and parameters as the uninterrupted run. Each stop writes the last finished iteration's
    state, prints one line on how to resume and exits 128 + the signal, without a traceback."""
    case = CASES["magpo_mpe"]
    args = [*case.args, "--total-timesteps", str(12 * batch(case)), "--eval-interval", "1024", "--seed", "2",
            "--save-model"]  # fmt: skip
    (tmp_path / "straight").mkdir()
    (tmp_path / "stopped").mkdir()
    ok(run_case(case, args[len(case.args) :], tmp_path / "straight"))

    cwd = tmp_path / "stopped"
    code, out, err = interrupt_after(start(case.script, args, cwd), 3, signal.SIGINT)
    run_dir = os.path.relpath(only_run_dir(cwd), cwd)
    assert code == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    stop_lines = [line for line in out.splitlines() if line.startswith("interrupted")]
    assert len(stop_lines) == 1
    step = int(stop_lines[0].split()[3].rstrip(";"))
    assert step >= 2 * batch(case) and stop_lines[0].endswith(f"resume with: python magpo_mpe.py --resume {run_dir}")
    assert torch.load(os.path.join(cwd, run_dir, "checkpoint.pt"), weights_only=False)["global_step"] == step

    code, out, err = interrupt_after(start(case.script, ["--resume", run_dir], cwd), 2, signal.SIGTERM)
    assert code == 143, err
    assert "Traceback" not in err and sum(line.startswith("interrupted") for line in out.splitlines()) == 1

    ok(run_script(case.script, ["--resume", run_dir, "--save-model"], cwd))
    assert_same_numbers([only_run_dir(tmp_path / "straight"), os.path.join(cwd, run_dir)])
    assert_same_parameters([only_run_dir(tmp_path / "straight"), os.path.join(cwd, run_dir)])


# Each network's terms the guard may name (a NaN reward reaches every value target through the value
# normalisation, and the policy terms of the minibatches that hold its env).
GUARDED = {
    "magpo_mpe": {"guider": ("guider_pg_loss", "value_loss"), "learner": ("learner_rl_loss",)},
    "mappo_mpe": {"actor": ("policy_loss",), "critic": ("value_loss",)},
    "happo_mpe": {"actor of agent": ("policy_loss",), "critic": ("value_loss",)},  # agent 0, 1 or 2's actor
}


@pytest.mark.parametrize("name", GUARDED)
def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path, name):
    """MAGPO_INJECT_NAN_AT=2 makes one reward of iteration 2 NaN: the run stops with one line naming the
    iteration, the network and the term; the checkpoint of iteration 1 is kept, finite."""
    case = CASES[name]
    env = child_env(MAGPO_INJECT_NAN_AT="2")
    n = batch(case)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, case.script), *case.args, "--total-timesteps", str(4 * n),
         "--checkpoint-interval", str(n)],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line, no traceback
    match = re.match(r"error: non-finite (\w+) \(nan\) in the ([\w ]+?)( \d)?'s update at iteration 2;", result.stderr)
    assert match, result.stderr
    term, network, _ = match.groups()
    assert term in GUARDED[name][network], result.stderr
    checkpoint = torch.load(os.path.join(only_run_dir(tmp_path), "checkpoint.pt"), weights_only=False)
    assert checkpoint["iteration"] == 1  # the last good one
    assert all(torch.isfinite(p).all() for p in checkpoint["learner"].values())


def refused(script, args, cwd, match):
    """The command fails with one `error:` line containing `match` and leaves the run directory as it was."""
    before = {p: open(p, "rb").read() for p in glob.glob(os.path.join(cwd, "runs", "**"), recursive=True)
              if os.path.isfile(p)}  # fmt: skip
    result = run_script(script, args, cwd)
    assert result.returncode == 1, result.stdout[-2000:]
    assert result.stderr.startswith("error: ") and result.stderr.strip().count("\n") == 0, result.stderr
    assert match in result.stderr, result.stderr
    after = {p: open(p, "rb").read() for p in glob.glob(os.path.join(cwd, "runs", "**"), recursive=True)
             if os.path.isfile(p)}  # fmt: skip
    assert after == before  # nothing overwritten, nothing added


@pytest.fixture
def finished(legs, tmp_path):
    """A copy of the MPE resumed run (2 iterations done) in tmp_path: (cwd, run dir relative to it)."""
    _, resumed, _, _ = legs("magpo_mpe")
    shutil.copytree(resumed, tmp_path / "runs" / os.path.basename(resumed))
    return tmp_path, os.path.join("runs", os.path.basename(resumed))


def edit_checkpoint(cwd, run_dir, **fields):
    path = os.path.join(cwd, run_dir, "checkpoint.pt")
    checkpoint = torch.load(path, weights_only=False)
    checkpoint.update(fields)
    torch.save(checkpoint, path)


def test_bad_checkpoints_are_refused(finished, tmp_path):
    cwd, run_dir = finished
    longer = ["--total-timesteps", "512"]
    refused("magpo_mpe.py", ["--resume", "runs/nothing_here", *longer], cwd, "there is no checkpoint")
    refused("magpo_mpe.py", ["--resume", run_dir], cwd, "has done all its 2 iterations (256 steps)")
    refused(
        "magpo_mpe.py", ["--resume", run_dir, *longer, "--seed", "6"], cwd, "--seed 6 differs from the resumed run's 5"
    )
    refused("mappo_baseline.py", ["--resume", run_dir, *longer], cwd, "written by magpo_mpe.py, not mappo_baseline.py")
    edit_checkpoint(cwd, run_dir, task="simple_spread_5ag")
    refused("magpo_mpe.py", ["--resume", run_dir, *longer], cwd, "is for task simple_spread_5ag, not simple_spread_3ag")
    edit_checkpoint(cwd, run_dir, task="simple_spread_3ag", format_version=0)
    refused(
        "magpo_mpe.py", ["--resume", run_dir, *longer], cwd, "has format version 0; this magpo_mpe.py reads version 1"
    )
    path = os.path.join(cwd, run_dir, "checkpoint.pt")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    refused("magpo_mpe.py", ["--resume", run_dir, *longer], cwd, "is truncated or not a checkpoint")


def test_given_flags_reads_every_spelling():
    argv = ["--num-envs=8", "--seed", "3", "--no-cuda", "--resume", "runs/x", "--total_timesteps", "9", "pos"]
    assert magpo_mpe.given_flags(argv) == {"num_envs", "seed", "cuda", "resume", "total_timesteps"}


def test_checkpoint_write_is_atomic(tmp_path):
    """A write that fails half-way leaves the previous checkpoint whole and no temporary file."""

    class Writer:
        flushed = 0

        def flush(self):
            self.flushed += 1

    path, writer = str(tmp_path / "checkpoint.pt"), Writer()
    magpo_mpe.save_checkpoint(path, {"a": torch.ones(3)}, writer)
    with pytest.raises(Exception):
        magpo_mpe.save_checkpoint(path, {"a": torch.zeros(3), "bad": lambda: None}, writer)  # lambdas do not pickle
    assert torch.equal(torch.load(path)["a"], torch.ones(3))
    assert os.listdir(tmp_path) == ["checkpoint.pt"] and writer.flushed == 2
