"""The diagnostics every training script logs beside the paper's metric: the greedy absolute metric replays the
sampled one's episodes with the mode of each action distribution and leaves the run's env stream as the sampled
pass left it, and the learner's (or actor's) entropy is logged under one tag, `losses/learner_entropy`."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import magpo_mpe
import mappo_baseline
from utils.coordsum import make_env as make_coordsum_env
from utils.mpe import make_env as make_mpe_env


class Writer:
    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = float(value)


@pytest.mark.parametrize("module", [magpo_mpe, mappo_baseline], ids=lambda m: m.__name__)
@pytest.mark.parametrize("env", ["mpe", "coordsum"])
def test_the_greedy_absolute_metric_replays_the_sampled_episodes(module, env):
    def envs():
        return make_mpe_env(4, seed=3) if env == "mpe" else make_coordsum_env(4, seed=3)

    probe = envs()
    torch.manual_seed(0)
    learner = module.Learner(probe.obs_dim, probe.num_agents, probe.action_dim, probe.continuous_actions, hidden=16)
    args = SimpleNamespace(learner_hidden=16, num_eval_episodes=4)
    eval_envs, writer = envs(), Writer()
    torch.manual_seed(1)
    module.absolute_metric(learner, eval_envs, torch.device("cpu"), args, writer, 0)

    # the sampled score is the one the function gave before the greedy pass existed
    fresh = envs()
    torch.manual_seed(1)
    sampled = [module.evaluate(learner, fresh, torch.device("cpu"), 16)[0] for _ in range(10)]
    assert writer.scalars["eval/absolute_learner_return"] == pytest.approx(np.concatenate(sampled).mean())
    # and the envs are left where the sampled pass left them
    after, expected = eval_envs.get_state(), fresh.get_state()
    assert after["rng"] == expected["rng"]
    # the greedy score: the same 10 x 4 episodes from the same start, with greedy actions
    fresh = envs()
    greedy = [module.evaluate(learner, fresh, torch.device("cpu"), 16, deterministic=True)[0] for _ in range(10)]
    assert writer.scalars["eval/absolute_learner_return_greedy"] == pytest.approx(np.concatenate(greedy).mean())


def test_the_learner_entropy_is_logged_under_one_tag_in_magpo_and_the_baselines():
    """MAPPO's ppo_loss reports its actor's entropy under the tag MAGPO's update gives its learner's."""
    logp = torch.zeros(6)
    entropy = torch.tensor([0.5, 1.0, 1.5, 0.5, 1.0, 1.5])
    _, stats = mappo_baseline.ppo_loss(
        logp=logp, logp_old=logp, advantages=torch.randn(6), entropy=entropy, value=torch.zeros(6),
        value_old=torch.zeros(6), returns=torch.zeros(6), clip_coef=0.2, ent_coef=0.01, vf_coef=0.5,
    )  # fmt: skip
    assert stats["learner_entropy"] == stats["entropy"] == pytest.approx(1.0)
