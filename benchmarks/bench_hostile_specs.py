"""Benchmark: how long and how much memory validation spends on each hostile spec.

Runs the corpus of ``tests/hostile/corpus.py`` (FIFOs, alias bombs, 50 MB files, links to
``/dev/zero``, 10,000-deep nesting, ...) through ``controller.feed`` in one child process,
each case in a fresh project folder, and prints the time and peak RSS of every case. The
peak is the kernel's high-water mark (``VmHWM``), reset before each case, so it is the
process's peak during that case (interpreter and libraries included). Target (issue 19
part 4): every case answers in under 2 s and 200 MB.

Writes ``benchmarks/results/hostile_specs.json``.

    .venv/bin/python benchmarks/bench_hostile_specs.py [--limit-mb 200] [--top 15]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import REPO_ROOT, table, write_result

CORPUS = REPO_ROOT / "tests" / "hostile" / "corpus.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=int, default=200, help="RLIMIT_AS of the child (0: none)")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds before a case counts as hung")
    parser.add_argument("--top", type=int, default=15, help="print the slowest N cases (0: all)")
    args = parser.parse_args()
    run = subprocess.run([sys.executable, str(CORPUS), "--limit-mb", str(args.limit_mb),
                          "--deadline", str(args.deadline)], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 1
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    measured = [r for r in rows if not r.get("skipped")]
    for row in measured:
        row["ms"] = round(row["seconds"] * 1000, 1)
        row["peak_mb"] = round(row["peak_rss_kb"] / 1024, 1)
        row["outcome"] = "ERROR" if "error" in row else ("accepted" if row["ok"] else "refused")
    slowest = sorted(measured, key=lambda r: -r["seconds"])
    print(table(slowest[:args.top] if args.top else slowest,
                [("name", "case"), ("outcome", "outcome"), ("ms", "time ms"), ("peak_mb", "peak RSS MB")]))
    summary = {
        "cases": len(rows), "measured": len(measured), "skipped": len(rows) - len(measured),
        "errors": sum(1 for r in measured if "error" in r),
        "max_seconds": max(r["seconds"] for r in measured),
        "total_seconds": sum(r["seconds"] for r in measured),
        "max_peak_rss_mb": max(r["peak_mb"] for r in measured),
        "limit_mb": args.limit_mb,
    }
    print(f"\n{summary['measured']} cases ({summary['skipped']} skipped, {summary['errors']} errors): "
          f"max {summary['max_seconds'] * 1000:.0f} ms per case, {summary['total_seconds']:.2f} s in all, "
          f"max peak RSS {summary['max_peak_rss_mb']:.1f} MB (limit {args.limit_mb} MB)")
    out = write_result("hostile_specs", {
        "summary": summary,
        "cases": [{k: r.get(k) for k in ("name", "outcome", "ms", "peak_mb")} for r in measured]})
    print(f"wrote {out.relative_to(REPO_ROOT)}")
    return 0 if not summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
