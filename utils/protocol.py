"""The paper's protocol as data: `--protocol paper` in every training script (docs/environments.md).

`utils/paper_params.csv` is the official repository's `experiment_data/params.csv`, unchanged, from
liyheng/MAGPO at commit d2ac38b9d695624bdce62743a18b175c6fe03d83: the tuned hyperparameters the paper ran, one
row per (algorithm, task). MAGPO and HAPPO have a row for each of the 43 tasks; MAPPO and IPPO only for the four
CoordSum tasks (tested in tests/test_protocol.py). What is not in a row comes from the official configs at that
commit: `mava/configs/system/gpo/rec_magpo.yaml`, `mava/configs/system/ppo/rec_mappo.yaml` / `rec_ippo.yaml` and
`rec_happo.yaml` (`update_batch_size` 2, rollout 128, gamma 0.99, lambda 0.95, `vf_coef` 0.5, no learning-rate decay; for MAPPO and
IPPO without a row also lr 2.5e-4, 4 epochs x 2 minibatches, epsilon 0.2, entropy 0.01, max-grad-norm 0.5), and
`mava/configs/arch/anakin.yaml` (122 evaluations of 32 episodes).

`paper_protocol(system, task)` turns a row into the scripts' Args fields (docs/algorithm.md §12-§14):
- one update = `update_batch_size` 2 x 64 envs x 128 steps, run here as `--num-envs 128`: the official code
  averages the gradients of two 64-env copies, each split into `num_minibatches` minibatches, so a minibatch
  here (128 / num_minibatches envs) holds the same environments as one averaged official gradient;
- the budget: `num_updates` 1220 x 16,384 = 19,988,480 steps, evaluated every 10 updates (122 evaluations);
- raw returns (`--no-norm-value`), so the value clip with epsilon acts in raw return units, as the official one;
- MAGPO: the row's schedule, step sizes, alpha and delta, the paper's guider (`--guider sable`) at the row's sizes
  (`n_embd`, `n_block`, `n_head`) and decay (`decay_scaling_factor`), and the official agent order
  (`--agent-order official`);
- MAT / Sable (ctce_baseline.py): the row on CoordSum (schedule, step sizes, the network's sizes, Sable's decay),
  elsewhere the official configs' defaults (`mava/configs/system/mat/mat.yaml` + `network/transformer.yaml`,
  `system/sable/rec_sable.yaml` + `network/rec_retention.yaml`), and `--agent-order official`;
- HAPPO: the row's schedule, step sizes and `recurrent_chunk_size` (cut into contiguous pieces here: the official
  code's were strided, docs/algorithm.md §15), and the authors' update scheme (`--happo-scheme official`);
- CoordSum: the raw target as the observation (`--coordsum-obs raw`), the official encoding.
Where the CSV leaves `actor_lr` empty (MAGPO's CoordSum rows) the learning rate is its `critic_lr` (algorithm.md
§13, fact 10). Explicit flags on the command line win over all of this (`apply_paper_protocol`).
"""

import csv
import os

PARAMS_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_params.csv")
PARAMS_SOURCE = "liyheng/MAGPO@d2ac38b experiment_data/params.csv"
UPDATE_BATCH_SIZE = 2  # rec_magpo.yaml / rec_mappo.yaml: two copies of the update, gradients averaged
ROLLOUT_LENGTH = 128
# what every official system shares (rec_magpo.yaml, rec_mappo.yaml, rec_ippo.yaml)
COMMON = dict(num_steps=ROLLOUT_LENGTH, gamma=0.99, gae_lambda=0.95, vf_coef=0.5, anneal_lr=False, norm_value=False)
# mat.yaml + transformer.yaml and rec_sable.yaml + rec_retention.yaml, for the tasks without a tuned MAT / Sable row
NETWORK_YAML = {
    "mat": dict(num_minibatches=1, update_epochs=5, learning_rate=5e-4, clip_coef=0.1, ent_coef=0.01, max_grad_norm=5.0,
                embed_dim=64, num_heads=1, num_blocks=1),
    "sable": dict(num_minibatches=2, update_epochs=4, learning_rate=2.5e-4, clip_coef=0.2, ent_coef=0.01,
                  max_grad_norm=0.5, embed_dim=64, num_heads=1, num_blocks=1, sable_decay=0.8),
}  # fmt: skip
# rec_mappo.yaml / rec_ippo.yaml, for the tasks without a tuned MAPPO / IPPO row
PPO_YAML = dict(num_minibatches=2, update_epochs=4, learning_rate=2.5e-4, clip_coef=0.2, ent_coef=0.01,
                max_grad_norm=0.5, num_envs=64, num_updates=1220, num_evaluation=122)  # fmt: skip
SYSTEMS = ("magpo", "mappo", "ippo", "happo", "mat", "sable")
TUNED_EVERYWHERE = ("magpo", "happo")  # the systems with a row for each of the 43 tasks


def read_rows(path=PARAMS_CSV):
    """{(system, task): {column: value as a string, '' where empty}} of the CSV."""
    with open(path, newline="") as f:
        return {
            (row["system_name"], row["task"]): {k: (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(f)
        }


def tasks(system, env=None):
    """The tasks `system` has a tuned row for (in `env`, the CSV's env_name, if given)."""
    return sorted(
        task for (name, task), row in read_rows().items() if name == system and env in (None, row["env_name"])
    )


def paper_protocol(system, task):
    """The Args fields (name -> value) that `--protocol paper` sets for `system` on `task`, and a note on
    where they come from. `task` is the CSV's name (simple_spread_3ag, 2s3z, 3x10, tiny-2ag, ...)."""
    if system not in SYSTEMS:
        raise ValueError(f"no paper protocol for {system!r} (known: {', '.join(SYSTEMS)})")
    row = read_rows().get((system, task))
    if row is None and system in TUNED_EVERYWHERE:
        raise ValueError(
            f"params.csv has no {system.upper()} row for task {task!r} (it has: {', '.join(tasks(system))})"
        )
    if row is None and system in NETWORK_YAML:  # MAT / Sable off CoordSum: the official configs' defaults
        settings = dict(PPO_YAML, **NETWORK_YAML[system], agent_order="official")
        yaml = "mat.yaml and transformer.yaml" if system == "mat" else "rec_sable.yaml and rec_retention.yaml"
        note = f"params.csv has no {system} row for {task}: {yaml}'s defaults"
    elif row is None:  # MAPPO / IPPO off CoordSum: the official config's defaults
        settings = dict(PPO_YAML)
        note = f"params.csv has no {system} row for {task}: rec_{system}.yaml's defaults"
    else:
        settings = dict(
            num_minibatches=int(row["num_minibatches"]),
            update_epochs=int(row["ppo_epochs"]),
            learning_rate=float(row["actor_lr"] or row["critic_lr"]),
            clip_coef=float(row["clip_eps"]),
            ent_coef=float(row["ent_coef"]),
            max_grad_norm=float(row["max_grad_norm"]),
            num_envs=int(row["num_envs"]),
            num_updates=int(row["num_updates"]),
            num_evaluation=int(row["num_evaluation"]),
        )
        note = f"the {system} row for {task} in {PARAMS_SOURCE}"
        if system == "magpo":  # the paper's guider is Sable, at the row's sizes and decay
            settings.update(
                alpha=float(row["alpha"]),
                delta=float(row["delta"]),
                guider="sable",
                guider_dim=int(row["n_embd"]),
                guider_heads=int(row["n_head"]),
                guider_blocks=int(row["n_block"]),
                sable_decay=float(row["decay_scaling_factor"]),
                agent_order="official",
            )
        if system in NETWORK_YAML:  # MAT / Sable on CoordSum: the row's network sizes (and Sable's decay)
            settings.update(
                embed_dim=int(row["n_embd"]), num_heads=int(row["n_head"]), num_blocks=int(row["n_block"]),
                agent_order="official",
            )  # fmt: skip
            if system == "sable":
                settings.update(sable_decay=float(row["decay_scaling_factor"]))
        if system == "happo":  # rec_happo.yaml: the authors' scheme (docs/algorithm.md §15); 128 = 0 = whole rollouts
            chunk = int(row["recurrent_chunk_size"])
            settings.update(recurrent_chunk_size=0 if chunk == ROLLOUT_LENGTH else chunk, happo_scheme="official")
    num_envs, num_updates, num_evaluation = (settings.pop(k) for k in ("num_envs", "num_updates", "num_evaluation"))
    update_steps = UPDATE_BATCH_SIZE * num_envs * ROLLOUT_LENGTH
    settings.update(
        COMMON,
        num_envs=UPDATE_BATCH_SIZE * num_envs,
        total_timesteps=num_updates * update_steps,
        eval_interval=num_updates // num_evaluation * update_steps,
        coordsum_obs="raw",
    )
    return settings, note


def apply_paper_protocol(args, system, task, given):
    """Set `args`' fields to the paper's protocol, except the fields in `given` (the flags the command line
    set) and the fields this script does not have (e.g. `coordsum_obs` off CoordSum), and add `_paper` to the
    exp_name unless `--exp-name` was given. Returns the note and the [(field, value)] it changed, for the script
    to print."""
    settings, note = paper_protocol(system, task)
    changed = []
    if "exp_name" not in given:  # its own name, so plot.py never pools paper runs with default-protocol runs
        args.exp_name = f"{args.exp_name}_paper"
        changed.append(("exp_name", args.exp_name))
    for name, value in settings.items():
        if name in given or not hasattr(args, name):
            continue
        if name == "coordsum_obs" and getattr(args, "env", "coordsum") != "coordsum":
            continue  # mappo_baseline.py has the field for every env; it matters on CoordSum only
        if getattr(args, name) != value:
            setattr(args, name, value)
            changed.append((name, value))
    return note, changed


def as_flags(changed):
    """[(field, value)] -> the command-line flags that set them, e.g. `--num-envs 128 --no-norm-value`."""
    flags = []
    for name, value in changed:
        flag = name.replace("_", "-")
        flags.append(f"--{flag}" if value is True else f"--no-{flag}" if value is False else f"--{flag} {value}")
    return " ".join(flags)
