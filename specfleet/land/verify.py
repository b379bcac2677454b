# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verify: re-check a ``completed`` spec's branch in a clean clone of its commit.

The checks, in order: the spec's ``verify`` command, the gates (on the commit's own diff),
the project's ``test_command`` (the commands where :mod:`specfleet.land.where` says); then,
with ``review: advisory|required`` in project.yml and every other check passed, an LLM
review of the diff against the spec. Pass -> ``verified``; fail -> a spec failure (an
attempt is used, the output is the next attempt's feedback).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from specfleet.attempt.workspace import git
from specfleet.land import llmreview
from specfleet.land.repository import LandingError, local_repository
from specfleet.land.scratch import Scratch, scratch
from specfleet.land.where import OnController, Where
from specfleet.model.durations import parse_duration
from specfleet.model.project import ProjectConfig
from specfleet.model.states import SpecState
from specfleet.node.gates import added_lines, parse_name_status, run_gates
from specfleet.node.runfiles import tail
from specfleet.store.core import SpecRow, Store

OUTPUT_TAIL = 4000


@dataclass
class Verdict:
    task_id: str
    ok: bool
    state: str
    summary: str
    checks: list[dict] = field(default_factory=list)


def verify(store: Store, config: ProjectConfig, task_id: str, run_id: str | None = None,
           endpoint: llmreview.Endpoint | None = None, where: Where | None = None) -> Verdict:
    """Re-check a ``completed`` spec on the controller in a clean clone of its commit.

    With ``review: advisory|required`` in project.yml, ``endpoint`` (an OpenAI-compatible
    chat endpoint) also reviews the diff against the spec once every other check passed.
    """
    project = config.name
    spec = store.spec(project, task_id)
    if spec is None:
        raise LandingError(f"project {project} has no spec {task_id}")
    if spec.state is not SpecState.COMPLETED:
        return Verdict(task_id, spec.state in (SpecState.VERIFIED, SpecState.MERGED), spec.state.value,
                       f"{task_id} is {spec.state.value}: nothing to verify")
    commit = store.latest_collected_commit(project, task_id)
    if commit is None:
        raise LandingError(f"{task_id} is completed but no attempt recorded a commit")
    repository = local_repository(config)
    where = where or OnController()
    started = time.time()
    with scratch(repository, project) as work:
        work.require(commit)
        work.checkout(commit)
        parent = work.git("rev-parse", f"{commit}^1").strip()
        checks = _checks(work, config, spec, commit, parent, where)
        diff = work.git("diff", "--stat", parent, commit)
    failed = [c for c in checks if not c["ok"]]
    if config.review != "off" and not failed:
        checks.append(_llm_review(store, config, spec, repository, commit, parent, endpoint, started))
        failed = [c for c in checks if not c["ok"]]
    summary = ("; ".join(f"{c['check']}: {c['detail']}" for c in failed) if failed
               else f"{len(checks)} checks passed on {commit[:12]}")
    store.record_check(project, task_id, "verify", commit, not failed, summary[:2000],
                       {"checks": checks, "diffstat": diff.strip().splitlines()[-1:] if diff.strip() else []}, started)
    if failed:
        feedback = "\n".join(c.get("output", "") for c in failed if c.get("output"))[-OUTPUT_TAIL:]
        state = store.send_back(project, task_id, f"controller verify failed: {summary}"[:1000], feedback, run_id)
        return Verdict(task_id, False, state, summary, checks)
    store.transition(project, task_id, SpecState.VERIFIED, expect_state=SpecState.COMPLETED, run_id=run_id,
                     detail={"commit": commit})
    return Verdict(task_id, True, SpecState.VERIFIED.value, summary, checks)


def _checks(work: Scratch, config: ProjectConfig, spec: SpecRow, commit: str, parent: str, where: Where) -> list[dict]:
    """The spec's verify command, the gates and the project's tests on ``commit`` (checked out in ``work``)."""
    checks: list[dict] = []
    verify_output = None
    if spec.verify:
        result = where.run(work, commit, spec.verify, parse_duration(config.verify_timeout), config.network)
        checks.append({"check": "verify", "ok": result.ok, "detail": f"{spec.verify}: {result.summary} on {where.name}",
                       "seconds": round(result.seconds, 2), "output": tail(result.output, 40, OUTPUT_TAIL)})
        verify_output = result.output
    changes = parse_name_status(work.git("diff", "--name-status", "-z", "-M", parent, commit))
    added = added_lines(work.git("diff", "-U0", "--no-color", parent, commit))
    for gate in run_gates(changes, added, spec.modifies, list(config.test_paths), verify_output, config.require_tests):
        checks.append({"check": f"gate {gate['gate']}", "ok": gate["ok"], "detail": gate["detail"]})
    if config.test_command:
        result = where.run(work, commit, config.test_command, parse_duration(config.test_timeout), config.network)
        checks.append({"check": "tests", "ok": result.ok,
                       "detail": f"{config.test_command}: {result.summary} on {where.name}",
                       "seconds": round(result.seconds, 2), "output": tail(result.output, 40, OUTPUT_TAIL)})
    return checks


def _llm_review(store: Store, config: ProjectConfig, spec: SpecRow, repository: str, commit: str, parent: str,
                endpoint: llmreview.Endpoint | None, started: float) -> dict:
    """One LLM review as a check; advisory verdicts never fail it, required ones do."""
    required = config.review == "required"
    if endpoint is None:
        if required:
            raise LandingError(f"project {config.name} requires an LLM review, but the inventory sets no "
                               "specfleet_review_endpoint")
        return {"check": "review", "ok": True, "detail": "skipped: no specfleet_review_endpoint", "advisory": True}
    front, body = store.revision_text(config.name, spec.task_id, spec.revision) or ({}, "")
    spec_text = "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in front.items()) + "\n\n" + body
    diff = git(repository, "diff", parent, commit)
    try:
        verdict = llmreview.review(endpoint, spec_text, diff)
    except llmreview.ReviewUnavailable as exc:
        store.record_check(config.name, spec.task_id, "review", commit, False, f"unavailable: {exc}",
                           {"verdict": "unavailable"}, started)
        if required:
            raise LandingError(f"{spec.task_id}: the required LLM review is unavailable ({exc}); the spec stays "
                               "completed and is verified again by the next merge.yml or dispatch run") from None
        return {"check": "review", "ok": True, "detail": f"unavailable: {exc}", "advisory": True}
    store.record_check(config.name, spec.task_id, "review", commit, verdict["ok"], verdict["summary"], verdict,
                       started)
    return {"check": "review", "ok": verdict["ok"] or not required, "detail": verdict["summary"],
            "advisory": not required, "output": "\n".join(verdict["reasons"])}
