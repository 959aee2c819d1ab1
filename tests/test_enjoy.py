"""After training: --save-model -> enjoy.py -> the same policy; --capture-video; the GIF renderer."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from helpers import REPO, run_script

import enjoy
import magpo_mpe
from utils.mpe import SimpleSpreadVec
from utils.render import save_gif, world_from_obs

TINY = [
    "--total-timesteps", "1024", "--num-envs", "8", "--num-steps", "64", "--num-minibatches", "2",
    "--update-epochs", "1", "--eval-interval", "512", "--num-eval-episodes", "2",
    "--learner-hidden", "16", "--guider-dim", "16",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run with --save-model --capture-video: (run dir, model path)."""
    cwd = tmp_path_factory.mktemp("train")
    result = run_script("magpo_mpe.py", [*TINY, "--save-model", "--capture-video"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = glob.glob(str(cwd / "runs" / "*"))
    return run_dir, os.path.join(run_dir, "magpo_mpe.cleanrl_model")


def enjoy_cli(*args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(REPO, "enjoy.py"), *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("policy", ["learner", "guider"])
def test_saved_model_loads_to_identical_actions(trained, policy):
    _, model_path = trained
    checkpoint = enjoy.load_checkpoint(model_path)
    _, network, hidden, make_eval_envs = enjoy.build_policy(checkpoint, policy, which="final")
    saved = torch.load(model_path, weights_only=False)
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, saved[policy][name]), name

    # An independent rebuild from the saved args, and a fresh (untrained) network for contrast
    a = saved["args"]
    dims = (6 * a["num_agents"], a["num_agents"], 5, a["continuous_actions"])
    if policy == "learner":
        rebuilt, fresh = (magpo_mpe.Learner(*dims, a["learner_hidden"]) for _ in range(2))
    else:
        rebuilt, fresh = (magpo_mpe.Guider(*dims, a["guider_dim"], a["guider_heads"], a["guider_blocks"]) for _ in range(2))
    rebuilt.load_state_dict(saved[policy])

    obs = torch.from_numpy(make_eval_envs(6, seed=3).reset())
    actions, episode_returns = [], []
    for net in (network, rebuilt, fresh):
        torch.manual_seed(0)
        h, starts = torch.zeros(6, a["num_agents"], hidden), torch.ones(6, dtype=torch.bool)
        if policy == "learner":
            actions.append(net.act(obs, h, starts)[0])
        else:
            actions.append(net.act(obs, h, starts, magpo_mpe.random_perm(6, a["num_agents"], "cpu"))[0])
        torch.manual_seed(0)
        episode_returns.append(magpo_mpe.evaluate(net, make_eval_envs(6, seed=3), torch.device("cpu"), hidden))
    assert torch.equal(actions[0], actions[1]), "same weights, observations and seed -> same actions"
    np.testing.assert_array_equal(episode_returns[0], episode_returns[1])
    assert not torch.equal(actions[0], actions[2]), "the loaded weights must matter"


def test_enjoy_evaluates_and_writes_gif(trained):
    run_dir, model_path = trained
    result = enjoy_cli("--model-path", model_path, "--num-episodes", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "learner (best), sampled actions: return" in result.stdout and "over 4 episodes" in result.stdout
    gif = Image.open(os.path.join(run_dir, "enjoy_learner.gif"))
    assert gif.n_frames == 26  # 25 steps: the initial observation and one after each step

    result = enjoy_cli("--model-path", model_path, "--policy", "guider", "--greedy", "--no-gif", "--num-episodes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "guider, greedy actions: return" in result.stdout


def test_enjoy_rejects_bad_models(tmp_path):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    other_script = tmp_path / "other.cleanrl_model"
    torch.save({"script": "magpo_smac_v1.py", "args": {}, "learner": {}, "best_learner": {}}, other_script)
    plain_dict = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, plain_dict)
    for path, message in [
        (tmp_path / "missing.cleanrl_model", "no model file"),
        (not_a_model, "is not a model saved by --save-model"),
        (plain_dict, "is not a model saved by --save-model"),
        (other_script, "was saved by 'magpo_smac_v1.py'"),
    ]:
        result = enjoy_cli("--model-path", str(path), timeout=60)
        assert result.returncode != 0
        assert message in result.stderr and "Traceback" not in result.stderr


def test_capture_video_writes_a_gif_per_evaluation(trained):
    run_dir, _ = trained
    gifs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "videos", "*.gif")))
    assert gifs == ["learner_step0.gif", "learner_step1024.gif", "learner_step512.gif"]


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


CS_TINY = [
    "--env", "coordsum", "--total-timesteps", "512", "--num-envs", "4", "--num-steps", "64", "--num-minibatches", "2",
    "--update-epochs", "1", "--eval-interval", "512", "--num-eval-episodes", "2", "--learner-hidden", "16",
]


def check_reload(cwd, family, policy):
    """The run's model rebuilds to the saved weights and evaluates reproducibly; its path."""
    (model_path,) = glob.glob(str(cwd / "runs" / "*" / "*.cleanrl_model"))
    checkpoint = enjoy.load_checkpoint(model_path)
    assert enjoy.env_family(checkpoint) == family
    module, network, hidden, make_eval_envs = enjoy.build_policy(checkpoint, policy, which="best")
    for name, tensor in network.state_dict().items():
        assert torch.equal(tensor, checkpoint["best_learner" if policy == "learner" else policy][name]), name

    def returns(seed):
        torch.manual_seed(seed)
        options = {"use_state": checkpoint["args"].get("guider_global_state", False)} if policy == "guider" else {}
        result = module.evaluate(network, make_eval_envs(3, seed=1), torch.device("cpu"), hidden, **options)
        return result[0] if isinstance(result, tuple) else result  # SMAX-capable scripts add win flags

    assert np.array_equal(returns(0), returns(0))
    return model_path


@pytest.mark.parametrize("script", ["magpo_coordsum.py", "mappo_baseline.py"])
def test_enjoy_reloads_coordsum_models_exactly(tmp_path, script):
    """The other training scripts' models: the rebuilt learner has the saved weights, evaluates
    reproducibly on CoordSum, and the CLI scores it without a GIF (nothing to draw)."""
    extra = CS_TINY[2:] + (["--guider-dim", "16"] if script == "magpo_coordsum.py" else CS_TINY[:2])
    result = run_script(script, [*extra, "--save-model"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    model_path = check_reload(tmp_path, "coordsum", "learner")
    cli = enjoy_cli("--model-path", model_path, "--num-episodes", "3")
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "learner (best), sampled actions: return" in cli.stdout and "GIF" not in cli.stdout
    if script == "mappo_baseline.py":
        cli = enjoy_cli("--model-path", model_path, "--policy", "guider")
        assert cli.returncode != 0 and "trains no guider" in cli.stderr and "Traceback" not in cli.stderr


SMAX_TINY = [
    "--total-timesteps", "128", "--num-envs", "4", "--num-steps", "32", "--num-minibatches", "2",
    "--update-epochs", "1", "--eval-interval", "128", "--num-eval-episodes", "4", "--learner-hidden", "16",
]


@pytest.mark.parametrize("script", ["magpo_smax.py", "mappo_baseline.py"])
def test_enjoy_reloads_smax_models(tmp_path, script):
    """SMAX models (magpo_smax.py's guider with the world state, MAPPO's actor) rebuild exactly and
    the CLI reports a win rate beside the return."""
    extra = ["--guider-dim", "16", "--guider-global-state"] if script == "magpo_smax.py" else ["--env", "smax"]
    result = run_script(script, [*SMAX_TINY, *extra, "--save-model"], tmp_path, fast_compile=True)
    assert result.returncode == 0, result.stderr[-3000:]
    policy = "guider" if script == "magpo_smax.py" else "learner"
    model_path = check_reload(tmp_path, "smax", policy)
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0"}
    cli = subprocess.run([sys.executable, os.path.join(REPO, "enjoy.py"), "--model-path", model_path, "--policy", policy,
                          "--num-episodes", "4"], capture_output=True, text=True, timeout=300, env=env)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert f"{script} {policy}" in cli.stdout and "win rate" in cli.stdout and "GIF" not in cli.stdout, cli.stdout
