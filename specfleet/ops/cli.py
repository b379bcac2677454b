# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``specfleet`` command: the seeds' ``dispatch start|status|report|...`` on top of the playbooks.

Commands that act run the repository's playbooks through ansible-runner (its events, its
artifacts under ``$SPECFLEET_HOME/runner/``, its exit status); none re-implements a
playbook. ``status`` and ``report`` read the state store directly and answer at once
(``report`` writes what ``playbooks/report.yml`` writes, with the same code).

Exit codes of ``status``, ``report`` and of arguments refused before any playbook runs:

=====  ====================================================================
0      done (status: nothing failed or blocked in the projects shown)
1      status shows failed or blocked specs
2      bad input: bad arguments, unknown project, a day that is not a date
3      the state store cannot be read
=====  ====================================================================

Acting commands exit with ansible-playbook's own status: 0 every task succeeded; 2 a task
failed (an invalid spec, a spec that did not merge, an unhealthy node with
``specfleet_health_fail``...); 4 a node was unreachable; 5 bad options; 250 an unexpected
error. The output says which. Interrupted by SIGINT, SIGTERM or SIGHUP, an acting command
stops ansible-playbook and every process under it, closes the run it had open as
``interrupted`` and exits 128 + the signal's number (130, 143, 129), as a shell would
(:class:`specfleet.ops.playbook.Interrupt`).

ansible-runner keeps each run's events and output in ``$SPECFLEET_HOME/runner/artifacts/``,
the last RUNNER_KEEP runs; ``specfleet cleanup`` deletes those older than its age. Nothing
there holds the value of a secret variable (:func:`specfleet.ops.playbook.run`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specfleet.dispatch.leases import LeaseBook
from specfleet.dispatch.policy import NodeInfo
from specfleet.model.durations import format_duration, format_elapsed, parse_duration
from specfleet.model.settings import specfleet_home
from specfleet.model.states import STATE_ORDER, SpecState
from specfleet.ops import cleanup, playbook
from specfleet.ops.controller import REPO_ROOT, resolve_db
from specfleet.report import usage as spent
from specfleet.store.core import Store, StoreError

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_STORE, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
PLAYBOOKS = {
    "plan": "playbooks/plan.yml", "validate": "playbooks/validate.yml", "start": "dispatch.yml",
    "collect": "playbooks/collect.yml", "verify": "playbooks/verify.yml", "merge": "playbooks/merge.yml",
    "review": "playbooks/review.yml", "stop": "playbooks/stop.yml", "cancel": "playbooks/stop.yml",
    "rescue": "playbooks/rescue.yml", "cleanup": "playbooks/cleanup.yml", "health": "playbooks/health.yml",
    "bootstrap": "bootstrap.yml", "report": "playbooks/report.yml",
}


# -- status: the store, read directly ---------------------------------------------------------

def status(db_path: str, project: str | None = None) -> dict[str, Any]:
    """Nodes, counts by state, running specs and why the queued ones wait, tokens and cost (JSON-ready).

    ``usage``: per project, the collected attempts' tokens and cost in total and by executor,
    node and UTC day; every spec listed carries its own (all its collected attempts).
    """
    if not Path(db_path).exists():
        return {"db": db_path, "nodes": [], "projects": {}, "running": [], "waiting": [], "failed": [], "usage": {}}
    with Store(db_path) as store:
        stamp = time.time()
        nodes = _node_health(store, stamp)
        counts = store.state_counts(project)
        running = [{"project": r["project"], "task_id": r["task_id"], "node": r["node"], "slot": r["slot"],
                    "attempt": r["number"], "elapsed_s": round(stamp - r["acquired_at"], 1)}
                   for r in store.running_leases(project)]
        failed = [{"project": r["project"], "task_id": r["task_id"], "state": r["state"], "reason": r["reason"] or ""}
                  for r in store.specs_in_states((SpecState.FAILED.value, SpecState.BLOCKED.value), project)]
        waiting = []
        infos = [NodeInfo(n["name"], n["slots"], n["priority"], frozenset(json.loads(n["labels_json"] or "[]")),
                          bool(n["enabled"]))
                 for n in store.fleet_rows()]
        for name in sorted(counts):
            waiting += _waiting(store, name, infos)
        rows = store.usage_rows(project)
    by_project = spent.per_project(rows)
    usage = {name: spent.rollup(by_project.get(name, [])) for name in sorted(counts)}
    by_spec: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        by_spec.setdefault((row["project"], row["task_id"]), []).append(row)
    for entry in (*running, *waiting, *failed):
        entry["usage"] = spent.total(by_spec.get((entry["project"], entry["task_id"]), []))
    return {"db": db_path, "nodes": nodes, "projects": counts, "running": running, "waiting": waiting,
            "failed": failed, "usage": usage}


def _node_health(store: Store, stamp: float) -> list[dict[str, Any]]:
    """Each node with its slots in use and its health now: out, quarantined, disabled, or what its probe said."""
    used = store.leases_per_node()
    nodes = []
    for row in store.nodes_by_priority():
        out = row["disabled_by"] is not None
        quarantined = row["health"] == "quarantined" and (row["quarantined_until"] or 0) > stamp
        # A quarantine that has run out is over, but nothing has probed the node since.
        health = ("out" if out else "quarantined" if quarantined else "disabled" if not row["enabled"]
                  else "unknown" if row["health"] == "quarantined" else row["health"])
        nodes.append({"name": row["name"], "slots": row["slots"], "in_use": used.get(row["name"], 0),
                      "health": health, "reason": (row["disabled_reason"] if out else row["health_reason"]
                                                   if quarantined else None)})
    return nodes


def _waiting(store: Store, project: str, nodes: list[NodeInfo]) -> list[dict]:
    """Why each queued spec of ``project`` waits, from a scheduling pass that is rolled back."""
    rows = store.queue_rows(project)
    queued = sorted((t for t, r in rows.items() if r["state"] == SpecState.QUEUED.value),
                    key=lambda t: (rows[t]["priority"], t))
    if not queued:
        return []
    preview = LeaseBook(store).preview(project, nodes) if nodes else None
    out = []
    for task_id in queued:
        deps = json.loads(rows[task_id]["depends_on_json"])
        unmet = [d for d in deps if d not in rows or rows[d]["state"] != SpecState.MERGED.value]
        if unmet:
            first = unmet[0]
            reason = f"dependency {first} is {rows[first]['state'] if first in rows else 'missing'}"
        elif preview is None:
            reason = "no node known yet (the first dispatch records the inventory's nodes)"
        elif task_id in preview.waiting:
            reason = preview.waiting[task_id]
        elif any(g.task_id == task_id for g in preview.granted):
            reason = "ready: the next scheduling pass starts it"
        else:
            reason = preview.blocked.get(task_id, "ready")
        out.append({"project": project, "task_id": task_id, "reason": reason})
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]


def render_status(data: dict[str, Any]) -> str:
    lines = []
    if data["nodes"]:
        lines += _table(["NODE", "SLOTS", "HEALTH", "WHY"],
                        [(n["name"], f"{n['in_use']}/{n['slots']}", n["health"], n["reason"] or "")
                         for n in data["nodes"]]) + [""]
    else:
        lines += ["no node recorded yet (bootstrap.yml or a dispatch records them)", ""]
    if data["projects"]:
        states = [s for s in STATE_ORDER if any(s in c for c in data["projects"].values())]
        lines += _table(["PROJECT", *[s.upper() for s in states]],
                        [(p, *[c.get(s, 0) for s in states]) for p, c in sorted(data["projects"].items())]) + [""]
    else:
        lines += ["no project in the state store", ""]
    if data["running"]:
        lines += _table(["RUNNING", "PROJECT", "NODE", "SLOT", "ATTEMPT", "ELAPSED"],
                        [(r["task_id"], r["project"], r["node"], r["slot"], r["attempt"] or "-",
                          format_elapsed(r["elapsed_s"], minutes_always=True)) for r in data["running"]]) + [""]
    if data["waiting"]:
        lines += _table(["WAITING", "PROJECT", "WHY"],
                        [(w["task_id"], w["project"], w["reason"]) for w in data["waiting"]]) + [""]
    if data["failed"]:
        lines += _table(["FAILED", "PROJECT", "STATE", "WHY"],
                        [(f["task_id"], f["project"], f["state"], f["reason"].splitlines()[0][:160] if f["reason"]
                          else "") for f in data["failed"]]) + [""]
    lines += _usage_lines(data.get("usage") or {})
    return "\n".join(lines).rstrip() + "\n"


def _usage_lines(usage: dict[str, dict]) -> list[str]:
    """Tokens in and out and cost per executor of each project's collected attempts ("unknown" cost, never 0)."""
    rows = []
    for project, block in sorted(usage.items()):
        if not block["total"]["attempts"]:
            continue
        for entry in block["by_executor"]:
            rows.append((entry["executor"], project, entry["attempts"], spent.tokens_text(entry["input_tokens"]),
                         spent.tokens_text(entry["output_tokens"]), spent.cost_text(entry)))
        if len(block["by_executor"]) > 1:
            entry = block["total"]
            rows.append(("(total)", project, entry["attempts"], spent.tokens_text(entry["input_tokens"]),
                         spent.tokens_text(entry["output_tokens"]), spent.cost_text(entry)))
    if not rows:
        return []
    return _table(["USAGE", "PROJECT", "ATTEMPTS", "TOKENS IN", "TOKENS OUT", "COST"], rows)


# -- acting commands: the playbooks through ansible-runner ---------------------------------------

def _extravars(args: argparse.Namespace) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    declared = playbook.declared_secret_names()
    for item in args.extra or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(_usage(f"-e {item!r}: write KEY=VALUE"))
        if playbook.is_secret(key, declared):
            raise SystemExit(_usage(f"-e {key}=...: extra vars are written on ansible-playbook's command line (shown by "
                                    f"ps, kept in $SPECFLEET_HOME/runner); give a secret in the environment (e.g. "
                                    f"ANTHROPIC_API_KEY) or an ansible-vault file"))
        extra[key] = value
    if getattr(args, "project", None):
        extra["project"] = args.project
    cmd = args.command
    if cmd == "plan":
        if args.approve:
            extra["approve"] = args.approve
        elif args.direction:
            extra["direction"] = args.direction
        elif args.file:
            extra["direction_file"] = str(Path(args.file).expanduser().resolve())
        else:
            raise SystemExit(_usage("plan: give --direction TEXT, --file FILE or --approve all|IDS"))
        if args.into:
            extra["plan_into"] = args.into
    elif cmd == "start" and args.executor:
        extra["specfleet_executor"] = args.executor
    elif cmd == "review":
        if args.approve:
            extra["approve"] = args.approve
        if args.reject:
            if not args.reason:
                raise SystemExit(_usage("review --reject needs --reason (it goes to the next attempt's prompt)"))
            extra.update(reject=args.reject, reason=args.reason)
    elif cmd == "cancel":
        extra["cancel"] = True
    elif cmd in ("rescue", "verify") and args.specs:
        extra["specs"] = args.specs
    elif cmd == "cleanup" and args.older_than:
        extra["older_than"] = args.older_than
    elif cmd == "report" and args.day:
        extra["day"] = args.day
    return extra


def clean_runner_dirs(older_than: str, check: bool) -> int:
    """The controller's half of ``cleanup``: ansible-runner directories unused for ``older_than``."""
    try:
        age = parse_duration(older_than, maximum=None, allow_zero=True)
    except ValueError as exc:
        return _usage(f"cleanup --older-than: {exc}")
    root = specfleet_home() / "runner"
    stale: list[Path] = []
    if root.is_dir():
        with playbook.RunnerLock(root):
            stale = cleanup.stale_runner_dirs(root, age, time.time())
            for path in [] if check else stale:
                shutil.rmtree(path, ignore_errors=True)
    print(f"specfleet cleanup: {'would remove' if check else 'removed'} {len(stale)} ansible-runner run directories"
          f" unused for {format_duration(age) or '0s'} in {root}")
    return EXIT_OK


# -- the command line ------------------------------------------------------------------------------

def _usage(text: str) -> int:
    print(f"specfleet: {text}", file=sys.stderr)
    return EXIT_INPUT


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="specfleet", description="Run coding-agent specs across SSH worker nodes.",
                                  epilog="Exit codes: status and report 0 done, 1 failed or blocked specs shown, "
                                         "2 bad input, 3 state store unreadable; acting commands exit with "
                                         "ansible-playbook's status (0 ok, 2 a task failed, 4 unreachable node).")
    top.add_argument("--db", help="the state database (default $SPECFLEET_DB or $SPECFLEET_HOME/state.db)")
    top.add_argument("-i", "--inventory", help="inventory for the playbooks (default: ansible.cfg's)")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def acting(name: str, help_text: str, project: bool = True):
        p = sub.add_parser(name, help=help_text)
        if project:
            p.add_argument("project")
        p.add_argument("-e", dest="extra", action="append", metavar="KEY=VALUE", help="more extra vars")
        p.add_argument("--check", action="store_true", help="ansible's check mode: report, change nothing")
        return p

    p = acting("plan", "split a direction into specs (pending/), or approve pending ones")
    p.add_argument("--direction")
    p.add_argument("--file", help="a file holding the direction, e.g. inputs/directions/<date>.md")
    p.add_argument("--approve", help="all, or S01,S02: move pending specs into the project")
    p.add_argument("--into", choices=["pending", "project"])
    acting("validate", "check a project's specs")
    p = acting("start", "dispatch a project (with live progress)")
    p.add_argument("--executor", help="run every spec with this executor (e.g. replay)")
    p = sub.add_parser("status", help="nodes, counts, running specs and why the queued ones wait (instant)")
    p.add_argument("project", nargs="?")
    p.add_argument("--json", action="store_true")
    acting("collect", "bring back what dead runs left finished")
    p = acting("verify", "verify completed specs")
    p.add_argument("--specs")
    acting("merge", "run the merge queue")
    p = acting("review", "list the review queue, approve or reject")
    p.add_argument("--approve", help="all, or S01,S02")
    p.add_argument("--reject", help="a spec to revert and queue again")
    p.add_argument("--reason")
    p = acting("report", "write the daily report (Markdown and HTML)")
    p.add_argument("--day", help="YYYY-MM-DD (default today)")
    acting("stop", "drain a project's runs: start nothing new")
    acting("cancel", "stop a project's runs and kill their jobs")
    p = acting("rescue", "queue failed and blocked specs again")
    p.add_argument("--specs")
    p = acting("cleanup", "delete finished attempt directories on the nodes and old ansible-runner directories")
    p.add_argument("--older-than", dest="older_than")
    acting("health", "check every node; take unhealthy ones out", project=False)
    p = acting("bootstrap", "make a node ready", project=False)
    p.add_argument("node")
    return top


def report(args: argparse.Namespace) -> int:
    """The daily report straight from the store (what playbooks/report.yml writes)."""
    from specfleet.report import daily
    db = str(resolve_db(args.db))
    extra = dict(item.partition("=")[::2] for item in args.extra or [])
    try:
        written = daily.write_report(db, args.project, args.day, extra.get("report_dir"), dry_run=args.check)
    except (StoreError, sqlite3.Error, OSError) as exc:
        print(f"specfleet: {exc}", file=sys.stderr)
        return EXIT_INPUT if isinstance(exc, (daily.ReportError, OSError)) else EXIT_STORE
    lines = written["lines"]
    if args.check:
        lines = [*lines[:-1], f"check mode: would write {written['markdown']} and {written['html']}"]
    print("\n".join(lines))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "report":
        return report(args)
    if args.command == "status":
        db = str(resolve_db(args.db))
        try:
            data = status(db, args.project)
        except (StoreError, sqlite3.Error) as exc:
            print(f"specfleet: state store {db}: {exc}", file=sys.stderr)
            return EXIT_STORE
        if args.project and args.project not in data["projects"]:
            print(f"specfleet: no project {args.project!r} in {db}", file=sys.stderr)
            return EXIT_INPUT
        sys.stdout.write(json.dumps(data, indent=1, sort_keys=True) + "\n" if args.json else render_status(data))
        bad = any(c.get(SpecState.FAILED.value) or c.get(SpecState.BLOCKED.value) for c in data["projects"].values())
        return EXIT_FAILED if bad else EXIT_OK
    if shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None:
        return _usage(f"ansible-playbook is not in {Path(sys.executable).parent} (run scripts/setup.sh)")
    extravars = _extravars(args)
    if args.command == "cleanup":
        code = clean_runner_dirs(args.older_than or "7d", args.check)
        if code != EXIT_OK:
            return code
    if args.db:
        extravars["specfleet_db"] = str(Path(args.db).expanduser().resolve())
    return playbook.run(args.command, REPO_ROOT / PLAYBOOKS[args.command], extravars, limit=getattr(args, "node", None),
                        inventory=args.inventory, check=args.check, progress=args.command == "start")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
