import os
import sys

# make the repository root importable (`from utils.mpe import ...`, `import magpo_mpe`) however pytest is started
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
from helpers import CASES, QUICK_RUNS, only_run_dir, run_case  # noqa: E402


@pytest.fixture(scope="session")
def seed7_runs(tmp_path_factory):
    """get(name, runs=2) -> (case, [run dirs], [stdouts]): the case run `runs` times with --seed 7 --save-model,
    once per test session (its tests share one worker: pytest.ini), shared by every test that reads it
    (tests/test_scripts.py, tests/test_enjoy.py). A test that needs one run asks for one: the quick check (below)
    then makes one run per script, the full suite two."""
    cache = {}

    def get(name, runs=2):
        case, dirs, stdouts = cache.setdefault(name, (CASES[name], [], []))
        while len(dirs) < runs:
            cwd = tmp_path_factory.mktemp(name)
            result = run_case(case, ["--seed", "7", "--save-model"], cwd, absolute_repeats=10)  # the default
            assert result.returncode == 0, result.stderr[-3000:]
            dirs.append(only_run_dir(cwd))
            stdouts.append(result.stdout)
        return case, dirs[:runs], stdouts[:runs]

    return get


# The quick check to run while editing (README): `python -m pytest -m quick`, about a minute on 2 cores. The
# math, the environments' interface and their numpy implementations, one tiny end-to-end run of every training
# script (and its bad input), the copies guard, the requirements, the docs and the style. Named here, by module
# or by test, so that the list is in one place; the full suite (no -m) still runs everything.
QUICK = {
    "test_magpo_math.py": None,  # None: every test of the module
    "test_guiders.py": None,
    "test_theory_check.py": None,
    "test_happo_baseline.py": None,
    "test_coordsum.py": None,
    "test_copies.py": None,
    "test_docs.py": None,
    "test_style.py": None,
    "test_protocol.py": ("test_the_table_", "test_given_flags_win", "test_the_paper_protocol_names"),
    "test_env_interface.py": ("[mpe-", "[coordsum", "test_checks_fail_on_a_broken_wrapper"),
    "test_requirements.py": ("test_core_is_light", "test_ci_runs_exactly"),
    "test_scripts.py": (
        "test_validate_args_rejects_bad_input",
        "test_computed_arguments_cannot_be_set",
        *(f"test_tiny_run_writes_tags_model_and_says_where[{name}]" for name in QUICK_RUNS),
    ),
}


# Longest first. pytest-xdist hands the tests (an `xdist_group` as one piece) to its two workers in collection order,
# so a long test collected last can leave one worker running alone at the end: these modules go first, and in each
# the long-running tests (markers `learning` and `slow`, a shared group) before the rest. Modules stay whole, so that
# a module-scoped fixture is set up once per worker.
LONG_FIRST = ("test_learning.py", "test_scripts.py", "test_enjoy.py", "test_resume.py", "test_teaching.py",
              "test_benchmark.py", "test_protocol.py")  # fmt: skip


def long_first(item):
    module = os.path.basename(item.nodeid.partition("::")[0])
    long = any(item.get_closest_marker(m) for m in ("learning", "slow", "xdist_group"))
    return (LONG_FIRST.index(module) if module in LONG_FIRST else len(LONG_FIRST), not long)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module, _, name = item.nodeid.partition("::")
        wanted = QUICK.get(os.path.basename(module), ())
        if wanted is None or any(part in name for part in wanted):
            item.add_marker(pytest.mark.quick)
    items.sort(key=long_first)  # stable: the rest keeps its order
