# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Review: what waits on integration, and approving it onto the base branch.

:func:`pending_review` lists what is on integration but not on the base branch;
:func:`promote` (a person's approval, or ``promote: auto`` after every landed batch)
fast-forwards the base branch to a tested integration commit. Rejecting is
:func:`specfleet.land.reject.reject`.
"""
from __future__ import annotations

from collections.abc import Sequence

from specfleet.attempt.workspace import git, integration_branch, is_ancestor
from specfleet.land.repository import LandingError, local_repository, publish_branch, tip
from specfleet.model.project import ProjectConfig
from specfleet.store.core import Store


def pending_review(store: Store, config: ProjectConfig, repository: str | None = None) -> list[dict]:
    """What is on integration but not yet on the base branch, oldest merge first."""
    repository = repository or local_repository(config)
    entries = []
    for row in store.unreviewed_merges(config.name):
        task_id = row["task_id"]
        stat = git(repository, "diff", "--shortstat", f"{row['merge_commit']}^1", row["merge_commit"], check=False)
        verify_row = store.latest_check(config.name, task_id, "verify")
        review_row = store.latest_check(config.name, task_id, "review")
        attempts, first = store.attempt_span(config.name, task_id)
        entries.append({
            "task_id": task_id, "merge_commit": row["merge_commit"], "tested_commit": row["tested_commit"],
            "diffstat": stat.strip(), "verify": verify_row["summary"] if verify_row else "not verified here",
            "review": review_row["summary"] if review_row else "no LLM review",
            "attempts": attempts, "hours": round((row["merged_at"] - (first or row["merged_at"])) / 3600, 2),
        })
    return entries


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
    target, covered = _promotion_target(store, config.name, repository, pending, wanted, old)
    if not is_ancestor(repository, old, target):
        raise LandingError(f"{base} moved away from {integration_branch(config.name)} (not a fast-forward): run the "
                           "merge queue once to bring it in, then approve again")
    pushed = _fast_forward(config, repository, target, old)
    store.record_promotion(config.name, covered, base, old, target, pushed, run_id)
    return {"commit": target, "promoted": covered, "pushed": pushed,
            "msg": f"{base} fast-forwarded to {target[:12]} ({len(covered)} specs)" + (f", pushed to {pushed}" if pushed else "")}


def _promotion_target(store: Store, project: str, repository: str, pending: list[dict], wanted: set[str],
                      old: str) -> tuple[str, list[str]]:
    """The newest tested integration commit holding exactly the ``wanted`` pending specs, and those specs."""
    for commit in store.tested_integration_commits(project):  # newest first
        if is_ancestor(repository, commit, old):
            break  # this one and every older one are already on the base branch
        inside = [e["task_id"] for e in pending if is_ancestor(repository, e["merge_commit"], commit)]
        if wanted <= set(inside) and set(inside) <= wanted:
            return commit, inside
    names = [e["task_id"] for e in pending]
    last = max(names.index(t) for t in wanted)
    earlier = [t for t in names[:last + 1] if t not in wanted]
    raise LandingError(f"no tested integration commit holds exactly {', '.join(sorted(wanted))}: "
                       + (f"approve or reject {', '.join(earlier)} first (merged before them)" if earlier
                          else "approve the rest of their batch too"))


def _fast_forward(config: ProjectConfig, repository: str, target: str, old: str) -> str | None:
    """Move the base branch to ``target`` (merging if it is checked out); -> the remote it was pushed to."""
    base = config.base_branch
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
    return pushed
