"""Benchmark: a real dispatch.yml run of a synthetic DAG of sleep-specs on local sshd nodes.

Starts N nodes x M slots on loopback (tools/localcluster.py), writes a random project
(layered DAG, 0-2 dependencies per spec, ``modifies`` that sometimes overlap), runs
``ansible-playbook dispatch.yml`` with a job that sleeps the spec's duration and logs its
start and end on the node, then prints:

* makespan: first job start -> last job end (node clock);
* LB: max(critical path, total work / slots), the best any scheduler could do;
* sim: the same policy (specfleet.dispatcher against a scratch store) with zero
  overhead, so makespan/sim is what Ansible and SSH cost;
* agent utilisation: job time / (makespan x slots); slot occupancy: lease time (DB) /
  (makespan x slots);
* start latency: a job ended while a ready spec waited -> the next job started (p50/p95);
* controller CPU per spec: user+sys of ansible-playbook and every process it waited for;
* controller peak memory: peak summed PSS of the ansible-playbook process tree, and the
  peak number of worker processes.

    .venv/bin/python benchmarks/bench_dispatch.py --nodes 3 --slots 4 --specs 60 --min 30 --max 120
    .venv/bin/python benchmarks/bench_dispatch.py --nodes 4 --slots 35 --specs 140 --min 60 --max 60 --width 140

Writes ``benchmarks/results/dispatch-<nodes>x<slots>-<specs>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plugins" / "module_utils"))
sys.path.insert(0, str(REPO_ROOT))

from specfleet import dispatcher as policy  # noqa: E402
from specfleet.fleet import NodeInfo  # noqa: E402
from specfleet.graph import SpecGraph  # noqa: E402
from specfleet.store import Store  # noqa: E402
from specfleet.validation import validate_project  # noqa: E402
from tools.localcluster import LocalCluster, NodeSpec, free_port  # noqa: E402

JOB = ('d=$(cat {shared}/durations/$SPECFLEET_TASK_ID); '
       'echo "start $SPECFLEET_TASK_ID $(date +%s.%N)" >> {shared}/log; sleep "$d"; '
       'echo "end $SPECFLEET_TASK_ID $(date +%s.%N)" >> {shared}/log')


def make_project(root: Path, args) -> tuple[dict, dict]:
    rng = random.Random(args.seed)
    repo = root / "repo"
    files = [f"src/m{i}.py" for i in range(args.specs)] + ["src/shared/a.py", "docs/guide.md", "README.md"]
    for path in files:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("x\n")
    for command in (["init", "-q", "-b", "main"], ["add", "-A"],
                    ["-c", "user.name=b", "-c", "user.email=b@example.invalid", "commit", "-qm", "init"]):
        subprocess.run(["git", *command], cwd=repo, check=True)
    folder = root / "specs" / "bench"
    folder.mkdir(parents=True)
    (folder / "project.yml").write_text(f"repository: {repo}\nbase_branch: main\nverify: 'true'\n")
    deps, durations, modifies = {}, {}, {}
    layer_of = {}
    for i in range(args.specs):
        task = f"B{i:03d}"
        layer = min(i * args.layers // args.specs, args.layers - 1)
        layer_of[task] = layer
        earlier = [t for t, lay in layer_of.items() if lay < layer]
        deps[task] = sorted(rng.sample(earlier, k=min(len(earlier), rng.choice([0, 1, 1, 2])))) if earlier else []
        durations[task] = round(rng.uniform(args.min, args.max), 1)
        modifies[task] = [f"src/m{i}.py"] + ([rng.choice(["src/shared/", "docs/*.md", "README.md"])]
                                              if rng.random() < args.conflicts else [])
        estimate = max(1, int(durations[task] // 60) + 1)
        front = {"task_id": task, "depends_on": deps[task], "modifies": modifies[task],
                 "estimate": f"{estimate}m", "timeout": f"{estimate + 10}m"}
        (folder / f"{task}.md").write_text("---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in front.items())
                                           + "---\n## Goal\nSleep.\n\n## Acceptance criteria\n- [ ] it slept\n")
    return deps, durations


def lower_bound(deps: dict, durations: dict, slots: int) -> float:
    finish: dict[str, float] = {}
    for task in SpecGraph(deps).topological_order():
        finish[task] = durations[task] + max((finish[d] for d in deps[task]), default=0.0)
    return max(max(finish.values()), sum(durations.values()) / slots)


def simulate(root: Path, nodes: list[NodeInfo], durations: dict) -> float:
    """The same Dispatcher with zero overhead: a job ends exactly when its sleep does."""
    import specfleet.leases as leases_module
    import specfleet.store as store_module

    clock = [0.0]
    saved = (store_module.now, leases_module.now)
    store_module.now = leases_module.now = lambda: clock[0]
    try:
        report = validate_project(root / "specs", "bench", None, "glm", display_root="specs")
        assert report.ok, report.summary()
        with Store(root / "sim.db") as store:
            store.feed(report)
            run = policy.Dispatcher(store, "bench", list(durations), nodes, poll=0.0, clock=lambda: clock[0])
            run.open()
            ends: dict[str, float] = {}
            while True:
                step = run.step(force=True)
                for grant in step.start:
                    ends[grant.task_id] = clock[0] + durations[grant.task_id]
                if step.done:
                    return clock[0]
                clock[0] = min(ends.values())
                for task in [t for t, end in ends.items() if end <= clock[0]]:
                    del ends[task]
                    run.finish(task, policy.SUCCEEDED)
    finally:
        store_module.now, leases_module.now = saved


class TreeSampler(threading.Thread):
    """Peak summed PSS and worker count of a process tree, sampled every 0.25 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_pss_kb, self.peak_workers, self.done = pid, 0, 0, False

    def tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(entry))
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo += children.get(pid, [])
        return out

    def run(self) -> None:
        while not self.done:
            total, workers = 0, 0
            for pid in self.tree():
                try:
                    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
                    comm = Path(f"/proc/{pid}/comm").read_text().strip()
                except OSError:
                    continue
                total += next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
                workers += comm.startswith("ansible-playboo") and pid != self.pid
            self.peak_pss_kb = max(self.peak_pss_kb, total)
            self.peak_workers = max(self.peak_workers, workers)
            time.sleep(0.25)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--specs", type=int, default=60)
    parser.add_argument("--min", type=float, default=30.0, help="shortest job, seconds")
    parser.add_argument("--max", type=float, default=120.0, help="longest job, seconds")
    parser.add_argument("--layers", type=int, default=6, help="DAG depth")
    parser.add_argument("--conflicts", type=float, default=0.15, help="share of specs touching a shared path")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="specfleet-bench-"))
    shared = root / "shared"
    (shared / "durations").mkdir(parents=True)
    deps, durations = make_project(root, args)
    for task, seconds in durations.items():
        (shared / "durations" / task).write_text(f"{seconds}\n")
    total_slots = args.nodes * args.slots
    nodes = [NodeSpec(f"node-{i}", f"127.0.0.{60 + i}", free_port(f"127.0.0.{60 + i}"), args.slots)
             for i in range(1, args.nodes + 1)]
    lb = lower_bound(deps, durations, total_slots)
    sim = simulate(root, [NodeInfo(n.name, n.slots) for n in nodes], durations)

    with LocalCluster(root / "cluster", nodes) as cluster:
        cluster.start()
        inventory = cluster.write_inventory(root / "inventory" / "hosts.yml",
                                            group_vars_dir=REPO_ROOT / "inventory" / "local" / "group_vars")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SPECFLEET_"))}
        env.update(cluster.ansible_env(inventory), SPECFLEET_HOME=str(root / "home"), ANSIBLE_NOCOLOR="1")
        venv_bin = Path(sys.executable).parent
        env["PATH"] = f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}"
        command = [str(venv_bin / "ansible-playbook"), "dispatch.yml", "-e", "project=bench",
                   "-e", f"specfleet_specs_root={root / 'specs'}",
                   "-e", json.dumps({"specfleet_job_command": JOB.format(shared=shared)})]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic()
        with open(root / "dispatch.log", "w") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            sampler = TreeSampler(process.pid)
            sampler.start()
            returncode = process.wait()
            sampler.done = True
        wall = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    events = [line.split() for line in (shared / "log").read_text().splitlines()]
    starts = {task: float(t) for kind, task, t in events if kind == "start"}
    ends = {task: float(t) for kind, task, t in events if kind == "end"}
    makespan = max(ends.values()) - min(starts.values())
    with Store(root / "home" / "state.db") as store:
        held = sum(r[0] for r in store.db.execute("SELECT ended_at - started_at FROM attempts WHERE ended_at IS NOT NULL"))
    latencies = []
    start_times = sorted(starts.values())
    for end in ends.values():
        waiting = [t for t in starts if starts[t] > end and all(ends.get(d, float("inf")) <= end for d in deps[t])]
        if waiting:
            nxt = min(s for s in start_times if s > end)
            latencies.append(nxt - end)
    result = {
        "config": vars(args), "returncode": returncode, "specs_run": len(ends),
        "makespan_s": round(makespan, 1), "wall_s": round(wall, 1), "lower_bound_s": round(lb, 1),
        "sim_s": round(sim, 1), "makespan_over_lb": round(makespan / lb, 3), "makespan_over_sim": round(makespan / sim, 3),
        "sim_over_lb": round(sim / lb, 3),
        "agent_utilisation": round(sum(ends[t] - starts[t] for t in ends) / (makespan * total_slots), 3),
        "slot_occupancy": round(held / (makespan * total_slots), 3),
        "start_latency_p50_s": round(percentile(latencies, 0.5), 3),
        "start_latency_p95_s": round(percentile(latencies, 0.95), 3), "latency_samples": len(latencies),
        "controller_cpu_s": round(cpu, 1), "controller_cpu_per_spec_s": round(cpu / max(1, len(ends)), 3),
        "controller_peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1), "peak_workers": sampler.peak_workers,
        "machine": f"{platform.node()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    out = REPO_ROOT / "benchmarks" / "results" / f"dispatch-{args.nodes}x{args.slots}-{args.specs}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if returncode != 0:
        print(f"dispatch.yml exited {returncode}; see {root / 'dispatch.log'}", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
