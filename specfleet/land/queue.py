# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The merge queue of one project: land verified branches on integration, only ever at a tested commit.

One queue per project at a time (:func:`queue_lock`, a lock file). It takes the verified
specs whose dependencies are merged, merges them one by one onto the tip of
``specfleet/<project>/integration`` in a scratch clone, tests the result, and moves the
integration branch (compare-and-swap) only to a tested commit. A failing batch is tested
once more (flaky tests), then bisected: halves are tested on the latest good tip until the
culprits are found; the rest land. A branch that does not merge cleanly is a ``conflict``
with its files; it and the culprits go back to the queue with the failure as feedback (a
new attempt starts from the fresh integration tip) until their attempts run out. Branches
are never deleted; the user's working tree is never touched.

A crash at any point leaves integration at a tested commit, and a resumed queue
recognises the specs whose merges are already on integration (:meth:`MergeQueue._resume`).
"""
from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from specfleet.attempt.workspace import git, integration_branch, is_ancestor
from specfleet.land.repository import LandingError, local_repository, tip
from specfleet.land.review import promote
from specfleet.land.scratch import Scratch, publish_tested, scratch
from specfleet.land.verify import OUTPUT_TAIL
from specfleet.land.where import OnController, Where
from specfleet.model.durations import parse_duration
from specfleet.model.graph import SpecGraph
from specfleet.model.project import ProjectConfig
from specfleet.model.settings import specfleet_home
from specfleet.model.states import SpecState
from specfleet.node.runfiles import tail
from specfleet.store.core import Store


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

    def __init__(self, store: Store, config: ProjectConfig, run_id: str | None = None, where: Where | None = None):
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

    def run(self, max_batches: int = 100) -> QueueResult:
        result = QueueResult()
        if tip(self.repository, self.config.base_branch) is None:
            raise LandingError(f"branch {self.config.base_branch!r} does not exist in {self.repository}")
        self._resume(result, tip(self.repository, self.branch))
        with scratch(self.repository, self.project) as work:
            while result.batches < max_batches:
                ready, waiting = self.candidates()
                result.waiting = waiting
                if not ready:
                    break
                self._batch(work, ready[:self.config.merge_batch], result)
        result.tip = tip(self.repository, self.branch)
        if self.config.promote == "auto" and result.merged and result.tip:
            result.promoted = promote(self.store, self.config, None, run_id=self.run_id)["commit"]
        return result

    # one batch, in named steps
    def _batch(self, work: Scratch, members: list[str], result: QueueResult) -> str:
        """Build, test (bisecting) and land ``members``; -> the integration tip after it."""
        result.batches += 1
        started = time.time()
        current = tip(self.repository, self.branch)
        commits = self._collected_commits(work, members)
        start = self._batch_base(work, current)
        batch_id = self.store.open_batch(self.project, start, members, started, self.run_id)
        runs_before = result.test_runs
        # Textual conflicts are found on the first build and leave the batch at once; the
        # build of the others is the one the batch test runs on.
        built, built_merges, conflicts = self._build(work, start, members, commits)
        clean = [m for m in members if m not in conflicts]
        new_tip, merges, culprits = self._land(work, start, clean, commits, result, built=(built, built_merges))
        conflicts.update({t: f for t, f in result.conflicts.items() if t in clean and t not in merges})
        landed = [m for m in clean if m in merges]
        if landed:
            publish_tested(work, self.config, self.branch, new_tip, current)
            self.store.record_check(self.project, None, "batch", new_tip, True,
                                    f"batch {batch_id}: {len(landed)} landed, tested", {"members": landed}, started)
        for task_id in landed:
            self._record_merged(task_id, commits[task_id], merges[task_id], new_tip, batch_id)
        result.merged += landed
        self._send_back(batch_id, conflicts, culprits, result)
        self.store.close_batch(self.project, batch_id, landed, new_tip, sorted(conflicts), sorted(culprits),
                               result.test_runs - runs_before, self.run_id)
        return new_tip if landed else (current or start)

    def _collected_commits(self, work: Scratch, members: Sequence[str]) -> dict[str, str]:
        """The commit each member lands (its latest collected one), present in the repository."""
        commits = {t: self.store.latest_collected_commit(self.project, t) for t in members}
        missing = [t for t, c in commits.items() if not c]
        if missing:
            raise LandingError(f"verified specs without a collected commit: {', '.join(missing)}")
        for task_id in members:
            work.require(commits[task_id])
        return commits

    def _batch_base(self, work: Scratch, current: str | None) -> str:
        """What the batch merges onto: the integration tip (with the base branch brought in), or the base branch."""
        base_tip = tip(self.repository, self.config.base_branch)
        if not current:
            return base_tip
        if is_ancestor(self.repository, base_tip, current):
            return current
        # The base branch moved on (a person committed there): bring it in first, tested with the batch.
        work.checkout(current)
        files = work.merge(base_tip, f"specfleet: bring {self.config.base_branch} into {self.branch}")
        if files is not None:
            raise LandingError(f"{self.config.base_branch} no longer merges into {self.branch} (conflicts in "
                               f"{', '.join(files)}): merge it by hand, then run the queue again")
        return work.head()

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

    def _test(self, work: Scratch, commit: str, members: Sequence[str], result: QueueResult) -> tuple[bool, str]:
        """Run the project's test command (else the members' verify commands) on ``commit``."""
        command = self.config.test_command
        if not command:
            verifies = [v for v in (self.store.spec(self.project, t).verify for t in members) if v]
            command = " && ".join(f"( {v} )" for v in dict.fromkeys(verifies))
        if not command:
            return True, "no test_command and no verify command: merged untested"
        outcome = self.where.run(work, commit, command, parse_duration(self.config.test_timeout), self.config.network)
        result.test_runs += 1
        return outcome.ok, tail(outcome.output, 40, OUTPUT_TAIL) if not outcome.ok else outcome.summary

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

    def _send_back(self, batch_id: int, conflicts: dict[str, list[str]], culprits: dict[str, str],
                   result: QueueResult) -> None:
        """The batch's conflicts and culprits go back to the queue, the failure as their feedback."""
        for task_id, files in conflicts.items():
            result.conflicts[task_id] = files
            self.store.send_back(self.project, task_id, f"merge conflict with {self.branch} in {', '.join(files)}",
                                 "start again from the integration tip; keep the other specs' changes", self.run_id,
                                 files)
        for task_id, output in culprits.items():
            result.broken[task_id] = output
            self.store.send_back(self.project, task_id,
                                 f"the merged build failed the tests with this branch (bisected in batch {batch_id})",
                                 output, self.run_id)

    def _record_merged(self, task_id: str, commit: str, merge: str, tested: str, batch_id: int | None) -> None:
        self.store.record_merged(self.project, task_id, commit, merge, tested, batch_id, self.run_id)

    def _resume(self, result: QueueResult, start: str | None) -> None:
        """Specs left ``verified`` by a crash after their batch moved integration: record them merged."""
        if start is None:
            return
        self.store.abandon_open_batches(self.project)
        started = time.time()
        for task_id in self.candidates()[0]:
            commit = self.store.latest_collected_commit(self.project, task_id)
            if commit and is_ancestor(self.repository, commit, start):
                merge = git(self.repository, "log", "--format=%H", "-1", "--grep", f"merge {self.project}/{task_id}$",
                            start).strip() or start
                self._record_merged(task_id, commit, merge, start, None)
                result.resumed.append(task_id)
        if result.resumed:  # integration only ever moves to a tested commit: record it as one
            self.store.record_check(self.project, None, "batch", start, True,
                                    f"resumed: {len(result.resumed)} merges found on the tested tip",
                                    {"members": result.resumed}, started)


def merge_queue(store: Store, config: ProjectConfig, run_id: str | None = None, where: Where | None = None
                ) -> QueueResult:
    with queue_lock(config.name):
        return MergeQueue(store, config, run_id, where).run()
