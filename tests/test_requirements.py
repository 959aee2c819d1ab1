"""The install, CleanRL's way: a light core (requirements.txt) and one file per family under requirements/, each
pinned and each installing the core; what the core leaves out (JAX, JaxMARL, jumanji, Ray) is checked by the
scripts that need it, which stop with one line naming the `pip install -r` command before they build anything;
and the core scripts run with those packages unimportable. `.ci/run` installs and runs exactly the README's test
command."""

import os
import re
import subprocess
import sys

import pytest
from helpers import CASES, REPO, TINY, only_run_dir

from utils import REQUIREMENTS

CORE = os.path.join(REPO, "requirements.txt")
FAMILIES = (*REQUIREMENTS, "dev")
# What the core must not pull in: every family's packages (the table check_requirements looks them up by), the
# rest of the JAX stack, and the development tools
NOT_IN_CORE = {name for names in REQUIREMENTS.values() for name in names} | {"jaxlib", "gymnax", "pytest", "ruff"}


def family_file(family):
    return os.path.join(REPO, "requirements", f"requirements-{family}.txt")


def read(path):
    """(the files it includes with -r, {package: pinned version}) of a requirements file, comments dropped."""
    includes, pins = [], {}
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            includes.append(os.path.normpath(os.path.join(os.path.dirname(path), line[3:].strip())))
        elif line:
            name, _, version = line.partition("==")
            assert version, f"{path}: {line!r} is not pinned with =="
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return includes, pins


def resolved(path):
    """{package: version} of a file and everything it includes; a package pinned twice must agree."""
    includes, pins = read(path)
    for include in includes:
        for name, version in resolved(include).items():
            assert pins.setdefault(name, version) == version, f"{name} is pinned to two versions ({path})"
    return pins


def test_core_is_light_and_every_family_installs_it():
    core = resolved(CORE)
    assert core["torch"] == "2.13.0" and not NOT_IN_CORE & set(core), NOT_IN_CORE & set(core)
    for family in FAMILIES:
        pins = resolved(family_file(family))
        assert set(core) <= set(pins), family  # each family file installs the core too
    dev = resolved(family_file("dev"))
    for family, packages in REQUIREMENTS.items():  # each family's file installs what its check looks for
        assert set(packages) <= set(resolved(family_file(family))), family
        assert set(resolved(family_file(family))) <= set(dev), family
    assert {"pytest", "pytest-xdist", "ruff"} <= set(dev)


def test_ci_runs_exactly_the_readmes_test_command():
    readme = open(os.path.join(REPO, "README.md")).read()
    command = "pip install -r requirements/requirements-dev.txt && python -m pytest"
    assert f"```bash\n{command}\n```" in readme
    assert open(os.path.join(REPO, ".ci", "run")).read().rstrip().endswith("\n" + command)


# Runs a script as `__main__` with some top-level packages unimportable, as on a core-only install
BLOCKER = """
import os, runpy, sys
blocked = set(sys.argv[1].split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Blocker())
sys.argv = sys.argv[2:]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
runpy.run_path(sys.argv[0], run_name="__main__")
"""
ALL_OPTIONAL = "jax,jaxlib,jaxmarl,flax,gymnax,jumanji,ray"


def without(packages, script, args, cwd):
    """`python <script> <args>` from `cwd` with `packages` (comma-separated) unimportable."""
    return subprocess.run(
        [sys.executable, "-c", BLOCKER, packages, os.path.join(REPO, script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "script, args, family",
    [
        ("magpo_smax.py", [], "smax"),
        ("magpo_jumanji.py", ["--env", "lbf"], "jumanji"),
        ("mappo_baseline.py", ["--env", "smax"], "smax"),
        ("mappo_baseline.py", ["--env", "connector"], "jumanji"),
        ("happo_baseline.py", ["--env", "lbf"], "jumanji"),
        ("benchmark.py", ["--scripts", "magpo_coordsum.py", "--seeds", "1"], "ray"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else x,
)
def test_a_missing_family_is_one_line_with_its_install_command(tmp_path, script, args, family):
    result = without(ALL_OPTIONAL, script, args, tmp_path)
    assert result.returncode == 1 and result.stderr.startswith("error: "), result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.rstrip().endswith(f"pip install -r requirements/requirements-{family}.txt")
    assert not os.path.exists(tmp_path / "runs"), "nothing may be built first"


def test_the_core_scripts_need_no_optional_family(tmp_path):
    """What the core promises, with JAX, jumanji and Ray unimportable: MAGPO on MPE (saving its model), MAPPO and
    HAPPO on CoordSum train, enjoy.py replays the model, plot.py tables both, theory_check.py runs, benchmark.py prints
    a grid."""
    mpe = without(ALL_OPTIONAL, "magpo_mpe.py", [*CASES["magpo_mpe"].args, "--save-model"], tmp_path)
    assert mpe.returncode == 0, mpe.stderr[-2000:]
    model_path = os.path.join(only_run_dir(tmp_path), "magpo_mpe.cleanrl_model")
    coordsum = without(ALL_OPTIONAL, "mappo_baseline.py", [*TINY, "--env", "coordsum", "--max-steps", "20"], tmp_path)
    assert coordsum.returncode == 0, coordsum.stderr[-2000:]
    happo = without(ALL_OPTIONAL, "happo_baseline.py", [*TINY, "--env", "coordsum", "--max-steps", "20"], tmp_path)
    assert happo.returncode == 0, happo.stderr[-2000:]
    enjoy = without(ALL_OPTIONAL, "enjoy.py", ["--model-path", model_path, "--num-episodes", "2", "--no-gif"], tmp_path)
    assert enjoy.returncode == 0 and "return" in enjoy.stdout, enjoy.stderr[-2000:]
    plot = without(
        ALL_OPTIONAL, "plot.py", ["--runs", "runs/*", "--out-dir", "plots", "--bootstrap-reps", "50"], tmp_path
    )
    assert plot.returncode == 0 and "coordsum_3x10" in (tmp_path / "plots" / "final.md").read_text(), plot.stderr
    theory = without(ALL_OPTIONAL, "theory_check.py", ["--agent-counts", "2", "--num-games", "2"], tmp_path)
    assert theory.returncode == 0, theory.stderr[-2000:]
    grid = without(ALL_OPTIONAL, "benchmark.py", ["--grid", "paper-coordsum", "--dry-run"], tmp_path)
    assert grid.returncode == 0 and "magpo_coordsum.py" in grid.stdout, grid.stderr[-2000:]
