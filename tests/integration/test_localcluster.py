"""Tests for tools/localcluster.py against real sshd processes on loopback (no mocks).

Each test that needs its own cluster uses its own 127.0.0.x range and kernel-picked free
ports, so the tests do not collide with each other or with a cluster someone left running.
Process checks here walk /proc independently of the harness's own helpers, so a bug in the
harness's bookkeeping cannot hide a leaked process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import REPO_ROOT
from tools.localcluster import ClusterError, LocalCluster, NodeSpec, PortInUseError, free_port

REPO = REPO_ROOT

pytestmark = pytest.mark.cluster
T = TypeVar("T")

BIN = REPO / ".venv" / "bin"
GROUP_VARS = REPO / "inventory" / "local" / "group_vars"
CLI = [sys.executable, str(REPO / "tools" / "localcluster.py")]


def _nodes(first: int, count: int = 3, slots: int = 2) -> list[NodeSpec]:
    """Nodes node-1..N on 127.0.0.<first>.., each on a port that is free on its address."""
    specs = []
    for i in range(count):
        address = f"127.0.0.{first + i}"
        specs.append(NodeSpec(f"node-{i + 1}", address, free_port(address), slots))
    return specs


def _ansible_env(cluster: LocalCluster, inventory: Path | None = None) -> dict[str, str]:
    return {**cluster.ansible_env(inventory), "PATH": os.environ["PATH"]}


def _run_ansible(cluster: LocalCluster, *args: str, inventory: Path | None = None) -> subprocess.CompletedProcess[str]:
    # cwd=REPO so the project's ansible.cfg (ControlPersist, pipelining, host key checking) applies.
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=REPO,
        env=_ansible_env(cluster, inventory),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ping(cluster: LocalCluster, inventory: Path | None = None) -> None:
    out = _run_ansible(cluster, "ansible", "all", "-m", "ansible.builtin.ping", inventory=inventory)
    assert out.returncode == 0, out.stdout + out.stderr
    for spec in cluster.nodes:
        assert re.search(rf"^{re.escape(spec.name)} \| SUCCESS", out.stdout, re.M), out.stdout


# ---------------------------------------------------------------- independent /proc checks


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _identity(pid: int) -> tuple[int, int]:
    st = _stat(pid)
    assert st is not None and st[0] != "Z", f"pid {pid} is not running"
    return pid, st[2]


def _running(ident: tuple[int, int]) -> bool:
    st = _stat(ident[0])
    return st is not None and st[2] == ident[1] and st[0] not in ("Z", "X")


def _tree(root_pids: list[int]) -> set[tuple[int, int]]:
    """Identities of the roots and all their running descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) and st[0] != "Z":
            children.setdefault(st[1], []).append(int(name))
    found, stack = set(), list(root_pids)
    while stack:
        pid = stack.pop()
        if (st := _stat(pid)) and st[0] != "Z":
            found.add((pid, st[2]))
            stack.extend(children.get(pid, []))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_for(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _master_pids(cluster: LocalCluster) -> list[int]:
    """Control masters as ssh itself reports them for each socket in cp/."""
    pids = []
    for sock in cluster.cp_dir.iterdir():
        if sock.is_socket():
            out = subprocess.run(
                ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "check", "x"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if m := re.search(r"pid=(\d+)", out.stderr):
                pids.append(int(m.group(1)))
    return pids


def _refuses(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=3):
            return False
    except ConnectionRefusedError:
        return True


def _listener_pids(cluster: LocalCluster) -> list[int]:
    pids = []
    for spec in cluster.nodes:
        pid = int(cluster.node(spec.name).pid_path.read_text())
        assert "sshd" in _cmdline(pid)
        pids.append(pid)
    return pids


# ---------------------------------------------------------------- shared cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    if not GROUP_VARS.exists():
        GROUP_VARS.mkdir(parents=True)
        (GROUP_VARS / "all.yml").write_text("---\n")
    with LocalCluster(tmp_path_factory.mktemp("lc"), _nodes(21)) as c:
        c.write_inventory(c.inventory_path, group_vars_dir=GROUP_VARS)
        yield c


def test_ansible_ping_and_playbook_reach_every_node(cluster: LocalCluster, tmp_path: Path) -> None:
    assert (cluster.inventory_path.parent / "group_vars").resolve() == GROUP_VARS.resolve()
    _ping(cluster)

    playbook = tmp_path / "write.yml"
    playbook.write_text(
        textwrap.dedent(
            """\
            - hosts: specfleet_nodes
              gather_facts: false
              tasks:
                - ansible.builtin.copy:
                    dest: "{{ specfleet_work_root }}/hello.txt"
                    content: "{{ inventory_hostname }} has {{ specfleet_slots }} slots\\n"
            """
        )
    )
    out = _run_ansible(cluster, "ansible-playbook", str(playbook))
    assert out.returncode == 0, out.stdout + out.stderr
    for spec in cluster.nodes:
        written = cluster.root / "nodes" / spec.name / "work" / "hello.txt"
        assert written.read_text() == f"{spec.name} has 2 slots\n"


def test_known_hosts_holds_the_served_keys(cluster: LocalCluster) -> None:
    lines = cluster.known_hosts.read_text().splitlines()
    assert len(lines) == 3
    for spec, line in zip(cluster.nodes, lines, strict=True):
        pub = (cluster.root / "nodes" / spec.name / "ssh_host_ed25519_key.pub").read_text().split()
        assert line == f"[{spec.address}]:{spec.port} {pub[0]} {pub[1]}"
    assert all(st.up for st in cluster.status())


def test_each_node_logs_in_with_its_own_home_and_none_of_the_users_rc_files(cluster: LocalCluster) -> None:
    # The controller user's ~/.bashrc may run e.g. `pyenv init`, whose lock is shared by all of
    # that user's sessions: a stopped session on one node must not stall logins on the others.
    for spec in cluster.nodes:
        home = cluster.root / "nodes" / spec.name / "home"
        (home / ".bashrc").write_text("echo rc-ran-here\n")  # a node's own rc file is its business
        out = subprocess.run(
            ["ssh", "-F", "/dev/null", "-i", str(cluster.client_key), "-p", str(spec.port), "-o", "BatchMode=yes",
             "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-o", "ControlPath=none",
             f"{cluster.user.pw_name}@{spec.address}", 'echo "HOME=$HOME"; command -v pyenv || echo no-pyenv'],
            capture_output=True, text=True, timeout=30)
        (home / ".bashrc").unlink()
        lines = out.stdout.splitlines()
        assert f"HOME={home}" in lines and "no-pyenv" in lines and "rc-ran-here" in lines, out.stdout + out.stderr


# ---------------------------------------------------------------- teardown


def _session(c: LocalCluster, spec: NodeSpec, command: str) -> subprocess.Popen:
    """A plain (unmultiplexed) SSH session running ``command`` on the node, as a long task would."""
    return subprocess.Popen(
        ["ssh", "-F", "/dev/null", "-i", str(c.client_key), "-p", str(spec.port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={c.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "ControlPath=none",
         f"{c.user.pw_name}@{spec.address}", command],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def test_stop_leaves_no_process_and_closes_ports(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c", _nodes(31))
    client = None
    try:
        c.start()
        _ping(c)  # leaves ControlPersist masters in c.cp_dir
        masters = [_identity(pid) for pid in _master_pids(c)]
        assert len(masters) == 3
        # A long remote command. (With "sleep; true" the shell could outlive a killed sleep
        # and report exit 0 before the connection dropped, so the check below would race.)
        spec = c.nodes[0]
        client = _session(c, spec, "exec sleep 3141")
        listeners = _listener_pids(c)

        def tree_with_sleep() -> set[tuple[int, int]] | None:
            tree = _tree(listeners)
            return tree if any("sleep 3141" in _cmdline(pid) for pid, _ in tree) else None

        tree = _wait_for(tree_with_sleep, what="remote sleep under the node's sshd")
        assert len(tree) > len(listeners) + 1  # per-connection sshds and the sleep
    finally:
        c.stop()
    for ident in tree | set(masters):
        assert not _running(ident), f"{ident[0]} ({_cmdline(ident[0])}) survived stop()"
    assert _master_pids(c) == []
    for spec in c.nodes:
        assert _refuses(spec.address, spec.port)
        assert not c.node(spec.name).pid_path.exists()
    assert client.wait(timeout=30) != 0  # its connection was cut
    c.stop()  # idempotent


def test_stop_finds_sessions_after_the_listener_was_killed(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c", _nodes(35, count=1))
    try:
        c.start()
        spec = c.nodes[0]
        # One session process stays under sshd; one double-forks away from sshd's tree entirely.
        client = _session(c, spec, "(setsid sleep 2718 </dev/null >/dev/null 2>&1 &); exec sleep 2719")

        def sleepers() -> list[tuple[int, int]] | None:
            found = [(pid, _stat(pid)[2]) for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                     if _cmdline(pid).strip() in ("sleep 2718", "sleep 2719") and _stat(pid)]  # fmt: skip
            return found if len(found) == 2 else None

        remote = _wait_for(sleepers, what="both remote sleeps")
        listener = _identity(_listener_pids(c)[0])
        os.kill(listener[0], signal.SIGKILL)  # e.g. the OOM killer; its children are orphaned now
        _wait_for(lambda: not _running(listener), what="listener death")
        LocalCluster.load(c.root).stop()
        for ident in remote:
            assert not _running(ident), _cmdline(ident[0])
        assert client.wait(timeout=30) != 0
    finally:
        c.stop()


def test_stop_from_another_object_on_the_same_root(tmp_path: Path) -> None:
    root = tmp_path / "c"
    first = LocalCluster(root, _nodes(41))
    try:
        first.start(cleanup_at_exit=False)
        tree = _tree(_listener_pids(first))
        assert len(tree) >= 3
        LocalCluster.load(root).stop()  # knows nothing but the root, like `down` in another process
        for ident in tree:
            assert not _running(ident)
        for spec in first.nodes:
            assert _refuses(spec.address, spec.port)
    finally:
        first.stop()


def test_port_in_use_names_node_address_and_port(tmp_path: Path) -> None:
    nodes = _nodes(51, count=2)
    taken = nodes[1]
    with socket.socket() as blocker:
        blocker.bind((taken.address, taken.port))
        blocker.listen()
        c = LocalCluster(tmp_path / "c", nodes)
        with pytest.raises(PortInUseError, match=rf"node-2: {re.escape(taken.address)}:{taken.port} is already in use"):
            c.start()
        # node-1 had been started; a failed start() must not leave it running.
        assert _refuses(nodes[0].address, nodes[0].port)
        assert c.node("node-1").listener() is None


def test_sshd_dying_on_start_reports_its_log(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "c", _nodes(55, count=1))
    node = c.node("node-1")
    # A corrupt node dir (kept, since a key pair exists): sshd exits with "no hostkeys available".
    node.node_dir.mkdir(parents=True)
    node.host_key.write_text("not a key\n")
    node.host_key.with_name("ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAA broken\n")
    with pytest.raises(ClusterError, match=r"node-1: sshd exited with status \d+ on start") as err:
        c.start()
    assert "hostkey" in err.value.detail.lower() or "host key" in err.value.detail.lower(), err.value.detail


def test_atexit_hook_stops_an_aborted_run(tmp_path: Path) -> None:
    spec = _nodes(75, count=1)[0]
    script = textwrap.dedent(
        f"""\
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from tools.localcluster import LocalCluster, NodeSpec
        c = LocalCluster(Path({str(tmp_path / "c")!r}), [NodeSpec(*{(spec.name, spec.address, spec.port, spec.slots)!r})])
        c.start()
        print(c.node("node-1").listener().pid, flush=True)
        sys.stdin.readline()  # until the test has looked at the running sshd
        raise RuntimeError("test run aborted without stop()")
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), proc.communicate(timeout=60)
    listener = _identity(int(line))
    _, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 1 and "aborted without stop()" in err
    assert not _running(listener)
    assert _refuses(spec.address, spec.port)


# ---------------------------------------------------------------- CLI


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def test_cli_up_status_down(tmp_path: Path) -> None:
    root, inventory = tmp_path / "cli", tmp_path / "inv" / "hosts.yml"
    port = free_port("127.0.0.61")
    try:
        up = _cli("up", "--root", root, "--nodes", 2, "--slots", 3, "--base-address", "127.0.0.61", "--port", port,
                  "--inventory", inventory)  # fmt: skip
        assert up.returncode == 0, up.stderr
        assert str(inventory) in up.stdout
        assert not (inventory.parent / "group_vars").exists()

        status = _cli("status", "--root", root)
        assert status.returncode == 0, status.stderr
        for address in ("127.0.0.61", "127.0.0.62"):
            assert re.search(rf"{address}:{port}\s+pid \d+ alive\s+ssh ok\s+up", status.stdout), status.stdout

        # The nodes outlived the `up` process and the extra inventory works on its own.
        cluster = LocalCluster.load(root)
        _ping(cluster, inventory=inventory)
        assert _master_pids(cluster)
        masters = [_identity(pid) for pid in _master_pids(cluster)]
        tree = _tree(_listener_pids(cluster))

        down = _cli("down", "--root", root)
        assert down.returncode == 0, down.stderr
        for ident in tree | set(masters):
            assert not _running(ident)

        after = _cli("status", "--root", root)
        assert after.returncode == 1
        assert after.stderr.strip() == "localcluster status: 2 of 2 nodes down: node-1, node-2"
        assert _cli("down", "--root", root).returncode == 0
    finally:
        LocalCluster.load(root).stop()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = _cli("status", "--root", tmp_path / "nothing")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "no cluster recorded" in missing.stderr

    port = free_port("127.0.0.65")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.65", port))
        blocker.listen()
        up = _cli("up", "--root", tmp_path / "c", "--nodes", 1, "--base-address", "127.0.0.65", "--port", port)
    assert up.returncode == 1
    expected = f"node node-1: 127.0.0.65:{port} is already in use by another process; choose another port"
    assert up.stderr == f"localcluster up: {expected}\n"


def test_restart_keeps_host_keys_and_adopts_running_nodes(tmp_path: Path) -> None:
    root = tmp_path / "c"
    nodes = _nodes(71, count=1)
    with LocalCluster(root, nodes) as c:
        known = c.known_hosts.read_text()
        pid = _listener_pids(c)[0]
        again = LocalCluster(root, nodes)
        again.start(cleanup_at_exit=False)  # unchanged config: the running sshd is adopted
        assert _listener_pids(again) == [pid]
    with LocalCluster(root, nodes) as c:
        assert c.known_hosts.read_text() == known  # same host keys after a full restart
        assert _listener_pids(c) != [pid]
