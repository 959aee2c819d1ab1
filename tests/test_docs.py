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
    for top in (".", "utils", "tests", "docs", "benchmarks"):
        for name in sorted(os.listdir(os.path.join(REPO, top))):
            path = os.path.join(REPO, top, name)
            if os.path.isfile(path) and name.endswith((".py", ".md", ".txt", ".toml", ".ini")):
                with open(path, encoding="utf-8") as f:
                    hits += [f"{top}/{name}:{i}" for i, line in enumerate(f, 1) if pattern in line]
    assert not hits, hits
