"""Run the whole benchmark suite, one benchmark at a time, and print one summary table.

Scenarios (see BENCHMARKS.md for what each measures and the reference figures):

* quality: wide, deep and mixed DAGs of 30-120 s sleep-specs on 3 nodes x 4 slots, each
  with path-lock contention off and on (makespan against the lower bound and the policy's
  zero-overhead simulation, start latency, CPU and SSH calls per spec);
* scale: 1,000 specs (mixed DAG, 20-60 s) on 7 nodes x 20 slots;
* idle: 140 specs of 150 s on 7 x 20 slots, all running at once (peak memory, idle-wait CPU);
* validate: validation and planning of 1,000 specs;
* pipeline: the README demo's 8 specs through the full agent pipeline (CPU and SSH calls per spec);
* merge: the merge queue's test runs for 20 branches with 0, 1 and 3 bad ones.

    .venv/bin/python benchmarks/run_suite.py                 # everything, about an hour
    .venv/bin/python benchmarks/run_suite.py quality-wide validate

Each benchmark writes its own ``benchmarks/results/*.json``; this writes ``suite.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import REPO_ROOT, RESULTS, table, write_result

BENCH = REPO_ROOT / "benchmarks"
QUALITY = {"wide": ["--specs", "36"], "deep": ["--specs", "24", "--layers", "4"],
           "mixed": ["--specs", "36", "--layers", "6"]}
SCENARIOS: dict[str, list[str]] = {}
for shape, size in QUALITY.items():
    for locks in ("0", "0.3"):
        name = f"quality-{shape}" + ("-locks" if locks != "0" else "")
        SCENARIOS[name] = ["bench_dispatch.py", "--shape", shape, *size, "--nodes", "3", "--slots", "4",
                           "--min", "30", "--max", "120", "--locks", locks, "--name", name]
# Short jobs: the most starts and ends per second the controller has to keep up with. No
# path locks: 1,000 specs with even 10 % on three shared paths serialise ~2,500 s of work on
# those paths, which the lower bound (critical path, work / slots) does not know about.
SCENARIOS["scale"] = ["bench_dispatch.py", "--shape", "mixed", "--specs", "1000", "--layers", "10", "--nodes", "7",
                      "--slots", "20", "--min", "20", "--max", "60", "--locks", "0", "--name", "scale"]
SCENARIOS["idle"] = ["bench_dispatch.py", "--shape", "wide", "--specs", "140", "--nodes", "7", "--slots", "20",
                     "--min", "150", "--max", "150", "--name", "idle"]
SCENARIOS["validate"] = ["bench_validate.py", "--specs", "1000"]
SCENARIOS["pipeline"] = ["bench_pipeline.py"]
SCENARIOS["merge"] = ["bench_merge.py", "--branches", "20", "--bad", "0", "1", "3"]

DISPATCH_COLUMNS = [
    ("name", "scenario"), ("specs_run", "specs"), ("slots", "slots"), ("makespan_s", "makespan s"),
    ("lower_bound_s", "LB s"), ("sim_s", "sim s"), ("makespan_over_sim", "x sim"), ("makespan_over_lb", "x LB"),
    ("sim_over_lb", "sim/LB"), ("lock_bound_s", "lock LB s"), ("makespan_over_lock_lb", "x lock LB"),
    ("start_latency_p50_s", "lat p50"), ("start_latency_p95_s", "lat p95"),
    ("start_latency_max_s", "lat max"), ("controller_cpu_per_spec_s", "CPU s/spec"),
    ("ssh_calls_per_spec", "ssh/spec"), ("node_waiter_cpu_per_spec_minute_s", "node poll CPU s/min"),
    ("idle_wait_cpu_share", "idle CPU"), ("controller_peak_pss_mb", "peak MB"), ("peak_workers", "workers"),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help=f"scenarios to run (default: all): {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    unknown = sorted(set(args.only) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    chosen = args.only or list(SCENARIOS)
    outcomes = {}
    for name in chosen:
        command = [sys.executable, str(BENCH / SCENARIOS[name][0]), *SCENARIOS[name][1:]]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        outcomes[name] = {"returncode": subprocess.run(command, cwd=REPO_ROOT, check=False).returncode,
                          "wall_s": round(time.monotonic() - started, 1)}
    rows = []
    for name in chosen:
        path = RESULTS / f"dispatch-{name}.json"
        if SCENARIOS[name][0] == "bench_dispatch.py" and path.exists():
            rows.append(json.loads(path.read_text()))
    if rows:
        print()
        print(table(rows, DISPATCH_COLUMNS))
    for name in ("validate", "pipeline", "merge"):
        if name in chosen and (RESULTS / f"{name}.json").exists():
            outcomes[name]["figures"] = json.loads((RESULTS / f"{name}.json").read_text())
    print()
    print(table([{"name": n, **o} for n, o in outcomes.items()], [("name", "scenario"), ("returncode", "exit"),
                                                                    ("wall_s", "wall s")]))
    out = write_result("suite", {"scenarios": outcomes, "dispatch": rows})
    print(f"wrote {out}")
    return 0 if all(o["returncode"] == 0 for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
