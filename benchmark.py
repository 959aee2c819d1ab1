"""Run a grid of training runs (scripts x tasks x seeds) on Ray: a local Ray instance, or an existing cluster.

    python benchmark.py --grid paper-coordsum                  # docs/reproduction.md's C2, C3 and C4 runs
    python benchmark.py --grid c4-3x10                         # one section of it (see GRIDS)
    python benchmark.py --grid paper-all --extra="--total-timesteps 20000000"
    python benchmark.py --scripts magpo_coordsum.py "mappo_baseline.py --env coordsum" \\
        --task-flag scenario --tasks 3x10 5x20 --seeds 1 2 3 --extra="--total-timesteps 1000000"
    python benchmark.py --grid paper-coordsum --dry-run        # the commands, one per line (e.g. for SLURM)
    python benchmark.py --grid paper-all --address auto        # on a running Ray cluster (or ray://<head>:10001)

Every run is `python <script> <script's flags> --<task flag> <task> --seed <seed> <extra> --torch-threads 1`
(`--torch-threads 1` unless the flags name it), as `--dry-run` prints it; a later flag overrides an earlier
one, so `--extra` can change a grid's budget. Each run is one Ray task holding one CPU (as many as its
`--torch-threads`), and one GPU as well if its command ends up with `--cuda`. Locally, Ray gets the machine's
cores (`--workers`), so that many runs go at once. On a cluster (`--address`), Ray ships this repository to
the nodes (its runtime_env `working_dir`), each run happens in a temporary folder there, and its run
directory and log come back here as an archive, so the nodes need the project's packages but no shared disk.

What it writes, relative to the current directory (as the scripts write their `runs/` there):
  runs/<task>__<exp_name>__<seed>__<unix time>   a finished run, as if its command had been run here
  runs/benchmark/<key>/                          one run's record: command.txt, log.txt (stdout and stderr),
                                                 result.json once it ended, and under runs/ its run directory
                                                 while it runs (moved up when it succeeds, kept if it fails)
  <plot-dir>/<name>/                             plot.py's curves, final.md and marl_eval.json, per section

A run is known by its command: key = `<script>__seed<seed>__<hash of the command>`. It is *done* when its
result.json records exit code 0 and the run directory named there still exists. result.json is written
only after the script exited 0, which the scripts do only after logging the final `eval/absolute_*` tag and
closing their writer; runs/ itself only ever receives finished runs. A done run is skipped. An interrupted local run (its record has no result.json and
holds one run directory with a checkpoint.pt, from the same command) continues from its last checkpoint with
the scripts' `--resume` (docs/usage.md, "Long runs"). Any other (never run, failed, interrupted before its first
checkpoint, or interrupted on a cluster, whose nodes keep nothing) is started afresh, its record wiped.
Runs made by hand, outside benchmark.py, are not known to it and are run again.

A failed run (non-zero exit, or a Ray error) is reported with its exit code and the last line of its log;
the others go on, and benchmark.py exits 1 at the end. Each section of the grid is plotted from its own
finished runs only (symlinked into a temporary folder for plot.py's --runs), so sections that share exp_names but
differ in budget (the 1M and 5M runs of docs/reproduction.md) never mix.
"""

import glob
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field

import tyro

from utils import check_requirements
from utils.smax import PAPER_MAPS  # the list only: importing utils.smax imports no JAX

REPO = os.path.dirname(os.path.abspath(__file__))
STATE_DIR = os.path.join("runs", "benchmark")


@dataclass
class Args:
    scripts: tuple[str, ...] = ()
    """training scripts to run, each optionally with its own flags in one quoted string
    (`magpo_coordsum.py "mappo_baseline.py --env coordsum --ippo"`); or use `--grid`"""
    task_flag: str | None = None
    """the flag that picks the task, without its dashes: `scenario` (CoordSum), `num-agents` (MPE),
    `map-name` (SMAX)"""
    tasks: tuple[str, ...] = ()
    """values of `--task-flag`, one set of runs each (`--tasks 3x10 5x20`); none: the scripts' default task"""
    grid: str | None = None
    """a named grid or one of its sections, alone (listed above; their commands: GRIDS in benchmark.py)"""
    seeds: tuple[int, ...] | None = None
    """seeds of every run; default: the grid's own, or 1 2 3 with `--scripts`"""
    extra: str = ""
    """flags added to every command, after the grid's; write it with `=`: `--extra="--total-timesteps 100000"`"""
    dry_run: bool = False
    """print the expanded commands, one per line, and run nothing"""
    address: str | None = None
    """an existing Ray cluster to run on: `auto` (the one this machine belongs to) or `ray://<head>:10001`;
    default: a new local Ray instance"""
    workers: int = 0
    """CPUs of the local Ray instance, i.e. runs at once (one CPU each); 0: all of this machine's cores"""
    plot: bool = True
    """at the end, call plot.py on each section's finished runs (`--no-plot` to skip)"""
    plot_dir: str = "plots"
    """where plot.py's output goes, one folder per plot of a section (the docs' `plots/c2`, ...)"""


# ---------------------------------------------------------------------------------------------------------
# The named grids: grid -> section -> what to run. A section is `scripts` (each with its own flags) x
# `tasks` (values of `task_flag`) x `seeds`, each command followed by `extra`; `plots` maps an output
# folder (under --plot-dir) to plot.py's flags. A command that two sections share runs once.
B1M = "--total-timesteps 1000000 --eval-interval 100000"  # docs/reproduction.md's $B of the 1M sections
B5M = "--total-timesteps 5000000 --eval-interval 250000"  # and of the 5M ones
PAPER_5X20 = (  # docs/reproduction.md's $P: the paper's whole 5x20 row
    "--scenario 5x20 --alpha 4 --learning-rate 5e-4 --num-minibatches 8 --update-epochs 15 --clip-coef 0.2 "
    "--ent-coef 0.01 --max-grad-norm 0.5"
)
CTDS = "magpo_coordsum.py --delta inf --alpha 0 --exp-name ctds_coordsum"
COORDSUM_BASELINES = ["mappo_baseline.py --env coordsum", "mappo_baseline.py --env coordsum --ippo"]
GUIDER = "--metric eval/guider_return"
GAP = "--metric eval/guider_return --subtract eval/learner_return"
SMAX_MAPS = list(PAPER_MAPS)
B2M = "--total-timesteps 2000000 --eval-interval 100000 --save-model"  # the c2-protocol study's budget
C2_SCRIPTS = [  # the study's three methods on CoordSum 3x10 and their exp_name stems
    ("magpo_coordsum.py", "magpo_coordsum"),
    ("mappo_baseline.py --env coordsum", "mappo_baseline"),
    ("mappo_baseline.py --env coordsum --ippo", "ippo_baseline"),
]

GRIDS = {
    # docs/reproduction.md, section by section: its commands, exp_names, seeds and plot.py calls
    "paper-coordsum": {
        "c2-c3-1m": dict(  # C2 and C3 on 3x10, 1M steps: MAGPO (delta 1.3, alpha 2), CTDS, MAPPO, IPPO
            scripts=["magpo_coordsum.py", CTDS, *COORDSUM_BASELINES],
            seeds=[1, 2, 3],
            extra=B1M,
            plots={"c2": "", "c2_guider": GUIDER, "c2_gap": GAP},
        ),
        "c2-5m": dict(  # C2 at 5M steps: MAGPO, MAPPO, IPPO
            scripts=["magpo_coordsum.py", *COORDSUM_BASELINES],
            seeds=[1, 2, 3],
            extra=B5M,
            plots={"c2_5m": "", "c2_5m_gap": GAP},
        ),
        "c3-5m": dict(  # C3 at 5M steps: CTDS against c2-5m's MAGPO runs
            scripts=["magpo_coordsum.py", CTDS],
            seeds=[1, 2, 3],
            extra=B5M,
            plots={"c3_5m": "", "c3_5m_guider": GUIDER, "c3_5m_gap": GAP},
        ),
        "c4-3x10": dict(  # C4 and C11 on 3x10: delta 1.1, 3 and inf beside c2-c3-1m's delta 1.3
            scripts=["magpo_coordsum.py"]
            + [f"magpo_coordsum.py --delta {d} --exp-name magpo_delta{d}" for d in ["1.1", "3", "inf"]],
            seeds=[1, 2, 3],
            extra=B1M,
            plots={"delta": "", "delta_guider": GUIDER, "delta_gap": GAP},
        ),
        "c4-5x20": dict(  # C4 and C11 on 5x20 with the script's 4 x 5 updates
            scripts=[
                f"magpo_coordsum.py --scenario 5x20 --alpha 4 --delta {d} --exp-name magpo_delta{d}"
                for d in ["1.1", "1.5", "3", "inf"]
            ],
            seeds=[1, 2],
            extra=B1M,
            plots={"c4": "", "c4_gap": GAP},
        ),
        "c4-5x20-paper": dict(  # C4 and C11 on 5x20 with the paper's 8 x 15 updates
            scripts=[
                f"magpo_coordsum.py --delta {d} --exp-name magpo_paper_delta{d} {PAPER_5X20}"
                for d in ["1.1", "1.5", "3", "inf"]
            ],
            seeds=[1, 2, 3],
            extra=B1M,
            plots={
                "c4_paper": "",
                "c4_paper_guider": GUIDER,
                "c4_paper_gap": GAP,
                "c4_paper_kl": "--metric magpo/kl_guider_learner",
                "c4_paper_band": "--metric magpo/out_of_band_frac",
            },
        ),
    },
    # docs/reproduction.md, "C2 under the paper's protocol": which protocol difference explains C2 on 3x10
    # (E0 today's defaults, E1 + the official raw input, E2 --protocol paper, E3 MAGPO's official agent order
    # alone), and the same two protocols on simple_spread; every run saves its model for greedy scoring
    "c2-protocol": {
        "e1-raw-2m": dict(
            scripts=[f"{script} --coordsum-obs raw --exp-name {name}_raw" for script, name in C2_SCRIPTS],
            seeds=[1, 2, 3],
            extra=B2M,
            plots={"e1_raw": ""},
        ),
        "e3-order-2m": dict(
            scripts=["magpo_coordsum.py --agent-order official --exp-name magpo_coordsum_order"],
            seeds=[1, 2, 3],
            extra=B2M,
            plots={"e3_order": ""},
        ),
        "e2-paper-2m": dict(
            # --guider mat-gru: these runs were made before --protocol paper selected the Sable guider
            scripts=[
                f"{script} --protocol paper --exp-name {name}_paper" + (" --guider mat-gru" if "magpo" in name else "")
                for script, name in C2_SCRIPTS
            ],
            seeds=[1, 2, 3],
            extra=B2M,
            plots={"e2_paper": ""},
        ),
        "mpe-default-1m": dict(
            scripts=["magpo_mpe.py", "mappo_baseline.py --env mpe", "mappo_baseline.py --env mpe --ippo"],
            seeds=[1, 2, 3],
            extra=B1M + " --save-model",
            plots={"mpe_default": ""},
        ),
        "mpe-paper-1m": dict(
            scripts=[
                "magpo_mpe.py --protocol paper --exp-name magpo_mpe_paper --guider mat-gru",  # made before Sable
                "mappo_baseline.py --env mpe --protocol paper --exp-name mappo_baseline_paper",
                "mappo_baseline.py --env mpe --ippo --protocol paper --exp-name ippo_baseline_paper",
            ],
            seeds=[1, 2, 3],
            extra=B1M + " --save-model",
            plots={"mpe_paper": ""},
        ),
        # last: E0 is the same-budget control the issue does not ask for; the first 2M steps of the c2-5m runs
        # (same flags, no learning-rate annealing) already give its curves to within seed noise
        "e0-default-2m": dict(
            scripts=[script for script, _ in C2_SCRIPTS],
            seeds=[1, 2, 3],
            extra=B2M,
            plots={"e0_default": ""},
        ),
    },
    # docs/results.md's jumanji comparison (issue 17): MAGPO, MAPPO and IPPO on one LBF task and RWARE tiny-2ag,
    # MAGPO at each task's tuned row, the baselines at their defaults, models saved; LBF 2M steps, RWARE 1M (what
    # one session's two cores afford; a run continues to more steps with --resume RUN --total-timesteps N)
    "jumanji-results": {
        f"jumanji-{env}": dict(
            scripts=[
                f"magpo_jumanji.py --env {env}",
                f"mappo_baseline.py --env {env}",
                f"mappo_baseline.py --env {env} --ippo",
            ],
            task_flag="scenario",
            tasks=[task],
            seeds=[1, 2, 3],
            extra=budget,
            plots={f"jumanji_{env}": ""},
        )
        for env, task, budget in [
            ("lbf", "2s-8x8-2p-2f-coop", B2M),
            ("rware", "tiny-2ag", B1M + " --save-model"),
        ]
    },
    # docs/results.md's HAPPO rows: happo_baseline.py at its defaults (mappo_baseline.py's) at the budgets of the
    # MAPPO runs it is set beside (c2-c3-1m on CoordSum 3x10, jumanji-lbf on LBF), seeds 1-3
    "happo-results": {
        "happo-coordsum": dict(
            scripts=["happo_baseline.py --env coordsum"], seeds=[1, 2, 3], extra=B1M, plots={"happo_coordsum": ""}
        ),
        "happo-lbf": dict(
            scripts=["happo_baseline.py --env lbf"],
            task_flag="scenario",
            tasks=["2s-8x8-2p-2f-coop"],
            seeds=[1, 2, 3],
            extra=B2M,
            plots={"happo_lbf": ""},
        ),
    },
    # docs/results.md's MAT, Sable and MAGPO-with-Sable rows (issue 33): ctce_baseline.py at its defaults
    # (mappo_baseline.py's) and MAGPO at its defaults with the Sable guider (64 wide, 1 block, 1 head, decay 0.8),
    # at the budgets of the MAPPO runs they are set beside (c2-c3-1m on CoordSum 3x10, jumanji-lbf on LBF), seeds 1-3
    "ctce-results": {
        "ctce-coordsum": dict(
            scripts=[
                "ctce_baseline.py --env coordsum --arch mat",
                "ctce_baseline.py --env coordsum --arch sable",
                "magpo_coordsum.py --guider sable --exp-name magpo_sable_coordsum",
            ],
            seeds=[1, 2, 3],
            extra=B1M,
            plots={"ctce_coordsum": ""},
        ),
        "ctce-lbf": dict(
            scripts=[
                "ctce_baseline.py --env lbf --arch mat",
                "ctce_baseline.py --env lbf --arch sable",
                "magpo_jumanji.py --env lbf --guider sable --exp-name magpo_sable_jumanji",
            ],
            task_flag="scenario",
            tasks=["2s-8x8-2p-2f-coop"],
            seeds=[1, 2, 3],
            extra=B2M,
            plots={"ctce_lbf": ""},
        ),
    },
    # the teaching kit's Part D data (issue 35): docs/reproduction.md's C3 (MAGPO vs CTDS) and C4 (the delta sweep) on
    # 3x10 at 1M steps, run again and committed as marl-eval JSON (docs/data/teaching/) so that a student redraws them
    "teaching-data": {
        "teaching-coordsum": dict(
            scripts=["magpo_coordsum.py", CTDS]
            + [f"magpo_coordsum.py --delta {d} --exp-name magpo_delta{d}" for d in ["1.1", "3", "inf"]],
            seeds=[1, 2, 3],
            extra=B1M,
            plots={"teaching": "", "teaching_guider": GUIDER, "teaching_gap": GAP},
        ),
    },
    # the paper's guider-choice ablation (its Figure 4a): MAGPO with the MAT and with the Sable guider, each at the
    # task's MAGPO row (--protocol paper; the paper gives no MAT-guider size, so both get the row's), on
    # simple_spread with 10 agents and RWARE large-8ag. GPU-scale: 20M steps each
    "guider-ablation": {
        "ablation-mpe10": dict(
            scripts=[
                "magpo_mpe.py --protocol paper --guider sable --exp-name magpo_mpe_sable_paper",
                "magpo_mpe.py --protocol paper --guider mat --exp-name magpo_mpe_mat_paper",
            ],
            task_flag="num-agents",
            tasks=["10"],
            seeds=list(range(1, 11)),
            extra="",
            plots={"ablation_mpe10": ""},
        ),
        "ablation-rware": dict(
            scripts=[
                "magpo_jumanji.py --env rware --protocol paper --guider sable --exp-name magpo_jumanji_sable_paper",
                "magpo_jumanji.py --env rware --protocol paper --guider mat --exp-name magpo_jumanji_mat_paper",
            ],
            task_flag="scenario",
            tasks=["large-8ag"],
            seeds=list(range(1, 11)),
            extra="",
            plots={"ablation_rware": ""},
        ),
    },
    # every task the repository supports, MAGPO against MAPPO and IPPO, on the MAGPO script's defaults
    # (budget made explicit so the baselines get the same); the paper's per-map SMAX rows are not here
    "paper-all": {
        "all-mpe": dict(
            scripts=["magpo_mpe.py", "mappo_baseline.py --env mpe", "mappo_baseline.py --env mpe --ippo"],
            task_flag="num-agents",
            tasks=["3", "5", "10"],
            seeds=[1, 2, 3],
            extra="--total-timesteps 2000000 --eval-interval 100000",
            plots={"paper_all_mpe": ""},
        ),
        "all-smax": dict(
            scripts=["magpo_smax.py", "mappo_baseline.py --env smax", "mappo_baseline.py --env smax --ippo"],
            task_flag="map-name",
            tasks=SMAX_MAPS,
            seeds=[1, 2, 3],
            extra="--total-timesteps 5000000 --eval-interval 100000",
            plots={"paper_all_smax": "--metric eval/win_rate", "paper_all_smax_return": ""},
        ),
        "all-coordsum": dict(
            scripts=["magpo_coordsum.py", *COORDSUM_BASELINES],
            task_flag="scenario",
            tasks=["3x10", "3x30", "5x20", "8x15"],
            seeds=[1, 2, 3],
            extra=B5M,
            plots={"paper_all_coordsum": ""},
        ),
    },
}


# One line per grid for `--help`, which lists the grids and their sections (a grid without a line here fails
# every call of benchmark.py, so the list cannot fall behind GRIDS).
GRID_DESCRIPTIONS = {
    "paper-coordsum": "docs/reproduction.md's C2, C3 and C4 runs on CoordSum 3x10 and 5x20, at 1M and 5M steps",
    "c2-protocol": "docs/reproduction.md's \"C2 under the paper's protocol\": 3x10 and simple_spread, 1-2M steps",
    "jumanji-results": "docs/results.md's jumanji comparison: LBF 2s-8x8-2p-2f-coop (2M) and RWARE tiny-2ag (1M)",
    "happo-results": "docs/results.md's HAPPO runs: CoordSum 3x10 (1M) and LBF 2s-8x8-2p-2f-coop (2M), seeds 1-3",
    "ctce-results": "docs/results.md's MAT, Sable and MAGPO (Sable guider) runs: CoordSum 3x10 (1M), LBF (2M), seeds 1-3",
    "teaching-data": "the teaching kit's Part D data: MAGPO, CTDS and the delta sweep on CoordSum 3x10 (1M), seeds 1-3",
    "guider-ablation": "the paper's Figure 4a: MAGPO with the MAT vs the Sable guider, simple_spread 10ag and RWARE large-8ag",
    "paper-all": "every supported MPE, SMAX and CoordSum task, MAGPO against MAPPO and IPPO, on MAGPO's defaults",
}


def grids_help() -> str:
    """`--help`'s description: what benchmark.py does and every named grid, with its sections."""
    lines = [
        "Run a grid of training runs (scripts x tasks x seeds) on Ray; `--dry-run` prints its commands.",
        "",
        "Named grids for --grid (a section name runs that section alone):",
    ]
    width = max(map(len, GRIDS)) + 3
    for grid, sections in GRIDS.items():
        lines.append(f"  {grid:<{width}}{GRID_DESCRIPTIONS[grid]}")
        lines.append(f"  {'':<{width}}sections: {', '.join(sections)}")
    return "\n".join(lines)


class InputError(ValueError):
    """Bad input: reported as one `error: ...` line."""


@dataclass
class Run:
    command: list[str]
    """the script (relative to the repository when it is inside it) and its flags, as `--dry-run` prints them"""
    script_path: str
    """the script's absolute path here"""
    seed: int
    sections: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "python " + shlex.join(self.command)

    @property
    def key(self) -> str:
        digest = hashlib.sha1(shlex.join(self.command).encode()).hexdigest()[:10]
        stem = os.path.splitext(os.path.basename(self.command[0]))[0]
        return f"{stem}__seed{self.seed}__{digest}"

    @property
    def cpus(self) -> int:
        return int(last_value(self.command, "--torch-threads"))

    @property
    def gpus(self) -> int:
        flags = [token for token in self.command if token in ("--cuda", "--no-cuda")]
        return int(bool(flags) and flags[-1] == "--cuda")


def last_value(command: list[str], flag: str) -> str | None:
    """The value of the last `flag VALUE` or `flag=VALUE` in `command`, else None."""
    value = None
    for i, token in enumerate(command):
        if token == flag and i + 1 < len(command):
            value = command[i + 1]
        elif token.startswith(flag + "="):
            value = token.split("=", 1)[1]
    return value


def split_flags(text: str, what: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as error:
        raise InputError(f"cannot split {what} {text!r} into words: {error}") from None


def resolve_script(script: str) -> tuple[str, str]:
    """(what the command shows, absolute path): a path relative to here, else to the repository."""
    for path in (os.path.abspath(script), os.path.join(REPO, script)):
        if os.path.isfile(path):
            inside = os.path.commonpath([path, REPO]) == REPO
            return (os.path.relpath(path, REPO) if inside else path), path
    raise InputError(f"no such script: {script!r} (looked here and in {REPO})")


def sections_of(args: Args) -> dict[str, dict]:
    """The sections to run: those of `--grid`, or one section made of `--scripts`/`--tasks`."""
    if (args.grid is None) == (not args.scripts):
        raise InputError("give either --grid NAME or --scripts SCRIPT ...")
    if args.grid is None:
        if bool(args.tasks) != (args.task_flag is not None):
            raise InputError("--tasks and --task-flag go together (e.g. --task-flag scenario --tasks 3x10 5x20)")
        return {
            "benchmark": dict(
                scripts=list(args.scripts),
                task_flag=args.task_flag,
                tasks=list(args.tasks),
                seeds=[1, 2, 3],
                extra="",
                plots={"": ""},
            )
        }
    if args.tasks or args.task_flag:
        raise InputError("--tasks and --task-flag are for --scripts; a grid names its own tasks")
    if args.grid in GRIDS:
        return GRIDS[args.grid]
    for sections in GRIDS.values():
        if args.grid in sections:
            return {args.grid: sections[args.grid]}
    names = [*GRIDS, *(section for sections in GRIDS.values() for section in sections)]
    raise InputError(f"unknown grid {args.grid!r}; choose one of: {', '.join(names)}")


def expand(args: Args) -> list[Run]:
    """Every run of the grid, in order (task, then seed, then script); a command met twice is one run."""
    if args.seeds is not None and (not args.seeds or len(set(args.seeds)) != len(args.seeds)):
        raise InputError(f"--seeds needs distinct seeds, got {list(args.seeds)}")
    extra = split_flags(args.extra, "--extra")
    runs: dict[tuple[str, ...], Run] = {}
    for name, section in sections_of(args).items():
        flag = (section.get("task_flag") or "").lstrip("-")
        for task in section.get("tasks") or [None]:
            for seed in args.seeds if args.seeds is not None else section["seeds"]:
                for entry in section["scripts"]:
                    script, *flags = split_flags(entry, "the script entry") or [""]
                    shown, path = resolve_script(script)
                    after = [*split_flags(section.get("extra", ""), "the grid's extra"), *extra]
                    if any(t == "--seed" or t.startswith("--seed=") for t in [*flags, *after]):
                        raise InputError(f"give seeds with --seeds, not as a flag: {entry} {args.extra}")
                    command = [
                        shown,
                        *flags,
                        *([f"--{flag}", task] if task is not None else []),
                        "--seed",
                        str(seed),
                        *after,
                    ]
                    threads = last_value(command, "--torch-threads")
                    if threads is None:
                        command += ["--torch-threads", "1"]
                    elif not threads.isdigit() or int(threads) < 1:
                        raise InputError(f"--torch-threads must be a whole number >= 1, got {threads!r}")
                    run = runs.setdefault(tuple(command), Run(command, path, seed))
                    run.sections.append(name)
    return list(runs.values())


# ---------------------------------------------------------------------------------------------------------
# One run, as a Ray task: it runs on a worker (here, or on a node of a cluster).
def die_with_parent():
    """A preexec_fn that has the child get SIGKILL when the Ray worker running it dies (Linux's
    PR_SET_PDEATHSIG), so no run outlives the benchmark; None elsewhere. prctl is looked up here, in the
    parent: between fork and exec the child only calls it."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def execute(command: list[str], scratch: str | None) -> dict:
    """Run `python <command>` with `scratch` as its working directory, so its run directory is the only one
    under `scratch/runs`; its output goes to `scratch/log.txt`. `scratch` None (a cluster): a temporary
    folder on the node, sent back as a tar.gz archive. Returns what `finish` needs."""
    ship = scratch is None
    scratch = tempfile.mkdtemp(prefix="magpo-benchmark-") if ship else scratch
    script = os.path.abspath(command[0])  # on a cluster, relative to the shipped repository (the cwd here)
    threads = str(last_value(command, "--torch-threads"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    start = time.time()
    with open(os.path.join(scratch, "log.txt"), "a" if "--resume" in command else "w") as log:
        exit_code = subprocess.call(
            [sys.executable, script, *command[1:]],
            cwd=scratch,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent(),
        )
    result = {"exit_code": exit_code, "wall_s": round(time.time() - start, 1), "archive": None}
    if ship:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(scratch, arcname=".")
        shutil.rmtree(scratch, ignore_errors=True)
        result["archive"] = buffer.getvalue()
    return result


# ---------------------------------------------------------------------------------------------------------
# The records in runs/benchmark/<key>/.
def key_dir(run: Run) -> str:
    return os.path.join(STATE_DIR, run.key)


def resumable(run: Run) -> str | None:
    """The run directory (relative to the record) an interrupted local run continues from, or None: the record
    has no result.json, was made by the same command, and holds one run directory, with a checkpoint.pt."""
    folder = key_dir(run)
    try:
        with open(os.path.join(folder, "command.txt")) as f:
            same_command = f.read().strip() == run.text
    except OSError:
        return None
    made = glob.glob(os.path.join(folder, "runs", "*"))
    if not same_command or os.path.exists(os.path.join(folder, "result.json")) or len(made) != 1:
        return None
    return os.path.relpath(made[0], folder) if os.path.isfile(os.path.join(made[0], "checkpoint.pt")) else None


def read_result(run: Run) -> dict | None:
    """The run's result.json if it is done (exit code 0, its run directory still there), else None."""
    try:
        with open(os.path.join(key_dir(run), "result.json")) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    return result if result.get("exit_code") == 0 and os.path.isdir(result.get("run_dir") or "") else None


def last_line(log_path: str) -> str:
    """The last line of a log with something in it (tyro's box drawing stripped), or ''."""
    try:
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        line = line.strip(" \t│╭╮╰╯─")
        if line:
            return line
    return ""


def sps_of(log_path: str) -> int | None:
    """The env-steps/s of the last iteration line (`... SPS=1650`) of a log, or None."""
    try:
        with open(log_path, errors="replace") as f:
            found = re.findall(r"\bSPS=(\d+)", f.read())
    except OSError:
        return None
    return int(found[-1]) if found else None


def free_name(name: str) -> str:
    """`name` if runs/<name> is free, else the same name with its unix time pushed on by whole seconds."""
    prefix, _, stamp = name.rpartition("__")
    if not prefix or not stamp.isdigit():
        return name
    t = int(stamp)
    while os.path.exists(os.path.join("runs", f"{prefix}__{t}")):
        t += 1
    return f"{prefix}__{t}"


def finish(run: Run, result: dict) -> dict:
    """File a finished task: unpack a cluster's archive, move a successful run's directory into runs/, and
    write result.json. Returns the record."""
    folder = key_dir(run)
    if result.get("archive"):
        with tarfile.open(fileobj=io.BytesIO(result["archive"]), mode="r:gz") as tar:
            tar.extractall(folder, filter="data")
    log = os.path.join(folder, "log.txt")
    made = sorted(os.path.basename(d) for d in glob.glob(os.path.join(folder, "runs", "*")) if os.path.isdir(d))
    record = {
        "command": run.text,
        "exit_code": result["exit_code"],
        "wall_s": result["wall_s"],
        "run_dir": None,
        "sps": sps_of(log),
        "last_line": result.get("error") or last_line(log),
    }
    if record["exit_code"] == 0 and len(made) != 1:
        record["exit_code"] = None
        record["last_line"] = f"exited 0 but left {len(made)} run directories under runs/, not 1"
    if record["exit_code"] == 0:
        record["run_dir"] = os.path.join("runs", free_name(made[0]))
        os.replace(os.path.join(folder, "runs", made[0]), record["run_dir"])
        os.rmdir(os.path.join(folder, "runs"))
    with open(os.path.join(folder, "result.json.tmp"), "w") as f:
        json.dump(record, f, indent=1)
    os.replace(os.path.join(folder, "result.json.tmp"), os.path.join(folder, "result.json"))
    return record


# ---------------------------------------------------------------------------------------------------------
# Ray: start or join it, submit the runs, report them as they end.
def start_ray(args: Args, runs: list[Run]) -> str:
    """ray.init for the local default or `--address`; returns a one-line description of what it got."""
    import logging

    try:
        check_requirements("ray", "benchmark.py")  # Ray is not in the light core install
    except ValueError as error:
        raise InputError(str(error)) from None
    import ray

    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if args.address is None:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            ray.init(address="local", num_cpus=args.workers or cores, **quiet)
        else:
            quiet.pop("include_dashboard")
            ray.init(
                address=args.address,
                runtime_env={
                    "working_dir": REPO,
                    "excludes": ["/runs/", "/plots/", "/.git/", "/.venv/", "__pycache__/"],
                },
                **quiet,
            )
    except Exception as error:  # Ray raises ConnectionError, ValueError, RuntimeError, ... here
        raise InputError(f"cannot start or reach Ray ({args.address or 'local'}): {error}".splitlines()[0]) from None
    resources = ray.cluster_resources()
    if any(run.gpus for run in runs) and resources.get("GPU", 0) < 1:
        ray.shutdown()
        raise InputError("a command has --cuda, but the Ray cluster has no GPU")
    where = "a local Ray instance" if args.address is None else f"the Ray cluster at {args.address}"
    return f"{where} with {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs"


def run_all(args: Args, runs: list[Run], records: dict[str, dict | str]) -> None:
    """Run `runs` on Ray, filing each as it ends and printing one progress line; `records[key]` becomes the
    record, and is 'running' while it runs (what the summary shows if the benchmark is interrupted)."""
    import ray

    task = ray.remote(execute)
    pending = {}
    for run in runs:
        folder, local = key_dir(run), args.address is None
        command = [run.script_path if local else os.path.relpath(run.script_path, REPO), *run.command[1:]]
        resume = resumable(run) if local else None
        if resume is None:
            shutil.rmtree(folder, ignore_errors=True)  # an earlier failure or interruption: start afresh
            os.makedirs(folder)
            with open(os.path.join(folder, "command.txt"), "w") as f:
                f.write(run.text + "\n")
        else:
            command += ["--resume", resume]
            print(f"continuing an interrupted run from its checkpoint: {run.text} --resume {resume}", flush=True)
        ref = task.options(num_cpus=run.cpus, num_gpus=run.gpus, max_retries=0).remote(
            command, os.path.abspath(folder) if local else None
        )
        pending[ref] = run
        records[run.key] = "running"
    for done in range(1, len(runs) + 1):
        ready = []
        while not ready:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        run = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as error:  # the task itself failed: a crashed worker, a lost node, ...
            message = f"{type(error).__name__}: {error}".splitlines()[0]
            result = {"exit_code": None, "wall_s": None, "archive": None, "error": message}
        record = records[run.key] = finish(run, result)
        if record["exit_code"] == 0:
            print(
                f"[{done}/{len(runs)}] done in {record['wall_s']:.0f} s, {fmt_sps(record['sps'])} env-steps/s: "
                f"{record['run_dir']}",
                flush=True,
            )
        else:
            print(
                f"[{done}/{len(runs)}] FAILED (exit code {record['exit_code']}): {run.text}\n"
                f"    last line: {record['last_line']}\n    log: {os.path.join(key_dir(run), 'log.txt')}",
                flush=True,
            )


def fmt_sps(sps: int | None) -> str:
    return "-" if sps is None else f"{sps:,}"


def summary(runs: list[Run], records: dict[str, dict | str], skipped: set[str]) -> str:
    """The table of every run (status, exit code, wall time, env-steps/s, run directory or command) and the
    counts of done, failed, skipped and running."""
    rows, counts = [], {"done": 0, "failed": 0, "skipped": 0, "running": 0}
    for run in runs:
        record = records.get(run.key)
        if record == "running" or record is None:
            status, record = "running", {}
        elif run.key in skipped:
            status = "skipped"
        else:
            status = "done" if record["exit_code"] == 0 else "failed"
        counts[status] += 1
        wall = record.get("wall_s")
        rows.append(
            (
                status,
                str(record.get("exit_code", "-")),
                "-" if wall is None else f"{wall:.0f} s",
                fmt_sps(record.get("sps")),
                record.get("run_dir") or run.text,
            )
        )
    header = ("status", "exit", "wall", "env-steps/s", "run")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(
            [*(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))), row[4]]
        )
        for row in [header, *rows]
    ]
    total = ", ".join(f"{n} {status}" for status, n in counts.items())
    return "\n".join([*lines, f"{len(runs)} runs: {total}"])


def plot_sections(args: Args, runs: list[Run], records: dict[str, dict | str]) -> bool:
    """plot.py on each section's finished runs, once per entry of its `plots`; False if any call failed."""
    ok = True
    for name, section in sections_of(args).items():
        finished = [
            records[run.key]["run_dir"]
            for run in runs
            if name in run.sections and isinstance(records.get(run.key), dict) and records[run.key]["exit_code"] == 0
        ]
        if not finished:
            print(f"section {name}: no finished run to plot")
            continue
        with tempfile.TemporaryDirectory(prefix=f"benchmark-{name}-") as links:  # outside runs/: TensorBoard
            for run_dir in finished:  # would show links twice
                os.symlink(os.path.abspath(run_dir), os.path.join(links, os.path.basename(run_dir)))
            for out, flags in section["plots"].items():
                out_dir = os.path.join(args.plot_dir, out) if out else args.plot_dir
                command = [
                    sys.executable,
                    os.path.join(REPO, "plot.py"),
                    "--runs",
                    os.path.join(links, "*"),
                    *shlex.split(flags),
                    "--out-dir",
                    out_dir,
                    "--marl-eval-json",
                    os.path.join(out_dir, "marl_eval.json"),
                ]
                print(f"\nsection {name}, {len(finished)} finished runs: plot.py {shlex.join(command[4:])}", flush=True)
                if subprocess.call(command) != 0:
                    print(f"plot.py failed for section {name} ({flags or 'default metric'})", flush=True)
                    ok = False
    return ok


def main(args: Args) -> int:
    runs = expand(args)
    if args.workers < 0:
        raise InputError(f"--workers must be >= 0, got {args.workers}")
    if args.workers and args.address:
        raise InputError("--workers sizes the local Ray instance; on a cluster (--address) its CPUs decide")
    if args.address and any(os.path.commonpath([run.script_path, REPO]) != REPO for run in runs):
        raise InputError(f"on a cluster the scripts must be inside {REPO}, which is what Ray ships to the nodes")
    if args.dry_run:
        print("\n".join(run.text for run in runs))
        return 0

    records: dict[str, dict | str] = {}
    for run in runs:
        if (record := read_result(run)) is not None:
            records[run.key] = record
    skipped = set(records)
    todo = [run for run in runs if run.key not in skipped]
    print(f"{len(runs)} runs: {len(skipped)} done before (skipped), {len(todo)} to run", flush=True)
    failed = False
    if todo:
        print(f"on {start_ray(args, todo)}", flush=True)  # an InputError if ray is missing or unreachable
        import ray

        try:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # e.g. a job scheduler's stop: as for ^C
            run_all(args, todo, records)
        except (KeyboardInterrupt, SystemExit) as stop:
            print(
                f"\ninterrupted; the runs still running are stopped; next time they continue from their last checkpoint\n"
                f"{summary(runs, records, skipped)}",
                flush=True,
            )
            return stop.code if isinstance(stop, SystemExit) and isinstance(stop.code, int) else 130
        finally:
            ray.shutdown()
        failed = any(records[run.key]["exit_code"] != 0 for run in todo)
    print("\n" + summary(runs, records, skipped), flush=True)
    if args.plot and not plot_sections(args, runs, records):
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(tyro.cli(Args, description=grids_help())))
    except InputError as error:
        sys.exit(f"error: {error}")
