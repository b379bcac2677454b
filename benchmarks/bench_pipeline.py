"""Benchmark: what one spec of the full agent pipeline costs the controller and SSH.

Runs the README's demo end to end in a scratch SPECFLEET_HOME: the example project
(8 specs), 3 local sshd nodes (``--base-address``, default 127.0.3.1), ``bootstrap.yml``, then
``dispatch.yml`` with the ``replay`` executor (recorded agent sessions: workspace, agent
rounds, the spec's verify, commit, collect, verify in a clean checkout, merge queue). Only
the dispatch run is measured: controller CPU (ansible-playbook, everything it waited for,
the SSH ControlMasters), every ssh/sftp/scp the controller started, and peak memory.

    .venv/bin/python benchmarks/bench_pipeline.py

Prints a table and writes ``benchmarks/results/pipeline.json``.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_dispatch import Sampler, counting_wrappers
from common import REPO_ROOT, table, write_result

from specfleet.store.core import Store


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-address", default="127.0.3.1")
    parser.add_argument("--port", type=int, default=2222)
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="specfleet-bench-pipeline-"))
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SPECFLEET_"))}
    env.update(SPECFLEET_HOME=str(scratch / "home"), SPECFLEET_DB=str(scratch / "home" / "bench.db"),
               ANSIBLE_NOCOLOR="1", PATH=f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}")
    inventory = scratch / "inventory" / "hosts.yml"
    inventory.parent.mkdir(parents=True)
    (inventory.parent / "group_vars").symlink_to(REPO_ROOT / "inventory" / "local" / "group_vars")
    cp_dir = str(scratch / "home" / "cluster" / "cp")  # tools/localcluster.py stops the masters found there
    env.update(ANSIBLE_INVENTORY=str(inventory), ANSIBLE_SSH_CONTROL_PATH_DIR=cp_dir)
    cluster = [sys.executable, "tools/localcluster.py"]
    log = open(scratch / "run.log", "w")  # every step appends to it

    def step(*command: str) -> int:
        return subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, check=False).returncode

    try:
        step(sys.executable, "tools/example_repo.py", "--force")
        if step(*cluster, "up", "--base-address", args.base_address, "--port", str(args.port),
                "--inventory", str(inventory)):
            raise SystemExit(f"the local cluster did not start; see {scratch / 'run.log'}")
        if step("ansible-playbook", "bootstrap.yml"):
            raise SystemExit(f"bootstrap failed; see {scratch / 'run.log'}")
        calls_log = scratch / "ssh-calls.log"
        wrappers = counting_wrappers(scratch / "bin", calls_log)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic()
        process = subprocess.Popen(["ansible-playbook", "dispatch.yml", "-e", "project=clawmarketing",
                                    "-e", "specfleet_executor=replay"], cwd=REPO_ROOT, env={**env, **wrappers},
                                   stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(process.pid, cp_dir)
        sampler.start()
        returncode = process.wait()
        sampler.done.set()
        sampler.join()
        sampler.snapshot()
        wall = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        step(*cluster, "down")
        log.close()
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime + sum(sampler.masters.values())
    with Store(env["SPECFLEET_DB"]) as store:
        states = Counter(state for (state,) in store.db.execute("SELECT state FROM specs WHERE project='clawmarketing'"))
        attempts = store.db.execute("SELECT COUNT(*) FROM attempts WHERE project='clawmarketing'").fetchone()[0]
    calls = Counter(line.split()[1] for line in calls_log.read_text().splitlines()) if calls_log.exists() else Counter()
    specs = sum(states.values())
    result = {"returncode": returncode, "specs": specs, "states": dict(states), "attempts": attempts,
              "wall_s": round(wall, 1), "controller_cpu_s": round(cpu, 1),
              "controller_cpu_per_spec_s": round(cpu / max(1, specs), 3),
              "ssh_calls": calls["ssh"], "sftp_calls": calls["sftp"] + calls["scp"],
              "ssh_round_trips_per_spec": round(sum(calls.values()) / max(1, specs), 2),
              "controller_peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1), "peak_workers": sampler.peak_workers}
    print(table([{"figure": k, "value": v} for k, v in result.items() if k != "states"],
                [("figure", "figure"), ("value", "value")]))
    print("states:", ", ".join(f"{k} {v}" for k, v in sorted(states.items())))
    print(f"wrote {write_result('pipeline', result)}")
    if returncode == 0 and not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        print(f"kept {scratch}", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
