"""Benchmark: what the controller's sandbox (bubblewrap) adds to each command it runs.

Runs the same commands in a scratch clone of the example project through
``specfleet.land.sandbox.run``, sandboxed and with the opt-out (same cleared environment and
bounds, no sandbox), alternating, and prints per command the median and p95 wall time of
both and the median overhead:

* ``true``: the bare cost of building and tearing down a sandbox;
* ``python3 -c pass``: an interpreter start inside it;
* ``python3 -m pytest -q``: the example project's test suite (its verify command).

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specfleet.land import sandbox  # noqa: E402

COMMANDS = ("true", "python3 -c pass", "python3 -m pytest -q")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sandbox.check()
    # Both sides run the same programs: the plain run would otherwise find whatever python3
    # comes first on this shell's PATH (a pyenv shim here, 0.3 s per start).
    os.environ["PATH"] = sandbox.SYSTEM_PATH
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run([sys.executable, str(ROOT / "tools" / "example_repo.py"), "--dest", str(repo)], check=True,
                       capture_output=True)
        work = Path(tmp) / "work"
        subprocess.run(["git", "clone", "-q", "--shared", str(repo), str(work)], check=True)
        print(f"{'command':<24} {'sandboxed p50/p95 s':>20} {'plain p50/p95 s':>18} {'overhead p50 s':>15}")
        for command in COMMANDS:
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.runs):
                for sandboxed in (True, False):
                    result = sandbox.run(command, work, sandbox.Bounds(seconds=300), sandboxed=sandboxed)
                    if not result.ok:
                        print(f"{command!r} failed ({'sandboxed' if sandboxed else 'plain'}): {result.output[-500:]}")
                        return 1
                    times[sandboxed].append(result.seconds)
            boxed, plain = times[True], times[False]
            print(f"{command:<24} {statistics.median(boxed):>9.3f}/{p95(boxed):<10.3f} "
                  f"{statistics.median(plain):>8.3f}/{p95(plain):<9.3f} "
                  f"{statistics.median(boxed) - statistics.median(plain):>15.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
