"""The controller's sandbox for code from agents' branches (bubblewrap, real processes).

Each case runs a real command in a real sandbox and checks what it could and could not do.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specfleet.land import sandbox
from specfleet.land.sandbox import Bounds


@pytest.fixture
def clone(tmp_path):
    """A git clone sharing its objects with another repository, as the landing's scratch clones do."""
    origin = tmp_path / "origin"
    subprocess.run(["git", "init", "-q", "-b", "main", str(origin)], check=True)
    (origin / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(origin), "add", "."], check=True)
    subprocess.run(["git", "-C", str(origin), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"],
                   check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", "--shared", str(origin), str(work)], check=True)
    return work


def run(command: str, workdir: Path) -> sandbox.CommandResult:
    return sandbox.run(command, workdir, Bounds(seconds=60))


# (what is tried, command, passes?) -- {outside} is a directory next to the clone, holding a secret
CASES = [
    ("read a file outside the clone", "cat {outside}/secret", False),
    ("list the controller user's home", "ls ~root/ /root/.ssh", False),
    ("read /etc/shadow", "cat /etc/shadow", False),
    ("read the node key directory /etc/ssh", "ls /etc/ssh", False),
    ("write into the clone's .git", "echo '[core] hooksPath=/tmp' >> .git/config", False),
    ("write a git hook", "echo 'id' > .git/hooks/post-checkout", False),
    ("write /usr", "touch /usr/specfleet-was-here", False),
    ("write the working tree", "echo x > new.txt && cat new.txt", True),
    ("read the working tree", "grep -q a a.txt", True),
    ("git log in the clone (borrowed objects)", "git log --oneline | grep -q a", True),
    ("write HOME and /tmp", "touch ~/x /tmp/y /var/tmp/z", True),
    ("the system's python3 with pytest", "python3 -c 'import sys, pytest; assert sys.prefix == \"/usr\"'", True),
    ("CI is set", 'test "$CI" = 1', True),
    ("no capability", "! grep -q '^CapEff:.*[1-9a-f]' /proc/self/status", True),
    ("runs as nobody", 'test "$(id -u)" = 65534', True),
]


@pytest.mark.parametrize("what,command,passes", CASES, ids=[c[0] for c in CASES])
def test_what_code_from_a_branch_may_do(clone, tmp_path, what, command, passes):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("canary\n")
    result = run(command.format(outside=outside), clone)
    assert result.ok is passes, result.output
    assert "canary" not in result.output
    assert not Path("/usr/specfleet-was-here").exists()


def test_the_controllers_environment_stays_out(clone, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-canary-env-1234")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = run("env; command -v python3", clone)
    assert result.ok, result.output
    assert "sk-canary-env-1234" not in result.output
    assert str(Path(sys.executable).parent) not in result.output  # specfleet's venv is not the project's
    assert "CI=1" in result.output and "HOME=/tmp/home" in result.output


@pytest.mark.parametrize("network", [False, True], ids=["no network", "network: true"])
def test_network_only_when_the_project_opts_in(clone, network):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        result = sandbox.run(f"exec 3<>/dev/tcp/127.0.0.1/{port}", clone, Bounds(seconds=60), network=network)
    finally:
        listener.close()
    assert result.ok is network, result.output


# (bound, command, Bounds fields, what the result says)
BOUNDS = [
    ("time", "sleep 120", {"seconds": 1}, "timed out"),
    ("output", "yes specfleet", {"output_bytes": 1 << 20}, "output over 1 MiB"),
    ("memory", "python3 -c 'bytearray(1 << 30)'", {"memory_bytes": 256 << 20}, "exited 1"),
    ("file size", "head -c 4M /dev/zero > big", {"file_bytes": 1 << 20}, "exited 153"),  # SIGXFSZ
    ("processes", "python3 -c '\nimport os, sys, time\nfor n in range(500):\n    try:\n        pid = os.fork()\n"
                  "    except OSError:\n        print(\"fork refused after\", n); sys.exit(3)\n    if pid == 0:\n"
                  "        time.sleep(120); os._exit(0)\n'", {"processes": 40}, "exited 3"),
]


@pytest.mark.parametrize("bound,command,fields,summary", BOUNDS, ids=[b[0] for b in BOUNDS])
def test_bounds(clone, bound, command, fields, summary):
    result = sandbox.run(command, clone, Bounds(**{"seconds": 60, **fields}))
    assert not result.ok and result.summary == summary, result.output
    assert len(result.output) <= (1 << 20) + 200


def test_nothing_outlives_the_command(clone):
    marker = f"specfleet-orphan-{os.getpid()}"
    result = run(f"(exec -a {marker} sleep 300 &) ; echo started", clone)
    assert result.ok and "started" in result.output
    deadline = time.monotonic() + 30
    while _with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _with_marker(marker)


def _with_marker(marker: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "opt-out"])
def test_a_command_that_closes_its_output_and_lives_on_still_times_out(clone, sandboxed):
    result = sandbox.run("exec >&- 2>&-; sleep 120", clone, Bounds(seconds=2), sandboxed=sandboxed)
    assert result.summary == "timed out", result


def test_the_opt_out_keeps_the_bare_environment(clone, monkeypatch):
    monkeypatch.setenv("SPECFLEET_TEST_TOKEN", "canary-token-5678")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = sandbox.run("env; command -v python3", clone, Bounds(seconds=60), sandboxed=False)
    assert result.ok and "canary-token-5678" not in result.output and "CI=1" in result.output
    assert str(Path(sys.executable).parent) not in result.output


def test_a_machine_without_bwrap_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox, "_checked", {})
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap.*specfleet_verify_on"):
        sandbox.check()


def test_a_killed_controllers_cgroup_is_removed_by_the_next_command(clone):
    own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
               if line.split(":", 2)[1] == "pids")
    left = Path("/sys/fs/cgroup/pids") / own.lstrip("/") / "specfleet-999999999-1"  # above any pid_max
    try:
        left.mkdir()
    except OSError:
        pytest.skip("no pids cgroup this user may create (the rlimit is the process bound then)")
    assert run("true", clone).ok
    assert not left.exists()
