"""Benchmark: validating and planning a large project.

Generates a synthetic project (default 1,000 specs: a layered DAG with 0-3 dependencies
each, two ``modifies`` entries per spec) against a real git repository, then times:

* ``validate``: the whole validation (parse, schema, DAG, repository tree) as
  ``playbooks/validate.yml`` runs it;
* ``plan``: topological order and critical-path ranks over the same DAG;
* ``feed``: first feed into a fresh SQLite store, and the idempotent second feed.

Prints a table and writes ``benchmarks/results/validate.json``. Target (issue 2): a
1,000-spec project validates in well under a second.

    .venv/bin/python benchmarks/bench_validate.py [--specs 1000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

from specfleet.model.graph import SpecGraph
from specfleet.store.core import Store
from specfleet.validate.checks import validate_project


def make_project(root: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    repo = root / "repo"
    for module in range(50):
        (repo / "src" / f"pkg{module}").mkdir(parents=True, exist_ok=True)
        (repo / "src" / f"pkg{module}" / "__init__.py").write_text("\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "__init__.py").write_text("\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x.invalid", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x.invalid")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    folder = root / "specs" / "bench"
    folder.mkdir(parents=True)
    (folder / "project.yml").write_text(f"repository: {repo}\nverify: pytest -q\nexecutor: glm\n")
    for index in range(count):
        deps = sorted({f"T{rng.randrange(index):04d}" for _ in range(rng.randint(0, 3))}) if index else []
        pkg = rng.randrange(50)
        (folder / f"T{index:04d}.md").write_text(
            "---\n"
            f"task_id: T{index:04d}\n"
            f"priority: {rng.randint(0, 3)}\n"
            f"depends_on: {json.dumps(deps)}\n"
            f"modifies: [src/pkg{pkg}/m{index}.py, tests/pkg{pkg}/]\n"
            f"estimate: {rng.randint(1, 15)}m\n"
            "timeout: 1h\n"
            "---\n\n## Goal\nImplement the thing.\n\n## 验收标准\n- [ ] pytest -q passes\n\n## Do not\n- touch others\n")


def timed(func, repeat: int) -> tuple[list[float], object]:
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        samples.append(time.perf_counter() - started)
    return samples, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_project(root, args.specs)
        validate_samples, report = timed(
            lambda: validate_project(root / "specs", "bench", ["glm"], "glm"), args.repeat)
        if not report.ok:
            raise SystemExit("\n".join(report.summary().splitlines()[:5]))
        graph = SpecGraph({s.task_id: s.depends_on for s in report.specs.values()},
                          {s.task_id: s.estimate for s in report.specs.values()})
        plan_samples, _ = timed(lambda: (graph.topological_order(), graph.remaining_path()), args.repeat)
        store = Store(root / "state.db")
        started = time.perf_counter()
        store.feed(report)
        first_feed = time.perf_counter() - started
        again, result = timed(lambda: store.feed(report), args.repeat)
        assert not result.changed
    rows = [
        ("validate (parse+schema+DAG+repo tree)", validate_samples),
        ("plan (topological order + critical path)", plan_samples),
        ("feed, second time (no change)", again),
    ]
    print(f"specs: {args.specs}, repeats: {args.repeat}, python {platform.python_version()}, "
          f"{os.cpu_count()} cores, {platform.machine()}")
    print(f"{'step':<44}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, samples in rows:
        print(f"{name:<44}{statistics.median(samples):>10.3f}{min(samples):>10.3f}{max(samples):>10.3f}")
    print(f"{'feed, first time (1 sample)':<44}{first_feed:>10.3f}")
    figures = {name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s)} for name, s in rows}
    figures["feed, first time"] = {"seconds": first_feed}
    total = figures[rows[0][0]]["median_s"] + figures[rows[1][0]]["median_s"]
    print(f"{'validate + plan (target < 1 s)':<44}{total:>10.3f}")
    out = write_result("validate", {"specs": args.specs, "repeat": args.repeat, "figures": figures,
                                    "validate_plus_plan_s": total})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
