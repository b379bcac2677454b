# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the project's commands (verify, tests, merge-batch tests) run, decided in one place.

Landing itself (scratch clones, merging, moving branches) always happens on the controller;
only the project's commands, which run code from agents' branches, may go elsewhere:

* the controller, in the bubblewrap sandbox (:mod:`specfleet.land.sandbox`): the default;
* the controller unsandboxed: the operator's explicit opt-out
  (``specfleet_unsafe_controller_verify``), with a warning on every use;
* a worker node named by ``specfleet_verify_on`` (a host of ``specfleet_nodes``): the
  landing tasks are delegated to it (the inventory's ``specfleet_landing_host``), so the
  action's connection is the node's.

:func:`landing_place` makes that decision; :class:`OnController` and :class:`OnNode` carry it out.
"""
from __future__ import annotations

import os
import shlex
import time
from collections.abc import Collection
from dataclasses import dataclass

from specfleet.attempt.workspace import GitError, Start, mirror_dir, mirror_probe_script, on_node, parse_probe, send_bundle
from specfleet.dispatch.jobs import shell_path
from specfleet.land.repository import LandingError
from specfleet.land.sandbox import Bounds, CommandResult, SandboxUnavailable
from specfleet.land.sandbox import check as check_sandbox
from specfleet.land.sandbox import run as run_sandboxed
from specfleet.land.scratch import Scratch

UNSAFE_WARNING = ("specfleet_unsafe_controller_verify is set: code from agents' branches (verify, tests) runs on "
                  "this controller UNSANDBOXED, as this user, with its files and network")


@dataclass(frozen=True)
class LandingPlace:
    """Where the project's commands run: ``node`` None is the controller (``sandboxed`` or not)."""

    node: str | None = None
    sandboxed: bool = True

    @property
    def warning(self) -> str | None:
        """What the operator must be told each time (the unsandboxed controller), or None."""
        return UNSAFE_WARNING if self.node is None and not self.sandboxed else None


def landing_place(verify_on: str | None, unsafe: bool, nodes: Collection[str], runs_on: str | None) -> LandingPlace:
    """Decide where the project's commands run.

    ``verify_on``: the inventory's or ``-e`` ``specfleet_verify_on`` (None: the controller);
    ``unsafe``: ``specfleet_unsafe_controller_verify`` (only means something on the
    controller); ``nodes``: the hosts of group ``specfleet_nodes``; ``runs_on``: the host the
    task is delegated to. A node must be one of ``nodes``, and the task must run there,
    since its commands go over the task's own connection.
    """
    if not verify_on:
        return LandingPlace(sandboxed=not unsafe)
    if verify_on not in nodes:
        raise LandingError(f"specfleet_verify_on: {verify_on!r} is not a host of the inventory group specfleet_nodes")
    if runs_on != verify_on:
        raise LandingError(f"specfleet_verify_on is {verify_on}, but the task runs on {runs_on or 'its own host'}: "
                           "delegate it to the node")
    return LandingPlace(node=verify_on)


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


Where = OnController | OnNode
