"""Benchmark: one attempt of every executor with its real, pinned CLI, and every CLI's 429 fallback.

Runs specfleet's node runner (as the tests do, ``tests/agent_runs.py``) against the scripted
model server on loopback, so only the CLI and the runner are measured, not a model:

* ``edit``: executor x user (``root``: the runner hands the workspace to the agent user;
  ``agent``: the runner runs as the agent user): the CLI edits one file, verify and gates
  run, the runner commits. Wall time of the whole attempt, and of the agent try alone.
* ``429``: each CLI rate limited by the model, with the next executor of the chain
  (Claude Code, or Codex for Claude Code itself) answering: the seconds until the first
  CLI gave up (the fallback starts after ``backoff``, 1 s here).

    .venv/bin/python benchmarks/bench_agent_clis.py [--runs 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import table, write_result  # noqa: E402
from tests.agent_runs import EXECUTORS, FIXED, agent_executors, definitions, run_attempt  # noqa: E402
from tests.modelserver import ModelServer, Plan  # noqa: E402


def edit(executor: str, user: str) -> dict:
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp, ModelServer(default=Plan(edits=FIXED)) as server:
        Path(tmp).chmod(0o755)
        result = run_attempt(Path(tmp), definitions({executor: server.url}), executor, user)
    tries = result.tries
    return {"ok": result.status["state"] == "succeeded", "attempt_s": result.seconds,
            "agent_s": tries[0]["seconds"] if tries else None, "requests": len(server.requests)}


def limited(cli: str) -> dict:
    first = next(name for name in agent_executors() if EXECUTORS[name]["cli"] == cli)
    backup = "claude" if cli != "claude" else "codex"
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp, ModelServer(default=Plan(rate_limit=True)) as slow, \
            ModelServer(default=Plan(edits=FIXED)) as working:
        Path(tmp).chmod(0o755)
        defs = definitions({first: slow.url, backup: working.url})
        defs[first] = dict(defs[first], fallback=backup, backoff="1s")
        result = run_attempt(Path(tmp), defs, first, "root")
    tries = result.tries
    return {"executor": first, "ok": result.status["state"] == "succeeded" and len(tries) == 2
            and tries[0]["rate_limited"], "gave_up_s": tries[0]["seconds"] if tries else None,
            "requests_429": len(slow.requests), "attempt_s": result.seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for executor in agent_executors():
        for user in ("root", "agent"):
            runs = [edit(executor, user) for _ in range(args.runs)]
            rows.append({"executor": executor, "cli": EXECUTORS[executor]["cli"], "user": user, "mode": "edit",
                         "ok": all(r["ok"] for r in runs),
                         "attempt_s": statistics.median(r["attempt_s"] for r in runs),
                         "agent_s": statistics.median(r["agent_s"] or 0 for r in runs),
                         "requests": runs[-1]["requests"]})
            print(f"{executor:<9} {user:<6} edit  {rows[-1]['attempt_s']:.1f} s", file=sys.stderr)
    for cli in sorted({data["cli"] for data in EXECUTORS.values() if data.get("cli")}):
        runs = [limited(cli) for _ in range(args.runs)]
        rows.append({"executor": runs[0]["executor"], "cli": cli, "user": "root", "mode": "429",
                     "ok": all(r["ok"] for r in runs), "attempt_s": statistics.median(r["attempt_s"] for r in runs),
                     "agent_s": statistics.median(r["gave_up_s"] or 0 for r in runs),
                     "requests": runs[-1]["requests_429"]})
        print(f"{cli:<9} root   429   {rows[-1]['agent_s']:.1f} s until it gave up", file=sys.stderr)
    print(table(rows, [("executor", "executor"), ("cli", "cli"), ("user", "runner as"), ("mode", "mode"),
                       ("ok", "ok"), ("agent_s", "agent s (429: until fallback)"), ("attempt_s", "attempt s"),
                       ("requests", "requests")]))
    out = write_result("agent_clis", {"runs": args.runs, "rows": rows})
    print(f"written: {out.relative_to(ROOT)}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
