"""Benchmark: a real dispatch.yml run of a synthetic DAG of sleep-specs on local sshd nodes.

Starts N nodes x M slots on loopback (tools/localcluster.py), writes a synthetic project
whose specs' ``estimate`` is exact (whole seconds) and whose job sleeps that long, runs
``ansible-playbook dispatch.yml`` against it and prints:

* makespan: first job start -> last job end (node clock); LB = max(critical path,
  total work / slots); sim = the same policy (``specfleet.dispatch.run`` against a scratch
  store) with zero overhead. makespan/sim is what Ansible and SSH cost, sim/LB what the
  policy and the path locks cost;
* agent utilisation: job time / (makespan x slots);
* start latency: a job ended while a spec was ready for its slot (dependencies done, no
  path lock held by a running spec) -> the next job started (p50/p95/max);
* controller CPU: user+sys of ansible-playbook, every process it waited for, and the SSH
  ControlMaster processes (they detach, so rusage misses them), per spec;
* SSH round trips: every ssh/sftp the controller ran (a counting wrapper), per spec;
* node polling CPU: CPU of the node-side watchers (one per node) and of any waiter (one per spec
  waiting in a worker), per spec-minute;
* idle-wait CPU: the controller's CPU while specs ran and nothing started or ended;
* controller peak memory: peak summed PSS of the ansible-playbook tree plus the
  ControlMasters, with the worker count at that moment.

Shapes: ``wide`` (no dependencies), ``deep`` (``--layers`` layers, each spec needs one or
two of the layer before), ``mixed`` (layers, 0-2 dependencies on any earlier layer).
``--locks F``: a share F of specs also modifies one of three shared paths (path-lock
contention); 0 turns it off.

    .venv/bin/python benchmarks/bench_dispatch.py --shape mixed --nodes 3 --slots 4 --specs 36
    .venv/bin/python benchmarks/bench_dispatch.py --shape wide --nodes 7 --slots 20 --specs 140 --min 180 --max 180

Writes ``benchmarks/results/dispatch-<name>.json`` (``--name``, default shape and size).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO_ROOT, fmt, percentile, write_result

from specfleet.dispatch import run as policy
from specfleet.dispatch.policy import NodeInfo
from specfleet.model.ending import Ending
from specfleet.model.graph import SpecGraph
from specfleet.node.paths import sets_overlap
from specfleet.store.core import Store
from specfleet.validate.checks import validate_project
from tools.localcluster import LocalCluster, NodeSpec, free_port

JOB = ('d=$(cat {shared}/durations/$SPECFLEET_TASK_ID); '
       'echo "start $SPECFLEET_TASK_ID $(date +%s.%N)" >> {shared}/log; sleep "$d"; '
       'echo "end $SPECFLEET_TASK_ID $(date +%s.%N)" >> {shared}/log')
SHARED_PATHS = ["src/shared/", "docs/*.md", "README.md"]
# Strings only the command lines of the node-side waiters (one per spec waiting in a worker)
# and node watchers (one per node) hold.
WAITER_MARKS = ("HEARTBEAT_AGE=", "specfleet-node-watch")
COUNTER = '#!/bin/bash\nprintf "%s {tool}\\n" "$EPOCHREALTIME" >> {log}\nexec {real} "$@"\n'


def make_project(root: Path, args) -> tuple[dict, dict, dict]:
    """Write the repository and the specs; return dependencies, durations and modifies."""
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
    layers = 1 if args.shape == "wide" else args.layers
    deps, durations, modifies, layer_of = {}, {}, {}, {}
    for i in range(args.specs):
        task = f"B{i:04d}"
        layer = min(i * layers // args.specs, layers - 1)
        layer_of[task] = layer
        if args.shape == "deep":
            before = [t for t, lay in layer_of.items() if lay == layer - 1]
            count = rng.choice([1, 1, 2])
        else:
            before = [t for t, lay in layer_of.items() if lay < layer]
            count = rng.choice([0, 1, 1, 2])
        deps[task] = sorted(rng.sample(before, k=min(len(before), count))) if before else []
        durations[task] = rng.randint(int(args.min), int(args.max))
        modifies[task] = [f"src/m{i}.py"] + ([rng.choice(SHARED_PATHS)] if rng.random() < args.locks else [])
        front = {"task_id": task, "depends_on": deps[task], "modifies": modifies[task],
                 "estimate": f"{durations[task]}s", "timeout": f"{durations[task] + 600}s"}
        (folder / f"{task}.md").write_text("---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in front.items())
                                           + "---\n## Goal\nSleep.\n\n## Acceptance criteria\n- [ ] it slept\n")
    return deps, durations, modifies


def lower_bound(deps: dict, durations: dict, slots: int) -> tuple[float, float, float]:
    """(bound, critical path, work / slots)."""
    finish: dict[str, float] = {}
    for task in SpecGraph(deps).topological_order():
        finish[task] = durations[task] + max((finish[d] for d in deps[task]), default=0.0)
    path, spread = max(finish.values()), sum(durations.values()) / slots
    return max(path, spread), path, spread


def lock_bound(deps: dict, durations: dict, modifies: dict) -> float:
    """A lower bound that knows path locks: specs sharing a path run one at a time.

    For each shared path: the earliest any of its specs can start (longest chain of
    dependencies before it), plus the work of all of them, plus the shortest chain of
    dependents after one of them. The issue's bound (critical path, work / slots) ignores
    locks, so with contention it can sit far below every possible schedule.
    """
    order = SpecGraph(deps).topological_order()
    head: dict[str, float] = {}
    for task in order:
        head[task] = max((head[d] + durations[d] for d in deps[task]), default=0.0)
    children: dict[str, list[str]] = {task: [] for task in deps}
    for task, needs in deps.items():
        for need in needs:
            children[need].append(task)
    tail: dict[str, float] = {}
    for task in reversed(order):
        tail[task] = max((durations[c] + tail[c] for c in children[task]), default=0.0)
    bound = 0.0
    for shared in SHARED_PATHS:
        holders = [task for task in deps if shared in modifies[task]]
        if holders:
            bound = max(bound, min(head[t] for t in holders) + sum(durations[t] for t in holders)
                        + min(tail[t] for t in holders))
    return bound


def simulate(root: Path, nodes: list[NodeInfo], durations: dict) -> float:
    """The same Dispatcher with zero overhead: a job ends exactly when its sleep does."""
    import specfleet.store.base as store_base

    clock = [0.0]
    saved = store_base.now
    store_base.now = lambda: clock[0]  # the one clock every store and lease write reads
    try:
        report = validate_project(root / "specs", "bench", None, "glm", display_root="specs")
        assert report.ok, report.summary()
        with Store(root / "sim.db") as store:
            store.feed(report)
            # merge=False: plain jobs, so a completed dependency lets dependents start (as in the real run)
            run = policy.Dispatcher(store, "bench", list(durations), nodes, poll=0.0, clock=lambda: clock[0],
                                    merge=False)
            run.open()
            ends: dict[str, float] = {}
            started = 0
            while True:
                step = run.step(force=True)
                if step.dropped:
                    raise RuntimeError(f"the simulation dropped specs: {step.dropped}")
                started += len(step.start)
                for grant in step.start:
                    ends[grant.task_id] = clock[0] + durations[grant.task_id]
                if step.done:
                    if started != len(durations):
                        raise RuntimeError(f"the simulation ran {started} of {len(durations)} specs")
                    return clock[0]
                clock[0] = min(ends.values())
                for task in [t for t, end in ends.items() if end <= clock[0]]:
                    del ends[task]
                    run.finish(task, Ending.SUCCEEDED)
    finally:
        store_base.now = saved


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, with the name itself appended."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text.rsplit(")", 1)[1].split() + [text.split("(", 1)[1].rsplit(")", 1)[0]]
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


TICK = os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """Every ``interval``: the controller tree's CPU and PSS, ControlMasters included, and the
    CPU of every node-side waiter seen (by pid, so an exited waiter keeps its last figure)."""

    def __init__(self, pid: int, cp_dir: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.cp_dir, self.interval = pid, cp_dir, interval
        self.done = threading.Event()
        self.timeline: list[tuple[float, float]] = []  # (time, controller CPU seconds so far)
        self.peak_pss_kb, self.peak_workers, self.peak_breakdown = 0, 0, {}
        self.waiters: dict[int, float] = {}   # pid -> CPU seconds
        self.masters: dict[int, float] = {}   # ControlMaster pid -> CPU seconds
        self._gone_cpu = 0.0                  # CPU of exited tree processes nobody waited for

    def snapshot(self) -> None:
        children: dict[int, list[int]] = {}
        stats: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                fields = _stat(int(entry))
                if fields:
                    stats[int(entry)] = fields
                    children.setdefault(int(fields[1]), []).append(int(entry))
        tree, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo += children.get(pid, [])
        for pid in stats:
            line = None
            if pid not in self.masters and pid not in self.waiters and stats[pid][0] in ("S", "R"):
                line = _cmdline(pid)
            if pid in self.masters or (line and "[mux]" in line and self.cp_dir in line):
                fields = stats[pid]
                self.masters[pid] = sum(int(x) for x in fields[11:15]) / TICK
            elif pid in self.waiters or (line and any(m in line for m in WAITER_MARKS) and stats[pid][-1].startswith("python")):
                fields = stats[pid]
                self.waiters[pid] = (int(fields[11]) + int(fields[12])) / TICK
        cpu = sum(sum(int(x) for x in stats[p][11:15]) for p in tree if p in stats) / TICK
        self.timeline.append((time.time(), cpu + sum(self.masters.values())))
        total, workers, breakdown = 0, 0, {}
        for pid in tree + [p for p in self.masters if p in stats]:
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            pss = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:")), 0)
            total += pss
            kind = ("controller" if pid == self.pid else "ssh master" if pid in self.masters
                    else "worker" if comm.startswith("ansible-playboo") else comm)
            count, kb = breakdown.get(kind, (0, 0))
            breakdown[kind] = (count + 1, kb + pss)
            workers += kind == "worker"
        if total > self.peak_pss_kb:
            self.peak_pss_kb, self.peak_breakdown = total, breakdown
        self.peak_workers = max(self.peak_workers, workers)

    def run(self) -> None:
        while not self.done.is_set():
            self.snapshot()
            self.done.wait(self.interval)


def start_latencies(starts: dict, ends: dict, deps: dict, modifies: dict) -> list[float]:
    """For each job end at which some spec was ready to start: the wait until the next start."""
    order = sorted(starts.values())
    latencies = []
    for end in sorted(ends.values()):
        running = [t for t in starts if starts[t] <= end < ends.get(t, float("inf"))]
        ready = any(starts[t] > end and all(ends.get(d, float("inf")) <= end for d in deps[t])
                    and not any(sets_overlap(modifies[t], modifies[r]) for r in running) for t in starts)
        if ready:
            latencies.append(next(s for s in order if s > end) - end)
    return latencies


def quiet_cpu(timeline: list[tuple[float, float]], events: list[float], margin: float = 3.0,
              shortest: float = 10.0) -> tuple[float | None, float]:
    """Controller CPU share (of one core) over the stretches with no job start or end."""
    events = sorted(events)
    cpu_used, seconds = 0.0, 0.0
    for first, last in zip(events, events[1:], strict=False):
        a, b = first + margin, last - 1.0
        inside = [(t, c) for t, c in timeline if a <= t <= b]
        if b - a >= shortest and len(inside) >= 2:
            cpu_used += inside[-1][1] - inside[0][1]
            seconds += inside[-1][0] - inside[0][0]
    return (cpu_used / seconds if seconds else None), seconds


def counting_wrappers(directory: Path, log: Path) -> dict[str, str]:
    """ssh and sftp wrappers that log each call; the environment that makes Ansible use them."""
    directory.mkdir(parents=True, exist_ok=True)
    env = {}
    for tool in ("ssh", "sftp", "scp"):
        wrapper = directory / tool
        wrapper.write_text(COUNTER.format(tool=tool, log=log, real=shutil.which(tool)))
        wrapper.chmod(0o755)
        env[f"ANSIBLE_{tool.upper()}_EXECUTABLE"] = str(wrapper)
    return env


def resimulate(path: Path, parser: argparse.ArgumentParser) -> int:
    """The simulation is deterministic: rebuild the same project and simulate it again."""
    result = json.loads(path.read_text())
    args = parser.parse_args([])
    vars(args).update(result["config"])
    with tempfile.TemporaryDirectory(prefix="specfleet-bench-sim-") as tmp:
        deps, durations, modifies = make_project(Path(tmp), args)
        sim = simulate(Path(tmp), [NodeInfo(f"node-{i}", args.slots) for i in range(1, args.nodes + 1)], durations)
    locked = max(result["lower_bound_s"], lock_bound(deps, durations, modifies))
    result.update(sim_s=round(sim, 1), makespan_over_sim=round(result["makespan_s"] / sim, 3),
                  sim_over_lb=round(sim / result["lower_bound_s"], 3), lock_bound_s=round(locked, 1),
                  makespan_over_lock_lb=round(result["makespan_s"] / locked, 3))
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{path.name}: sim {sim:.1f} s, makespan/sim {result['makespan_over_sim']}, sim/LB {result['sim_over_lb']}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=("wide", "deep", "mixed"), default="mixed")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--specs", type=int, default=36)
    parser.add_argument("--min", type=int, default=30, help="shortest job, seconds")
    parser.add_argument("--max", type=int, default=120, help="longest job, seconds")
    parser.add_argument("--layers", type=int, default=6, help="DAG depth (deep and mixed)")
    parser.add_argument("--locks", type=float, default=0.0, help="share of specs also touching a shared path")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--name", help="result file name (default: shape, size and locks)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--profile", metavar="FILE", help="run ansible-playbook under py-spy, collapsed stacks to FILE")
    parser.add_argument("--resimulate", metavar="RESULT", type=Path,
                        help="recompute the policy simulation of an earlier result (same seed and sizes) and update it")
    args = parser.parse_args()
    if args.resimulate:
        return resimulate(args.resimulate, parser)
    name = args.name or f"{args.shape}-{args.nodes}x{args.slots}-{args.specs}" + ("-locks" if args.locks else "")

    root = Path(tempfile.mkdtemp(prefix="specfleet-bench-"))
    shared = root / "shared"
    (shared / "durations").mkdir(parents=True)
    deps, durations, modifies = make_project(root, args)
    for task, seconds in durations.items():
        (shared / "durations" / task).write_text(f"{seconds}\n")
    total_slots = args.nodes * args.slots
    nodes = [NodeSpec(f"node-{i}", f"127.0.2.{i}", free_port(f"127.0.2.{i}"), args.slots)
             for i in range(1, args.nodes + 1)]
    lb, path, spread = lower_bound(deps, durations, total_slots)
    locked = max(lb, lock_bound(deps, durations, modifies))
    started = time.perf_counter()
    sim = simulate(root, [NodeInfo(n.name, n.slots) for n in nodes], durations)
    sim_cpu = time.perf_counter() - started
    print(f"{name}: {args.specs} specs, {args.nodes}x{args.slots} slots; lower bound {lb:.0f} s, "
          f"policy simulation {sim:.0f} s; dispatching ...", flush=True)

    calls_log = root / "ssh-calls.log"
    with LocalCluster(root / "cluster", nodes) as cluster:
        cluster.start()
        inventory = cluster.write_inventory(root / "inventory" / "hosts.yml",
                                            group_vars_dir=REPO_ROOT / "inventory" / "local" / "group_vars")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "SPECFLEET_"))}
        env.update(cluster.ansible_env(inventory), SPECFLEET_HOME=str(root / "home"), ANSIBLE_NOCOLOR="1")
        env.update(counting_wrappers(root / "bin", calls_log))
        venv_bin = Path(sys.executable).parent
        env["PATH"] = f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}"
        command = [str(venv_bin / "ansible-playbook"), "dispatch.yml", "-e", "project=bench",
                   "-e", f"specfleet_specs_root={root / 'specs'}",
                   "-e", json.dumps({"specfleet_job_command": JOB.format(shared=shared)})]
        if args.profile:  # the figures then include py-spy's own cost: use it to find hot spots only
            command = [str(venv_bin / "py-spy"), "record", "--subprocesses", "--format", "raw", "--rate", "100",
                       "-o", str(Path(args.profile).absolute()), "--", *command]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.monotonic()
        with open(root / "dispatch.log", "w") as log:
            process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
            sampler = Sampler(process.pid, str(cluster.cp_dir))
            sampler.start()
            returncode = process.wait()
            sampler.done.set()
            sampler.join()
            sampler.snapshot()  # the ControlMasters' final CPU, before the cluster stops them
        wall = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + sum(sampler.masters.values())

    events = [line.split() for line in (shared / "log").read_text().splitlines()]
    starts = {task: float(t) for kind, task, t in events if kind == "start"}
    ends = {task: float(t) for kind, task, t in events if kind == "end"}
    makespan = max(ends.values()) - min(starts.values())
    latencies = start_latencies(starts, ends, deps, modifies)
    calls = [line.split()[1] for line in calls_log.read_text().splitlines()] if calls_log.exists() else []
    idle_share, idle_seconds = quiet_cpu(sampler.timeline, list(starts.values()) + list(ends.values()))
    job_minutes = sum(ends[t] - starts[t] for t in ends) / 60
    run = len(ends)
    result = {
        "name": name, "config": vars(args), "returncode": returncode, "specs_run": run, "slots": total_slots,
        "makespan_s": round(makespan, 1), "wall_s": round(wall, 1), "lower_bound_s": round(lb, 1),
        "critical_path_s": round(path, 1), "work_over_slots_s": round(spread, 1), "sim_s": round(sim, 1),
        "makespan_over_lb": round(makespan / lb, 3), "makespan_over_sim": round(makespan / sim, 3),
        "sim_over_lb": round(sim / lb, 3), "lock_bound_s": round(locked, 1),
        "makespan_over_lock_lb": round(makespan / locked, 3),
        "agent_utilisation": round(job_minutes * 60 / (makespan * total_slots), 3),
        "start_latency_p50_s": percentile(latencies, 0.5), "start_latency_p95_s": percentile(latencies, 0.95),
        "start_latency_max_s": max(latencies, default=None), "latency_samples": len(latencies),
        "controller_cpu_s": round(cpu, 1), "controller_cpu_per_spec_s": round(cpu / max(1, run), 3),
        "ssh_master_cpu_s": round(sum(sampler.masters.values()), 1),
        "ssh_calls": len(calls), "ssh_calls_per_spec": round(len(calls) / max(1, run), 2),
        "sftp_calls": calls.count("sftp") + calls.count("scp"),
        "node_waiter_cpu_s": round(sum(sampler.waiters.values()), 2),
        "node_waiter_cpu_per_spec_minute_s": round(sum(sampler.waiters.values()) / max(job_minutes, 1e-9), 4),
        "idle_wait_cpu_share": None if idle_share is None else round(idle_share, 3),
        "idle_wait_seconds": round(idle_seconds, 1),
        "controller_peak_pss_mb": round(sampler.peak_pss_kb / 1024, 1), "peak_workers": sampler.peak_workers,
        "peak_breakdown_mb": {k: [n, round(kb / 1024, 1)] for k, (n, kb) in sorted(sampler.peak_breakdown.items())},
        "policy_simulation_cpu_s": round(sim_cpu, 2),
    }
    for key in ("start_latency_p50_s", "start_latency_p95_s", "start_latency_max_s"):
        if result[key] is not None:
            result[key] = round(result[key], 3)
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key != "config":
            print(f"{key:<{width}}  {fmt(value) if not isinstance(value, dict) else json.dumps(value)}")
    out = write_result(f"dispatch-{name}", result)
    print(f"wrote {out}")
    if returncode != 0:
        print(f"dispatch.yml exited {returncode}; see {root / 'dispatch.log'}", file=sys.stderr)
    elif not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
