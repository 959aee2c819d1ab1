"""Build a course assignment from this repository's own scripts (teaching/README.md).

    python teaching/make_assignment.py build --out DIR [--seed S] [--parts A B C D] [--optional C7]
    python teaching/make_assignment.py selftest DIR [--learning]

`build` writes DIR/student/ (the kit handed out: the real scripts with the manifest's regions replaced by
`raise NotImplementedError("exercise ID: ...")`, the public checks and their fixtures, the handout) and
DIR/instructor/ (the same with the solutions, the hidden checks, SOLUTIONS.md and the wrong-answer variants).
The regions are found from what the code already has (teaching/exercises.toml: function names and statement
anchors), so the reference carries no markers; an anchor that is missing, ambiguous or empty stops the build and
names it. Shared definitions that hold an exercise are imported in the kit from the one file the student edits, so
no guarded copy (tests/test_copies.py) leaks a solution. The fixtures are values computed by the reference on
float64 inputs drawn from the instructor's seed: the kit ships numbers, no reference code.

`selftest` checks a built DIR as the project's CI does (tests/test_teaching.py): the instructor kit passes every
public and hidden check, the student kit fails each exercise with its own "not implemented" and passes the rest,
every variant fails a public check of its exercise, no solution line is in student/, the same seed gives the same
fixtures, and the kit's docs/algorithm.md points at lines that exist.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GENERATOR_VERSION = "1"
DEFAULT_SEED = 2026

# What the kit holds besides the exercise files: the scripts that import from them, plot.py, the numpy envs. No JAX.
KIT_SCRIPTS = ("theory_check.py", "mappo_baseline.py", "magpo_mpe.py", "magpo_coordsum.py", "plot.py")
# utils/ whole: its JAX families import JAX only when used, so that `--env smax` says in one line what to install
KIT_UTILS = tuple(sorted(n for n in os.listdir(os.path.join(REPO, "utils")) if n.endswith((".py", ".csv"))))
# Committed run values the handout's Part D and the walkthrough redraw (marl-eval JSON, docs/data/).
KIT_DATA = (
    "teaching/coordsum_3x10_delta.json",
    "teaching/coordsum_3x10_delta_guider.json",
    "c2_protocol/mpe_default_part1.json",
    "c2_protocol/mpe_part2.json",
    "c2_protocol/mpe_part2_guider.json",
    "c2_protocol/e3_order.json",
)
DOC_REF = re.compile(r"`(\w+\.py):(\d+)-(\d+)`( \(`[^`]+`\))?")


class BuildError(Exception):
    """A problem with the manifest or an anchor: reported as one `error:` line."""


# ---------------------------------------------------------------------------------------------- the manifest
def load_manifest(path=os.path.join(HERE, "exercises.toml")):
    with open(path, "rb") as f:
        manifest = tomllib.load(f)
    ids = [e["id"] for e in manifest["exercise"]]
    if len(set(ids)) != len(ids):
        raise BuildError(f"duplicate exercise ids in {path}")
    for variant in manifest.get("variant", []):
        if variant["exercise"] not in ids:
            raise BuildError(f"variant {variant['id']} names an unknown exercise {variant['exercise']}")
    return manifest


def selected(manifest, parts, optional):
    """The exercises of the chosen parts; optional ones only when named."""
    return [
        e for e in manifest["exercise"] if e["part"] in parts and (not e.get("optional", False) or e["id"] in optional)
    ]


# ---------------------------------------------------------------------------------------------- regions
def find_function(tree, spec, where):
    """The ast node of a top-level function (`function = NAME`) or a method (`method = Class.NAME`)."""
    if "method" in spec:
        cls_name, name = spec["method"].split(".")
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls_name]
        if len(classes) != 1:
            raise BuildError(f"anchor `class {cls_name}` in {where}: found {len(classes)}, expected exactly 1")
        scope = classes[0].body
    else:
        name = spec["function"]
        scope = tree.body
    nodes = [n for n in scope if isinstance(n, ast.FunctionDef) and n.name == name]
    if len(nodes) != 1:
        raise BuildError(f"anchor `def {name}` in {where}: found {len(nodes)}, expected exactly 1")
    return nodes[0]


def locate(source, spec, where):
    """(first line, last line, indent, definition name) of a region, 1-based and inclusive."""
    tree = ast.parse(source)
    node = find_function(tree, spec, where)
    body = node.body
    has_docstring = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
    statements = body[1:] if has_docstring else body
    if "first" in spec:
        lines = source.splitlines()

        def starts(stmt, text):
            return lines[stmt.lineno - 1].strip().startswith(text)

        firsts = [i for i, s in enumerate(statements) if starts(s, spec["first"])]
        if len(firsts) != 1:
            raise BuildError(
                f"anchor `{spec['first']}` in def {node.name} of {where}: found {len(firsts)}, expected exactly 1"
            )
        lasts = [i for i in range(firsts[0], len(statements)) if starts(statements[i], spec["last"])]
        if not lasts:
            raise BuildError(f"anchor `{spec['last']}` after `{spec['first']}` in def {node.name} of {where}: missing")
        statements = statements[firsts[0] : lasts[0] + 1]
    if not statements:
        raise BuildError(f"region in def {node.name} of {where} is empty")
    first, last = statements[0].lineno, statements[-1].end_lineno
    indent = statements[0].col_offset
    top = spec.get("method", spec.get("function")).split(".")[0]
    return first, last, indent, top


def stub_lines(exercise, spec, indent):
    pad = " " * indent
    lines = [f"{pad}# TODO exercise {exercise['id']}: {exercise['title']} (HANDOUT.md, Part {exercise['part']})."]
    if spec.get("given"):
        lines.append(f"{pad}# Define {spec['given']}: the code below uses them.")
    lines.append(f'{pad}raise NotImplementedError("exercise {exercise["id"]}: {exercise["title"]}")')
    return lines


def body_lines(body, indent):
    return [(" " * indent + line) if line.strip() else "" for line in body.strip("\n").splitlines()]


def replace_regions(source, replacements, where):
    """replacements: [(spec, new_lines_fn(indent))] -> (new source, line map old->new, blanked ranges)."""
    located = []
    for spec, make in replacements:
        first, last, indent, _ = locate(source, spec, where)
        located.append((first, last, make(indent)))
    located.sort()
    for (a1, b1, _), (a2, _, _) in zip(located, located[1:]):
        if a2 <= b1:
            raise BuildError(f"overlapping regions in {where} at lines {a1}-{b1} and {a2}")
    lines = source.splitlines()
    out, mapping, blanks, previous = [], {}, [], 0
    for first, last, new in located:
        for n in range(previous + 1, first):
            mapping[n] = len(out) + 1
            out.append(lines[n - 1])
        start = len(out) + 1
        out.extend(new)
        blanks.append((first, last, start, len(out)))
        previous = last
    for n in range(previous + 1, len(lines) + 1):
        mapping[n] = len(out) + 1
        out.append(lines[n - 1])
    return "\n".join(out) + "\n", mapping, blanks


def definition_source(source, name):
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            start = node.lineno - len(node.decorator_list)
            return start, node.end_lineno, "\n".join(source.splitlines()[start - 1 : node.end_lineno])
    return None


def import_shared(sources, exercises, reference):
    """In every kit file but the owner, a definition that holds an exercise becomes an import from the owner (each
    such definition must be a copy of the owner's in the reference, `reference`)."""
    owners = {}
    for e in exercises:
        for spec in e["regions"]:
            name = spec.get("function") or spec["method"].split(".")[0]
            owners[name] = e["file"]
    for name, owner in owners.items():
        original = definition_source(reference[owner], name)
        for path, source in list(sources.items()):
            if path == owner or not path.endswith(".py"):
                continue
            found = definition_source(source, name)
            if found is None:
                continue
            start, end, text = found
            if text != original[2]:
                raise BuildError(f"{path} has its own `{name}`, not a copy of {owner}'s: cannot import it")
            lines = source.splitlines()
            module = owner[: -len(".py")]
            new = [f"from {module} import {name}  # noqa: E402 (in this kit the exercise lives in {owner})"]
            sources[path] = "\n".join(lines[: start - 1] + new + lines[end:]) + "\n"


# ---------------------------------------------------------------------------------------------- fixtures
def deterministic_npz(arrays):
    """An .npz whose bytes depend only on the arrays (np.savez stamps the current time into the zip)."""
    import numpy as np

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data.getvalue())
    return buffer.getvalue()


def make_fixtures(exercises, seed):
    """{exercise id: {name: array}}: inputs drawn from `seed`, outputs and gradients of the reference."""
    for path in (REPO, HERE):
        if path not in sys.path:
            sys.path.insert(0, path)
    import fixtures_reference  # teaching/fixtures_reference.py: one function per exercise

    fixtures = {}
    for e in exercises:
        make = getattr(fixtures_reference, f"fixture_{e['id']}")
        fixtures[e["id"]] = make(seed)
    return fixtures


def seed_tag(seed):
    return hashlib.sha256(f"magpo-teaching-{seed}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- docs
def line_blocks(old, new):
    """difflib's opcodes between two versions of a file, as (tag, old 1-based range, new 1-based range)."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    return [(tag, (i1 + 1, i2), (j1 + 1, j2)) for tag, i1, i2, j1, j2 in matcher.get_opcodes()]


def kit_algorithm_md(kit_sources):
    """docs/algorithm.md with every `file.py:A-B` recomputed for the kit's files: lines that are now an exercise say
    so, a definition the kit imports points at the file that holds it, and files the kit does not have lose their line
    numbers."""
    text = read(os.path.join(REPO, "docs", "algorithm.md"))
    reference = reference_sources()
    blocks = {path: line_blocks(reference[path], kit_sources[path]) for path in KIT_SCRIPTS}

    def fix(m):
        script, a, b, symbol = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4) or ""
        if script not in kit_sources:
            return f"`{script}`{symbol} (in the reference repository, not in this kit)"
        kit_lines = kit_sources[script].splitlines()

        def where(n):
            for tag, (i1, i2), (j1, j2) in blocks[script]:
                if i1 <= n <= i2:
                    return tag, i1, (j1, j2)
            raise BuildError(f"docs/algorithm.md cites {script}:{n}, past the end of the file")

        (tag_a, i1_a, new_a), (tag_b, i1_b, new_b) = where(a), where(b)
        if tag_a != "equal" or tag_b != "equal":
            changed = new_a if tag_a != "equal" else new_b
            replaced = "\n".join(kit_lines[changed[0] - 1 : changed[1]])
            imported = re.match(r"from (\w+) import (\w+)", replaced)
            if imported:  # the definition lives in another kit file
                owner = imported.group(1) + ".py"
                start, end, _ = definition_source(kit_sources[owner], imported.group(2))
                return f"`{owner}:{start}-{end}`{symbol}"
            if "NotImplementedError" in replaced and tag_a != "equal" and tag_b != "equal":
                return f"`{script}:{changed[0]}-{changed[1]}` (your implementation)"
        first = new_a[0] + (a - i1_a) if tag_a == "equal" else new_a[0]
        last = new_b[0] + (b - i1_b) if tag_b == "equal" else new_b[1]
        return f"`{script}:{first}-{last}`{symbol}"

    text = DOC_REF.sub(fix, text)
    # links to the repository's other pages, which the kit does not ship (theory.md is in the kit)
    return re.sub(
        r"\[([^\]]+)\]\((?!https?:|theory\.md)([\w./-]+\.md)(#[\w-]*)?\)", r"\1 (in the reference repository)", text
    )


# ---------------------------------------------------------------------------------------------- the notebook
def percent_to_ipynb(source, colab_repo):
    """A jupytext percent-format script -> an .ipynb (nbformat 4): `# %%` starts a code cell, `# %% [markdown]` a
    Markdown cell (its lines lose the leading `# `), and commented magics (`# %pip ...`) become magics."""
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        cell = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": []}
        if kind == "markdown":
            text = [re.sub(r"^# ?", "", line) for line in lines]
        else:
            text = [re.sub(r"^# (%(pip|cd|matplotlib)\b)", r"\1", line) for line in lines]
            cell.update(execution_count=None, outputs=[])
        cell["source"] = [line + "\n" for line in text[:-1]] + text[-1:]
        cells.append(cell)

    for line in source.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            tags = re.findall(r'"([^"]+)"', line.split("tags=")[1]) if "tags=" in line else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    if colab_repo:
        url = f"https://colab.research.google.com/github/{colab_repo}/blob/main/walkthrough.ipynb"
        badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
        setup = [
            "# In Colab: fetch the kit (skipped elsewhere); the next cell installs its light requirements.\n",
            "import os, sys\n",
            "if 'google.colab' in sys.modules and not os.path.exists('check.py'):\n",
            f"    os.system('git clone --depth 1 https://github.com/{colab_repo} kit')\n",
            "    os.chdir('kit')",
        ]
        cells[:0] = [
            {"cell_type": "markdown", "metadata": {}, "source": [badge]},
            {"cell_type": "code", "metadata": {}, "source": setup, "execution_count": None, "outputs": []},
        ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    for i, cell in enumerate(notebook["cells"]):
        cell["id"] = f"cell-{i}"
    return json.dumps(notebook, indent=1, sort_keys=True) + "\n"


# ---------------------------------------------------------------------------------------------- build
def reference_commit():
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write(path, text, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)


def reference_sources():
    sources = {name: read(os.path.join(REPO, name)) for name in KIT_SCRIPTS}
    for name in KIT_UTILS:
        sources[f"utils/{name}"] = read(os.path.join(REPO, "utils", name))
    return sources


def solved_sources(exercises):
    """The instructor's files: the reference, with the shared exercise definitions turned into imports."""
    sources = reference_sources()
    import_shared(sources, exercises, reference_sources())
    return sources


def blanked_sources(exercises):
    """The student's files: every region of the chosen exercises replaced by its stub."""
    sources = reference_sources()
    by_file = {}
    for e in exercises:
        for spec in e["regions"]:
            by_file.setdefault(e["file"], []).append((spec, lambda indent, e=e, spec=spec: stub_lines(e, spec, indent)))
    for path, replacements in by_file.items():
        sources[path], _, _ = replace_regions(sources[path], replacements, path)
    import_shared(sources, exercises, reference_sources())
    return sources


def variant_sources(solved, variant, exercises):
    """The instructor's files with the variant's wrong body in its region, in the exercise's file and in every other kit
    file that holds a copy of the same definition (magpo_coordsum.py's Guider, say), so that every script runs it."""
    exercise = next(e for e in exercises if e["id"] == variant["exercise"])
    spec = variant["region"]
    name = spec.get("function") or spec["method"].split(".")[0]
    owner = definition_source(solved[exercise["file"]], name)

    def wrong(indent):
        return body_lines(variant["body"], indent)

    sources = dict(solved)
    for path, source in solved.items():
        found = definition_source(source, name) if path.endswith(".py") else None
        if found is not None and found[2] == owner[2]:
            sources[path], _, _ = replace_regions(source, [(spec, wrong)], path)
    return sources


def fill_handout(template, exercises, manifest, course, due):
    points = {f"points_{e['id']}": str(e["points"]) for e in manifest["exercise"]}
    values = {"course": course, "due": due, "total_points": str(sum(e["points"] for e in exercises)), **points}
    for key in re.findall(r"\{(\w+)\}", template):
        if key not in values:
            raise BuildError(f"HANDOUT.md has an unknown placeholder {{{key}}}")
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)


def write_kit(root, sources, common, exercises, manifest, seed, fixtures, instructor):
    for path, text in sources.items():
        write(os.path.join(root, path), text)
    for path, data in common.items():
        write(os.path.join(root, path), data, "wb" if isinstance(data, bytes) else "w")
    for e_id, arrays in fixtures.items():
        data = deterministic_npz({**arrays, "_tag": seed_tag(seed)})
        write(os.path.join(root, "tests", "fixtures", f"{e_id}.npz"), data, "wb")
    for name in sorted(os.listdir(os.path.join(HERE, "tests_public"))):
        if name.endswith(".py") and (
            not name.startswith("test_") or name[5:-3] in {e["id"] for e in exercises} or name == "test_kit.py"
        ):
            shutil.copy(os.path.join(HERE, "tests_public", name), os.path.join(root, "tests", name))
    learning_ids = {x["id"] for x in manifest.get("learning", []) if x["part"] in {e["part"] for e in exercises}}
    for name in sorted(os.listdir(os.path.join(HERE, "learning"))):
        if name.endswith(".py") and (not name.startswith("test_") or name[5:-3] in learning_ids):
            write(os.path.join(root, "learning", name), read(os.path.join(HERE, "learning", name)))
    if instructor:
        for name in sorted(os.listdir(os.path.join(HERE, "tests_hidden"))):
            if name.endswith(".py") and (not name.startswith("test_") or name[5:7] in {e["id"] for e in exercises}):
                write(os.path.join(root, "tests", "hidden", name), read(os.path.join(HERE, "tests_hidden", name)))


def build(out, seed=DEFAULT_SEED, parts=("A", "B", "C", "D"), optional=(), course="", due="", colab_repo=""):
    manifest = load_manifest()
    unknown = set(optional) - {e["id"] for e in manifest["exercise"] if e.get("optional")}
    if unknown:
        raise BuildError(f"--optional takes optional exercises only, not {sorted(unknown)}")
    exercises = selected(manifest, set(parts), set(optional))
    if not exercises:
        raise BuildError(f"no exercise in parts {list(parts)}")
    solved = solved_sources(exercises)
    blanked = blanked_sources(exercises)
    fixtures = make_fixtures(exercises, seed)
    tag = seed_tag(seed)
    public_exercises = [
        {k: e[k] for k in ("id", "part", "title", "file", "points")} | {"optional": e.get("optional", False)}
        for e in exercises
    ]
    learning = [x for x in manifest.get("learning", []) if x["part"] in set(parts)]
    info = {
        "reference_commit": reference_commit(),
        "generator_version": GENERATOR_VERSION,
        "fixture_tag": tag,
        "parts": sorted(set(parts)),
        "exercises": public_exercises,
        "learning": learning,
    }
    common = {
        "VERSION": json.dumps(info, indent=1, sort_keys=True) + "\n",
        "README.md": read(os.path.join(HERE, "kit", "README.md")),
        "requirements.txt": read(os.path.join(HERE, "kit", "requirements.txt")),
        "check.py": read(os.path.join(HERE, "kit", "check.py")),
        "pytest.ini": read(os.path.join(HERE, "kit", "pytest.ini")),
        "HANDOUT.md": fill_handout(
            read(os.path.join(HERE, "handout", "HANDOUT.md")),
            exercises,
            manifest,
            course or "(course)",
            due or "(due date)",
        ),
        "walkthrough.py": read(os.path.join(HERE, "walkthrough.py")),
        "walkthrough.ipynb": percent_to_ipynb(read(os.path.join(HERE, "walkthrough.py")), colab_repo),
        "docs/theory.md": read(os.path.join(REPO, "docs", "theory.md")),
        ".gitignore": "runs/\nplots/\nwalkthrough_figures/\n__pycache__/\n.pytest_cache/\n*.pt\nsubmission.zip\n",
    }
    for path in KIT_DATA:
        full = os.path.join(REPO, "docs", "data", path)
        if os.path.exists(full):
            common[f"docs/data/{path}"] = read(full)
    student_common = dict(common)
    student_common["docs/algorithm.md"] = kit_algorithm_md(blanked)
    instructor_common = dict(common)
    instructor_common["docs/algorithm.md"] = kit_algorithm_md(solved)
    instructor_common["SOLUTIONS.md"] = read(os.path.join(HERE, "handout", "SOLUTIONS.md"))
    if os.path.exists(out):
        shutil.rmtree(out)
    write_kit(os.path.join(out, "student"), blanked, student_common, exercises, manifest, seed, fixtures, False)
    write_kit(os.path.join(out, "instructor"), solved, instructor_common, exercises, manifest, seed, fixtures, True)
    # the wrong-answer variants: a runnable copy of the instructor's code with one region replaced, named bug1..bugN
    # so that a folder handed out for Part D4 does not name its bug (variants/KEY.md does)
    key = ["# The wrong-answer variants (instructor only)", "", "| folder | exercise | silent | what is wrong |"]
    key.append("| --- | --- | --- | --- |")
    chosen = {e["id"] for e in exercises}
    variants = [v for v in manifest.get("variant", []) if v["exercise"] in chosen]
    for n, variant in enumerate(variants, 1):
        sources = variant_sources(solved, variant, exercises)
        for path, text in sources.items():
            write(os.path.join(out, "instructor", "variants", f"bug{n}", path), text)
        silent = "yes" if variant.get("silent") else ""
        key.append(f"| bug{n} | {variant['exercise']} | {silent} | {variant['id']}: {variant['description']} |")
    write(os.path.join(out, "instructor", "variants", "KEY.md"), "\n".join(key) + "\n")
    write(os.path.join(out, "instructor", "tests", "fixtures", "SEED.json"), json.dumps({"seed": seed}) + "\n")
    return exercises, variants


# ---------------------------------------------------------------------------------------------- selftest
def normalise(line):
    return " ".join(line.split())


def solution_lines(exercises):
    """The lines of the solutions that appear nowhere else in the kit's files (the reference with the exercises' shared
    copies turned into imports): what must not leak."""
    sources = solved_sources(exercises)
    inside, outside = {}, set()
    for path, source in sources.items():
        lines = source.splitlines()
        ranges = []
        for e in exercises:
            if e["file"] != path:
                continue
            for spec in e["regions"]:
                first, last, _, _ = locate(source, spec, path)
                ranges.append((first, last))
                for line in lines[first - 1 : last]:
                    inside[normalise(line)] = e["id"]
        for n, line in enumerate(lines, 1):
            if not any(a <= n <= b for a, b in ranges):
                outside.add(normalise(line))
    return {line: e_id for line, e_id in inside.items() if len(line) >= 12 and line not in outside}


def leaks(student_dir, exercises):
    secrets = solution_lines(exercises)
    found = []
    for top, _, files in os.walk(student_dir):
        for name in files:
            path = os.path.join(top, name)
            if name.endswith(".npz"):
                with zipfile.ZipFile(path) as zf:
                    text = "\n".join(zf.namelist())
            else:
                try:
                    text = read(path)
                except UnicodeDecodeError:
                    continue
            lines = {normalise(line) for line in text.splitlines()}
            if name.endswith(".ipynb"):
                lines |= {
                    normalise(s) for cell in json.loads(text)["cells"] for s in "".join(cell["source"]).splitlines()
                }
            for secret, e_id in secrets.items():
                if secret in lines:
                    found.append(
                        f"{os.path.relpath(path, student_dir)}: a line of exercise {e_id}'s solution: {secret}"
                    )
    return found


def run_pytest(kit, *args, timeout=900):
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=kit,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    return result.returncode, result.stdout + result.stderr


def check_student(kit):
    """`python check.py --json` in the student kit: {exercise: status}."""
    result = subprocess.run(
        [sys.executable, "check.py", "--json"], cwd=kit, capture_output=True, text=True, timeout=900
    )
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise BuildError(f"check.py --json in {kit} printed no table:\n{result.stdout}\n{result.stderr}") from None


def docs_ref_errors(kit):
    errors = []
    text = read(os.path.join(kit, "docs", "algorithm.md"))
    for m in DOC_REF.finditer(text):
        script, a, b = m.group(1), int(m.group(2)), int(m.group(3))
        path = os.path.join(kit, script)
        if not os.path.exists(path):
            errors.append(f"docs/algorithm.md cites {script}, which the kit does not have")
            continue
        lines = read(path).splitlines()
        symbol = (m.group(4) or "")[3:-2]
        if not 1 <= a <= b <= len(lines):
            errors.append(f"docs/algorithm.md cites {script}:{a}-{b}, outside the file")
        elif symbol and "your implementation" not in m.group(0) and not any(symbol in x for x in lines[a - 1 : b]):
            errors.append(f"docs/algorithm.md cites {script}:{a}-{b} for `{symbol}`, which is not there")
    return errors


def selftest_variants(out, log=lambda line: None):
    """Each wrong-answer variant, put into a copy of the instructor kit, must fail a public check of its exercise."""
    problems = []
    key = read(os.path.join(out, "instructor", "variants", "KEY.md"))
    for folder, e_id, variant_id in re.findall(r"\| (bug\d+) \| (\w+) \| [^|]* \| ([\w-]+):", key):
        with tempfile.TemporaryDirectory() as tmp:
            kit = os.path.join(tmp, "kit")
            shutil.copytree(os.path.join(out, "instructor"), kit, ignore=shutil.ignore_patterns("variants", "runs"))
            shutil.copytree(os.path.join(out, "instructor", "variants", folder), kit, dirs_exist_ok=True)
            code, _ = run_pytest(kit, f"tests/test_{e_id}.py")
        caught = code != 0
        log(f"variant {folder} ({variant_id}, {e_id}): {'caught' if caught else 'NOT caught'} by tests/test_{e_id}.py")
        if not caught:
            problems.append(f"variant {variant_id} passes every public check of {e_id}")
    return problems


def selftest(out, learning=False, log=print):
    manifest = load_manifest()
    info = json.loads(read(os.path.join(out, "student", "VERSION")))
    ids = [e["id"] for e in info["exercises"]]
    exercises = [e for e in manifest["exercise"] if e["id"] in ids]
    problems = []
    # 1. the instructor kit passes every public and hidden check
    code, output = run_pytest(os.path.join(out, "instructor"), "tests")
    log(f"instructor kit, public and hidden checks: {output.strip().splitlines()[-1]}")
    if code != 0:
        problems.append(f"the instructor kit fails its checks:\n{output}")
    # 2. the student kit: each exercise not implemented, with its own message; nothing else fails
    status = check_student(os.path.join(out, "student"))
    log(f"student kit: {status}")
    for e_id, state in status.items():
        expected = "not yet implemented" if e_id in ids else "passed"
        if state != expected:
            problems.append(f"student kit: {e_id} is '{state}', expected '{expected}'")
    # 3. every variant fails a public check of its exercise
    problems += selftest_variants(out, log)
    # 4. no solution line in the student kit
    found = leaks(os.path.join(out, "student"), exercises)
    log(f"leak check: {len(found)} solution lines found in student/")
    problems += found
    # 5. the same seed gives the same fixtures
    with tempfile.TemporaryDirectory() as tmp:
        seed = json.loads(read(os.path.join(out, "instructor", "tests", "fixtures", "SEED.json")))["seed"]
        fixtures = make_fixtures(exercises, seed)
        for e_id, arrays in fixtures.items():
            with open(os.path.join(out, "student", "tests", "fixtures", f"{e_id}.npz"), "rb") as f:
                if f.read() != deterministic_npz({**arrays, "_tag": seed_tag(seed)}):
                    problems.append(f"fixture {e_id} differs when rebuilt from the same seed")
        del tmp
    log("fixtures rebuilt from the seed: " + ("identical" if not any("fixture" in p for p in problems) else "DIFFER"))
    # 6. the kit's docs point at lines that exist
    errors = [f"{side}/{e}" for side in ("student", "instructor") for e in docs_ref_errors(os.path.join(out, side))]
    log("docs/algorithm.md references: " + ("all resolve" if not errors else f"{len(errors)} broken"))
    problems += errors
    if learning:
        code, output = run_pytest(os.path.join(out, "instructor"), "learning", "-s", timeout=3600)
        log(output.strip())
        if code != 0:
            problems.append("a learning check failed in the instructor kit")
    return problems


# ---------------------------------------------------------------------------------------------- command line
def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write DIR/student and DIR/instructor")
    b.add_argument("--out", required=True, help="the folder to write (replaced if it exists)")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the fixtures' seed; pick a private one for credit")
    b.add_argument("--parts", nargs="+", default=["A", "B", "C", "D"], help="parts to include (A B C D)")
    b.add_argument("--optional", nargs="*", default=[], help="optional exercises to include, e.g. C7")
    b.add_argument("--course", default="", help="the course name written into HANDOUT.md")
    b.add_argument("--due", default="", help="the due date written into HANDOUT.md")
    b.add_argument("--colab-repo", default="", help="OWNER/NAME of the student kit on GitHub, for the Colab badge")
    s = sub.add_parser("selftest", help="check a built DIR (as the project's CI does)")
    s.add_argument("dir", help="the folder `build --out` wrote")
    s.add_argument("--learning", action="store_true", help="also run the learning checks in the instructor kit")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            bad = [p for p in args.parts if p not in ("A", "B", "C", "D")]
            if bad:
                raise BuildError(f"--parts takes A B C D, not {bad}")
            if args.seed < 0:
                raise BuildError("--seed must be >= 0")
            if args.colab_repo and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.colab_repo):
                raise BuildError(f"--colab-repo must be OWNER/NAME, not {args.colab_repo!r}")
            if os.path.abspath(args.out).startswith(REPO + os.sep) and not os.path.abspath(args.out).startswith(
                os.path.join(REPO, "dist") + os.sep
            ):
                raise BuildError("write the kit outside the repository (or under dist/, which git ignores)")
            exercises, variants = build(
                args.out, args.seed, args.parts, args.optional, args.course, args.due, args.colab_repo
            )
            print(
                f"wrote {args.out}/student ({len(exercises)} exercises) and {args.out}/instructor "
                f"({len(variants)} variants); check it: python teaching/make_assignment.py selftest {args.out}"
            )
        else:
            if not os.path.exists(os.path.join(args.dir, "student", "VERSION")):
                raise BuildError(f"{args.dir} is not a built kit (no student/VERSION)")
            problems = selftest(args.dir, args.learning)
            if problems:
                print("\n".join(f"FAIL: {p}" for p in problems))
                return 1
            print("selftest passed")
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
