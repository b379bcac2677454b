# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""specfleet_progress: Ansible's default output, with live spec progress for dispatch runs.

Opt in with ``ANSIBLE_STDOUT_CALLBACK=specfleet_progress``. Every play prints exactly as with
``ansible.builtin.default`` (this is a subclass of it) except the dispatch play (the one run by
the ``specfleet_dag`` strategy over the spec hosts). There, per-task and per-host results of
spec hosts are not printed; instead:

* one line per spec state change, read from the state store's ``events`` table (kind
  ``state``), so what is printed is what the store recorded::

      12:03:41  S03-router  started   node-2 slot 1  attempt 1
      12:05:02  S03-router  failed:   the job exited with 1

* one progress line after every state change, and every ``progress_interval`` seconds while
  nothing changes::

      [12:04:10] done 3/8  running 4  waiting 1  failed 0  slots 4/12  elapsed 2m31s  eta ~4m

What the lines say is decided by :class:`specfleet.report.progress.Tracker` (core, no Ansible:
tests/unit/test_progress_line.py), which reads the store through its own read-only
connection; this plugin only renders: Ansible's display and colours, a thread that polls,
and the terminal's in-place progress line.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

from ansible import constants as C
from ansible.plugins.callback.default import CallbackModule as DefaultCallbackModule
from ansible.utils import color as ansible_color

from specfleet.report import progress
from specfleet.report.progress import Tracker

DOCUMENTATION = r"""
name: specfleet_progress
type: stdout
short_description: default output, with one line per spec state change and a progress line for specfleet dispatch
description:
  - Prints every play exactly as C(ansible.builtin.default) does, except the dispatch play of
    C(dispatch.yml) (strategy C(specfleet_dag), hosts of group C(specfleet_specs)).
  - In the dispatch play, results of spec hosts are not printed task by task. Instead one line is
    printed per spec state change recorded in the state store (C(started), C(completed) for plain
    jobs or C(collected), C(verified), C(merged), C(requeued), C(failed), C(blocked), ...), each followed
    by a progress line; while nothing changes, a progress line every O(progress_interval) seconds.
  - "Progress line: C(done D/T  running R  waiting W  failed F  slots U/S  elapsed E  eta ~X).
    C(done) counts the run's specs that are C(merged) (C(completed) with plain jobs,
    C(-e specfleet_job_command=...)); C(running) those C(running) or on their way to the merge
    (C(completed), C(verified), C(in_review), C(conflict)); C(waiting) the C(queued) ones; C(failed)
    the C(failed), C(blocked) and C(cancelled) ones. C(slots) is the leases held fleet-wide
    (every run and project) over the slots of the enabled nodes no one disabled."
  - "ETA: the remaining work is the C(estimate) of each waiting spec plus, for each running spec,
    its C(estimate) minus the time its attempt has been running (not below 0); it is divided by the
    number of slots this run holds (at least 1). C(eta overdue) means running specs exceeded their
    estimates and nothing waits; C(eta landing) that only collected specs on their way to the merge
    are left; C(eta -) that nothing is left."
  - The run's database, run id and specs are taken from the result of the C(specfleet_feed) task;
    without it (the feed did not run, or C(--check) with no database) the dispatch play prints as
    the default callback does.
  - With C(-v) or more, failures of spec tasks are also printed in full, as the default does.
  - On a terminal (and unless C(ANSIBLE_NOCOLOR) is set) the progress line stays at the bottom and
    is rewritten in place while nothing else has been printed after it; otherwise every line is a
    plain line. Colours follow Ansible's settings (C(ANSIBLE_NOCOLOR), C(ANSIBLE_FORCE_COLOR)).
extends_documentation_fragment:
  - default_callback
  - result_format_callback
options:
  progress_interval:
    description:
      - Seconds between two progress lines while no spec changes state. A state change always
        prints one. C(0) turns the periodic lines off.
    type: float
    default: 10
    ini:
      - section: callback_specfleet_progress
        key: progress_interval
    env:
      - name: SPECFLEET_PROGRESS_INTERVAL
  timestamps:
    description:
      - Start state-change lines with the time of the change (C(12:03:41)) and progress lines with
        the time they were printed (C([12:04:10])). Off for comparable output (tests).
    type: bool
    default: true
    ini:
      - section: callback_specfleet_progress
        key: timestamps
    env:
      - name: SPECFLEET_PROGRESS_TIMESTAMPS
requirements:
  - set as the stdout callback, e.g. C(ANSIBLE_STDOUT_CALLBACK=specfleet_progress)
author: specfleet contributors
"""

STRATEGY = "specfleet_dag"
POLL_S = 0.25  # how often the store is read for new state changes while the dispatch play runs

# The tones of specfleet.report.progress's change lines as Ansible colours.
COLOURS = {progress.OK: C.COLOR_OK, progress.WARN: C.COLOR_WARN, progress.ERROR: C.COLOR_ERROR}


class _Counter:
    """Counts bytes written to stdout and stderr, to tell whether the last line on screen is ours."""

    def __init__(self):
        self.written = 0
        self._restore = []

    def install(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            buffer = getattr(stream, "buffer", None)
            if buffer is None:
                continue
            original = buffer.write

            def counting(data, _original=original):
                self.written += len(data)
                return _original(data)

            buffer.write = counting
            self._restore.append((buffer, original))

    def remove(self) -> None:
        for buffer, original in self._restore:
            buffer.write = original
        self._restore.clear()


class Live:
    """The dispatch play's output: the tracker read by the callback's thread and by the main one."""

    CURSOR_UP_ERASE = "\x1b[1A\x1b[2K"

    def __init__(self, display, tracker: Tracker, interval: float, timestamps: bool, in_place: bool, clock=time.time):
        self.display = display
        self.tracker = tracker
        self.interval = interval
        self.timestamps = timestamps
        self.in_place = in_place
        self.clock = clock
        self.started = clock()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_progress = self.started  # the first periodic line comes one interval in
        self.counter = _Counter() if in_place else None
        self.mark: int | None = None  # bytes written when our last progress line ended
        self.failed_reading = False

    def start(self) -> None:
        if self.counter:
            self.counter.install()
        self.thread = threading.Thread(target=self._run, name="specfleet_progress", daemon=True)
        self.thread.start()

    def stop(self, last_look: bool = True) -> None:
        """End the thread; print what changed since its last pass unless ``last_look`` is false
        (a play that matched no host has nothing to show)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        if last_look:
            with self.lock:
                self._pump()
        if self.counter:
            self.counter.remove()
        self.tracker.close()

    def pump(self, wait: bool = True) -> None:
        """Print what changed. The main thread does not wait (``wait=False``) when the thread is printing.

        Under ansible-runner, display calls take runner's lock, which the main thread holds while
        it delivers a result to this callback: waiting here for our thread, which waits for that
        lock, would deadlock. The thread prints the change a moment later instead.
        """
        if not self.lock.acquire(blocking=wait):
            return
        try:
            self._pump()
        finally:
            self.lock.release()

    def _run(self) -> None:
        while not self.stopping.wait(POLL_S):
            self.pump()

    def _pump(self) -> None:
        try:
            for change in self.tracker.poll():
                text, tone = self.tracker.change_line(change)
                self._emit(self._stamp(change.ts, text, brackets=False), COLOURS.get(tone))
                self._progress()
            if self.interval > 0 and self.clock() - self.last_progress >= self.interval:
                self._progress()
        except sqlite3.Error as exc:  # a busy or vanished database must not stop the run
            if not self.failed_reading:
                self.failed_reading = True
                self.display.warning(f"specfleet_progress: cannot read the state store: {exc}")

    def _progress(self) -> None:
        now = self.clock()
        self._emit(self._stamp(now, self.tracker.progress_line(now - self.started, now), brackets=True),
                   C.COLOR_VERBOSE, progress=True)
        self.last_progress = now

    def _stamp(self, ts: float, text: str, brackets: bool) -> str:
        if not self.timestamps:
            return text
        clock = time.strftime("%H:%M:%S", time.localtime(ts))
        return f"[{clock}] {text}" if brackets else f"{clock}  {text}"

    def _emit(self, text: str, colour: str | None, progress: bool = False) -> None:
        # On a terminal, our progress line is replaced while nothing was printed after it.
        overwrite = self.counter is not None and self.mark is not None and self.counter.written == self.mark
        if overwrite:
            self.display.display(self.CURSOR_UP_ERASE + text, color=colour, screen_only=True)
            self.display.display(text, log_only=True)
        else:
            self.display.display(text, color=colour)
        try:
            sys.stdout.flush()  # live output, also through a pipe
        except (OSError, ValueError):
            pass
        self.mark = self.counter.written if (self.counter is not None and progress) else None


class CallbackModule(DefaultCallbackModule):
    """``ansible.builtin.default``, with the dispatch play's spec results replaced by progress."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "specfleet_progress"

    def __init__(self):
        super().__init__()
        self._fed: dict | None = None       # db, run_id, project, task ids of the last specfleet_feed
        self._live: Live | None = None      # set while the dispatch play runs
        self._spec_hosts: frozenset[str] = frozenset()

    # -- the dispatch play starts and ends ------------------------------------------------

    def v2_playbook_on_play_start(self, play):
        self._end_live()
        super().v2_playbook_on_play_start(play)
        if str(play.strategy or "").rsplit(".", 1)[-1] == STRATEGY:
            self._start_live()

    def v2_playbook_on_no_hosts_matched(self):
        # dispatch.yml has one dispatch play for agent specs and one for plain jobs; the
        # other one matches no host and has nothing to follow.
        live, self._live = self._live, None
        self._spec_hosts = frozenset()
        if live is not None:
            live.stop(last_look=False)
        super().v2_playbook_on_no_hosts_matched()

    def v2_playbook_on_stats(self, stats):
        self._end_live()
        super().v2_playbook_on_stats(stats)

    def _start_live(self) -> None:
        fed = self._fed
        if not fed or not fed["task_ids"] or not Path(fed["db"]).is_file():
            return  # nothing to follow: the play prints as the default does
        tracker = Tracker(fed["db"], fed["project"], fed["run_id"], fed["task_ids"], plain=fed["run_kind"] == "jobs")
        try:
            tracker.open()
        except sqlite3.Error as exc:
            tracker.close()
            self._display.warning(f"specfleet_progress: cannot read the state store {fed['db']}: {exc}")
            return
        in_place = bool(ansible_color.ANSIBLE_COLOR) and _isatty(sys.stdout) and os.environ.get("TERM") != "dumb"
        self._spec_hosts = frozenset(fed["task_ids"])
        self._live = Live(self._display, tracker, float(self.get_option("progress_interval")),
                          bool(self.get_option("timestamps")), in_place)
        self._live.start()

    def _end_live(self) -> None:
        live, self._live = self._live, None
        self._spec_hosts = frozenset()
        if live is not None:
            live.stop()

    # -- results --------------------------------------------------------------------------

    def _remember_feed(self, result) -> None:
        data = result.result
        if not isinstance(data, dict) or "run_kind" not in data or "runnable" not in data:
            return  # only specfleet_feed's result says what a run will dispatch
        runnable = data.get("runnable") or []
        project = (data.get("feed") or {}).get("project") or result.task.args.get("project")
        if data.get("db") and data.get("run_id") and project:
            self._fed = {"db": str(data["db"]), "run_id": str(data["run_id"]), "project": str(project),
                         "run_kind": str(data["run_kind"]),
                         "task_ids": [str(item["task_id"]) for item in runnable if isinstance(item, dict)]}

    def _is_spec(self, result) -> bool:
        return self._live is not None and result.host.get_name() in self._spec_hosts

    def _spec_result(self, result) -> None:
        """A spec host's task ended: show warnings, read the store now."""
        self._handle_warnings(result.result)
        self._live.pump(wait=False)

    def v2_runner_on_ok(self, result):
        if self._is_spec(result):
            return self._spec_result(result)
        self._remember_feed(result)
        return super().v2_runner_on_ok(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if self._is_spec(result):
            if self._display.verbosity >= 1:
                super().v2_runner_on_failed(result, ignore_errors)
            return self._spec_result(result)
        return super().v2_runner_on_failed(result, ignore_errors)

    def v2_runner_on_unreachable(self, result):
        if self._is_spec(result):
            if self._display.verbosity >= 1:
                super().v2_runner_on_unreachable(result)
            return self._spec_result(result)
        return super().v2_runner_on_unreachable(result)

    def v2_runner_on_skipped(self, result):
        if self._is_spec(result):
            return self._spec_result(result)
        return super().v2_runner_on_skipped(result)

    def v2_runner_item_on_ok(self, result):
        if not self._is_spec(result):
            super().v2_runner_item_on_ok(result)

    def v2_runner_item_on_failed(self, result):
        if not self._is_spec(result) or self._display.verbosity >= 1:
            super().v2_runner_item_on_failed(result)

    def v2_runner_item_on_skipped(self, result):
        if not self._is_spec(result):
            super().v2_runner_item_on_skipped(result)

    def v2_runner_retry(self, result):
        if not self._is_spec(result):
            super().v2_runner_retry(result)

    def v2_on_file_diff(self, result):
        if not self._is_spec(result):
            super().v2_on_file_diff(result)

    def v2_playbook_on_task_start(self, task, is_conditional):
        if self._live is None:
            super().v2_playbook_on_task_start(task, is_conditional)
        else:  # no banner; one printed with a failure at -v names the failed task, as with `free`
            self._last_task_name = None

    def v2_runner_on_start(self, host, task):
        if self._live is None or host.get_name() not in self._spec_hosts:
            super().v2_runner_on_start(host, task)

    def v2_playbook_on_include(self, included_file):
        if self._live is None or not {h.name for h in included_file._hosts} <= self._spec_hosts:
            super().v2_playbook_on_include(included_file)

    def v2_runner_on_async_poll(self, result):
        if not self._is_spec(result):
            super().v2_runner_on_async_poll(result)

    def v2_runner_on_async_ok(self, result):
        if not self._is_spec(result):
            super().v2_runner_on_async_ok(result)

    def v2_runner_on_async_failed(self, result):
        if not self._is_spec(result):
            super().v2_runner_on_async_failed(result)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
