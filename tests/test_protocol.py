"""`--protocol paper` (utils/protocol.py): the official params.csv table has every paper task's rows, a row
becomes the scripts' flags as documented, flags given on the command line win, and each script applies it."""

import glob
import importlib
import os
from types import SimpleNamespace

import pytest
import torch
from helpers import CASES, only_run_dir, run_case

from utils.coordsum import SCENARIOS
from utils.protocol import PPO_YAML, apply_paper_protocol, as_flags, paper_protocol, read_rows, tasks
from utils.smax import PAPER_MAPS

# The paper's 43 tasks (CoordSum, MPE and SMAX here; RWARE, LBF and Connector from the official configs)
PAPER_TASKS = {
    "coordsum": sorted(SCENARIOS),
    "mpe": ["simple_spread_3ag", "simple_spread_5ag", "simple_spread_10ag"],
    "smax": sorted(PAPER_MAPS),
    "rware": [f"{size}-{n}ag{hard}" for size, n in [("tiny", 2), ("tiny", 4), ("small", 4), ("medium", 4),
              ("large", 4), ("large", 8), ("xlarge", 4)] for hard in ("", "-hard")] + ["medium-6ag"],
    "lbf": ["2s-8x8-2p-2f-coop", "8x8-2p-2f-coop", "2s-10x10-3p-3f", "10x10-3p-3f", "15x15-3p-5f", "15x15-4p-3f",
            "15x15-4p-5f"],
    "connector": ["con-5x5x3a", "con-7x7x5a", "con-10x10x10a", "con-15x15x23a"],
}  # fmt: skip


def test_every_paper_task_has_its_rows():
    assert sum(len(names) for names in PAPER_TASKS.values()) == 43
    for env, names in PAPER_TASKS.items():
        assert tasks("magpo", env) == sorted(names), env
        assert tasks("happo", env) == sorted(names), env
    # the paper tuned its CTDE baselines itself on CoordSum only
    for system in ("mappo", "ippo"):
        assert tasks(system) == sorted(SCENARIOS)
    # every row is complete where the protocol reads it
    for (system, task), row in read_rows().items():
        if system in ("magpo", "mappo", "ippo", "happo"):
            settings, _ = paper_protocol(system, task)
            assert all(value is not None for value in settings.values()), (system, task)


def test_a_row_becomes_the_documented_flags():
    settings, note = paper_protocol("magpo", "3x10")  # params.csv line 61
    assert "magpo row for 3x10" in note and "d2ac38b" in note
    expected = dict(
        num_envs=128, num_steps=128, num_minibatches=8, update_epochs=10, learning_rate=2.5e-4, clip_coef=0.05,
        ent_coef=0.01, max_grad_norm=0.5, alpha=2.0, delta=1.3, guider="sable", guider_dim=32, guider_heads=1,
        guider_blocks=2, sable_decay=1.0, agent_order="official", norm_value=False, vf_coef=0.5, gamma=0.99, gae_lambda=0.95, anneal_lr=False,
        total_timesteps=1220 * 16384, eval_interval=10 * 16384, coordsum_obs="raw",
    )  # fmt: skip
    assert settings == expected
    settings, _ = paper_protocol("mappo", "3x10")  # line 45
    assert {k: settings[k] for k in ("num_minibatches", "update_epochs", "clip_coef", "ent_coef", "max_grad_norm")} == (
        dict(num_minibatches=8, update_epochs=8, clip_coef=0.05, ent_coef=1e-5, max_grad_norm=5.0)
    )
    assert settings["learning_rate"] == 5e-4 and settings["norm_value"] is False and "alpha" not in settings
    # no tuned row: rec_mappo.yaml's defaults, said so
    settings, note = paper_protocol("ippo", "simple_spread_3ag")
    assert "no ippo row" in note and settings["num_minibatches"] == PPO_YAML["num_minibatches"] == 2
    assert settings["num_envs"] == 128 and settings["learning_rate"] == 2.5e-4


def test_mat_and_sable_rows_and_defaults():
    """ctce_baseline.py: the MAT and Sable rows on CoordSum (params.csv lines 53-60), with the network's sizes and
    Sable's decay; elsewhere the official configs' defaults, said so."""
    settings, note = paper_protocol("mat", "3x10")  # line 53
    assert "mat row for 3x10" in note
    assert {k: settings[k] for k in ("num_minibatches", "update_epochs", "learning_rate", "clip_coef", "ent_coef",
            "max_grad_norm", "embed_dim", "num_heads", "num_blocks", "agent_order")} == dict(
        num_minibatches=1, update_epochs=5, learning_rate=2.5e-4, clip_coef=0.2, ent_coef=0.001, max_grad_norm=10.0,
        embed_dim=64, num_heads=4, num_blocks=2, agent_order="official")  # fmt: skip
    settings, _ = paper_protocol("sable", "5x20")  # line 59
    assert (settings["embed_dim"], settings["num_heads"], settings["num_blocks"], settings["sable_decay"]) == (
        128,
        4,
        3,
        0.8,
    )
    assert settings["update_epochs"] == 5 and settings["num_minibatches"] == 8 and settings["num_envs"] == 128
    settings, note = paper_protocol("sable", "2s3z")
    assert "no sable row" in note and "rec_sable.yaml" in note
    assert (settings["num_minibatches"], settings["update_epochs"], settings["learning_rate"]) == (2, 4, 2.5e-4)
    assert settings["sable_decay"] == 0.8 and settings["embed_dim"] == 64 and settings["max_grad_norm"] == 0.5
    settings, note = paper_protocol("mat", "tiny-2ag")
    assert "no mat row" in note and (settings["num_minibatches"], settings["clip_coef"]) == (1, 0.1)


def test_every_magpo_row_gives_a_valid_sable_guider():
    """--protocol paper selects the paper's guider: every MAGPO row's sizes must build a Sable (even width, head
    size divisible by the heads) with its decay in [0, 1]."""
    for task in tasks("magpo"):
        settings, _ = paper_protocol("magpo", task)
        dim, heads = settings["guider_dim"], settings["guider_heads"]
        assert settings["guider"] == "sable" and dim % 2 == 0 and dim // heads % heads == 0, task
        assert 0.0 <= settings["sable_decay"] <= 1.0, task


def test_unknown_task_or_system_is_an_error():
    with pytest.raises(ValueError, match="no MAGPO row for task 'simple_spread_4ag'"):
        paper_protocol("magpo", "simple_spread_4ag")
    with pytest.raises(ValueError, match="no HAPPO row for task 'simple_spread_4ag'"):
        paper_protocol("happo", "simple_spread_4ag")
    with pytest.raises(ValueError, match="no paper protocol for 'ctds'"):
        paper_protocol("ctds", "3x10")


def test_a_happo_row_becomes_the_documented_flags():
    """HAPPO's rows (params.csv lines 2-44): the row's schedule and chunk, the authors' scheme; line 6 is LBF
    2s-8x8-2p-2f-coop (8 minibatches, 2 epochs, lr 2.5e-4, eps 0.1, no entropy, max-grad-norm 0.5, chunk 8)."""
    settings, note = paper_protocol("happo", "2s-8x8-2p-2f-coop")
    assert "happo row for 2s-8x8-2p-2f-coop" in note
    expected = dict(
        num_envs=128, num_steps=128, num_minibatches=8, update_epochs=2, learning_rate=2.5e-4, clip_coef=0.1,
        ent_coef=0.0, max_grad_norm=0.5, recurrent_chunk_size=8, happo_scheme="official", norm_value=False,
        vf_coef=0.5, gamma=0.99, gae_lambda=0.95, anneal_lr=False, total_timesteps=1220 * 16384,
        eval_interval=10 * 16384, coordsum_obs="raw",
    )  # fmt: skip
    assert settings == expected
    # 24 of the 43 rows cut the rollout into chunks (the official code's were strided, docs/algorithm.md §15)
    # (chunk 128 is the whole rollout, 0 here)
    chunks = [paper_protocol("happo", task)[0]["recurrent_chunk_size"] for task in tasks("happo")]
    assert sum(chunk > 0 for chunk in chunks) == 24 and all(128 % chunk == 0 for chunk in chunks if chunk)


def test_given_flags_win_and_missing_fields_are_skipped():
    args = SimpleNamespace(
        exp_name="mappo_baseline",
        num_envs=4,
        clip_coef=0.2,
        learning_rate=1.0,
        norm_value=True,
        env="mpe",
        coordsum_obs="x",
    )
    note, changed = apply_paper_protocol(args, "mappo", "3x10", given={"num_envs", "learning_rate"})
    assert args.num_envs == 4 and args.learning_rate == 1.0  # given: kept
    assert args.clip_coef == 0.05 and args.norm_value is False  # from the row
    assert args.coordsum_obs == "x"  # a CoordSum flag, and this run is --env mpe
    assert not hasattr(args, "alpha") and ("clip_coef", 0.05) in changed
    assert args.exp_name == "mappo_baseline_paper" and ("exp_name", "mappo_baseline_paper") in changed


def test_the_paper_protocol_names_its_runs_unless_told():
    """Runs under --protocol paper get their own exp_name, so plot.py never pools them with default runs."""
    args = SimpleNamespace(exp_name="magpo_coordsum", num_envs=4)
    apply_paper_protocol(args, "magpo", "3x10", given=set())
    assert args.exp_name == "magpo_coordsum_paper"
    args = SimpleNamespace(exp_name="mine", num_envs=4)
    apply_paper_protocol(args, "magpo", "3x10", given={"exp_name"})
    assert args.exp_name == "mine"
    assert as_flags([("num_envs", 128), ("norm_value", False), ("anneal_lr", True)]) == (
        "--num-envs 128 --no-norm-value --anneal-lr"
    )


PROTOCOL_CASES = {
    "magpo_mpe": ("magpo", "simple_spread_3ag"),
    "magpo_coordsum": ("magpo", "3x10"),
    "magpo_smax": ("magpo", "2s3z"),
    "magpo_jumanji": ("magpo", "2s-10x10-3p-3f"),
    "mappo_coordsum": ("mappo", "3x10"),
    "happo_coordsum": ("happo", "3x10"),
    "ctce_coordsum_sable": ("sable", "3x10"),
    "ctce_mpe_mat": ("mat", "simple_spread_3ag"),
}


@pytest.mark.parametrize("name", list(PROTOCOL_CASES))
def test_each_script_applies_the_protocol(tmp_path, name):
    """A tiny run with --protocol paper: its saved args hold the table's values, except the tiny run's own
    flags (given on the command line, so they win); the run prints what the protocol set."""
    case, (system, task) = CASES[name], PROTOCOL_CASES[name]
    result = run_case(case, ["--protocol", "paper", "--save-model"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (model_path,) = glob.glob(os.path.join(only_run_dir(tmp_path), "*.cleanrl_model"))
    saved = torch.load(model_path, weights_only=True)["args"]
    given = importlib.import_module(case.script.removesuffix(".py")).given_flags(case.args)
    settings, note = paper_protocol(system, task)
    assert f"--protocol paper ({note}) sets: --" in result.stdout
    for field, value in settings.items():
        if field in given or field not in saved or (field == "coordsum_obs" and "coordsum" not in name):
            continue
        assert saved[field] == value, field
    assert saved["num_envs"] == 4 and saved["update_epochs"] == 2  # the tiny run's own flags
    assert saved["exp_name"].endswith("_paper") and f"__{saved['exp_name']}__" in only_run_dir(tmp_path)
