"""The whole tree is formatted and linted with the pinned ruff (config in pyproject.toml), so the
README's test command checks style too. Fix with `ruff format . && ruff check --fix .`."""

import subprocess
import sys

from helpers import REPO


def ruff(*args):
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_tree_is_formatted():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_tree_passes_the_linter():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
