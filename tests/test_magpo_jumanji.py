"""magpo_jumanji.py's defaults: every one of the paper's 26 jumanji tasks has its tuned MAGPO row in
utils/paper_params.csv (the official params.csv), the row becomes the run's defaults, and a flag given on the command line
wins over it. (The script's runs are tests/test_scripts.py's and tests/test_resume.py's cases.)"""

import dataclasses
import subprocess
import sys
from typing import get_args

import pytest
import tyro
from helpers import REPO

import magpo_jumanji
from utils.jumanji import ENV_NAMES, TASKS, family_of
from utils.protocol import read_rows

ALL_TASKS = [(env, scenario) for env, tasks in TASKS.items() for scenario in tasks]


def rows():
    """The MAGPO rows of the jumanji families in the official table."""
    return [row for (system, _), row in read_rows().items() if system == "magpo" and row["env_name"] in ENV_NAMES]


def test_the_table_has_one_magpo_row_per_paper_task():
    table = rows()
    assert sorted(row["task"] for row in table) == sorted(scenario for _, scenario in ALL_TASKS)
    for row in table:
        assert row["system_name"] == "magpo" and row["env_name"] == family_of(row["task"]), row
        assert (row["num_envs"], row["num_updates"]) == ("64", "1220"), row  # the paper's protocol, every task


@pytest.mark.parametrize("env, scenario", ALL_TASKS, ids=[s for _, s in ALL_TASKS])
def test_every_task_gets_its_row(env, scenario):
    defaults = magpo_jumanji.paper_defaults(scenario)
    assert set(defaults) == set(magpo_jumanji.PAPER_COLUMNS)
    types = {f.name: get_args(f.type)[0] for f in dataclasses.fields(magpo_jumanji.Args) if f.name in defaults}
    assert all(type(value) is types[name] for name, value in defaults.items()), defaults
    args = magpo_jumanji.Args(env=env, scenario=scenario)
    magpo_jumanji.apply_paper_defaults(args, given=set())
    magpo_jumanji.validate_args(args)  # every row is a valid configuration
    assert all(getattr(args, name) == value for name, value in defaults.items())
    assert defaults["delta"] > 1.0 and defaults["num_envs"] % defaults["num_minibatches"] == 0


def test_spot_checks_against_the_official_table():
    """Two rows read by hand in the official experiment_data/params.csv (lines 88 and 94)."""
    assert magpo_jumanji.paper_defaults("8x8-2p-2f-coop") == dict(
        num_minibatches=4, update_epochs=15, clip_coef=0.2, ent_coef=0.001, max_grad_norm=10.0,
        learning_rate=0.00025, alpha=2.0, delta=1.5, num_envs=64,
    )  # fmt: skip
    assert magpo_jumanji.paper_defaults("xlarge-4ag-hard") == dict(
        num_minibatches=8, update_epochs=5, clip_coef=0.1, ent_coef=0.001, max_grad_norm=0.5,
        learning_rate=0.0001, alpha=2.0, delta=4.0, num_envs=64,
    )  # fmt: skip


def test_the_dataclass_defaults_are_the_default_tasks_row():
    """The dataclass holds the default task's row (RWARE tiny-2ag), and `--help` says that every row field's
    default is the chosen task's row rather than showing tiny-2ag's values as everyone's."""
    args = magpo_jumanji.Args()
    assert (args.env, args.scenario) == ("rware", None)
    for name, value in magpo_jumanji.paper_defaults("tiny-2ag").items():
        assert getattr(args, name) == value, name
    result = subprocess.run([sys.executable, "magpo_jumanji.py", "--help"], cwd=REPO, capture_output=True, text=True)
    text = " ".join(result.stdout.replace("│", " ").split())  # the help box's text, unwrapped
    for name in magpo_jumanji.PAPER_COLUMNS:
        flag = "--" + name.replace("_", "-")
        entry = text.split(f" {flag} ", 1)[1]
        assert entry[entry.index("(default:") :].startswith("(default: the --scenario's tuned MAGPO row"), flag
    assert "(default: 0.001)" not in text  # tiny-2ag's learning rate, no longer shown as everyone's default


def parse(argv):
    """What the script does with a command line before validating it (no resume)."""
    args = tyro.cli(magpo_jumanji.Args, args=argv)
    magpo_jumanji.apply_paper_defaults(args, magpo_jumanji.given_flags(argv))
    return args


def test_flags_win_over_the_row():
    row = magpo_jumanji.paper_defaults("15x15-4p-5f")  # 1 minibatch x 15 epochs, lr 2.5e-4, delta 1.5
    args = parse(["--env", "lbf", "--scenario", "15x15-4p-5f", "--learning-rate", "0.003", "--update-epochs=2"])
    assert (args.learning_rate, args.update_epochs) == (0.003, 2)
    for name in set(row) - {"learning_rate", "update_epochs"}:
        assert getattr(args, name) == row[name], name
    # a flag given at the class default's value (tiny-2ag's alpha 2) still wins over the row's (alpha 4)
    args = parse(["--env", "lbf", "--scenario", "15x15-4p-5f", "--alpha", "2.0"])
    assert args.alpha == 2.0 and row["alpha"] == 4.0


def test_scenario_defaults_to_the_familys_first_task_and_is_checked():
    assert parse(["--env", "connector"]).scenario == "con-5x5x3a"
    assert parse([]).scenario == "tiny-2ag"
    with pytest.raises(ValueError, match="unknown lbf task 'tiny-2ag'"):
        parse(["--env", "lbf", "--scenario", "tiny-2ag"])
    assert {row["env_name"] for row in rows()} == set(ENV_NAMES)
