"""Issue 19: killing ``specfleet start`` left its ansible-playbook workers running (one grew to
4 GB), and ansible-runner wrote the controller's API keys under ``$SPECFLEET_HOME/runner``.

A real ``specfleet start`` on real nodes is signalled once a job runs; then nothing of its
process tree may be left, its run must be closed in the store, and no file under the runner
directory may hold the value of a secret variable it was given.
"""
from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.cluster


def processes() -> dict[int, tuple[int, str, int, int]]:
    """pid -> (parent pid, state, start time, session), read from /proc apart from the code under test."""
    table = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        table[int(name)] = (int(fields[1]), fields[0].decode(), int(fields[19]), int(fields[3]))
    return table


def tree(root: int) -> dict[int, tuple[int, str, int, int]]:
    """Descendants of ``root`` as in :func:`processes`."""
    table = processes()
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, row in table.items():
            if row[0] == parent and pid not in found:
                found[pid] = row
                todo.append(pid)
    return found


def escaped_worker(root: int) -> dict | None:
    """The tree under ``root`` once ansible-playbook has a descendant in a session of its own
    (a worker: what a signal to ansible-playbook's process group never reached)."""
    found = tree(root)
    playbook = [pid for pid, row in found.items() if row[0] == root]
    if playbook and any(row[3] != found[playbook[0]][3] for row in found.values()):
        return found
    return None


def alive(known: dict[int, tuple]) -> list[int]:
    table = processes()
    return [pid for pid, row in known.items() if pid in table and table[pid][2] == row[2] and table[pid][1] != "Z"]


def query(db: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:  # not created yet, or its schema is still being written
        return []


def wait_for(condition, what: str, timeout: float, proc: subprocess.Popen, output: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"specfleet ended (exit {proc.returncode}) before {what}:\n{output.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout} s:\n{output.read_text()[-3000:]}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_stops_every_process_of_the_run_closes_it_and_no_key_reaches_disk(cluster, fleet, tmp_path, signum):
    canaries = {"ANTHROPIC_API_KEY": f"canary-{secrets.token_hex(12)}",
                "SPECFLEET_TEST_TOKEN": f"canary-{secrets.token_hex(12)}"}
    env = dict(fleet.env, PYTHONPATH=str(REPO_ROOT), **canaries)
    output = tmp_path / "specfleet.out"
    with output.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "specfleet.ops.cli", "start", "clawmarketing",
                                 "-e", "specfleet_job_command=sleep 120",
                                 # Specs wait for their jobs in workers, as in the report: workers live long.
                                 "-e", "specfleet_node_watch=false"], env=env, cwd="/", stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: query(fleet.db, "SELECT 1 FROM slot_leases l JOIN runs r ON r.id = l.run_id"
                                         " WHERE r.ended_at IS NULL"), "job running in a live run", 240, proc, output)
        before = wait_for(lambda: escaped_worker(proc.pid), "ansible-playbook worker", 120, proc, output)
        playbook = next(pid for pid, row in before.items() if row[0] == proc.pid)
        assert b"ansible-playbook" in Path(f"/proc/{playbook}/cmdline").read_bytes()
        # The secret reached ansible-playbook (the inventory reads ANTHROPIC_API_KEY), only not the disk.
        environ = Path(f"/proc/{playbook}/environ").read_bytes().split(b"\0")
        assert f"ANTHROPIC_API_KEY={canaries['ANTHROPIC_API_KEY']}".encode() in environ

        os.kill(proc.pid, signum)
        assert proc.wait(timeout=120) == 128 + signum, output.read_text()[-3000:]
        deadline = time.monotonic() + 30
        while alive(before) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = alive(before)
        assert not left, {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for job_pid in Path(cluster.root).rglob("job_pid"):  # the detached jobs on the nodes are not ours to keep
            try:
                os.killpg(int(job_pid.read_text()), signal.SIGKILL)
            except (ValueError, OSError):
                pass

    text = output.read_text()
    assert f"interrupted by {signal.Signals(signum).name}" in text, text[-3000:]
    runs = query(fleet.db, "SELECT id, status, ended_at FROM runs WHERE kind = 'dispatch'")
    assert runs and all(ended is not None for _id, _status, ended in runs), runs
    assert {status for _id, status, _ended in runs} == {"interrupted"}, runs
    assert not query(fleet.db, "SELECT 1 FROM slot_leases"), "the run's leases were not released"

    found = {name: sum(path.read_bytes().count(value.encode()) for path in (fleet.home / "runner").rglob("*")
                       if path.is_file())
             for name, value in canaries.items()}
    assert found == {name: 0 for name in canaries}
    assert list((fleet.home / "runner" / "artifacts").iterdir())  # the run was recorded all the same
