"""The guard on the intended duplication: every top-level script is self-contained, so the code they
share is copied, and these copies must stay copies. A fix made in one file only fails here, naming
the definition and the first line where the copies part."""

import ast
import difflib
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAGPO_SCRIPTS = ("magpo_mpe.py", "magpo_coordsum.py", "magpo_smax.py", "magpo_jumanji.py")

# `--guider mat` and `--guider sable` (algorithm.md §16): the same in every MAGPO script and in ctce_baseline.py, whose
# joint policies they are.
GUIDER_CLASSES = (
    "linear_no_bias", "gelu", "MATAttention", "MATBlock", "MAT", "retention_decays", "timestep_encoding",
    "retention_step", "retention_chunk", "MultiScaleRetention", "SwiGLU", "SableEncoderBlock", "SableDecoderBlock",
    "Sable",
)  # fmt: skip
# The same in every MAGPO script: the math, the distributions, the networks' parts and the learner.
MAGPO_SHARED = (
    "compute_gae", "normalize", "RunningMeanStd", "tethered_ratio", "masked_kl", "guider_loss", "learner_loss",
    "LOG_2PI", "MASKED_LOGIT", "masked_logits", "dist_sample", "tanh_gaussian_log_prob", "dist_log_prob",
    "dist_entropy", "dist_kl", "tether_kls",
    "layer_init", "gru_unroll", "to_positions", "to_agents", "action_features", "shifted_tokens", "sample_in_order",
    "teacher_forced", "Attention", "EncoderBlock", "DecoderBlock", *GUIDER_CLASSES,
    "Learner", "to_env_action", "random_perm", "decoding_order",
)  # fmt: skip
# magpo_smax.py adds `--guider-global-state` (the guider's world-state input) and win rates, so these
# are copies between magpo_mpe.py and magpo_coordsum.py only; the SMAX versions differ on purpose.
# (`evaluate_and_log` differs too: only MPE has a renderer for --capture-video.)
MPE_COORDSUM_SHARED = ("Guider", "make_guider", "evaluate", "absolute_metric")
# magpo_jumanji.py is magpo_smax.py's sibling (masked discrete actions, the guider's optional global state), so
# its guider and evaluation are the SMAX ones; it has no wins, so its absolute metric is the MPE one.
SMAX_JUMANJI_SHARED = ("Guider", "make_guider", "evaluate")
MPE_JUMANJI_SHARED = ("absolute_metric",)
# The baseline's actor is MAGPO's learner (so a comparison isolates the algorithm), with the math it
# shares. Its evaluation differs only in that there is no guider to evaluate.
BASELINE_SHARED = (
    "compute_gae", "normalize", "RunningMeanStd", "LOG_2PI", "MASKED_LOGIT", "masked_logits", "dist_sample",
    "tanh_gaussian_log_prob", "dist_log_prob", "dist_entropy", "layer_init", "gru_unroll", "Learner",
    "to_env_action",
)  # fmt: skip

# Long runs (checkpoints, --resume, interrupts, the non-finite guard, progress) and the flags every run checks
# first (seed, exp_name, finite floats): the same INFRA block in every training script, the baseline included.
TRAINING_SCRIPTS = (*MAGPO_SCRIPTS, "mappo_baseline.py", "happo_baseline.py", "ctce_baseline.py")
LONG_RUN_SHARED = (
    "CHECKPOINT_VERSION", "RESUMABLE_FLAGS", "INJECT_NAN_AT", "ABSOLUTE_REPEATS", "STOP", "on_signal", "RunWriter", "rng_states",
    "set_rng_states", "save_checkpoint", "stop_run", "given_flags", "load_checkpoint", "check_resumable",
    "check_finite", "progress", "EXP_NAME", "MAX_SEED", "check_run_flags",
)  # fmt: skip


# happo_baseline.py is mappo_baseline.py's sibling: everything but the training algorithm is a copy (the actors are
# MAGPO's learner, one per agent; the critic is MAPPO's; the env glue and the evaluation are the baseline's).
HAPPO_SHARED = (
    "ENV_FLAGS", "compute_gae", "normalize", "RunningMeanStd", "LOG_2PI", "MASKED_LOGIT", "masked_logits",
    "dist_sample", "tanh_gaussian_log_prob", "dist_log_prob", "dist_entropy", "layer_init", "gru_unroll", "Learner",
    "critic_inputs", "Critic", "to_env_action", "SCENARIO_DEFAULTS", "task_name", "make_envs", "evaluate",
    "evaluate_and_log", "absolute_metric",
)  # fmt: skip


# ctce_baseline.py is mappo_baseline.py with the MAGPO scripts' guiders as the whole policy: its networks are the
# guider classes with their helpers (from magpo_mpe.py), everything else but the training loop is the baseline's.
CTCE_FROM_MAGPO = (
    "layer_init", "to_positions", "to_agents", "action_features", "shifted_tokens", "sample_in_order",
    "teacher_forced", *GUIDER_CLASSES, "to_env_action", "random_perm", "decoding_order",
)  # fmt: skip
CTCE_FROM_MAPPO = (
    "ENV_FLAGS", "compute_gae", "normalize", "RunningMeanStd", "ppo_loss", "LOG_2PI", "MASKED_LOGIT", "masked_logits",
    "dist_sample", "tanh_gaussian_log_prob", "dist_log_prob", "dist_entropy", "SCENARIO_DEFAULTS", "task_name",
    "make_envs",
)  # fmt: skip


def definitions(script):
    """{name: source} of the top-level functions, classes and assignments of a script (a file name
    in the repository, or a path)."""
    with open(os.path.join(REPO, script)) as f:
        source = f.read()
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        else:
            continue
        decorators = "".join(f"@{ast.get_source_segment(source, d)}\n" for d in getattr(node, "decorator_list", []))
        out[name] = decorators + ast.get_source_segment(source, node)
    return out


def first_difference(a, b):
    for line in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0):
        if line.startswith(("-", "+")) and not line.startswith(("---", "+++")):
            return line
    return None


def assert_copies(reference, script, names):
    ref, other = definitions(reference), definitions(script)
    for name in names:
        assert name in ref, f"{reference} has no {name}"
        assert name in other, f"{script} has no {name}: it should be a copy of {reference}'s"
        assert other[name] == ref[name], (
            f"{name} in {script} is no longer a copy of {reference}'s; first difference: "
            f"{first_difference(ref[name], other[name])!r} (edit both, or move it out of the shared list with a reason)"
        )


@pytest.mark.parametrize("script", MAGPO_SCRIPTS[1:])
def test_magpo_scripts_share_their_math_and_networks(script):
    assert_copies("magpo_mpe.py", script, MAGPO_SHARED)


def test_mpe_and_coordsum_share_the_guider_and_the_evaluation():
    assert_copies("magpo_mpe.py", "magpo_coordsum.py", MPE_COORDSUM_SHARED)


def test_jumanji_shares_the_smax_guider_and_evaluation():
    assert_copies("magpo_smax.py", "magpo_jumanji.py", SMAX_JUMANJI_SHARED)
    assert_copies("magpo_mpe.py", "magpo_jumanji.py", MPE_JUMANJI_SHARED)


def test_smax_guider_differs_only_by_the_world_state():
    """Not a copy on purpose: the SMAX guider takes an optional world state. Every line of the MPE
    guider that the SMAX one lacks must be one the state option replaced."""
    mpe, smax = definitions("magpo_mpe.py")["Guider"], definitions("magpo_smax.py")["Guider"]
    removed = [line[1:].strip() for line in difflib.ndiff(mpe.splitlines(), smax.splitlines()) if line.startswith("- ")]
    allowed = ("def __init__", "self.obs_embed", "def memory", '"""obs (T, B, N', "x = self.obs_embed", "def act",
               "obs (B, N, obs_dim)", "mem, h = self.memory", "def evaluate", "avail (T, M, N, A)", "mem, _ = self.memory", "def value", "mem, _ = self.memory")  # fmt: skip
    assert all(line.startswith(allowed) for line in removed), [x for x in removed if not x.startswith(allowed)]


@pytest.mark.parametrize("script", TRAINING_SCRIPTS[1:])
def test_training_scripts_share_the_long_run_infrastructure(script):
    assert_copies("magpo_mpe.py", script, LONG_RUN_SHARED)


def test_baseline_actor_is_magpo_learner():
    assert_copies("magpo_mpe.py", "mappo_baseline.py", BASELINE_SHARED)


def test_happo_shares_everything_but_the_algorithm_with_mappo():
    assert_copies("mappo_baseline.py", "happo_baseline.py", HAPPO_SHARED)


def test_ctce_networks_are_the_magpo_guiders_and_the_rest_is_mappo():
    assert_copies("magpo_mpe.py", "ctce_baseline.py", CTCE_FROM_MAGPO)
    assert_copies("mappo_baseline.py", "ctce_baseline.py", CTCE_FROM_MAPPO)


def test_happo_value_loss_is_mappo_value_branch():
    """happo_baseline.value_loss is ppo_loss's value branch, taken out: the same lines, dedented."""
    ppo, value = definitions("mappo_baseline.py")["ppo_loss"], definitions("happo_baseline.py")["value_loss"]
    branch = [line.strip() for line in ppo.splitlines() if "v_clipped" in line or "(value - returns) ** 2" in line]
    body = [
        line.strip().removeprefix("return ") for line in value.splitlines() if "v_clipped" in line or "** 2" in line
    ]
    assert [line.split(" = ")[-1] for line in branch] == [line.split(" = ")[-1] for line in body]


def test_the_guard_catches_an_edit_to_one_copy(tmp_path):
    """The check above fails when one copy changes: a small edit of learner_loss in one copy."""
    edited = tmp_path / "magpo_coordsum.py"
    with open(os.path.join(REPO, "magpo_coordsum.py")) as f:
        source = f.read()
    assert "loss = alpha * rl_loss + bc_loss" in source
    edited.write_text(source.replace("loss = alpha * rl_loss + bc_loss", "loss = alpha * rl_loss + 2 * bc_loss"))
    with pytest.raises(AssertionError, match=f"learner_loss in {edited} is no longer a copy"):
        assert_copies("magpo_mpe.py", str(edited), MAGPO_SHARED)
