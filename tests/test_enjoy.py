"""After training: --save-model -> enjoy.py -> the same policy, for every script; bad model files; the GIF renderer
(MPE's own, jumanji's viewer for RWARE, LBF and Connector)."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, child_env
from PIL import Image

import enjoy
import magpo_mpe
from utils.mpe import SimpleSpreadVec
from utils.render import save_gif, world_from_obs

# the tests here read the shared tiny runs of tests/conftest.py: kept on one worker with the others that do
pytestmark = pytest.mark.xdist_group("seed7_runs")


@pytest.fixture(scope="module")
def trained(seed7_runs):
    """The tiny magpo_mpe.py run with --save-model that tests/test_scripts.py checks: (run dir, model path)."""
    _, (run_dir,), _ = seed7_runs("magpo_mpe", runs=1)
    return run_dir, os.path.join(run_dir, "magpo_mpe.cleanrl_model")


def enjoy_cli(*args, timeout=120, fast_compile=False):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "enjoy.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(fast_compile),
    )


@pytest.mark.parametrize("policy", ["learner", "guider"])
def test_saved_model_loads_to_identical_actions(trained, policy):
    _, model_path = trained
    checkpoint = enjoy.load_checkpoint(model_path)
    _, network, hidden = enjoy.build_policy(checkpoint, policy, which="final")
    saved = torch.load(model_path, weights_only=True)
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, saved[policy][name]), name

    # An independent rebuild from the saved args, and a fresh (untrained) network for contrast
    a = saved["args"]
    dims = (6 * a["num_agents"], a["num_agents"], 5, a["continuous_actions"])
    if policy == "learner":
        rebuilt, fresh = (magpo_mpe.Learner(*dims, a["learner_hidden"]) for _ in range(2))
    else:
        rebuilt, fresh = (
            magpo_mpe.Guider(*dims, a["guider_dim"], a["guider_heads"], a["guider_blocks"]) for _ in range(2)
        )
    rebuilt.load_state_dict(saved[policy])

    obs = torch.from_numpy(enjoy.make_eval_envs(checkpoint, 6, seed=3).reset())
    actions, episode_returns = [], []
    for net in (network, rebuilt, fresh):
        torch.manual_seed(0)
        h, starts = torch.zeros(6, a["num_agents"], hidden), torch.ones(6, dtype=torch.bool)
        if policy == "learner":
            actions.append(net.act(obs, h, starts)[0])
        else:
            actions.append(net.act(obs, h, starts, magpo_mpe.random_perm(6, a["num_agents"], "cpu"))[0])
        torch.manual_seed(0)
        envs = enjoy.make_eval_envs(checkpoint, 6, seed=3)
        episode_returns.append(magpo_mpe.evaluate(net, envs, torch.device("cpu"), hidden)[0])
    assert torch.equal(actions[0], actions[1]), "same weights, observations and seed -> same actions"
    np.testing.assert_array_equal(episode_returns[0], episode_returns[1])
    assert not torch.equal(actions[0], actions[2]), "the loaded weights must matter"


def test_enjoy_evaluates_and_writes_gifs_named_by_their_options(trained):
    run_dir, model_path = trained
    result = enjoy_cli("--model-path", model_path, "--num-episodes", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "learner (best), sampled actions: return" in result.stdout and "over 4 episodes" in result.stdout
    gif = Image.open(os.path.join(run_dir, "enjoy_learner_best_sampled_seed1.gif"))
    assert gif.n_frames == 26  # 25 steps: the initial observation and one after each step

    result = enjoy_cli("--model-path", model_path, "--policy", "guider", "--greedy", "--num-episodes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "guider, greedy actions: return" in result.stdout
    result = enjoy_cli("--model-path", model_path, "--checkpoint", "final", "--greedy", "--num-episodes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    # two runs of enjoy with other options write other files
    gifs = {os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "enjoy_*.gif"))}
    assert gifs == {"enjoy_learner_best_sampled_seed1.gif", "enjoy_guider_greedy_seed1.gif",
                    "enjoy_learner_final_greedy_seed1.gif"}  # fmt: skip


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--seed", str(2**32)], "--seed must be <= 4294967295 (numpy's seed range is [0, 2**32 - 1]), got 4294967296"),
        (["--num-episodes", "0"], "--num-episodes must be >= 1, got 0"),
        (["--torch-threads", "0"], "--torch-threads must be >= 1, got 0"),
    ],
)
def test_bad_flag_value_is_one_line_naming_the_flag_and_writes_nothing(trained, flags, message):
    """A value of the right type that enjoy.py cannot use: `error: --<flag> ...`, exit 1, before the model is
    loaded, so no GIF appears next to it (numpy's error for a negative seed named no flag; a seed of 2**32 ran;
    --torch-threads 0 was torch's traceback)."""
    run_dir, model_path = trained
    before = sorted(os.listdir(run_dir))
    result = enjoy_cli("--model-path", model_path, "--num-episodes", "2", *flags, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", f"error: {message}\n")
    assert sorted(os.listdir(run_dir)) == before
    enjoy.check_args(enjoy.Args(model_path, seed=2**32 - 1))  # numpy's largest seed is fine
    enjoy.check_args(enjoy.Args(model_path, seed=0, num_episodes=1, torch_threads=1))


class Payload:
    """An arbitrary pickled object: enjoy.py's weights_only=True load refuses it rather than run its code."""


def bad_model_files(tmp_path, saved):
    """(path, message) for every kind of file enjoy.py must refuse."""
    files = {
        "notes.txt": ("hello", "is not a model saved by --save-model"),
        "other.cleanrl_model": (
            {"script": "magpo_smac_v1.py", "args": {}, "learner": {}, "best_learner": {}},
            "was saved by 'magpo_smac_v1.py'",
        ),
        "plain.pt": ({"weights": torch.zeros(1)}, "has no 'script' entry"),
        "no_learner.cleanrl_model": (
            {k: v for k, v in saved.items() if k != "best_learner"},
            "has no 'best_learner' entry",
        ),
        "no_hidden.cleanrl_model": (
            {**saved, "args": {k: v for k, v in saved["args"].items() if k != "learner_hidden"}},
            "saved args have no 'learner_hidden' entry",
        ),
        "wrong_weights.cleanrl_model": (
            {**saved, "best_learner": {"head.weight": torch.zeros(2, 2)}},
            "the saved learner weights do not fit magpo_mpe.py's network",
        ),
        "pickled.cleanrl_model": (
            {**saved, "extra": Payload()},
            "is not a model saved by --save-model (UnpicklingError)",
        ),
    }
    out = [(tmp_path / "missing.cleanrl_model", "no model file")]
    for name, (content, message) in files.items():
        path = tmp_path / name
        if isinstance(content, str):
            path.write_text(content)
        else:
            torch.save(content, path)
        out.append((path, message))
    return out


def test_enjoy_rejects_bad_models_with_one_line_messages(tmp_path, trained):
    saved = torch.load(trained[1], weights_only=True)
    for path, message in bad_model_files(tmp_path, saved):
        with pytest.raises(ValueError) as error:
            enjoy.build_policy(enjoy.load_checkpoint(str(path)))
        assert message in str(error.value) and "\n" not in str(error.value), (message, str(error.value))
    # how the CLI exits on one: a one-line error, exit 1, no traceback
    result = enjoy_cli("--model-path", str(tmp_path / "no_hidden.cleanrl_model"), timeout=60)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_frames_are_drawn_where_the_env_puts_things(tmp_path):
    env = SimpleSpreadVec(2, num_agents=4, seed=0)
    observations = [env.reset()[1]]
    for _ in range(3):
        observations.append(env.step(np.random.default_rng(0).uniform(0, 1, (2, 4, 5)))[0][1])
    world = env.get_world()
    rebuilt = world_from_obs(observations[-1])
    np.testing.assert_allclose(rebuilt["agent_pos"], world["agent_pos"][1], atol=1e-6)
    np.testing.assert_allclose(rebuilt["landmark_pos"], world["landmark_pos"][1], atol=1e-6)
    path = save_gif(observations, str(tmp_path / "episode.gif"))
    gif = Image.open(path)
    assert gif.n_frames == 4 and gif.size == (320, 320)


@pytest.mark.parametrize(
    "name, policy, family",
    [("magpo_coordsum", "learner", "coordsum"), ("magpo_coordsum", "guider", "coordsum"),
     ("mappo_coordsum", "learner", "coordsum"), ("magpo_smax", "guider", "smax"), ("mappo_smax", "learner", "smax"),
     ("magpo_jumanji", "guider", "lbf"), ("mappo_jumanji", "learner", "lbf"), ("happo_coordsum", "learner", "coordsum")],
)  # fmt: skip
def test_enjoy_reloads_other_scripts_models_exactly(seed7_runs, name, policy, family):
    """The other training scripts' models (tests/test_scripts.py's tiny runs): the rebuilt network has
    the saved weights and evaluates reproducibly, and the CLI scores it, with the win rate on SMAX, and
    a GIF of the first episode where there is a viewer (jumanji's, for LBF; CoordSum and SMAX have none)."""
    case, (run_dir,), _ = seed7_runs(name, runs=1)
    model_path = os.path.join(run_dir, case.model)
    checkpoint = enjoy.load_checkpoint(model_path)
    assert enjoy.env_family(checkpoint) == family
    module, network, hidden = enjoy.build_policy(checkpoint, policy, which="best")
    for key, tensor in network.state_dict().items():
        assert torch.equal(tensor, checkpoint["best_learner" if policy == "learner" else policy][key]), key

    def returns(seed):
        torch.manual_seed(seed)
        return module.evaluate(network, enjoy.make_eval_envs(checkpoint, 3, seed=1), torch.device("cpu"), hidden)[0]

    assert np.array_equal(returns(0), returns(0))
    # jumanji's viewer draws ~0.15 s a frame: one LBF model's GIF is checked, the other's is left out (--no-gif)
    gif = family == "lbf" and name == "mappo_jumanji"
    cli = enjoy_cli("--model-path", model_path, "--policy", policy, "--num-episodes", "3", *([] if gif else ["--no-gif"]),
                    timeout=300, fast_compile=family != "coordsum")  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert f"{case.script} {policy}" in cli.stdout and ("GIF" in cli.stdout) == gif
    if gif:  # jumanji's viewer: one frame per step of env 0's first episode (<= 100 steps), and its first
        (gif_path,) = glob.glob(os.path.join(run_dir, "enjoy_*.gif"))
        assert os.path.basename(gif_path) == f"enjoy_{policy}{'_best' if policy == 'learner' else ''}_sampled_seed1.gif"
        frames = Image.open(gif_path).n_frames
        assert 2 <= frames <= 101, frames
    assert ("win rate" in cli.stdout) == (family == "smax")
    if case.script == "mappo_baseline.py":
        cli = enjoy_cli("--model-path", model_path, "--policy", "guider")
        assert cli.returncode == 1 and "trains no guider" in cli.stderr and "Traceback" not in cli.stderr


@pytest.mark.parametrize("name, network", [("magpo_mpe_mat", "MAT"), ("magpo_coordsum_sable", "Sable")])
def test_enjoy_rebuilds_the_guider_the_run_chose(seed7_runs, name, network):
    """--guider mat / sable: enjoy.py builds the saved guider through the script's make_guider, and it plays."""
    case, (run_dir,), _ = seed7_runs(name, runs=1)
    checkpoint = enjoy.load_checkpoint(os.path.join(run_dir, case.model))
    module, guider, _ = enjoy.build_policy(checkpoint, "guider")
    assert type(guider).__name__ == network
    envs = enjoy.make_eval_envs(checkpoint, 2, 0)
    returns, _ = module.evaluate(guider, envs, torch.device("cpu"), 0)
    assert np.isfinite(returns).all()


@pytest.mark.parametrize("name, network", [("ctce_mpe_mat", "MAT"), ("ctce_coordsum_sable", "Sable")])
def test_enjoy_plays_the_ctce_joint_policy(seed7_runs, name, network):
    """ctce_baseline.py's deployed policy is its joint policy (acting centrally): enjoy.py rebuilds it as the
    learner, and the command line plays it."""
    case, (run_dir,), _ = seed7_runs(name, runs=1)
    model = os.path.join(run_dir, case.model)
    module, policy, _ = enjoy.build_policy(enjoy.load_checkpoint(model), "learner")
    assert type(policy).__name__ == network and module.__name__ == "ctce_baseline"
    result = enjoy_cli("--model-path", model, "--num-episodes", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "learner (best)" in result.stdout, result.stdout
