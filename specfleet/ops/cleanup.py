# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which finished attempt directories on a node may be deleted: never running or unbrought work.

An attempt leaves two directories on its node, ``runs/<project>/<task>/<attempt>-<run>``
(the job's files, logs, result bundle) and ``workspaces/<project>/<task>/<attempt>-<run>``
(the agent's checkout). :func:`list_script` reports them in one command; :func:`decide`
keeps an attempt's pair unless every one of these holds:

* the job has ended on the node (``exit_code`` written, or its wrapper is gone) and did
  so longer ago than the age asked for;
* the state store knows the attempt (same number, same run id), it has ended there, and
  no lease or leftover holds it;
* its work exists elsewhere: the spec is merged, or the commit the attempt produced is in
  the controller's repository (pushed to the remote with ``transport: remote``), or it
  produced no commit and its artifacts (status, logs, ``changes.patch``) were collected
  to the controller.

So a failure path never deletes the only copy of work (the lesson of Bernstein #2792):
an attempt whose result was never brought back stays until a person looks at it.

On the controller, :func:`stale_runner_dirs` picks the ``specfleet`` command's
ansible-runner directories (events and output of past runs, nothing else) that nobody has
touched for the age asked for.
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from specfleet.dispatch.jobs import JOB_STATE, _project_path, component, shell_path
from specfleet.model.project import RepositoryError, run_git

NAME = re.compile(r"^(\d+)-(.+)\Z")
RUNNER_RUN = re.compile(r"^\d{8}-\d{6}-[a-z]+-\d+(\.\d+)?\Z")  # <date>-<time>-<command>-<pid>, as the CLI names runs

LISTER = """\
cd {root} 2>/dev/null || {{ echo NOW=$(date +%s); exit 0; }}
for d in runs/{project}/*/*; do
    [ -d "$d" ] || continue
    t=$(cat "$d/ended_at" 2>/dev/null || stat -c %Y "$d")
    printf 'R\\t%s\\t%s\\t%s\\n' "$(job_state "$d")" "${{t%%.*}}" "$d"
done
for d in workspaces/{project}/*/*; do
    [ -d "$d" ] && printf 'W\\t-\\t%s\\t%s\\n' "$(stat -c %Y "$d")" "$d"
done
echo NOW=$(date +%s)
"""


@dataclass
class Entry:
    """One attempt's directories on a node."""

    task_id: str
    name: str                 # "<attempt>-<run id>"
    job: str = "none"         # finished, running, lost, missing (see jobs.JOB_STATE); none: no run directory
    ended: float = 0.0        # node clock
    run_dir: bool = False
    workspace: bool = False

    @property
    def attempt(self) -> tuple[int, str] | None:
        match = NAME.match(self.name)
        return (int(match.group(1)), match.group(2)) if match else None


def list_script(root: str, project: str) -> str:
    """One command listing the project's attempt directories under ``root`` and the node's clock."""
    return JOB_STATE + LISTER.format(root=shell_path(root),
                                     project="/".join(shlex.quote(p) for p in _project_path(project)))


def parse_listing(stdout: str, project: str) -> tuple[dict[tuple[str, str], Entry], float]:
    """``{(task id, name): Entry}`` and the node's time from :func:`list_script`'s output.

    Lines that do not look like ours (odd names, hostile paths) are ignored, never acted on.
    """
    depth = len(_project_path(project))
    entries: dict[tuple[str, str], Entry] = {}
    node_now = 0.0
    for line in stdout.splitlines():
        if line.startswith("NOW="):
            node_now = float(line[4:] or 0)
            continue
        parts = line.split("\t")
        if len(parts) != 4 or parts[0] not in ("R", "W"):
            continue
        kind, job, stamp, path = parts
        bits = path.split("/")
        if len(bits) != depth + 3:
            continue
        task_id, name = bits[-2], bits[-1]
        try:
            component(task_id, "task id")
            component(name, "attempt and run id")
            when = float(stamp or 0)
        except ValueError:
            continue
        entry = entries.setdefault((task_id, name), Entry(task_id, name))
        if kind == "R":
            entry.run_dir, entry.job, entry.ended = True, job, when
        else:
            entry.workspace = True
            if not entry.run_dir:
                entry.ended = max(entry.ended, when)
    return entries, node_now


def decide(entry: Entry, node_now: float, older_than: float, attempt: Mapping | None, held: bool,
           spec_state: str | None, work_elsewhere: Callable[[Mapping], bool]) -> str | None:
    """None if ``entry`` may be deleted, else why it is kept."""
    if entry.job == "running":
        return "its job is running"
    if entry.attempt is None:
        return "not an attempt directory"
    if attempt is None:
        return "unknown to this controller's state store"
    if held:
        return "a lease or leftover still holds it"
    if attempt["ended_at"] is None:
        return "its attempt has not ended in the state store"
    age = node_now - entry.ended
    if age < older_than:
        return f"ended {age / 3600:.1f} h ago"
    if spec_state == "merged" or work_elsewhere(attempt):
        return None
    return "its work was never brought back to the controller (inspect it, then delete it by hand)"


def committed_here(repository: str, commit: str) -> bool:
    """Whether ``commit`` exists in the local ``repository``."""
    if not Path(repository).exists():
        return False
    try:
        run_git(repository, "cat-file", "-e", f"{commit}^{{commit}}")
    except RepositoryError:
        return False
    return True


def stale_runner_dirs(root: Path, older_than: float, now: float) -> list[Path]:
    """Run directories under ``root`` (``$SPECFLEET_HOME/runner``) untouched for ``older_than`` seconds.

    ``artifacts/<run>`` holds one run each (ansible-runner rotates them as well; a live run
    touches its own every second, so it never looks old). ``<run>`` directories beside it
    are whole runs of the layout before, one private data directory per run.
    """
    found = []
    for parent in (root / "artifacts", root):
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            if not RUNNER_RUN.match(path.name) or path.is_symlink() or not path.is_dir():
                continue
            try:
                if now - path.stat().st_mtime >= older_than:
                    found.append(path)
            except FileNotFoundError:  # rotated away meanwhile
                continue
    return sorted(found)
