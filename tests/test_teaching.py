"""The teaching kit (teaching/README.md) stays true to the reference: both kits build from the manifest's anchors, the
student kit fails each exercise with its own "not implemented" and passes everything else, the instructor kit passes
every public and hidden check, each wrong-answer variant fails a public check of its exercise, no solution line leaks
into the student kit, the fixtures are reproducible from the seed, the walkthrough runs at its CI budget, and the
kit's docs/algorithm.md points at lines that exist. About a minute and a half on 2 cores; nothing here trains."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO

sys.path.insert(0, os.path.join(REPO, "teaching"))
import make_assignment as kit  # noqa: E402

pytestmark = pytest.mark.xdist_group("teaching")  # one build, shared by every test of this module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("kit")
    exercises, variants = kit.build(str(out), seed=123, optional=("C7",))  # every exercise, the optional one too
    return out, exercises, variants


def test_every_anchor_resolves_to_exactly_one_region():
    manifest = kit.load_manifest()
    sources = kit.reference_sources()
    specs = [(e["file"], spec) for e in manifest["exercise"] for spec in e["regions"]]
    files = {e["id"]: e["file"] for e in manifest["exercise"]}
    specs += [(files[v["exercise"]], v["region"]) for v in manifest["variant"]]
    for path, spec in specs:
        first, last, _, _ = kit.locate(sources[path], spec, path)
        assert 1 <= first <= last


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"function": "no_such_function"}, "anchor `def no_such_function` in magpo_mpe.py: found 0"),
        ({"function": "learner_loss", "first": "nothing = ", "last": "loss = "}, "anchor `nothing = `"),
        ({"method": "Guider.no_such_method"}, "anchor `def no_such_method` in magpo_mpe.py: found 0"),
    ],
)
def test_a_broken_anchor_stops_the_build_and_names_it(spec, message):
    with pytest.raises(kit.BuildError, match=message.replace("(", r"\(").replace("`", "`")):
        kit.locate(kit.reference_sources()["magpo_mpe.py"], spec, "magpo_mpe.py")


def test_the_student_kit_fails_each_exercise_with_its_own_message_and_passes_the_rest(built):
    out, exercises, _ = built
    status = kit.check_student(str(out / "student"))
    assert status.pop("kit") == "passed"
    assert status == {e["id"]: "not yet implemented" for e in exercises}
    for e in exercises:  # the blank itself says which exercise it is
        assert f'raise NotImplementedError("exercise {e["id"]}: ' in (out / "student" / e["file"]).read_text()


def test_the_instructor_kit_passes_every_public_and_hidden_check(built):
    out, _, _ = built
    code, output = kit.run_pytest(str(out / "instructor"), "tests")
    assert code == 0, output[-3000:]
    assert "hidden" in output or os.listdir(out / "instructor" / "tests" / "hidden")


def test_each_wrong_answer_variant_fails_a_public_check_of_its_exercise(built):
    out, _, variants = built
    assert len(variants) >= 4 and sum(bool(v.get("silent")) for v in variants) >= 4
    problems = kit.selftest_variants(str(out))
    assert problems == [], problems


def test_no_solution_line_is_in_the_student_kit(built):
    out, exercises, _ = built
    assert kit.leaks(str(out / "student"), exercises) == []
    # the check does find one: a line of C3's solution planted in the handout
    secret = next(line for line, e_id in kit.solution_lines(exercises).items() if e_id == "C3")
    with open(out / "student" / "HANDOUT.md", "a") as f:
        f.write(f"\n    {secret}\n")
    try:
        assert any("exercise C3" in leak for leak in kit.leaks(str(out / "student"), exercises))
    finally:
        text = (out / "student" / "HANDOUT.md").read_text()
        (out / "student" / "HANDOUT.md").write_text(text[: text.rindex(f"\n    {secret}\n")])
    # no shared copy of an exercise's definition is left in another kit file: it is imported from the owner
    coordsum = (out / "student" / "magpo_coordsum.py").read_text()
    assert "from magpo_mpe import tethered_ratio" in coordsum and "def tethered_ratio" not in coordsum


def test_the_same_seed_builds_the_same_fixtures(built):
    out, exercises, _ = built
    again = kit.make_fixtures(exercises, 123)
    other = kit.make_fixtures(exercises[:1], 124)
    for e in exercises:
        data = kit.deterministic_npz({**again[e["id"]], "_tag": kit.seed_tag(123)})
        assert (out / "student" / "tests" / "fixtures" / f"{e['id']}.npz").read_bytes() == data, e["id"]
    first = exercises[0]["id"]
    assert any(not np.array_equal(again[first][k], other[first][k]) for k in again[first]), "another seed, other inputs"


def test_the_kit_docs_point_at_lines_that_exist(built):
    out, _, _ = built
    for side in ("student", "instructor"):
        assert kit.docs_ref_errors(str(out / side)) == [], side
    text = (out / "student" / "docs" / "algorithm.md").read_text()
    assert "`happo_baseline.py` (`def happo_actor_loss`) (in the reference repository, not in this kit)" in text


def test_the_walkthrough_runs_at_its_ci_budget(built):
    out, _, _ = built
    env = {**os.environ, "WALKTHROUGH_MPE_STEPS": "2048", "WALKTHROUGH_TABULAR_ITERATIONS": "5", "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "walkthrough.py"], cwd=out / "instructor", capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    notebook = json.loads((out / "student" / "walkthrough.ipynb").read_text())
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert notebook["nbformat"] == 4 and "markdown" in kinds and "code" in kinds


@pytest.mark.parametrize(
    "args,message",
    [
        (["build", "--out", "/tmp/never", "--parts", "Z"], "error: --parts takes A B C D"),
        (["build", "--out", "/tmp/never", "--optional", "C3"], "error: --optional takes optional exercises only"),
        (["selftest", "/tmp/no_such_kit_dir"], "error: /tmp/no_such_kit_dir is not a built kit"),
    ],
)
def test_bad_input_is_one_line(args, message):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "teaching", "make_assignment.py"), *args], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert not os.path.exists("/tmp/never")
