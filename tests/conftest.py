import os
import sys

# make the repository root importable (`from utils.mpe import ...`, `import magpo_mpe`) however pytest is started
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
from helpers import CASES, only_run_dir, run_case  # noqa: E402


@pytest.fixture(scope="session")
def seed7_runs(tmp_path_factory):
    """get(name) -> (case, [run dirs], [stdouts]): the case run twice with --seed 7 --save-model,
    once per test session, shared by every test that reads it (tests/test_scripts.py, tests/test_enjoy.py)."""
    cache = {}

    def get(name):
        if name not in cache:
            case, dirs, stdouts = CASES[name], [], []
            for _ in range(2):
                cwd = tmp_path_factory.mktemp(name)
                result = run_case(case, ["--seed", "7", "--save-model"], cwd)
                assert result.returncode == 0, result.stderr[-3000:]
                dirs.append(only_run_dir(cwd))
                stdouts.append(result.stdout)
            cache[name] = case, dirs, stdouts
        return cache[name]

    return get
