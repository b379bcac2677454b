"""Benchmark: the merge queue's test runs for a queue of verified branches.

Builds a real git repository with a pytest suite and ``--branches`` verified specs, each
adding its own module and test on its own branch. ``--bad`` of them also add a test that
fails once any other branch's module is present (each passes alone, like a real
integration break). Then runs the merge queue (``specfleet.land.queue``) and reports how many
times the project's test command ran, against testing each branch by itself (one run per
branch, which would still miss the integration breaks), and the wall time.

Prints a table and writes ``benchmarks/results/merge.json``.

    .venv/bin/python benchmarks/bench_merge.py [--branches 20] [--bad 0 1 3] [--batch 20]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

from specfleet.land.queue import merge_queue
from specfleet.model.project import load_project
from specfleet.model.states import SpecState
from specfleet.store.base import now
from specfleet.store.core import Store
from specfleet.validate.checks import validate_project

GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@x.invalid", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@x.invalid")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout


def build(root: Path, branches: int, bad: set[int], batch: int) -> tuple[Store, object]:
    repo = root / "repo"
    repo.mkdir()
    (repo / "test_base.py").write_text("def test_base():\n    assert True\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    folder = root / "specs" / "bench"
    folder.mkdir(parents=True)
    (folder / "project.yml").write_text(f"repository: {repo}\nverify: 'true'\nrequire_tests: false\n"
                                        f"test_command: python3 -m pytest -q -p no:cacheprovider\nmerge_batch: {batch}\n")
    for i in range(branches):
        (folder / f"B{i:02d}.md").write_text(f"---\ntask_id: B{i:02d}\nmodifies: [m{i:02d}.py, test_m{i:02d}.py]\n---\n"
                                             "## Goal\nAdd a module.\n\n## Acceptance criteria\n- [ ] tests pass\n")
    report = validate_project(root / "specs", "bench", None, "glm", display_root="specs")
    assert report.ok, report.summary()
    store = Store(root / "state.db")
    store.feed(report)
    config, problems = load_project(folder, "bench", "specs/bench/project.yml")
    assert config is not None, problems
    for i in range(branches):
        task = f"B{i:02d}"
        git(repo, "checkout", "-q", "-b", f"specfleet/bench/{task}", "main")
        (repo / f"m{i:02d}.py").write_text(f"VALUE = {i}\n")
        test = f"import m{i:02d}\n\n\ndef test_m{i:02d}():\n    assert m{i:02d}.VALUE == {i}\n"
        if i in bad:  # passes alone, fails next to any other branch's module
            test += "\n\ndef test_alone():\n    import glob\n    assert len(glob.glob('m*.py')) == 1\n"
        (repo / f"test_m{i:02d}.py").write_text(test)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", task)
        commit = git(repo, "rev-parse", "HEAD").strip()
        git(repo, "checkout", "-q", "main")
        with store.transaction() as db:
            db.execute("INSERT INTO attempts (project, task_id, number, revision, started_at, ended_at, outcome,"
                       " commit_sha) VALUES ('bench', ?, 1, 1, ?, ?, 'succeeded', ?)", (task, now(), now(), commit))
        for state in (SpecState.RUNNING, SpecState.COMPLETED, SpecState.VERIFIED):
            store.transition("bench", task, state)
    return store, config


def run(branches: int, bad_count: int, batch: int, seed: int) -> dict:
    bad = set(random.Random(seed).sample(range(branches), bad_count))
    with tempfile.TemporaryDirectory(prefix="bench-merge-") as tmp:
        os.environ["SPECFLEET_HOME"] = str(Path(tmp) / "home")
        store, config = build(Path(tmp), branches, bad, batch)
        started = time.monotonic()
        result = merge_queue(store, config)
        seconds = time.monotonic() - started
        found = set(result.broken)
    return {"branches": branches, "bad": sorted(f"B{i:02d}" for i in bad), "found": sorted(found),
            "merged": len(result.merged), "test_runs": result.test_runs, "one_per_branch": branches,
            "batches": result.batches, "seconds": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", type=int, default=20)
    parser.add_argument("--bad", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--batch", type=int, default=20, help="merge_batch (default: the whole queue in one batch)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rows = [run(args.branches, bad, args.batch, args.seed) for bad in args.bad]
    print(f"{'bad':>3} {'merged':>6} {'test runs':>9} {'one per branch':>14} {'batches':>7} {'time':>7}  culprits found")
    for row in rows:
        print(f"{len(row['bad']):>3} {row['merged']:>6} {row['test_runs']:>9} {row['one_per_branch']:>14} "
              f"{row['batches']:>7} {row['seconds']:>6.1f}s  {', '.join(row['found']) or '-'}"
              + ("" if row["found"] == row["bad"] else f"  (bad: {', '.join(row['bad'])})"))
    print(f"wrote {write_result('merge', {'batch': args.batch, 'runs': rows})}")
    return 0 if all(r["found"] == r["bad"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
