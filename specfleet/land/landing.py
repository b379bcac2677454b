# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Getting collected work onto the project's branches: verify, merge queue, review.

Nothing reaches the base branch that was not tested exactly as it lands:

* **verify** re-checks a ``completed`` spec's branch on the controller in a clean clone of
  its commit: the spec's ``verify`` command, the gates (on the commit's own diff), the
  project's ``test_command``. Pass -> ``verified``; fail -> a spec failure (an attempt is
  used, the output is the next attempt's feedback).
* **merge** is the merge queue of one project (one at a time, under a lock file). It takes
  the verified specs whose dependencies are merged, merges them one by one onto the tip of
  ``specfleet/<project>/integration`` in a scratch clone, tests the result, and moves the
  integration branch (compare-and-swap) only to a tested commit. A failing batch is tested
  once more (flaky tests), then bisected: halves are tested on the latest good tip until
  the culprits are found; the rest land. A branch that does not merge cleanly is a
  ``conflict`` with its files; it and the culprits go back to the queue with the failure
  as feedback (a new attempt starts from the fresh integration tip) until their attempts
  run out. Branches are never deleted; the user's working tree is never touched.
* **review** lists what is on integration but not on the base branch; approving
  fast-forwards the base branch to a tested integration commit; rejecting reverts a spec
  (and its merged dependents) from integration, tests that, and queues them again with
  the reason as feedback.

A crash at any point leaves integration at a tested commit: the branch only moves after
the test of exactly that commit passed, and a resumed queue recognises the specs whose
merges are already on integration.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from specfleet.attempt.workspace import (
    GitError,
    Start,
    git,
    integration_branch,
    is_ancestor,
    mirror_dir,
    mirror_probe_script,
    on_node,
    parse_probe,
    send_bundle,
)
from specfleet.dispatch.jobs import shell_path
from specfleet.land import llmreview
from specfleet.land.sandbox import Bounds, CommandResult, SandboxUnavailable
from specfleet.land.sandbox import check as check_sandbox
from specfleet.land.sandbox import run as run_sandboxed
from specfleet.model.durations import parse_duration
from specfleet.model.graph import SpecGraph
from specfleet.model.project import ProjectConfig
from specfleet.model.settings import specfleet_home
from specfleet.model.states import SpecState
from specfleet.node.runner import added_lines, parse_name_status, run_gates, tail
from specfleet.store.base import event as _event
from specfleet.store.base import now
from specfleet.store.core import Store, StoreError

OUTPUT_TAIL = 4000


class LandingError(StoreError):
    """The stage cannot do its work (repository missing, branch moved, dirty checkout...)."""


# -- repositories ---------------------------------------------------------------------------------

def local_repository(config: ProjectConfig) -> str:
    """The repository to work in: the project's own, or for a URL a mirror refreshed from it."""
    if not config.is_remote:
        if not os.path.isdir(config.repository):
            raise LandingError(f"project {config.name}: repository {config.repository} does not exist")
        return config.repository
    mirror = specfleet_home() / "landing" / f"{config.name}.git"
    if (mirror / "HEAD").exists():
        git(str(mirror), "fetch", "-q", "--prune", "origin")
    else:
        mirror.parent.mkdir(parents=True, exist_ok=True)
        git(str(mirror.parent), "clone", "-q", "--mirror", config.repository, str(mirror))
    return str(mirror)


def publish_branch(config: ProjectConfig, repository: str, branch: str, new: str, old: str | None) -> None:
    """Move ``branch`` (compare-and-swap) and, for a URL project, push it there the same way."""
    move_branch(repository, branch, new, old)
    if config.is_remote:
        git(repository, "push", "-q", f"--force-with-lease=refs/heads/{branch}:{old or ''}", "origin",
            f"{new}:refs/heads/{branch}")


def tip(repository: str, branch: str) -> str | None:
    out = git(repository, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", check=False).strip()
    return out or None


def move_branch(repository: str, branch: str, new: str, old: str | None) -> None:
    """Compare-and-swap ``branch`` from ``old`` (None: must not exist) to ``new``."""
    git(repository, "update-ref", "-m", "specfleet", f"refs/heads/{branch}", new, old or "0" * 40)


class Scratch:
    """A throw-away clone (objects shared with the repository) to check out, merge and test in."""

    def __init__(self, repository: str, project: str):
        base = specfleet_home() / "scratch"
        base.mkdir(parents=True, exist_ok=True)
        _remove_orphans(base)
        self.repository = repository
        self.path = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-{project}-", dir=base))
        git(str(self.path), "clone", "-q", "--shared", "--no-checkout", repository, ".")
        for key, value in (("user.name", "specfleet"), ("user.email", "specfleet@localhost"),
                           ("commit.gpgsign", "false"), ("core.hooksPath", "/dev/null")):
            git(str(self.path), "config", key, value)

    def git(self, *args: str, check: bool = True) -> str:
        return git(str(self.path), *args, check=check)

    def checkout(self, commit: str) -> None:
        self.git("checkout", "-q", "--force", "--detach", commit)
        self.git("clean", "-q", "-ffdx")

    def require(self, commit: str) -> None:
        """``commit`` must exist (the clone shares the repository's objects, new ones included)."""
        if subprocess.run(["git", "-C", str(self.path), "cat-file", "-e", f"{commit}^{{commit}}"],
                          capture_output=True).returncode != 0:
            raise LandingError(f"commit {commit} is not in {self.repository}: was the branch deleted?")

    def merge(self, commit: str, message: str) -> list[str] | None:
        """Merge ``commit`` into the checked-out commit; None, or the conflicting files (merge aborted)."""
        result = subprocess.run(["git", "-C", str(self.path), "merge", "--no-ff", "--no-edit", "-q", "-m", message,
                                 commit], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"))
        if result.returncode == 0:
            return None
        files = self.git("diff", "--name-only", "--diff-filter=U", check=False).split()
        self.git("merge", "--abort", check=False)
        self.git("reset", "-q", "--hard", check=False)
        return files or [f"(git merge failed: {(result.stderr or result.stdout).strip()[-200:]})"]

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def publish(self, commit: str, ref: str) -> None:
        """Copy ``commit`` (made here) into the repository under ``ref``."""
        self.git("update-ref", "refs/specfleet/out", commit)
        git(self.repository, "fetch", "-q", "--no-tags", str(self.path), f"+refs/specfleet/out:{ref}")

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _remove_orphans(base: Path) -> None:
    """Scratch clones whose process died (a killed controller) are removed by the next one."""
    for entry in base.iterdir():
        pid = entry.name.split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def scratch(repository: str, project: str) -> Iterator[Scratch]:
    work = Scratch(repository, project)
    try:
        yield work
    finally:
        work.close()


@contextmanager
def queue_lock(project: str, wait: float = 3600) -> Iterator[None]:
    """One merge queue (or review action) per project at a time on this controller."""
    folder = specfleet_home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"merge-{project}.lock", "w") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LandingError(f"the merge queue of {project} stayed locked for {wait:.0f} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- where the project's commands run -----------------------------------------------------------

class OnController:
    """Run the project's commands in the scratch clone on the controller (the default), sandboxed.

    ``sandboxed=False`` is the operator's explicit opt-out (``specfleet_unsafe_controller_verify``):
    the same cleared environment and bounds, but the controller user's files and network.
    """

    name = "controller"

    def __init__(self, sandboxed: bool = True):
        self.sandboxed = sandboxed
        if sandboxed:
            try:
                check_sandbox()
            except SandboxUnavailable as exc:
                raise LandingError(f"cannot run the project's tests on the controller: {exc}") from None

    def run(self, work: Scratch, commit: str, command: str, timeout: float, network: bool = False) -> CommandResult:
        work.checkout(commit)
        return run_sandboxed(command, work.path, Bounds(timeout), network=network, sandboxed=self.sandboxed)


class OnNode:
    """Run them on a worker node (``specfleet_verify_on``), in a throw-away clone of its mirror.

    ``shell(script) -> {"rc", "stdout", "stderr"}`` runs a script there and
    ``put(local, remote)`` copies a file there (the action plugin's SSH connection); the
    commit travels as a git bundle holding only what the node's mirror lacks.
    """

    def __init__(self, name: str, root: str, project: str, shell, put):
        self.name, self.shell, self.put, self.project = name, shell, put, project
        self.mirror = mirror_dir(root, project)
        self.inbox = root.rstrip("/") + "/verify"

    def _send(self, work: Scratch, commit: str, inbox: str) -> None:
        probe = self.shell(mirror_probe_script(self.mirror, inbox))
        if probe["rc"] != 0:
            raise LandingError(f"{self.name}: could not prepare {self.mirror}: {probe['stderr'].strip()[-300:]}")
        home, _attached, tips = parse_probe(probe["stdout"])
        work.git("update-ref", "refs/specfleet/verify", commit)
        try:
            send_bundle(str(work.path), Start("refs/specfleet/verify", commit), tips, on_node(self.mirror, home),
                        on_node(inbox, home), self.shell, self.put)
        except GitError as exc:
            raise LandingError(f"{self.name}: {commit[:12]}: {exc}") from None

    def run(self, work: Scratch, commit: str, command: str, timeout: float, network: bool = False) -> CommandResult:
        started = time.monotonic()
        inbox = f"{self.inbox}/{commit[:12]}-{os.getpid()}"  # one per run: concurrent verifies never share it
        self._send(work, commit, inbox)
        answer = self.shell(node_test_script(self.mirror, commit, command, int(timeout), inbox))
        rc = answer["rc"]
        if rc in (97, 98):
            raise LandingError(f"{self.name}: could not check out {commit[:12]} from {self.mirror}: "
                               f"{(answer['stderr'] or answer['stdout']).strip()[-300:]}")
        output = answer["stdout"] + answer["stderr"]
        return CommandResult(rc == 0, None if rc == 124 else rc, output, time.monotonic() - started)


def node_test_script(mirror: str, commit: str, command: str, timeout: int, inbox: str) -> str:
    """A clean clone of ``commit`` from the node's mirror; run ``command`` there with a bare environment.

    The command gets the bare environment the controller's sandbox gives (a throw-away HOME,
    no variable of the login's but PATH, USER, LANG and TMPDIR, ``CI=1``). The clone, that
    HOME and the (by then empty) ``inbox`` the bundle came through are removed at exit.
    """
    keep = " ".join(f'{k}="${{{k}:-}}"' for k in ("PATH", "USER", "LANG", "TMPDIR"))
    return (f"i={shell_path(inbox)}\n"
            'd=$(mktemp -d "${TMPDIR:-/tmp}/specfleet-verify.XXXXXX") || exit 97\n'
            'trap \'rm -rf "$d" "$d.home"; rmdir "$i" 2>/dev/null\' EXIT\n'
            'mkdir -m 0700 "$d.home" || exit 97\n'
            f'git clone -q --shared --no-checkout {shell_path(mirror)} "$d" >&2 && '
            f'git -C "$d" checkout -q --detach {commit} >&2 || exit 98\n'
            f'cd "$d" && env -i {keep} HOME="$d.home" PYTHONDONTWRITEBYTECODE=1 CI=1 timeout -k 10 {timeout} '
            f'bash -c {shlex.quote(command)} 2>&1\n')


# -- store helpers ----------------------------------------------------------------------------------

def latest_commit(store: Store, project: str, task_id: str) -> str | None:
    row = store.db.execute("SELECT commit_sha FROM attempts WHERE project = ? AND task_id = ? AND commit_sha IS NOT NULL"
                           " AND outcome = 'succeeded' ORDER BY number DESC, id DESC LIMIT 1",
                           (project, task_id)).fetchone()
    return row["commit_sha"] if row else None


def record_check(store: Store, project: str, task_id: str | None, kind: str, commit: str | None, ok: bool,
                 summary: str, detail: dict, started: float) -> int:
    with store.transaction() as db:
        cursor = db.execute("INSERT INTO checks (project, task_id, kind, commit_sha, ok, summary, detail_json, started_at,"
                            " ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (project, task_id, kind, commit, int(ok), summary,
                             json.dumps(detail, sort_keys=True, ensure_ascii=False), started, now()))
        return int(cursor.lastrowid)


def send_back(store: Store, project: str, task_id: str, reason: str, feedback: str, run_id: str | None,
              conflict_files: Sequence[str] = ()) -> str:
    """A spec failure found after the node: use an attempt, queue again (or fail); -> new state."""
    with store.transaction() as db:
        if conflict_files:
            store._transition(db, project, task_id, SpecState.CONFLICT, reason=reason, run_id=run_id,
                              detail={"files": list(conflict_files)})
        state, blocked = store._spec_failed(db, project, task_id, reason, run_id)
        store._add_lesson(db, project, task_id, None, "failure", (reason + " | " + feedback)[:1500])
    return state.value + (f" (blocked: {', '.join(blocked)})" if blocked else "")


# -- verify ---------------------------------------------------------------------------------------

@dataclass
class Verdict:
    task_id: str
    ok: bool
    state: str
    summary: str
    checks: list[dict] = field(default_factory=list)


def verify(store: Store, config: ProjectConfig, task_id: str, run_id: str | None = None,
           endpoint: llmreview.Endpoint | None = None, where: OnController | OnNode | None = None) -> Verdict:
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
    commit = latest_commit(store, project, task_id)
    if commit is None:
        raise LandingError(f"{task_id} is completed but no attempt recorded a commit")
    repository = local_repository(config)
    where = where or OnController()
    started = now()
    checks: list[dict] = []
    with scratch(repository, project) as work:
        work.require(commit)
        work.checkout(commit)
        parent = work.git("rev-parse", f"{commit}^1").strip()
        if spec.verify:
            result = where.run(work, commit, spec.verify, parse_duration(config.verify_timeout), config.network)
            checks.append({"check": "verify", "ok": result.ok, "detail": f"{spec.verify}: {result.summary} on {where.name}",
                           "seconds": round(result.seconds, 2), "output": tail(result.output, 40, OUTPUT_TAIL)})
            verify_output = result.output
        else:
            verify_output = None
        changes = parse_name_status(work.git("diff", "--name-status", "-z", "-M", parent, commit))
        added = added_lines(work.git("diff", "-U0", "--no-color", parent, commit))
        for gate in run_gates(changes, added, spec.modifies, list(config.test_paths), verify_output,
                              config.require_tests):
            checks.append({"check": f"gate {gate['gate']}", "ok": gate["ok"], "detail": gate["detail"]})
        if config.test_command:
            result = where.run(work, commit, config.test_command, parse_duration(config.test_timeout),
                               config.network)
            checks.append({"check": "tests", "ok": result.ok,
                           "detail": f"{config.test_command}: {result.summary} on {where.name}",
                           "seconds": round(result.seconds, 2), "output": tail(result.output, 40, OUTPUT_TAIL)})
        diff = work.git("diff", "--stat", parent, commit)
    failed = [c for c in checks if not c["ok"]]
    if config.review != "off" and not failed:
        checks.append(_llm_review(store, config, spec, repository, commit, parent, endpoint, started))
        failed = [c for c in checks if not c["ok"]]
    summary = ("; ".join(f"{c['check']}: {c['detail']}" for c in failed) if failed
               else f"{len(checks)} checks passed on {commit[:12]}")
    record_check(store, project, task_id, "verify", commit, not failed, summary[:2000],
                 {"checks": checks, "diffstat": diff.strip().splitlines()[-1:] if diff.strip() else []}, started)
    if failed:
        feedback = "\n".join(c.get("output", "") for c in failed if c.get("output"))[-OUTPUT_TAIL:]
        state = send_back(store, project, task_id, f"controller verify failed: {summary}"[:1000], feedback, run_id)
        return Verdict(task_id, False, state, summary, checks)
    store.transition(project, task_id, SpecState.VERIFIED, expect_state=SpecState.COMPLETED, run_id=run_id,
                     detail={"commit": commit})
    return Verdict(task_id, True, SpecState.VERIFIED.value, summary, checks)


def _llm_review(store: Store, config: ProjectConfig, spec, repository: str, commit: str, parent: str,
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
        record_check(store, config.name, spec.task_id, "review", commit, False, f"unavailable: {exc}",
                     {"verdict": "unavailable"}, started)
        if required:
            raise LandingError(f"{spec.task_id}: the required LLM review is unavailable ({exc}); the spec stays "
                               "completed and is verified again by the next merge.yml or dispatch run") from None
        return {"check": "review", "ok": True, "detail": f"unavailable: {exc}", "advisory": True}
    record_check(store, config.name, spec.task_id, "review", commit, verdict["ok"], verdict["summary"], verdict,
                 started)
    return {"check": "review", "ok": verdict["ok"] or not required, "detail": verdict["summary"],
            "advisory": not required, "output": "\n".join(verdict["reasons"])}


# -- the merge queue ----------------------------------------------------------------------------------

@dataclass
class QueueResult:
    merged: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)      # task id -> why the batch test blamed it
    waiting: dict[str, str] = field(default_factory=dict)     # verified specs not merged, with why
    test_runs: int = 0
    batches: int = 0
    tip: str | None = None
    promoted: str | None = None
    flaky: int = 0
    resumed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class MergeQueue:
    """The merge queue of one project (call :meth:`run` under :func:`queue_lock`)."""

    def __init__(self, store: Store, config: ProjectConfig, run_id: str | None = None,
                 where: OnController | OnNode | None = None):
        self.store, self.config, self.run_id = store, config, run_id
        self.where = where or OnController()
        self.project = config.name
        self.repository = local_repository(config)
        self.branch = integration_branch(self.project)

    # which specs, in which order
    def candidates(self) -> tuple[list[str], dict[str, str]]:
        rows = {r.task_id: r for r in self.store.specs(self.project)}
        graph = SpecGraph({t: r.depends_on for t, r in rows.items()})
        order = {t: i for i, t in enumerate(graph.topological_order())}
        ready, waiting = [], {}
        for task_id in sorted((t for t, r in rows.items() if r.state is SpecState.VERIFIED), key=order.get):
            pending = [d for d in rows[task_id].depends_on if rows.get(d) is None or rows[d].state is not SpecState.MERGED]
            if pending:
                waiting[task_id] = f"dependency {pending[0]} is not merged yet"
            else:
                ready.append(task_id)
        return ready, waiting

    def _test(self, work: Scratch, commit: str, members: Sequence[str], result: QueueResult) -> tuple[bool, str]:
        """Run the project's test command (else the members' verify commands) on ``commit``."""
        command = self.config.test_command
        if not command:
            verifies = [v for v in (self.store.spec(self.project, t).verify for t in members) if v]
            command = " && ".join(f"( {v} )" for v in dict.fromkeys(verifies))
        if not command:
            return True, "no test_command and no verify command: merged untested"
        outcome = self.where.run(work, commit, command, parse_duration(self.config.test_timeout),
                                     self.config.network)
        result.test_runs += 1
        return outcome.ok, tail(outcome.output, 40, OUTPUT_TAIL) if not outcome.ok else outcome.summary

    def _build(self, work: Scratch, base: str, members: Sequence[str], commits: dict[str, str]
               ) -> tuple[str, dict[str, str], dict[str, list[str]]]:
        """Merge ``members`` one by one onto ``base``; -> (tip, merge commit per member, conflicts)."""
        work.checkout(base)
        merges, conflicts = {}, {}
        for task_id in members:
            files = work.merge(commits[task_id], f"specfleet: merge {self.project}/{task_id}\n\n"
                                                 f"Spec {task_id}, commit {commits[task_id]}.")
            if files is None:
                merges[task_id] = work.head()
            else:
                conflicts[task_id] = files
        return work.head(), merges, conflicts

    def _land(self, work: Scratch, base: str, members: list[str], commits: dict[str, str], result: QueueResult,
              built: tuple[str, dict[str, str]] | None = None) -> tuple[str, dict[str, str], dict[str, str]]:
        """Land what can land of ``members`` on ``base``; -> (tested tip, merge commits, culprits).

        ``built``: the whole batch's first build (tip, merge commits), already free of
        conflicts; its test gets one retry (a flaky test) before the bisection.
        """
        if not members:
            return base, {}, {}
        first = built is not None
        if built is not None:
            tip_, merges, conflicts = built[0], built[1], {}
        else:
            tip_, merges, conflicts = self._build(work, base, members, commits)
        for task_id, files in conflicts.items():  # only on a rebuild in another order: blame it like a test failure
            result.conflicts.setdefault(task_id, files)
        members = [m for m in members if m in merges]
        ok, output = self._test(work, tip_, members, result)
        if not ok and first:
            ok, output = self._test(work, tip_, members, result)  # a flaky test gets one more run
            result.flaky += int(ok)
        if ok:
            return tip_, merges, {}
        if len(members) == 1:
            return base, {}, {members[0]: output}
        half = len(members) // 2
        tip_, merged, culprits = self._land(work, base, members[:half], commits, result)
        tip_, more, also = self._land(work, tip_, members[half:], commits, result)
        return tip_, {**merged, **more}, {**culprits, **also}

    def _resume(self, result: QueueResult, start: str | None) -> None:
        """Specs left ``verified`` by a crash after their batch moved integration: record them merged."""
        if start is None:
            return
        with self.store.transaction() as db:
            for batch in db.execute("SELECT * FROM batches WHERE project = ? AND status = 'testing'", (self.project,)):
                db.execute("UPDATE batches SET status = 'abandoned', ended_at = ? WHERE id = ?", (now(), batch["id"]))
        started = now()
        for task_id in self.candidates()[0]:
            commit = latest_commit(self.store, self.project, task_id)
            if commit and is_ancestor(self.repository, commit, start):
                merge = git(self.repository, "log", "--format=%H", "-1", "--grep", f"merge {self.project}/{task_id}$",
                            start).strip() or start
                self._record_merged(task_id, commit, merge, start, None)
                result.resumed.append(task_id)
        if result.resumed:  # integration only ever moves to a tested commit: record it as one
            record_check(self.store, self.project, None, "batch", start, True,
                         f"resumed: {len(result.resumed)} merges found on the tested tip", {"members": result.resumed},
                         started)

    def _record_merged(self, task_id: str, commit: str, merge: str, tested: str, batch_id: int | None) -> None:
        with self.store.transaction() as db:
            db.execute("INSERT INTO merges (project, task_id, commit_sha, merge_commit, batch_id, tested_commit, merged_at)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (self.project, task_id, commit, merge, batch_id, tested, now()))
            self.store._transition(db, self.project, task_id, SpecState.MERGED, reason=None, run_id=self.run_id,
                                   detail={"commit": commit, "merge": merge, "integration": tested})

    def run(self, max_batches: int = 100) -> QueueResult:
        result = QueueResult()
        base_tip = tip(self.repository, self.config.base_branch)
        if base_tip is None:
            raise LandingError(f"branch {self.config.base_branch!r} does not exist in {self.repository}")
        current = tip(self.repository, self.branch)
        self._resume(result, current)
        with scratch(self.repository, self.project) as work:
            while result.batches < max_batches:
                ready, waiting = self.candidates()
                result.waiting = waiting
                if not ready:
                    break
                members = ready[:self.config.merge_batch]
                current = self._batch(work, members, result)
        result.tip = tip(self.repository, self.branch)
        if self.config.promote == "auto" and result.merged and result.tip:
            result.promoted = promote(self.store, self.config, None, run_id=self.run_id)["commit"]
        return result

    def _batch(self, work: Scratch, members: list[str], result: QueueResult) -> str:
        result.batches += 1
        started = now()
        current = tip(self.repository, self.branch)
        base_tip = tip(self.repository, self.config.base_branch)
        commits = {t: latest_commit(self.store, self.project, t) for t in members}
        missing = [t for t, c in commits.items() if not c]
        if missing:
            raise LandingError(f"verified specs without a collected commit: {', '.join(missing)}")
        for task_id in members:
            work.require(commits[task_id])
        start = current or base_tip
        if current and not is_ancestor(self.repository, base_tip, current):
            # The base branch moved on (a person committed there): bring it in first, tested with the batch.
            work.checkout(current)
            files = work.merge(base_tip, f"specfleet: bring {self.config.base_branch} into {self.branch}")
            if files is not None:
                raise LandingError(f"{self.config.base_branch} no longer merges into {self.branch} (conflicts in "
                                   f"{', '.join(files)}): merge it by hand, then run the queue again")
            start = work.head()
        with self.store.transaction() as db:
            batch_id = db.execute("INSERT INTO batches (project, base_commit, members_json, status, started_at)"
                                  " VALUES (?, ?, ?, 'testing', ?)",
                                  (self.project, start, json.dumps(members), started)).lastrowid
            _event(db, "batch_started", self.project, run_id=self.run_id,
                   detail={"batch": batch_id, "members": members, "base": start})
        runs_before = result.test_runs
        # Textual conflicts are found on the first build and leave the batch at once; the
        # build of the others is the one the batch test runs on.
        built, built_merges, conflicts = self._build(work, start, members, commits)
        clean = [m for m in members if m not in conflicts]
        new_tip, merges, culprits = self._land(work, start, clean, commits, result, built=(built, built_merges))
        conflicts.update({t: f for t, f in result.conflicts.items() if t in clean and t not in merges})
        landed = [m for m in clean if m in merges]
        if landed:
            work.publish(new_tip, f"refs/specfleet/{self.project}/landing")
            publish_branch(self.config, self.repository, self.branch, new_tip, current)
            git(self.repository, "update-ref", "-d", f"refs/specfleet/{self.project}/landing", check=False)
            record_check(self.store, self.project, None, "batch", new_tip, True,
                         f"batch {batch_id}: {len(landed)} landed, tested", {"members": landed}, started)
        for task_id in landed:
            self._record_merged(task_id, commits[task_id], merges[task_id], new_tip, batch_id)
        result.merged += landed
        for task_id, files in conflicts.items():
            result.conflicts[task_id] = files
            send_back(self.store, self.project, task_id,
                      f"merge conflict with {self.branch} in {', '.join(files)}",
                      "start again from the integration tip; keep the other specs' changes", self.run_id, files)
        for task_id, output in culprits.items():
            result.broken[task_id] = output
            send_back(self.store, self.project, task_id,
                      f"the merged build failed the tests with this branch (bisected in batch {batch_id})",
                      output, self.run_id)
        with self.store.transaction() as db:
            db.execute("UPDATE batches SET status = ?, tip_commit = ?, landed_json = ?, rejected_json = ?, test_runs = ?,"
                       " ended_at = ? WHERE id = ?",
                       ("landed" if landed else "rejected", new_tip if landed else None, json.dumps(landed),
                        json.dumps(sorted({*conflicts, *culprits})), result.test_runs - runs_before, now(), batch_id))
            _event(db, "batch_ended", self.project, run_id=self.run_id,
                   detail={"batch": batch_id, "landed": landed, "conflicts": sorted(conflicts),
                           "broken": sorted(culprits), "test_runs": result.test_runs - runs_before})
        return new_tip if landed else (current or start)


def merge_queue(store: Store, config: ProjectConfig, run_id: str | None = None,
                where: OnController | OnNode | None = None) -> QueueResult:
    with queue_lock(config.name):
        return MergeQueue(store, config, run_id, where).run()


# -- review and promotion --------------------------------------------------------------------------

def pending_review(store: Store, config: ProjectConfig, repository: str | None = None) -> list[dict]:
    """What is on integration but not yet on the base branch, oldest merge first."""
    repository = repository or local_repository(config)
    rows = store.db.execute("SELECT * FROM merges WHERE project = ? AND promoted_at IS NULL AND reverted_at IS NULL"
                            " ORDER BY id", (config.name,)).fetchall()
    entries = []
    for row in rows:
        task_id = row["task_id"]
        stat = git(repository, "diff", "--shortstat", f"{row['merge_commit']}^1", row["merge_commit"], check=False)
        verify_row = store.db.execute("SELECT summary, ok FROM checks WHERE project = ? AND task_id = ? AND kind = 'verify'"
                                      " ORDER BY id DESC LIMIT 1", (config.name, task_id)).fetchone()
        review_row = store.db.execute("SELECT summary, ok FROM checks WHERE project = ? AND task_id = ? AND kind = 'review'"
                                      " ORDER BY id DESC LIMIT 1", (config.name, task_id)).fetchone()
        attempts = store.db.execute("SELECT COUNT(*) AS n, MIN(started_at) AS first FROM attempts WHERE project = ? AND"
                                    " task_id = ? AND kind IS NOT 'infra'", (config.name, task_id)).fetchone()
        entries.append({
            "task_id": task_id, "merge_commit": row["merge_commit"], "tested_commit": row["tested_commit"],
            "diffstat": stat.strip(), "verify": verify_row["summary"] if verify_row else "not verified here",
            "review": review_row["summary"] if review_row else "no LLM review",
            "attempts": attempts["n"], "hours": round((row["merged_at"] - (attempts["first"] or row["merged_at"])) / 3600, 2),
        })
    return entries


def _tested_commits(store: Store, project: str) -> list[str]:
    return [r["commit_sha"] for r in store.db.execute(
        "SELECT commit_sha FROM checks WHERE project = ? AND kind IN ('batch', 'revert') AND ok = 1 ORDER BY id DESC",
        (project,))]


def promote(store: Store, config: ProjectConfig, approve: Sequence[str] | None, run_id: str | None = None) -> dict:
    """Fast-forward the base branch to the newest tested integration commit the approval covers.

    ``approve``: the specs a person approved (None: all). The target holds every approved
    spec and no unapproved one; since integration is linear, approving a spec means
    approving the ones merged before it, and the error says which those are.
    """
    repository = local_repository(config)
    pending = pending_review(store, config, repository)
    if not pending:
        return {"commit": None, "promoted": [], "msg": "nothing waits for review"}
    names = [e["task_id"] for e in pending]
    wanted = set(names) if approve is None else set(approve)
    unknown = sorted(wanted - set(names))
    if unknown:
        raise LandingError(f"not waiting for review in {config.name}: {', '.join(unknown)} (waiting: {', '.join(names)})")
    base = config.base_branch
    old = tip(repository, base)
    if old is None:
        raise LandingError(f"branch {base!r} does not exist in {repository}")
    target, covered = None, []
    for commit in _tested_commits(store, config.name):  # newest first
        if is_ancestor(repository, commit, old):
            break  # this one and every older one are already on the base branch
        inside = [e["task_id"] for e in pending if is_ancestor(repository, e["merge_commit"], commit)]
        if wanted <= set(inside) and set(inside) <= wanted:
            target, covered = commit, inside
            break
    if target is None:
        last = max(names.index(t) for t in wanted)
        earlier = [t for t in names[:last + 1] if t not in wanted]
        raise LandingError(f"no tested integration commit holds exactly {', '.join(sorted(wanted))}: "
                           + (f"approve or reject {', '.join(earlier)} first (merged before them)" if earlier
                              else "approve the rest of their batch too"))
    if not is_ancestor(repository, old, target):
        raise LandingError(f"{base} moved away from {integration_branch(config.name)} (not a fast-forward): run the "
                           "merge queue once to bring it in, then approve again")
    checked_out = (not config.is_remote and
                   git(repository, "symbolic-ref", "-q", "HEAD", check=False).strip() == f"refs/heads/{base}")
    if checked_out:
        if git(repository, "status", "--porcelain", "--untracked-files=no").strip():
            raise LandingError(f"{base} is checked out in {repository} with uncommitted changes: commit or stash them")
        git(repository, "merge", "-q", "--ff-only", target)
    else:
        publish_branch(config, repository, base, target, old)
    pushed = "origin" if config.is_remote else None
    if config.push and not config.is_remote:
        git(repository, "push", "-q", config.push, f"{target}:refs/heads/{base}")
        pushed = config.push
    with store.transaction() as db:
        for task_id in covered:
            db.execute("UPDATE merges SET promoted_at = ?, promoted_commit = ? WHERE project = ? AND task_id = ? AND"
                       " promoted_at IS NULL AND reverted_at IS NULL", (now(), target, config.name, task_id))
        _event(db, "promoted", config.name, run_id=run_id,
               detail={"branch": base, "from": old, "to": target, "specs": covered, "pushed": pushed})
    return {"commit": target, "promoted": covered, "pushed": pushed,
            "msg": f"{base} fast-forwarded to {target[:12]} ({len(covered)} specs)" + (f", pushed to {pushed}" if pushed else "")}


def reject(store: Store, config: ProjectConfig, task_id: str, reason: str, run_id: str | None = None,
           where: OnController | OnNode | None = None) -> dict:
    """Revert ``task_id`` (and its merged, unpromoted dependents) from integration; queue them again."""
    if not reason.strip():
        raise LandingError("a rejection needs a reason (it becomes the agent's feedback)")
    repository = local_repository(config)
    pending = {e["task_id"]: e for e in pending_review(store, config, repository)}
    if task_id not in pending:
        raise LandingError(f"{task_id} is not waiting for review in {config.name} (merged and not promoted)")
    rows = {r.task_id: r for r in store.specs(config.name)}
    graph = SpecGraph({t: r.depends_on for t, r in rows.items()})
    victims = [task_id] + sorted(d for d in graph.descendants(task_id) if d in pending)
    branch = integration_branch(config.name)
    old = tip(repository, branch)
    started = now()
    result = QueueResult()
    with queue_lock(config.name), scratch(repository, config.name) as work:
        work.checkout(old)
        for victim in sorted(victims, key=lambda t: list(pending).index(t), reverse=True):
            work.git("revert", "--no-edit", "-m", "1", pending[victim]["merge_commit"])
        reverted = work.head()
        queue = MergeQueue(store, config, run_id, where)
        ok, output = queue._test(work, reverted, [t for t in pending if t not in victims], result)
        record_check(store, config.name, task_id, "revert", reverted, ok,
                     f"revert of {', '.join(victims)} " + ("tested" if ok else "fails the tests"), {"output": output},
                     started)
        if not ok:
            raise LandingError(f"reverting {', '.join(victims)} breaks the tests of {branch}; nothing changed:\n{output}")
        work.publish(reverted, f"refs/specfleet/{config.name}/landing")
        publish_branch(config, repository, branch, reverted, old)
        git(repository, "update-ref", "-d", f"refs/specfleet/{config.name}/landing", check=False)
    with store.transaction() as db:
        for victim in victims:
            why = f"rejected in review: {reason}" if victim == task_id else f"dependency {task_id} was rejected in review"
            db.execute("UPDATE merges SET reverted_at = ?, revert_reason = ? WHERE project = ? AND task_id = ? AND"
                       " reverted_at IS NULL AND promoted_at IS NULL", (now(), why, config.name, victim))
            store._transition(db, config.name, victim, SpecState.QUEUED, reason=why, run_id=run_id,
                              detail={"reverted_in": reverted})
            store._add_lesson(db, config.name, victim, None, "review", why[:1500])
    return {"reverted": victims, "commit": reverted, "msg": f"reverted {', '.join(victims)} from {branch} at "
                                                            f"{reverted[:12]} (tested); queued again"}
