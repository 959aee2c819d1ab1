"""Check your exercises.

    python check.py            every exercise: a table of passed / failing / not yet implemented; exit 0 when all pass
    python check.py C3         one exercise (or several: C3 C4), with the failing checks' messages
    python check.py L2         a learning check: a short training run of your own files (minutes; HANDOUT.md)

Each exercise's checks are in tests/test_ID.py: its values and gradients against fixtures computed by the reference on
fixed float64 inputs, and properties any correct answer has. `pytest tests` runs the same checks.
"""

import argparse
import contextlib
import io
import json
import os
import re
import sys

import pytest

KIT = os.path.dirname(os.path.abspath(__file__))


class Collector:
    """Keeps each check's outcome and message, by file."""

    def __init__(self):
        self.reports = {}

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            text = report.longreprtext if report.outcome != "passed" else ""
            if isinstance(report.longrepr, tuple):
                text = report.longrepr[2]
            self.reports[report.nodeid] = (report.outcome, text)

    def pytest_collectreport(self, report):
        if report.failed:
            self.reports[report.nodeid or "collection"] = ("failed", report.longreprtext)


def status_of(row_id, reports):
    """One row's state from its checks' outcomes."""
    if not reports:
        return "no checks found"
    outcomes = [o for o, _ in reports]
    if all(o == "passed" for o in outcomes):
        return "passed"
    if any(o == "failed" and f"NotImplementedError: exercise {row_id}:" in text for o, text in reports):
        return "not yet implemented"
    if any(o == "failed" for o in outcomes):
        return "failing"
    waits = sorted({m for _, text in reports for m in re.findall(r"waits for exercise (\w+)", text)})
    if waits:
        return "waiting for " + ", ".join(waits)
    return "passed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="exercises or learning checks to run (default: every exercise)")
    parser.add_argument("--json", action="store_true", help="also print the states as one JSON line")
    args = parser.parse_args()
    with open(os.path.join(KIT, "VERSION")) as f:
        info = json.load(f)
    rows = {e["id"]: e["title"] for e in info["exercises"]}
    learning = {x["id"]: x["title"] for x in info["learning"]}
    unknown = [i for i in args.ids if i not in rows and i not in learning]
    if unknown:
        print(f"error: unknown check {unknown[0]}; the checks are {' '.join([*rows, *learning])}", file=sys.stderr)
        return 2
    stale = [e for e in rows if not os.path.exists(os.path.join(KIT, "tests", "fixtures", f"{e}.npz"))]
    if stale:
        print(f"error: tests/fixtures/{stale[0]}.npz is missing: this kit is incomplete", file=sys.stderr)
        return 2
    import numpy as np

    for e in rows:
        with np.load(os.path.join(KIT, "tests", "fixtures", f"{e}.npz")) as data:
            if str(data["_tag"]) != info["fixture_tag"]:
                print(
                    f"error: tests/fixtures/{e}.npz is from another build than VERSION: ask for a new kit",
                    file=sys.stderr,
                )
                return 2
    ids = args.ids or list(rows)
    files = {"kit": os.path.join("tests", "test_kit.py")}
    for i in ids:
        files[i] = os.path.join("learning" if i in learning else "tests", f"test_{i}.py")
    collector = Collector()
    verbose = bool(args.ids)
    pytest_args = [
        "-q",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        "--tb=short" if verbose else "--tb=no",
        "-rs" if verbose else "-q",
    ]
    if any(i in learning for i in ids):
        pytest_args.append("-s")  # the learning checks print their progress and wall time
    os.chdir(KIT)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sys.stdout if verbose else sink):
        pytest.main([*pytest_args, *files.values()], plugins=[collector])
    states, lines = {}, []
    titles = {"kit": "the kit itself (imports, environments, fixtures)", **rows, **learning}
    for row, path in files.items():
        reports = [v for k, v in collector.reports.items() if k.split("::")[0] == path.replace(os.sep, "/")]
        states[row] = status_of(row, reports)
        passed = sum(o == "passed" for o, _ in reports)
        lines.append((row, titles[row], f"{passed}/{len(reports)}", states[row]))
    width = max(len(t) for _, t, _, _ in lines)
    print(f"\n{'check':<6} {'what':<{width}}  {'passed':>7}  state")
    for row, title, count, state in lines:
        print(f"{row:<6} {title:<{width}}  {count:>7}  {state}")
    done = all(s == "passed" for s in states.values())
    if not args.ids and done:
        print("\nEvery exercise passes. The learning checks: python check.py " + " ".join(learning))
    elif not verbose:
        print("\nDetails of one exercise: python check.py ID")
    if args.json:
        print(json.dumps({k: v for k, v in states.items() if k != "kit"} | {"kit": states["kit"]}))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
