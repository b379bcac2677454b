# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running code an agent wrote on the controller: a bubblewrap sandbox around every command.

Verify commands, the project's ``test_command``, the merge queue's batch tests and review's
revert tests all execute code from a branch an agent wrote (its tests, ``conftest.py``,
``run.sh``). Run plainly, that code would have the controller user's HOME (``~/.ssh`` holds
the key to every node), environment (API keys), files and network.

``bwrap`` (Debian's ``bubblewrap``, the sandbox under Flatpak) builds each command a new
root from this list only:

* read-only: ``/usr`` with the merged-/usr links, ``/opt``, and the few ``/etc`` files
  programs need to start (:data:`ETC`; no ``/etc/ssh``, no ``shadow``);
* writable: the scratch clone's working tree, a fresh tmpfs ``/tmp`` (HOME is
  ``/tmp/home``) and ``/var/tmp``; the clone's ``.git`` and the repository objects it
  borrows are read-only, so a test can neither plant a hook or config for the controller's
  next git command nor touch the project's history;
* new user, pid, ipc, uts, cgroup and network namespaces: no network (a loopback of its
  own) unless the project says ``network: true``; every capability dropped; the whole
  sandbox dies with the command's parent;
* a cleared environment: a system PATH (never specfleet's virtualenv: the project's tests
  run with the machine's python3 and tools, as on a worker node), ``HOME``, ``LANG``,
  ``TZ``, ``CI=1``.

Bounds (:class:`Bounds`): wall time (the whole pid namespace is killed), output (the
command is killed past ``output_bytes``; the last part is kept), memory (``RLIMIT_DATA``
per process), file size (``RLIMIT_FSIZE``) and processes (``RLIMIT_NPROC``; the kernel
does not apply it to root, so a root controller also puts the command in a ``pids``
cgroup when one can be made).

If the machine cannot sandbox (no ``bwrap``, user namespaces disabled), :func:`check`
says why and what fixes it; the operator may run the commands on a worker node instead
(``specfleet_verify_on``), or opt out (``specfleet_unsafe_controller_verify: true``),
which runs them unsandboxed with the same cleared environment and bounds.
"""
from __future__ import annotations

import contextlib
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from specfleet.node.process import kill_group

# What programs read from /etc to start: the loader, users, name service, time zone,
# locale, certificates, alternatives. Nothing that holds a secret.
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
       "hosts", "host.conf", "gai.conf", "localtime", "timezone", "locale.alias", "ssl", "ca-certificates",
       "ca-certificates.conf", "mime.types", "protocols", "services", "python3", "python3.11", "bash.bashrc",
       "inputrc", "magic", "papersize")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOME = "/tmp/home"
SANDBOX_UID = 65534  # "nobody" inside the sandbox; outside it is the controller user


class SandboxUnavailable(Exception):
    """The machine cannot sandbox; the message names the fix."""


@dataclass(frozen=True)
class Bounds:
    seconds: float
    output_bytes: int = 16 << 20
    memory_bytes: int = 4 << 30
    file_bytes: int = 1 << 30
    processes: int = 1024


@dataclass
class CommandResult:
    ok: bool
    rc: int | None
    output: str
    seconds: float
    stopped: str | None = None  # why specfleet killed it: "timed out", "output over N MiB"

    @property
    def summary(self) -> str:
        if self.ok:
            return "passed"
        return self.stopped or ("timed out" if self.rc is None else f"exited {self.rc}")


def environment(network: bool = False, path: str = SYSTEM_PATH, home: str = HOME) -> dict[str, str]:
    """The only variables code from a branch sees: nothing of the controller's but locale and time zone."""
    env = {"PATH": path, "HOME": home, "USER": "nobody", "LOGNAME": "nobody", "SHELL": "/bin/sh",
           "TMPDIR": "/tmp", "TERM": "dumb", "CI": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "LANG": os.environ.get("LANG") or "C.UTF-8"}
    for key in ("LC_ALL", "TZ"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    if not network:
        # Tools that honour these fail at once instead of waiting on a DNS lookup.
        env.update(no_proxy="*", NO_PROXY="*", PIP_NO_INDEX="1")
    return env


def unsandboxed_path() -> str:
    """The controller's PATH without specfleet's own virtualenv (for the opt-out)."""
    venv = os.path.realpath(sys.prefix)
    keep = [p for p in os.environ.get("PATH", SYSTEM_PATH).split(os.pathsep)
            if p and not os.path.realpath(p).startswith(venv + os.sep)]
    return os.pathsep.join(keep) or SYSTEM_PATH


def bwrap_argv(workdir: Path, network: bool, env: dict[str, str]) -> list[str]:
    """The ``bwrap`` command line that runs a command in ``workdir`` (see the module docstring)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
            "--cap-drop", "ALL", "--die-with-parent", "--new-session", "--clearenv"]
    if network:
        argv.append("--share-net")
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    argv += ["--ro-bind-try", "/opt", "/opt"]
    for name in ETC + (("resolv.conf",) if network else ()):
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", env["HOME"], "--tmpfs", "/var/tmp",
             "--bind", str(workdir), str(workdir)]
    git_dir = workdir / ".git"
    if git_dir.is_dir():
        argv += ["--ro-bind", str(git_dir), str(git_dir)]
        for objects in _alternates(git_dir / "objects"):
            argv += ["--ro-bind", objects, objects]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    argv += ["--chdir", str(workdir), "--"]
    return argv


def _alternates(objects: Path, depth: int = 0) -> list[str]:
    """The object directories a shared clone borrows (``objects/info/alternates``, recursively)."""
    try:
        lines = (objects / "info" / "alternates").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        path = os.path.realpath(line if os.path.isabs(line) else objects / line)
        if os.path.isdir(path):
            found.append(path)
            if depth < 5:
                found += _alternates(Path(path), depth + 1)
    return found


_checked: dict[str, str | None] = {}


def check() -> None:
    """Raise :class:`SandboxUnavailable` unless ``bwrap`` can build a sandbox here (checked once per process)."""
    if "bwrap" not in _checked:
        _checked["bwrap"] = _probe()
    if _checked["bwrap"]:
        raise SandboxUnavailable(_checked["bwrap"])


def _probe() -> str | None:
    fix = ("; or run the project's commands on a worker node (-e specfleet_verify_on=<node>), or accept that code "
           "from agents runs as this user with its files and network (-e specfleet_unsafe_controller_verify=true)")
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed on the controller: apt-get install bubblewrap (scripts/setup.sh does)" + fix
    # An empty folder of its own: whatever else is in /tmp (a stray .git) is no business of the probe.
    probe = Path(tempfile.mkdtemp(prefix="specfleet-sandbox-probe-"))
    try:
        result = subprocess.run(bwrap_argv(probe, False, environment()) + ["true"], capture_output=True, text=True,
                                timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not run: {exc}" + fix
    finally:
        probe.rmdir()
    if result.returncode != 0:
        return (f"bwrap cannot build a sandbox here ({result.stderr.strip()[-300:]}): enable unprivileged user "
                "namespaces (sysctl user.max_user_namespaces=10000; kernel.unprivileged_userns_clone=1 on kernels "
                "that have it; in a container, allow them)" + fix)
    return None


# -- running ----------------------------------------------------------------------------------------

def run(command: str, workdir: Path, bounds: Bounds, network: bool = False, sandboxed: bool = True) -> CommandResult:
    """``bash -c command`` in ``workdir``: in the sandbox, or (``sandboxed=False``) plainly with the same bounds."""
    if sandboxed:
        check()
        argv = bwrap_argv(workdir, network, environment(network)) + ["bash", "-c", command]
        env = {"PATH": SYSTEM_PATH}
    else:
        argv = ["bash", "-c", command]
        env = environment(network, path=unsandboxed_path(), home=os.environ.get("HOME", HOME))
    cgroup = _PidsCgroup.make(bounds.processes) if os.geteuid() == 0 else None
    started = time.monotonic()
    try:
        process = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=lambda: _limit(bounds, cgroup))
        output, stopped = _read(process, bounds)
    finally:
        if cgroup:
            cgroup.remove()
    rc = None if stopped == "timed out" else process.returncode
    return CommandResult(rc == 0 and not stopped, rc, output.decode("utf-8", "replace"),
                         time.monotonic() - started, stopped)


def _limit(bounds: Bounds, cgroup: _PidsCgroup | None) -> None:
    """In the child, before exec: the rlimits (and the pids cgroup) every process of the command inherits."""
    for limit, value in ((resource.RLIMIT_DATA, bounds.memory_bytes), (resource.RLIMIT_FSIZE, bounds.file_bytes),
                         (resource.RLIMIT_NPROC, bounds.processes), (resource.RLIMIT_CORE, 0)):
        _, hard = resource.getrlimit(limit)
        resource.setrlimit(limit, (value if hard == resource.RLIM_INFINITY else min(value, hard),) * 2)
    if cgroup:
        try:
            cgroup.join()
        except OSError:
            pass  # the rlimits still hold


def _read(process: subprocess.Popen, bounds: Bounds) -> tuple[bytes, str | None]:
    """The command's output (its last ``output_bytes``), and why it was stopped, if it was."""
    deadline = time.monotonic() + bounds.seconds
    kept = bytearray()
    total = 0
    stopped = None
    fd = process.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            stopped = "timed out"
            break
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        total += len(chunk)
        kept += chunk
        if len(kept) > 2 * bounds.output_bytes:
            del kept[:-bounds.output_bytes]
        if total > bounds.output_bytes:
            stopped = f"output over {bounds.output_bytes >> 20} MiB"
            break
    if not stopped:
        try:  # the output ended; a command that closed it and lives on still has only its time
            process.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            stopped = "timed out"
    if stopped:
        kill_group(process.pid, grace=5)
    process.stdout.close()
    process.wait()
    if stopped:
        kept += f"\n[specfleet] stopped: {stopped} ({total} bytes of output)\n".encode()
    return bytes(kept[-bounds.output_bytes:]), stopped


class _PidsCgroup:
    """A ``pids`` cgroup (v1 hierarchy) of one command: the process bound a root controller's rlimit lacks."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def make(cls, limit: int) -> _PidsCgroup | None:
        base = Path("/sys/fs/cgroup/pids")
        try:
            own = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                       if line.split(":", 2)[1] == "pids")
            parent = base / own.lstrip("/")
            _remove_orphans(parent)
            path = parent / f"specfleet-{os.getpid()}-{time.monotonic_ns()}"
            path.mkdir()
        except (OSError, StopIteration, IndexError):
            return None
        try:
            (path / "pids.max").write_text(str(limit))
        except OSError:
            path.rmdir()
            return None
        return cls(path)

    def join(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)  # the killed namespace's last processes are still being reaped


def _remove_orphans(parent: Path) -> None:
    """Empty cgroups a killed controller left behind (its pid is in the name)."""
    for entry in parent.glob("specfleet-*-*"):
        pid = entry.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                entry.rmdir()
