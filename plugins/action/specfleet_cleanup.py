# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for ``specfleet_cleanup`` (documentation in ``library/specfleet_cleanup.py``).

One SSH command lists the project's attempt directories on the node, the controller
decides with the state store and the repository (``specfleet.ops.cleanup.decide``), and one
more command deletes what may go.
"""
from __future__ import annotations

from pathlib import Path

from ansible_specfleet.action import ControllerAction
from specfleet.dispatch import jobs
from specfleet.model.durations import parse_duration
from specfleet.ops import cleanup
from specfleet.store.core import Store, StoreError


class ActionModule(ControllerAction):
    _requires_connection = True
    ERRORS = (StoreError, jobs.JobError)

    def act(self, result, args, task_vars, db):
        try:
            age = parse_duration(args["older_than"], maximum=None, allow_zero=True)
        except ValueError as exc:
            return dict(result, failed=True, msg=f"older_than: {exc}")
        listing = self._shell(cleanup.list_script(args["root"], args["project"]))
        if listing["rc"] != 0:
            return dict(result, failed=True, msg=f"could not list {args['root']}: {listing['stderr'].strip()[-300:]}")
        entries, node_now = cleanup.parse_listing(listing["stdout"], args["project"])
        with Store(db) as store:
            removable, kept = self._decide(store, args, entries, node_now, age)
        paths = []
        for entry in removable:
            number, run = entry.attempt
            paths += [jobs.run_dir(args["root"], args["project"], entry.task_id, number, run),
                      jobs.workspace_dir(args["root"], args["project"], entry.task_id, number, run)]
        result.update(removed=[f"{e.task_id}/{e.name}" for e in removable], kept=kept, changed=bool(removable))
        if removable and not self._task.check_mode:
            quoted = " ".join(jobs.shell_path(p) for p in paths)
            gone = self._shell(f"rm -rf -- {quoted}")
            if gone["rc"] != 0:
                return dict(result, failed=True, msg=f"could not delete: {gone['stderr'].strip()[-300:]}")
        verb = "would remove" if self._task.check_mode else "removed"
        return dict(result, msg=f"{verb} {len(removable)} finished attempts, kept {len(kept)}")

    def _decide(self, store: Store, args: dict, entries: dict, node_now: float, age: float):
        project = args["project"]
        facts = store.cleanup_facts(project)
        if facts is None:
            raise StoreError(f"no project {project!r} in the state store; nothing is deleted for a project it does not know")

        def work_elsewhere(attempt) -> bool:
            if attempt["commit_sha"]:
                return facts.remote or cleanup.committed_here(facts.repository, attempt["commit_sha"])
            return bool(attempt["artifacts"]) and (Path(attempt["artifacts"]) / "status.json").is_file()

        removable, kept = [], {}
        for (task_id, name), entry in sorted(entries.items()):
            parsed = entry.attempt
            attempt = facts.attempts.get((task_id, parsed[0])) if parsed else None
            if attempt is not None and attempt["run_id"] != parsed[1]:
                attempt = None  # the same number from another database or run: not ours to judge
            why = cleanup.decide(entry, node_now, age, attempt, attempt is not None and attempt["id"] in facts.held,
                                 facts.states.get(task_id), work_elsewhere)
            if why is None:
                removable.append(entry)
            else:
                kept[f"{task_id}/{name}"] = why
        return removable, kept
