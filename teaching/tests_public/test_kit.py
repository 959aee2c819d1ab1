"""The kit itself: its files import, its fixtures belong to this build, and the environments step. These pass before
any exercise is done; if one fails, the kit or the install is broken, not your code."""

import json
import os

import numpy as np
from conftest import KIT


def test_the_files_you_edit_and_the_scripts_import():
    import magpo_coordsum  # noqa: F401  (imports its exercise functions from magpo_mpe.py and mappo_baseline.py)
    import magpo_mpe  # noqa: F401
    import mappo_baseline  # noqa: F401
    import theory_check  # noqa: F401


def test_fixtures_belong_to_this_kit():
    with open(os.path.join(KIT, "VERSION")) as f:
        info = json.load(f)
    for exercise in info["exercises"]:
        with np.load(os.path.join(KIT, "tests", "fixtures", f"{exercise['id']}.npz")) as data:
            assert str(data["_tag"]) == info["fixture_tag"], (
                f"tests/fixtures/{exercise['id']}.npz is from another build"
            )


def test_the_numpy_environments_step():
    from utils import coordsum, mpe

    for env in (mpe.make_env(num_envs=2, seed=0), coordsum.make_env(num_envs=2, seed=0)):
        obs = env.reset(seed=0)
        assert obs.shape[:2] == (2, env.num_agents) and np.isfinite(obs).all()
        actions = np.zeros((2, env.num_agents, env.action_dim)) if getattr(env, "continuous_actions", False) else None
        if actions is None:
            actions = np.zeros((2, env.num_agents), dtype=np.int64)
        assert np.isfinite(env.step(actions)[0]).all()
