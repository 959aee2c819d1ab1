"""The documentation stays true to the code: every `file.py:START-END` (`SYMBOL`) reference in
docs/algorithm.md points at lines that exist and contain the symbol, every loss term has one, and
nothing in the repository points outside it (a clone has only the repository)."""

import os
import re

import pytest
from helpers import REPO

REFERENCE = re.compile(r"`(\w+\.py):(\d+)-(\d+)` \(`([^`]+)`\)")
# The terms docs/algorithm.md must map to code (its §4-§10).
TERMS = (
    "def guider_loss", "# L_pg, the double clip", "# L_kl, the masked KL", "# L_v, the value loss",
    "# The entropy bonus", "def learner_loss", "def compute_gae", "def normalize", "# ALGO LOGIC: per-agent GAE",
    "for epoch in range(args.update_epochs)", "def absolute_metric",
)  # fmt: skip


def references():
    with open(os.path.join(REPO, "docs", "algorithm.md")) as f:
        return REFERENCE.findall(f.read())


def test_algorithm_md_cites_code_that_exists():
    refs = references()
    assert len(refs) >= 30
    for script, start, end, symbol in refs:
        with open(os.path.join(REPO, script)) as f:
            lines = f.read().splitlines()
        start, end = int(start), int(end)
        assert 1 <= start <= end <= len(lines), f"{script}:{start}-{end} is outside the file"
        assert any(symbol in line for line in lines[start - 1 : end]), f"`{symbol}` is not in {script}:{start}-{end}"
        assert symbol in lines[start - 1] or lines[start - 1].lstrip().startswith(("#", "@")), (
            f"{script}:{start}-{end} should start at `{symbol}` (or the comment above it)"
        )


def test_every_loss_term_is_mapped_to_code():
    cited = {symbol for script, _, _, symbol in references() if script == "magpo_mpe.py"}
    assert set(TERMS) <= cited, set(TERMS) - cited


# Written in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "MAGPO_" + "NOTES", "notes " + "§")


@pytest.mark.parametrize("pattern", OUTSIDE)
def test_nothing_points_outside_the_repository(pattern):
    hits = []
    teaching = ("teaching", "teaching/handout", "teaching/kit", "teaching/tests_public", "teaching/tests_hidden")
    for top in (".", "utils", "tests", "docs", "benchmarks", *teaching, "teaching/learning"):
        for name in sorted(os.listdir(os.path.join(REPO, top))):
            path = os.path.join(REPO, top, name)
            if os.path.isfile(path) and name.endswith((".py", ".md", ".txt", ".toml", ".ini")):
                with open(path, encoding="utf-8") as f:
                    hits += [f"{top}/{name}:{i}" for i, line in enumerate(f, 1) if pattern in line]
    assert not hits, hits


# A relative Markdown link `](path)` or image, and a backticked repository path such as `tests/test_plot.py`,
# `docs/usage.md` or `requirements/requirements-dev.txt`
LINK = re.compile(r"\]\((?!https?://|#)([^)\s#]+)")
PATH = re.compile(r"`((?:tests|docs|utils|benchmarks|requirements|teaching)/[\w./-]+\.(?:py|md|txt|csv|json|png|gif))`")


def markdown_files():
    yield os.path.join(REPO, "README.md")
    yield os.path.join(REPO, "teaching", "README.md")
    for name in sorted(os.listdir(os.path.join(REPO, "docs"))):
        if name.endswith(".md"):
            yield os.path.join(REPO, "docs", name)


@pytest.mark.parametrize("path", list(markdown_files()), ids=os.path.basename)
def test_every_link_and_cited_path_exists(path):
    """A link to a moved page or a test file that was renamed fails here, naming it (links are relative to the
    page; backticked paths to the repository root)."""
    text = open(path, encoding="utf-8").read()
    missing = [link for link in LINK.findall(text) if not os.path.exists(os.path.join(os.path.dirname(path), link))]
    missing += [cited for cited in PATH.findall(text) if not os.path.exists(os.path.join(REPO, cited))]
    assert not missing, missing


def test_the_readme_is_the_short_front_door():
    """The README stays a getting-started page (CleanRL's order); the rest lives in docs/ and is linked from it."""
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    assert len(text.splitlines()) <= 200
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:4] == ["## Install", "## A first run in two minutes", "## The main job", "## Test"], headings
    for page in ("usage.md", "environments.md", "algorithm.md", "results.md", "reproduction.md", "benchmarks.md"):
        assert f"(docs/{page})" in text, page
