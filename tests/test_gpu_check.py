"""benchmarks/gpu_check.py without a GPU: `--device cpu --quick` end to end on two configurations (its check then
compares two CPU runs, one of them through the launcher that draws the random numbers on the CPU, and they must
be equal), bad input, the launcher's patch itself (on the CPU and on torch's `meta` device), the verdict of the
comparison, and that the training scripts draw no random numbers the patch misses.

Times on the 2-core box: the end-to-end test 21 s (32 s with another session's tests running beside it; 8 tiny
training runs, 2 at a time, nearly all of it imports), the failed-run test ~5 s (3 runs that stop at their flag
check), `--device cuda` ~2 s (it imports torch), the rest under 0.5 s each."""

import ast
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import gpu_check  # noqa: E402

SCRIPT = os.path.join(REPO, "benchmarks", "gpu_check.py")
TRAINING_SCRIPTS = sorted({script for script, _ in gpu_check.CONFIGS.values()})


def gpu_check_cli(*args, cwd):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def table_rows(text, heading):
    """The cells of each row of the Markdown table under the `## ` heading that starts with `heading`."""
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no header row
    return [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows if not row.startswith("|---")]


@pytest.mark.slow  # 4 training runs end to end, ~15 s on 2 cores (one configuration: each runs the same code)
def test_quick_cpu_run_reports_equal_checks_and_throughput(tmp_path):
    out = tmp_path / "plots" / "gpu_check.md"
    args = ["--device", "cpu", "--quick", "--scripts", "mappo_mpe", "--envs-list", "4", "8"]
    result = gpu_check_cli(*args, "--jobs", "2", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    text = out.read_text()
    assert text in result.stdout
    assert f"torch {torch.__version__}" in text and "device: cpu" in text
    assert f"`python {SCRIPT} {' '.join(args)} --jobs 2 --out {out}`" in text

    checks = table_rows(text, "Check")
    assert [row[0].split()[0] for row in checks] == ["mappo_mpe"]
    for name, check, cpu_wall, second_wall in checks:
        assert re.fullmatch(r"equal: all \d+ points equal", check), (name, check)
        assert float(cpu_wall) > 0 and float(second_wall) > 0

    throughput = table_rows(text, "Throughput")
    assert [row[:2] for row in throughput] == [["mappo_mpe", "cpu"]]
    for row in throughput:
        assert len(row) == 4 and all(float(value.replace(",", "")) > 0 for value in row[2:]), row


def test_a_failed_run_is_reported_with_its_exit_code_and_last_stderr_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(gpu_check.CONFIGS, "magpo_broken", ("magpo_mpe.py", ["--delta", "0.5"]))  # rejected at once
    out = tmp_path / "out.md"
    args = gpu_check.Args(device="cpu", scripts=("magpo_broken",), envs_list=(4,), jobs=2, out=str(out), quick=True)
    assert gpu_check.main(args) == 1
    error = "exit 1: error: --delta must be > 1 (the band is [1/delta, delta]), got 0.5"
    (check,) = table_rows(out.read_text(), "Check")
    assert check[1] == f"CPU run failed ({error}); 2nd CPU run failed ({error})"
    assert table_rows(out.read_text(), "Throughput") == [["magpo_broken", "cpu", f"failed ({error})"]]
    assert "3 run(s) failed, 0 check(s) not equal" in capsys.readouterr().err


def test_cuda_without_a_gpu_is_one_error_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = gpu_check_cli("--out", str(tmp_path / "out.md"), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        "error: --device cuda: torch sees no CUDA device; use --device cpu to check the script itself\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scripts", "magpo_mpe", "magpo_mpe.py"], "error: --scripts: unknown configuration magpo_mpe.py; choose"),
        (["--envs-list", "6"], "error: --envs-list 6: not a multiple of --num-minibatches 4"),
        (["--device", "tpu"], "error: --device must be cuda or cpu, got 'tpu'"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, args, message):
    result = gpu_check_cli("--device", "cpu", *args, "--out", str(tmp_path / "out.md"), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert os.listdir(tmp_path) == []


def test_cpu_draws_are_unchanged_on_the_cpu_and_move_to_another_device():
    def draws(device):
        torch.manual_seed(3)
        probs = torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
        return (torch.randn_like(torch.zeros(4, 2, device=device)), torch.rand(2, 3, device=device),
                torch.rand(5), torch.multinomial(probs, 1))  # fmt: skip

    expected, state = draws("cpu"), torch.get_rng_state()
    originals = torch.randn_like, torch.rand, torch.multinomial
    with gpu_check.random_numbers_from_the_cpu():
        same = draws("cpu")
        assert torch.equal(torch.get_rng_state(), state)
        # meta, like cuda, is another device: the draws land there and use up the CPU generator as on the CPU
        torch.manual_seed(3)
        moved = torch.randn_like(torch.zeros(4, 2, device="meta")), torch.rand(2, 3, device="meta")
        torch.rand(5), torch.multinomial(torch.tensor([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]]), 1)
        assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(expected, same))
    assert [(t.device.type, t.shape) for t in moved] == [("meta", (4, 2)), ("meta", (2, 3))]
    assert (torch.randn_like, torch.rand, torch.multinomial) == originals


@pytest.mark.parametrize("script", TRAINING_SCRIPTS)
def test_the_patch_covers_every_random_draw_of_the_training_scripts(script):
    """A torch draw outside gpu_check.DRAWS would come from the CUDA generator in a `--cuda` run, and the check
    would find the runs apart for that reason alone."""
    # torch.<name>(...), and <tensor or distribution>.<name>(...)
    functions = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "multinomial",
                 "bernoulli", "normal", "poisson", "dropout"}  # fmt: skip
    methods = {"uniform_", "normal_", "bernoulli_", "exponential_", "geometric_", "cauchy_", "log_normal_",
               "random_", "sample", "rsample", "multinomial", "bernoulli"}  # fmt: skip
    found = set()
    for node in ast.walk(ast.parse(open(os.path.join(REPO, script)).read())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            on_torch = isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
            if ast.unparse(node.func.value) == "torch.nn.init":  # initialisers: run on the CPU when a network is built
                continue
            if (on_torch and node.func.attr in functions) or (not on_torch and node.func.attr in methods):
                found.add(node.func.attr)
    assert "multinomial" in found and found <= set(gpu_check.DRAWS), found


def test_the_verdict():
    def run(value_loss_first=1.0, value_loss_second=2.0, extra=()):
        tags = {"losses/value_loss": [(128, 0.0, value_loss_first), (256, 0.0, value_loss_second)],
                "losses/approx_kl": [(128, 0.0, 2e-4), (256, 0.0, 1e-4)],
                "eval/learner_return": [(0, 0.0, -20.0), (256, 0.0, float("nan"))],
                "charts/SPS": [(128, 0.0, 100.0), (256, 1.0, 5.0)]}  # fmt: skip
        return tags | {tag: [(128, 0.0, 0.0)] for tag in extra}

    cpu = run()
    assert gpu_check.compare(cpu, run(), exact=True) == (True, "equal: all 6 points equal")  # NaN = NaN, SPS ignored
    ok, text = gpu_check.compare(cpu, run(value_loss_first=1.0001), exact=True)
    assert not ok and text.startswith("NOT equal: 1 points differ, max rel diff 1.0e-04")
    ok, text = gpu_check.compare(cpu, run(value_loss_first=1.005, value_loss_second=3.0), exact=False)
    assert ok and text.startswith("close: first update's losses max rel diff 5.0e-03 (losses/value_loss); max rel")
    assert text.endswith("(losses/value_loss @ 256)")  # the second update is reported, not judged
    assert not gpu_check.compare(cpu, run(value_loss_first=1.02), exact=False)[0]
    ok, text = gpu_check.compare(cpu, run(extra=["losses/new"]), exact=False)
    assert not ok and text == "NOT comparable: tags logged by one run only: losses/new"
