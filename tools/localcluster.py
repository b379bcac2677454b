#!/usr/bin/env python3
"""Local SSH worker-node cluster on loopback: real sshd processes for tests and demos.

specfleet drives its worker nodes with Ansible over SSH. To exercise that path for real
(ControlPersist masters, pipelining, strict host key checking, many parallel sessions per
node) without any machines, every node here is a private ``sshd`` bound to its own loopback
address. Linux routes all of 127.0.0.0/8 to ``lo``, so 127.0.0.11, 127.0.0.12, ... are
distinct hosts to ssh, each with its own host key and known_hosts entry, and Ansible cannot
tell them from remote machines. Nothing is shared with the system sshd: each node has its
own config, host key, pidfile and log under ``<root>/nodes/<name>/``; ``/etc/ssh`` is never
read and the system sshd is never started.

Two users:

* tests: ``with LocalCluster(root, nodes) as cluster: ...`` (or start()/stop() in a fixture);
* people: ``python tools/localcluster.py up|status|down``. ``up`` and ``down`` run in
  different processes, so everything teardown needs (node list, pidfiles, control sockets)
  lives on disk under the root.

Teardown never trusts a bare pid: the recorded sshd pid is only used if
``/proc/<pid>/cmdline`` names sshd and this node's config, and every process is tracked as
(pid, kernel start time) and signalled through a pidfd, so a recycled pid is never hit.
Per-node logic lives in ``SshdNode`` behind the small ``Node`` interface, so a
"fresh machine" variant (network namespace + debootstrapped Debian with its own sshd) can be
added as another ``Node`` without touching ``LocalCluster``.
"""

from __future__ import annotations

import abc
import argparse
import atexit
import contextlib
import errno
import fcntl
import ipaddress
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

SSHD = Path("/usr/sbin/sshd")
# sshd (as root) chroots its pre-auth child into this directory and refuses to start
# without it; Debian creates it from the systemd unit / init script, which we do not run.
PRIVSEP_DIR = Path("/run/sshd")
GROUP = "specfleet_nodes"
# Later, many slots per node each hold SSH sessions at once; sshd's defaults (10
# unauthenticated connections, 10 sessions per multiplexed connection) would drop them.
MAX_STARTUPS = 100
MAX_SESSIONS = 100
# sun_path holds 108 bytes. Ansible names a control socket "<dir>/" + 10 hex chars and ssh
# binds it first as "<that>." + 16 random chars, so longer directories make every
# ControlMaster fail with a cryptic "path too long".
MAX_CONTROL_DIR_LEN = 108 - 1 - (1 + 10) - (1 + 16)
# sshd_config and ssh -o values are whitespace-split and %-expanded; rather than quoting
# every path for two different parsers, refuse roots that would need it.
_UNSAFE_PATH = re.compile(r"[\s%\"'\\#]")
_POLL = 0.05
# The nodes *are* this host, so interpreter discovery would run through the login user's shell
# rc files (here root's ~/.bashrc puts pyenv shims first, whose python3.13 shim is broken) and
# pick a different Python per machine. Pin the distribution's interpreter instead.
SYSTEM_PYTHON = Path("/usr/bin/python3")


class ClusterError(Exception):
    """A cluster operation failed. ``message`` is one line; ``detail`` holds e.g. a log tail."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message}\n{self.detail}" if self.detail else self.message


class PortInUseError(ClusterError):
    """A node's address:port is taken by another process, so its sshd cannot listen."""


@dataclass(frozen=True)
class NodeSpec:
    """One worker node: its inventory name, where its sshd listens, and how many slots it offers."""

    name: str
    address: str
    port: int
    slots: int

    def __post_init__(self) -> None:
        # The name becomes a directory and an inventory host name; keep it boring.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise ValueError(f"invalid node name {self.name!r}")
        ipaddress.IPv4Address(self.address)
        if not 0 < self.port < 65536:
            raise ValueError(f"node {self.name}: port {self.port} out of range")
        if self.slots < 1:
            raise ValueError(f"node {self.name}: slots must be >= 1")


@dataclass(frozen=True)
class Proc:
    """A process identity: pid plus kernel start time, so a recycled pid never matches."""

    pid: int
    start: int


@dataclass(frozen=True)
class NodeStatus:
    """What ``status`` reports for one node."""

    spec: NodeSpec
    pid: int | None
    handshake: bool
    login: bool

    @property
    def up(self) -> bool:
        return self.pid is not None and self.handshake and self.login


# --------------------------------------------------------------------------- processes


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, starttime) of pid, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses; everything after the last ")" is safe.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def proc_of(pid: int) -> Proc | None:
    """The identity of a live pid (zombies count as dead: they cannot be killed further)."""
    st = _read_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return None
    return Proc(pid, st[2])


def is_alive(proc: Proc) -> bool:
    """True if this exact process (not a later one reusing its pid) is still running."""
    st = _read_stat(proc.pid)
    return st is not None and st[2] == proc.start and st[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def descendants(roots: Iterable[Proc]) -> set[Proc]:
    """All live processes below ``roots`` (excluding the roots), from one /proc snapshot.

    Taken *before* anything is signalled: once an sshd listener dies its per-connection
    children are reparented to init and can no longer be found by walking down from it.
    """
    children: dict[int, list[Proc]] = {}
    for pid in _pids():
        st = _read_stat(pid)
        if st is not None and st[0] not in ("Z", "X"):
            children.setdefault(st[1], []).append(Proc(pid, st[2]))
    found: set[Proc] = set()
    stack = [root.pid for root in roots if is_alive(root)]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child.pid)
    return found


def _protected() -> set[int]:
    """This process and its ancestors: never signalled, whatever a sweep matched."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        st = _read_stat(pid)
        pid = st[1] if st else 0
    return pids


def _send(proc: Proc, sig: int) -> None:
    """Signal exactly ``proc``: open a pidfd first, then re-check the start time, so the
    check and the kill refer to the same process even if the pid is recycled in between."""
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return
    except OSError as exc:
        if exc.errno != errno.ENOSYS:
            raise
        if is_alive(proc):  # pre-5.3 kernel: checked kill, tiny reuse window left
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, sig)
        return
    try:
        if is_alive(proc):
            signal.pidfd_send_signal(fd, sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone, or not ours to kill: left for the survivors check
    finally:
        os.close(fd)


def terminate(procs: Iterable[Proc], grace: float = 5.0, reap: Callable[[], None] | None = None) -> set[Proc]:
    """SIGTERM ``procs``, wait up to ``grace`` s, SIGKILL the rest, wait; return survivors.

    ``reap`` lets the caller wait() for its own children so they do not linger as zombies.
    """
    protected = _protected()
    pending = {p for p in procs if p.pid not in protected}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pending = {p for p in pending if is_alive(p)}
        if not pending:
            break
        for proc in pending:
            _send(proc, sig)
        deadline = time.monotonic() + wait
        while pending and time.monotonic() < deadline:
            if reap:
                reap()
            pending = {p for p in pending if is_alive(p)}
            if pending:
                time.sleep(0.02)
    if reap:
        reap()
    return {p for p in pending if is_alive(p)}


def _tcp_sockets(address: str, port: int) -> tuple[set[str], set[str]]:
    """(all, listening) socket inodes whose *local* end is address:port, from /proc/net/tcp."""
    # /proc/net/tcp prints the address as the raw 32-bit value in host byte order.
    want = f"{int.from_bytes(socket.inet_aton(address), sys.byteorder):08X}:{port:04X}"
    every, listening = set(), set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return every, listening
    for line in lines:
        cols = line.split()
        if len(cols) > 9 and cols[1] == want:
            every.add(cols[9])
            if cols[3] == "0A":
                listening.add(cols[9])
    return every, listening


def _socket_holders(inodes: set[str], comm: str | None = None) -> set[Proc]:
    """Live processes (optionally with this comm) holding one of the socket inodes."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    found: set[Proc] = set()
    if not targets:
        return found
    for pid in _pids():
        if comm is not None and _comm(pid) != comm:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link in targets:
                proc = proc_of(pid)
                if proc:
                    found.add(proc)
                break
    return found


def _ssh_sessions(address: str, port: int) -> set[Proc]:
    """Processes started by an SSH login to address:port, found by their SSH_CONNECTION.

    Catches what a login double-forked away from sshd's tree (e.g. an Ansible async task).
    Unreadable environments (other users' processes when not root) are skipped.
    """
    suffix = f" {address} {port}".encode()
    found: set[Proc] = set()
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        for entry in environ.split(b"\0"):
            if entry.startswith(b"SSH_CONNECTION=") and entry.endswith(suffix):
                proc = proc_of(pid)
                if proc:
                    found.add(proc)
                break
    return found


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin")
    if not path:
        raise ClusterError(f"{name} not found (Debian: apt-get install openssh-client)")
    return path


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


def _banner(address: str, port: int, timeout: float) -> bool:
    """True if something accepts a TCP connection on address:port and speaks SSH first."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _known_hosts_pattern(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _sshd_accepts_path(path: Path, uid: int, home: str) -> bool:
    """Would sshd's StrictModes accept this authorized_keys file?

    Mirrors auth_secure_path(): the file and each parent up to the user's home (or / when the
    file is outside it) must be owned by root or the user and not group/world writable.
    Sticky /tmp fails that, so clusters under pytest's tmp dirs get ``StrictModes no``;
    one under ~/.local/state keeps the check on. Stricter than Debian's sshd, never looser.
    """
    try:
        real = Path(os.path.realpath(path))
        homedir = os.path.realpath(home)
        for part in (real, *real.parents):
            st = os.stat(part)
            if st.st_uid not in (0, uid) or st.st_mode & 0o022:
                return False
            if part != real and str(part) == homedir:
                break
    except OSError:
        return False
    return True


def _keygen(path: Path, comment: str) -> None:
    """Create an ed25519 key pair without passphrase unless a usable one exists (idempotent)."""
    pub = path.with_name(path.name + ".pub")
    if path.exists() and not pub.exists():
        out = subprocess.run([_tool("ssh-keygen"), "-y", "-f", str(path)], capture_output=True, text=True, check=False)
        if out.returncode == 0:
            pub.write_text(out.stdout)
            return
    if path.exists() and pub.exists():
        return
    path.unlink(missing_ok=True)
    pub.unlink(missing_ok=True)
    out = subprocess.run(
        [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if out.returncode != 0:
        raise ClusterError(f"ssh-keygen failed for {path}: {out.stderr.strip()}")


def _pub_blob(pub: Path) -> str:
    return pub.read_text().split()[1]


# --------------------------------------------------------------------------- nodes


class Node(abc.ABC):
    """What LocalCluster needs from one worker node, whatever runs it.

    ``SshdNode`` runs an sshd on the host; a later ``NamespaceNode`` (network namespace with a
    debootstrapped Debian running its own sshd) implements the same methods.
    """

    def __init__(self, spec: NodeSpec, node_dir: Path) -> None:
        self.spec = spec
        self.node_dir = node_dir

    @property
    def work_dir(self) -> Path:
        """The node's work root (``specfleet_work_root``)."""
        return self.node_dir / "work"

    @abc.abstractmethod
    def start(self) -> None:
        """Prepare and launch the node without waiting for it (so nodes boot in parallel)."""

    @abc.abstractmethod
    def wait_ready(self, deadline: float) -> str:
        """Block until the node answers SSH (or raise); return its known_hosts line."""

    @abc.abstractmethod
    def ready(self, timeout: float = 3.0) -> bool:
        """True if the node currently completes an SSH handshake with its own host key."""

    @abc.abstractmethod
    def listener(self) -> Proc | None:
        """The node's verified main process, or None if it is not running."""

    @abc.abstractmethod
    def processes(self) -> set[Proc]:
        """Every process belonging to the node right now (snapshot before killing)."""

    @abc.abstractmethod
    def reap(self) -> None:
        """Collect exit statuses of processes this object started (no zombies)."""

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Remove run-time leftovers (stale pidfiles) after the processes are gone."""

    def stop(self, grace: float = 5.0) -> set[Proc]:
        """Terminate the node's processes; return survivors (normally empty)."""
        return terminate(self.processes(), grace, self.reap)


class SshdNode(Node):
    """A worker node that is one Debian ``/usr/sbin/sshd -D`` on a loopback address."""

    def __init__(self, spec: NodeSpec, node_dir: Path, *, client_pubkey: Path, user: pwd.struct_passwd) -> None:
        super().__init__(spec, node_dir)
        if not ipaddress.IPv4Address(spec.address).is_loopback:
            raise ValueError(f"node {spec.name}: {spec.address} is not a loopback (127.0.0.0/8) address")
        self.client_pubkey = client_pubkey
        self.user = user
        self._popen: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._expected_pid: int | None = None

    @property
    def config_path(self) -> Path:
        return self.node_dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.node_dir / "ssh_host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.node_dir / "authorized_keys"

    @property
    def log_path(self) -> Path:
        return self.node_dir / "sshd.log"

    @property
    def pid_path(self) -> Path:
        return self.node_dir / "sshd.pid"

    @property
    def home(self) -> Path:
        return self.node_dir / "home"

    def prepare(self) -> None:
        """Create dirs, host key (kept across restarts, so known_hosts stays valid) and authorized_keys."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(mode=0o700, exist_ok=True)
        _keygen(self.host_key, f"specfleet-{self.spec.name}")
        self.authorized_keys.write_text(self.client_pubkey.read_text())
        self.authorized_keys.chmod(0o600)

    def render_config(self) -> str:
        """The node's sshd_config: key-only login for the current user, nothing from /etc/ssh."""
        strict = _sshd_accepts_path(self.authorized_keys, self.user.pw_uid, self.user.pw_dir)
        lines = [
            f"# Generated by tools/localcluster.py for node {self.spec.name}; rewritten on start.",
            f"ListenAddress {self.spec.address}:{self.spec.port}",
            "AddressFamily inet",
            f"HostKey {self.host_key}",
            f"PidFile {self.pid_path}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            f"AllowUsers {self.user.pw_name}",
            # Only when sshd would reject the path (e.g. anything below sticky /tmp).
            f"StrictModes {'yes' if strict else 'no'}",
            f"MaxStartups {MAX_STARTUPS}",
            f"MaxSessions {MAX_SESSIONS}",
            # Each node is its own machine, with its own HOME: logins must not run the rc files
            # of the controller's user. A login shell that runs e.g. `pyenv init` takes a lock
            # shared by every session of that user; one stopped or killed session (the fault
            # tests do both) then stalls every later login, on every node, for 60 s.
            f"SetEnv HOME={self.home}",
            "LoginGraceTime 30",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "PermitTunnel no",
            # Ansible falls back to sftp/scp for file transfers; internal-sftp needs no helper binary.
            "Subsystem sftp internal-sftp",
            "LogLevel INFO",
        ]
        if os.geteuid() == 0:
            lines.append("PermitRootLogin prohibit-password")
        return "\n".join(lines) + "\n"

    def listener(self) -> Proc | None:
        candidates = []
        if self._popen is not None and self._popen.poll() is None:
            candidates.append(self._popen.pid)
        with contextlib.suppress(OSError, ValueError):
            candidates.append(int(self.pid_path.read_text().split()[0]))
        for pid in candidates:
            cmd = _cmdline(pid)
            # Not ours unless it is an sshd running *this* node's config (pid reuse, stale pidfile);
            # compared as a whole word, so /a/tmp/x never passes for /tmp/x.
            if "sshd" in cmd and str(self.config_path) in cmd.split():
                proc = proc_of(pid)
                if proc:
                    return proc
        return None

    def start(self) -> None:
        self.prepare()
        config = self.render_config()
        running = self.listener()
        if running is not None:
            if self.config_path.exists() and self.config_path.read_text() == config:
                self._expected_pid = running.pid  # already up with this exact config: adopt it
                return
            self.stop()
        self.config_path.write_text(config)
        self._check_port()
        self._ensure_privsep_dir()
        self.pid_path.unlink(missing_ok=True)  # not ours (checked above); would confuse wait_ready
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            log.write(f"--- specfleet localcluster: starting sshd at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.node_dir,
                # Own session: Ctrl-C in the caller's terminal must not kill the nodes, and the CLI's
                # `up` exits while they keep running.
                start_new_session=True,
                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
            )
        self._expected_pid = self._popen.pid

    def _check_port(self) -> None:
        """Fail early and clearly when address:port is taken (sshd would only log it)."""
        spec = self.spec
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # Like sshd: a TIME_WAIT leftover from a previous run is no conflict.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((spec.address, spec.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUseError(self._port_message()) from None
                raise ClusterError(f"node {spec.name}: cannot bind {spec.address}:{spec.port}: {exc.strerror}") from None

    def _port_message(self) -> str:
        spec = self.spec
        return f"node {spec.name}: {spec.address}:{spec.port} is already in use by another process; choose another port"

    def _ensure_privsep_dir(self) -> None:
        # Only root's sshd chroots into it; as an ordinary user sshd does not look for it.
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
            PRIVSEP_DIR.chmod(0o755)

    def scan_host_key(self, timeout: float = 3.0) -> str | None:
        """Run a real SSH key exchange (ssh-keyscan) and return the known_hosts line, or None.

        Raises if the server presents a different ed25519 key: then someone else's sshd is
        answering on this address and strict host key checking would fail anyway.
        """
        spec = self.spec
        out = subprocess.run(
            [_tool("ssh-keyscan"), "-T", str(max(1, round(timeout))), "-t", "ed25519", "-p", str(spec.port), spec.address],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout + 5,
            check=False,
        )
        expected = _pub_blob(self.host_key.with_name(self.host_key.name + ".pub"))
        for line in out.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == "ssh-ed25519":
                if fields[2] != expected:
                    raise ClusterError(f"node {spec.name}: {spec.address}:{spec.port} presents a foreign host key")
                return f"{_known_hosts_pattern(spec.address, spec.port)} ssh-ed25519 {expected}"
        return None

    def ready(self, timeout: float = 3.0) -> bool:
        try:
            return _banner(self.spec.address, self.spec.port, timeout) and self.scan_host_key(timeout) is not None
        except (ClusterError, subprocess.TimeoutExpired):
            return False

    def wait_ready(self, deadline: float) -> str:
        spec = self.spec
        while True:
            if self._popen is not None and self._popen.poll() is not None:
                tail = _tail(self.log_path, self._log_offset)
                if "Address already in use" in tail:
                    raise PortInUseError(self._port_message(), tail)
                raise ClusterError(
                    f"node {spec.name}: sshd exited with status {self._popen.returncode} on start (log: {self.log_path})", tail
                )
            pidfile_ok = False
            with contextlib.suppress(OSError, ValueError):
                pidfile_ok = int(self.pid_path.read_text().split()[0]) == self._expected_pid
            remaining = max(0.2, min(3.0, deadline - time.monotonic()))
            if pidfile_ok and _banner(spec.address, spec.port, remaining):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    line = self.scan_host_key(remaining)
                    if line:
                        return line
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"node {spec.name}: sshd on {spec.address}:{spec.port} did not answer SSH in time (log: {self.log_path})",
                    _tail(self.log_path, self._log_offset),
                )
            time.sleep(_POLL)

    def processes(self) -> set[Proc]:
        roots: set[Proc] = set()
        listener = self.listener()
        if listener:
            roots.add(listener)
        every, listening = _tcp_sockets(self.spec.address, self.spec.port)
        foreign_server = bool(listening) and not (listener and listener in _socket_holders(listening))
        if not foreign_server:
            # Orphans from an earlier, interrupted teardown: per-connection sshds still holding
            # accepted connections on our address:port, and login sessions that left the tree.
            roots |= _socket_holders(every, comm="sshd")
            roots |= _ssh_sessions(self.spec.address, self.spec.port)
        return roots | descendants(roots)

    def reap(self) -> None:
        if self._popen is not None:
            self._popen.poll()

    def cleanup(self) -> None:
        # SIGKILLed sshds cannot remove their pidfile; drop it once it names no sshd of ours.
        if self.listener() is None:
            self.pid_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- cluster


def free_port(address: str = "127.0.0.1") -> int:
    """An unused TCP port on ``address`` (the kernel picks it; racy by nature, fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def default_nodes(count: int = 3, slots: int = 4, base: str = "127.0.0.11", port: int = 2222) -> list[NodeSpec]:
    """``node-1..node-N`` on consecutive loopback addresses from ``base``, all on ``port``."""
    first = ipaddress.IPv4Address(base)
    return [NodeSpec(f"node-{i + 1}", str(first + i), port, slots) for i in range(count)]


def default_root() -> Path:
    """``$SPECFLEET_HOME/cluster``; SPECFLEET_HOME defaults to ~/.local/state/specfleet."""
    home = os.environ.get("SPECFLEET_HOME") or str(Path.home() / ".local" / "state" / "specfleet")
    return Path(home).expanduser() / "cluster"


class LocalCluster:
    """A set of SSH worker nodes on loopback plus everything Ansible needs to reach them.

    ``root`` holds the client key, known_hosts, the inventory, Ansible's control sockets
    (``cp/``), ``cluster.json`` (the node list, so ``down``/``status`` in another process know
    what to look at) and ``nodes/<name>/``. ``with LocalCluster(...) as c`` starts the nodes
    (unless already started) and always stops them.
    """

    node_class: type[SshdNode] = SshdNode

    def __init__(self, root: Path, nodes: list[NodeSpec]) -> None:
        # Resolved once, so every process names the same config path in sshd's cmdline.
        self.root = Path(root).expanduser().resolve()
        self.nodes = list(nodes)
        names = [n.name for n in self.nodes]
        endpoints = [(n.address, n.port) for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in {names}")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("two nodes share one address:port")
        self.user = pwd.getpwuid(os.geteuid())
        self._node_objs: dict[str, SshdNode] = {}
        self._atexit_registered = False
        self._started = False

    # paths ----------------------------------------------------------------
    @property
    def client_key(self) -> Path:
        """The one client key (no passphrase) authorised on every node."""
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def cp_dir(self) -> Path:
        """Where Ansible's ControlPersist sockets go, so stop() can find the masters."""
        return self.root / "cp"

    @property
    def nodes_dir(self) -> Path:
        return self.root / "nodes"

    @property
    def inventory_path(self) -> Path:
        """The default inventory written by start()."""
        return self.root / "inventory" / "hosts.yml"

    @property
    def state_path(self) -> Path:
        return self.root / "cluster.json"

    @classmethod
    def load(cls, root: Path) -> LocalCluster:
        """The cluster recorded under ``root`` by an earlier ``start()`` (e.g. from the CLI)."""
        root = Path(root).expanduser().resolve()
        return cls(root, cls._recorded(root))

    @staticmethod
    def _recorded(root: Path) -> list[NodeSpec]:
        try:
            data = json.loads((root / "cluster.json").read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ClusterError(f"unreadable {root / 'cluster.json'}: {exc}") from None
        return [NodeSpec(**node) for node in data.get("nodes", [])]

    def node(self, name: str) -> SshdNode:
        """The node object for ``name`` (also for nodes only recorded on disk)."""
        if name not in self._node_objs:
            # Current specs win over recorded ones: a node whose port changed is restarted with the new one.
            spec = {s.name: s for s in self._recorded(self.root) + self.nodes}[name]
            self._node_objs[name] = self.node_class(
                spec, self.nodes_dir / name, client_pubkey=self.client_key.with_name("id_ed25519.pub"), user=self.user
            )
        return self._node_objs[name]

    # lifecycle ----------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop on one root across processes (`up` racing `down`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _check_paths(self) -> None:
        if _UNSAFE_PATH.search(str(self.root)):
            raise ClusterError(f"cluster root {self.root} contains whitespace, quotes, '%' or '#'; choose a plain path")
        if len(str(self.cp_dir)) > MAX_CONTROL_DIR_LEN:
            raise ClusterError(
                f"cluster root {self.root} is too long: SSH control sockets in it would exceed the unix socket path limit"
            )

    def start(self, *, cleanup_at_exit: bool = True, timeout: float = 30.0) -> LocalCluster:
        """Generate keys/configs (idempotent), start every sshd, wait until each answers SSH,
        write known_hosts and the default inventory. Running nodes with an unchanged config
        are adopted, not restarted. On any failure everything is stopped again.

        ``cleanup_at_exit`` registers stop() with atexit so an aborted test run leaves no
        sshd behind; the CLI's ``up`` turns it off because the nodes must outlive it.
        """
        if not SSHD.exists():
            raise ClusterError(f"{SSHD} not found (Debian: apt-get install openssh-server)")
        self._check_paths()
        if cleanup_at_exit and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        with self._locked():
            try:
                self._start_locked(timeout)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._stop_locked(grace=2.0)
                raise
        self._started = True
        return self

    def _start_locked(self, timeout: float) -> None:
        self.cp_dir.mkdir(mode=0o700, exist_ok=True)
        _keygen(self.client_key, "specfleet-localcluster")
        # Nodes recorded by an earlier start but dropped now would be orphaned: stop them first.
        wanted = {spec.name for spec in self.nodes}
        for old in self._recorded(self.root):
            if old.name not in wanted:
                self.node(old.name).stop()
                self.node(old.name).cleanup()
                self._node_objs.pop(old.name, None)
        self.state_path.write_text(json.dumps({"nodes": [asdict(n) for n in self.nodes]}, indent=2) + "\n")
        nodes = [self.node(spec.name) for spec in self.nodes]
        for node in nodes:
            node.start()
        deadline = time.monotonic() + timeout
        lines = [node.wait_ready(deadline) for node in nodes]
        _atomic_write(self.known_hosts, "".join(line + "\n" for line in lines))
        self.write_inventory(self.inventory_path)

    def stop(self, *, grace: float = 5.0) -> None:
        """Stop every node of this root and this cluster's SSH control masters.

        Works from any process (it reads cluster.json and the pidfiles), is idempotent, and
        snapshots the full process set (listeners, their descendants, orphaned sessions,
        control masters) before signalling anything. Raises if something survives SIGKILL.
        """
        if self._atexit_registered:
            atexit.unregister(self._stop_at_exit)
            self._atexit_registered = False
        self._started = False
        if not self.root.is_dir():
            return
        with self._locked():
            self._stop_locked(grace)

    def _stop_locked(self, grace: float) -> None:
        masters = self._exit_control_masters()
        names = dict.fromkeys([s.name for s in self.nodes] + [s.name for s in self._recorded(self.root)])
        nodes = [self.node(name) for name in names]
        procs = set(masters)
        for node in nodes:
            procs |= node.processes()

        def reap() -> None:
            for node in nodes:
                node.reap()

        survivors = terminate(procs, grace, reap)
        for node in nodes:
            node.cleanup()
        self._remove_stale_sockets()
        if survivors:
            raise ClusterError("processes survived SIGKILL: " + ", ".join(str(p.pid) for p in sorted(survivors, key=str)))

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(grace=2.0)

    def __enter__(self) -> LocalCluster:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # control masters ------------------------------------------------------------
    def _mux(self, sock: Path, command: str) -> subprocess.CompletedProcess[str]:
        # -F /dev/null: the user's ssh_config must not redirect the request; the host name is
        # irrelevant because the control path is given literally.
        return subprocess.run(
            [_tool("ssh"), "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", command, "specfleet-localcluster"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )

    def control_masters(self) -> set[Proc]:
        """Live SSH processes of this cluster's control sockets: masters named by ``ssh -O check``
        plus any ssh whose command line points into ``cp/`` (masters whose socket was deleted)."""
        found: set[Proc] = set()
        # A master's title is "ssh: <cp>/<hash> [mux]"; Ansible's clients pass ControlPath="<cp>/<hash>".
        ours = re.compile(r'(?:^|[\s="])' + re.escape(f"{self.cp_dir}/"))
        if self.cp_dir.is_dir():
            for sock in self.cp_dir.iterdir():
                if not sock.is_socket():
                    continue
                with contextlib.suppress(subprocess.TimeoutExpired):
                    match = re.search(r"pid=(\d+)", self._mux(sock, "check").stderr)
                    proc = proc_of(int(match.group(1))) if match else None
                    if proc and ours.search(_cmdline(proc.pid)):
                        found.add(proc)
        for pid in _pids():
            if _comm(pid) == "ssh" and ours.search(_cmdline(pid)):
                proc = proc_of(pid)
                if proc:
                    found.add(proc)
        return found

    def _exit_control_masters(self) -> set[Proc]:
        """Ask every master to exit (``ssh -O exit``); return them so stragglers get signalled."""
        masters = self.control_masters()
        if self.cp_dir.is_dir():
            for sock in self.cp_dir.iterdir():
                if sock.is_socket():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._mux(sock, "exit")
        return masters

    def _remove_stale_sockets(self) -> None:
        if self.cp_dir.is_dir():
            for sock in self.cp_dir.iterdir():
                if sock.is_socket():
                    sock.unlink(missing_ok=True)

    # inventory ----------------------------------------------------------------
    def write_inventory(self, path: Path, group_vars_dir: Path | None = None) -> Path:
        """Write a YAML inventory with group ``specfleet_nodes`` (one host per node).

        With ``group_vars_dir``, a ``group_vars`` symlink next to the file points there, so a
        throwaway inventory shares e.g. the repo's ``inventory/local/group_vars``.
        """
        path = Path(path).expanduser().absolute()
        hosts = {}
        for spec in self.nodes:
            hosts[spec.name] = {
                "ansible_host": spec.address,
                "ansible_port": spec.port,
                "ansible_user": self.user.pw_name,
                # bootstrap.yml logs in as the admin user; here that is the same local user.
                "specfleet_admin_user": self.user.pw_name,
                "ansible_ssh_private_key_file": str(self.client_key),
                # IdentitiesOnly: an agent with many keys would otherwise exhaust MaxAuthTries first.
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                ),
                # Same as ansible_env()'s ANSIBLE_SSH_CONTROL_PATH_DIR, but travels with the inventory
                # (README demo via ansible.cfg's inventory), so `down` always finds the masters.
                "ansible_control_path_dir": str(self.cp_dir),
                "specfleet_slots": spec.slots,
                "specfleet_work_root": str(self.node(spec.name).work_dir),
            }
            if SYSTEM_PYTHON.exists():
                hosts[spec.name]["ansible_python_interpreter"] = str(SYSTEM_PYTHON)
        text = f"# Generated by tools/localcluster.py for the cluster in {self.root}; do not edit.\n" + yaml.safe_dump(
            {"all": {"children": {GROUP: {"hosts": hosts}}}}, sort_keys=False, explicit_start=True, default_flow_style=False
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, text)
        if group_vars_dir is not None:
            _link(path.parent / "group_vars", Path(group_vars_dir).expanduser().absolute())
        return path

    def ansible_env(self, inventory: Path | None = None) -> dict[str, str]:
        """Environment a subprocess running ansible/ansible-playbook needs for this cluster."""
        return {
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.cp_dir),
            "ANSIBLE_INVENTORY": str(Path(inventory).absolute() if inventory else self.inventory_path),
        }

    # status -----------------------------------------------------------------------
    def login_ok(self, spec: NodeSpec, timeout: float = 5.0) -> bool:
        """A real key login to the node (no multiplexing) that runs ``true``."""
        cmd = [
            _tool("ssh"), "-F", "/dev/null", "-i", str(self.client_key), "-p", str(spec.port),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", f"ConnectTimeout={max(1, round(timeout))}", f"{self.user.pw_name}@{spec.address}", "true",
        ]  # fmt: skip
        try:
            out = subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout + 5, check=False)
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0

    def status(self) -> list[NodeStatus]:
        """Per node: verified sshd pid (or None), SSH handshake with its own key, key login."""
        result = []
        for spec in self.nodes:
            node = self.node(spec.name)
            proc = node.listener()
            handshake = node.ready()
            login = handshake and self.login_ok(spec)
            result.append(NodeStatus(spec, proc.pid if proc else None, handshake, login))
        return result


def _atomic_write(path: Path, text: str) -> None:
    """Write via rename so a concurrently starting ansible never reads half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _link(link: Path, target: Path) -> None:
    if link.is_symlink():
        if Path(os.readlink(link)) == target:
            return
        link.unlink()
    elif link.exists():
        if link.resolve() == target.resolve():
            return  # the inventory already sits next to that very directory
        raise ClusterError(f"{link} exists and is not a symlink; not replacing it")
    link.symlink_to(target, target_is_directory=True)


# --------------------------------------------------------------------------- CLI


def _cmd_up(args: argparse.Namespace) -> int:
    nodes = default_nodes(args.nodes, args.slots, args.base_address, args.port)
    cluster = LocalCluster(args.root, nodes)
    cluster.start(cleanup_at_exit=False)
    inventory = cluster.inventory_path
    if args.inventory:
        inventory = cluster.write_inventory(Path(args.inventory))
    print(f"cluster up: {len(nodes)} nodes, root {cluster.root}")
    for spec in nodes:
        listener = cluster.node(spec.name).listener()
        print(f"  {spec.name}  {spec.address}:{spec.port}  slots {spec.slots}  sshd pid {listener.pid if listener else '?'}")
    print(f"inventory: {inventory}")
    for key, value in cluster.ansible_env(inventory).items():
        print(f"export {key}={value}")
    print(f"stop with: {sys.executable} {Path(__file__).resolve()} down --root {cluster.root}")
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.load(args.root)
    cluster.stop()
    print(f"cluster down: {cluster.root}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    cluster = LocalCluster.load(args.root)
    if not cluster.nodes:
        raise ClusterError(f"no cluster recorded in {cluster.root}")
    statuses = cluster.status()
    for st in statuses:
        pid = f"pid {st.pid} alive" if st.pid else "no sshd"
        ssh = "ssh ok" if st.login else ("handshake ok, login FAILED" if st.handshake else "no ssh")
        print(f"{st.spec.name}  {st.spec.address}:{st.spec.port}  {pid}  {ssh}  {'up' if st.up else 'down'}")
    down = [st.spec.name for st in statuses if not st.up]
    if down:
        raise ClusterError(f"{len(down)} of {len(statuses)} nodes down: {', '.join(down)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; exit status 0 on success, 1 with a one-line message on stderr."""
    parser = argparse.ArgumentParser(prog="localcluster", description="SSH worker nodes on loopback for specfleet.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the nodes and leave them running")
    down = sub.add_parser("down", help="stop the nodes and their SSH control masters")
    status = sub.add_parser("status", help="show each node's sshd and SSH state")
    for p in (up, down, status):
        p.add_argument("--root", type=Path, default=default_root(), help="cluster directory (default: %(default)s)")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--slots", type=int, default=4)
    up.add_argument("--base-address", default="127.0.0.11")
    up.add_argument("--port", type=int, default=2222)
    up.add_argument("--inventory", help="also write the inventory here (e.g. inventory/local/hosts.yml)")
    args = parser.parse_args(argv)
    handler = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status}[args.command]
    try:
        return handler(args)
    except (ClusterError, ValueError, OSError, subprocess.SubprocessError) as exc:
        message = exc.message if isinstance(exc, ClusterError) else str(exc)
        print(f"localcluster {args.command}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
