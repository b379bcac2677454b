#!/usr/bin/env python3
"""A genuinely fresh Debian 12 worker node: debootstrapped rootfs, own network namespace, own sshd.

The role ``specfleet_node`` must turn a machine that has nothing but a minimal Debian into a
worker node. ``tools/localcluster.py`` cannot test that (its nodes *are* this host, with
everything already installed), so this harness builds a machine that has nothing:

* a ``debootstrap --variant=minbase`` bookworm root filesystem with only what sshd and
  Ansible need (openssh-server, python3, ca-certificates), built once from the host's own
  Debian mirror and cached as a tarball (``$SPECFLEET_CACHE/freshnode/``, default
  ``~/.cache/specfleet/freshnode/``); every ``up`` unpacks a pristine copy (into a tmpfs
  mounted at ``<root>/rootfs`` unless ``--tmpfs-size 0``);
* its own network namespace with a veth pair (``10.213.x.1/30`` on the host, ``.2`` as
  ``eth0`` in the namespace), IP forwarding and an nftables table of its own that
  masquerades the node's traffic and lets it out only to DNS, the apt mirror and web ports
  (80/443) of public addresses (the npm registry): never to the host or private networks;
* the rootfs's own ``/usr/sbin/sshd`` (its Debian default config plus a key-only drop-in),
  chrooted into the rootfs inside private mount, PID, UTS and IPC namespaces with a minimal
  ``/dev``, ``/proc``, ``/sys`` and ``/run``; the mounts live only in that mount namespace
  and vanish with it. Fresh host keys per ``up``; root logs in with a key the harness
  generates; ``policy-rc.d`` stops package scripts from starting services.

``up`` writes ``<root>/inventory.yml`` (one host in group ``specfleet_nodes``: address,
port 22, user root, key, strict host key checking against ``<root>/known_hosts``,
``/usr/bin/python3``). ``down`` stops exactly the processes it started (recorded pid plus
kernel start time, checked against ``/proc`` before any signal; helpers shared with
``localcluster``), the processes inside the node's namespace and the Ansible control
masters of ``<root>/cp``, unmounts anything left under the rootfs, deletes the namespace,
veth and nftables table, restores IP forwarding when it was the last node and removes the
rootfs. All state is in ``<root>/state.json``; every name and the address are derived from
the root directory, so two harnesses with different roots never collide and ``down`` can
clean up after an ``up`` that failed half way (or never wrote its state).

Needs root, ``ip``, ``nft``, ``debootstrap`` (the last two are installed with apt when
missing). CLI: ``python tools/freshnode.py up|down|status|cache --root DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

if __package__ in (None, ""):  # run as a script: make `tools` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.localcluster import (
    _UNSAFE_PATH,
    GROUP,
    MAX_CONTROL_DIR_LEN,
    ClusterError,
    LocalCluster,
    Proc,
    _atomic_write,
    _banner,
    _cmdline,
    _keygen,
    _pids,
    _pub_blob,
    _tail,
    _tool,
    descendants,
    is_alive,
    proc_of,
    terminate,
)

SUITE = "bookworm"
VARIANT = "minbase"
# Exactly what the first SSH contact needs: sshd, Ansible's interpreter, and TLS roots.
# Everything else (git, nodejs, python3-apt, sudo...) is the role's job.
INCLUDE = ("openssh-server", "python3", "ca-certificates")
NPM_REGISTRY = "https://registry.npmjs.org/"
NODE_PORT = 22
NS_PREFIX = "sf-fn-"
TABLE_PREFIX = "specfleet_fn_"
# The rootfs lives in a tmpfs of at most this size (a converged node uses about 1.5 GB).
DEFAULT_TMPFS_SIZE = "8g"
# One /30 per node out of this block: host side .1, node side .2.
SUBNET = ipaddress.IPv4Network("10.213.0.0/16")
# The node may reach these only when they are its resolvers or mirrors.
PRIVATE = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
)  # fmt: skip
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# Serialises address allocation and the shared ip_forward switch between harnesses.
GLOBAL_LOCK = Path("/run/specfleet-freshnode.lock")
# `ip netns add` turns /run/netns into a mount point the first time; this marker says a
# freshnode did that, so the last `down` can undo it.
NETNS_DIR = Path("/run/netns")
NETNS_MARKER = Path("/run/specfleet-freshnode.netns-mount")
# Holds ip_forward's value from before the first freshnode switched it on; the last `down` restores it.
FORWARD_MARKER = Path("/run/specfleet-freshnode.ip_forward")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHROOT_ENV = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")

# Runs as PID 1 of the node's new PID namespace, inside its private mount namespace (and the
# network namespace): builds a minimal /dev, /proc, /sys, /run *in that mount namespace only*,
# names the machine, then becomes the rootfs's own sshd. $1 = rootfs, $2 = hostname.
LAUNCH_SCRIPT = r"""
set -eu
r=$1
printf '%s\n' "$2" > /proc/sys/kernel/hostname
mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
mount -t tmpfs -o nosuid,mode=755,size=16m devtmp "$r/dev"
mknod -m 666 "$r/dev/null" c 1 3
mknod -m 666 "$r/dev/zero" c 1 5
mknod -m 666 "$r/dev/full" c 1 7
mknod -m 666 "$r/dev/random" c 1 8
mknod -m 666 "$r/dev/urandom" c 1 9
mknod -m 666 "$r/dev/tty" c 5 0
mkdir -m 755 "$r/dev/pts"
mkdir -m 1777 "$r/dev/shm"
mount -t devpts -o newinstance,nosuid,noexec,gid=5,mode=620,ptmxmode=666 devpts "$r/dev/pts"
mount -t tmpfs -o nosuid,nodev,mode=1777 shm "$r/dev/shm"
ln -s pts/ptmx "$r/dev/ptmx"
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mount -t tmpfs -o nosuid,nodev,mode=755 run "$r/run"
mkdir -m 755 "$r/run/sshd"
mkdir -m 1777 "$r/run/lock"
exec chroot "$r" /usr/sbin/sshd -D -e
"""

SSHD_DROPIN = """\
# Written by specfleet's tools/freshnode.py, as a cloud image's first boot would: keys only.
PasswordAuthentication no
KbdInteractiveAuthentication no
# The node's network is IPv4 only.
AddressFamily inet
"""

POLICY_RC_D = """\
#!/bin/sh
# Written by specfleet's tools/freshnode.py: this chroot runs no init, so package scripts
# must not try to start services (exit 101 = action forbidden).
exit 101
"""

# Run on the node over SSH by `up`: name resolution and the mirrors, from inside the node.
SELF_CHECK = """\
import socket, sys, urllib.request
for url in sys.argv[1:]:
    host = urllib.request.urlparse(url).hostname
    try:
        socket.getaddrinfo(host, 443, socket.AF_INET)
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=20).close()
    except Exception as exc:
        sys.exit(f"{url}: {exc}")
"""


class FreshNodeError(ClusterError):
    """A freshnode operation failed (one-line message, optional detail)."""


# --------------------------------------------------------------------------- helpers


def _run(
    cmd: list[str], *, check: bool = True, timeout: float = 120, input_text: str | None = None
) -> subprocess.CompletedProcess:
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
        timeout=timeout,
        check=False,
        env={**os.environ, "PATH": HOST_PATH + ":" + os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
    )
    if check and out.returncode != 0:
        raise FreshNodeError(f"{' '.join(cmd[:4])} failed (exit {out.returncode})", (out.stderr or out.stdout).strip()[-2000:])
    return out


def _apt_install(*packages: str) -> None:
    """Install Debian packages the harness needs on the host (apt-get update only if needed)."""
    env_cmd = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if _run(env_cmd, check=False, timeout=600).returncode != 0:
        _run(["apt-get", "update", "-q"], check=False, timeout=600)
        _run(env_cmd, timeout=600)


def _need(command: str, package: str) -> str:
    found = shutil.which(command, path=HOST_PATH)
    if not found:
        _apt_install(package)
        found = shutil.which(command, path=HOST_PATH)
        if not found:
            raise FreshNodeError(f"{command} still missing after apt-get install {package}")
    return found


def host_arch() -> str:
    return _run(["dpkg", "--print-architecture"]).stdout.strip()


def default_cache_dir() -> Path:
    """``$SPECFLEET_CACHE/freshnode``; SPECFLEET_CACHE defaults to ~/.cache/specfleet."""
    base = os.environ.get("SPECFLEET_CACHE") or str(Path.home() / ".cache" / "specfleet")
    return Path(base).expanduser() / "freshnode"


def default_root() -> Path:
    home = os.environ.get("SPECFLEET_HOME") or str(Path.home() / ".local" / "state" / "specfleet")
    return Path(home).expanduser() / "freshnode"


# --------------------------------------------------------------------------- apt sources


def _sources_files() -> list[Path]:
    files = [Path("/etc/apt/sources.list")]
    parts = Path("/etc/apt/sources.list.d")
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    return [f for f in files if f.is_file()]


def apt_sources() -> list[tuple[str, list[str]]]:
    """(URI, suites) of every enabled ``deb`` entry of the host, one-line and deb822 alike."""
    entries: list[tuple[str, list[str]]] = []
    for path in _sources_files():
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                key = None
                for line in stanza.splitlines():
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    if line[0] in " \t" and key:
                        fields[key] += " " + line.strip()
                        continue
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split()))
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(line) >= 3 and line[0] == "deb":
                    entries.append((line[1], [line[2]]))
    return [(uri.rstrip("/"), suites) for uri, suites in entries if urlsplit(uri).scheme in ("http", "https")]


def debian_mirrors(override: str | None = None) -> dict[str, str]:
    """{suite: URI} for bookworm, bookworm-updates and bookworm-security from the host's apt sources."""
    wanted = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
    found: dict[str, str] = {}
    for uri, suites in apt_sources():
        for suite in suites:
            if suite in wanted and suite not in found:
                found[suite] = uri
    if override:
        found[SUITE] = override.rstrip("/")
        found.setdefault(f"{SUITE}-updates", found[SUITE])
    if SUITE not in found:
        raise FreshNodeError(
            f"no http(s) Debian mirror for suite {SUITE} in the host's apt sources "
            "(/etc/apt/sources.list, /etc/apt/sources.list.d/); pass --mirror URL"
        )
    return found


# --------------------------------------------------------------------------- rootfs cache


def _recipe(mirror: str) -> dict[str, object]:
    return {"suite": SUITE, "variant": VARIANT, "include": list(INCLUDE), "mirror": mirror}


def cache_path(cache_dir: Path | None = None, arch: str | None = None) -> Path:
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    ext = "tar.zst" if shutil.which("zstd", path=HOST_PATH) else "tar"
    return cache_dir / f"{SUITE}-{arch or host_arch()}.{ext}"


def _tar_compress_args(path: Path) -> list[str]:
    return ["-I", "zstd -T0 -q"] if path.name.endswith(".zst") else []


def ensure_cache(cache_dir: Path | None = None, *, mirror: str | None = None, rebuild: bool = False, log=print) -> Path:
    """Build the debootstrapped rootfs tarball unless a matching one is cached; return its path."""
    mirrors = debian_mirrors(mirror)
    tarball = cache_path(cache_dir)
    meta = tarball.with_name(tarball.name + ".json")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with (tarball.parent / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # a second harness waits for the first build
        if not rebuild and tarball.exists():
            with contextlib.suppress(OSError, ValueError):
                recorded = json.loads(meta.read_text())
                if {k: recorded.get(k) for k in ("suite", "variant", "include")} == {
                    k: v for k, v in _recipe("").items() if k != "mirror"
                }:
                    return tarball
        debootstrap = _need("debootstrap", "debootstrap")
        build = tarball.parent / f"build-{os.getpid()}"
        _rmtree_checked(build)
        started = time.monotonic()
        log(f"freshnode: debootstrap {SUITE} ({VARIANT} + {', '.join(INCLUDE)}) from {mirrors[SUITE]} ...")
        try:
            out = _run(
                [debootstrap, f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}", "--components=main",
                 f"--arch={host_arch()}", SUITE, str(build), mirrors[SUITE]],
                check=False, timeout=1800,
            )  # fmt: skip
            if out.returncode != 0:
                detail = _tail(build / "debootstrap" / "debootstrap.log", lines=30) or (out.stderr or out.stdout)[-2000:]
                raise FreshNodeError(f"debootstrap failed (exit {out.returncode})", detail)
            _scrub_rootfs(build)
            tmp = tarball.with_name(f".{tarball.name}.{os.getpid()}.tmp")
            _run(
                ["tar", "-C", str(build), "--numeric-owner", "--xattrs", "--xattrs-include=*",
                 *_tar_compress_args(tarball), "-cf", str(tmp), "."],
                timeout=900,
            )  # fmt: skip
            os.replace(tmp, tarball)
            _atomic_write(meta, json.dumps({**_recipe(mirrors[SUITE]), "built": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        finally:
            _rmtree_checked(build)
        log(f"freshnode: cached {tarball} ({tarball.stat().st_size // 2**20} MiB) in {time.monotonic() - started:.0f} s")
    return tarball


def _scrub_rootfs(rootfs: Path) -> None:
    """What must not be shared by every copy, or would not be on a freshly installed machine."""
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    lists = rootfs / "var" / "lib" / "apt" / "lists"
    if lists.is_dir():
        for entry in lists.iterdir():
            if entry.is_file() and entry.name != "lock":
                entry.unlink()
    (rootfs / "etc" / "machine-id").write_text("")


# --------------------------------------------------------------------------- mounts


def _unescape_mount(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def mounts_under(path: Path) -> list[str]:
    """Mount points (host mount namespace) at or below ``path``, deepest first."""
    prefix = str(path).rstrip("/")
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = _unescape_mount(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _unmount_all(path: Path) -> None:
    for _ in range(5):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            if _run(["umount", point], check=False).returncode != 0:
                _run(["umount", "-l", point], check=False)
    if mounts_under(path):
        raise FreshNodeError(f"cannot unmount {', '.join(mounts_under(path))}")


def _rmtree_checked(path: Path) -> None:
    """rm -rf that refuses to descend into anything still mounted."""
    if not path.exists() and not path.is_symlink():
        return
    _unmount_all(path)
    shutil.rmtree(path)


# --------------------------------------------------------------------------- the node


@dataclass
class NodeState:
    """Everything ``down`` needs, written before anything is created."""

    name: str
    netns: str
    veth_host: str
    veth_node: str
    table: str
    hostname: str
    host_addr: str
    node_addr: str
    prefix: int
    launcher: dict[str, int] | None = None


class FreshNode:
    """One fresh Debian node under ``root``: ``up()``, ``down()``, ``status()``."""

    def __init__(
        self,
        root: Path,
        *,
        name: str = "freshnode",
        cache_dir: Path | None = None,
        mirror: str | None = None,
        tmpfs_size: str = DEFAULT_TMPFS_SIZE,
    ) -> None:
        # Resolved once, so up and down (different processes) derive the same names from it.
        self.root = Path(root).expanduser().resolve()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"invalid node name {name!r}")
        self.name = name
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.mirror = mirror
        if not re.fullmatch(r"0|[1-9][0-9]*[kmgKMG]?", tmpfs_size):
            raise ValueError(f"invalid tmpfs size {tmpfs_size!r} (e.g. 8g; 0 = unpack on disk)")
        self.tmpfs_size = tmpfs_size
        self.tag = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]

    # paths ------------------------------------------------------------------
    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def client_key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        return self.root / "inventory.yml"

    @property
    def cp_dir(self) -> Path:
        return self.root / "cp"

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"

    # names ------------------------------------------------------------------
    def derived_state(self, index: int | None = None) -> NodeState:
        """Names from the root's hash; the /30 from ``index`` (default: also from the hash)."""
        blocks = SUBNET.num_addresses // 4
        if index is None:
            index = int(self.tag, 16) % blocks
        base = SUBNET.network_address + 4 * (index % blocks)
        return NodeState(
            name=self.name,
            netns=NS_PREFIX + self.tag,
            veth_host="sfh" + self.tag,
            veth_node="sfn" + self.tag,
            table=TABLE_PREFIX + self.tag,
            hostname=f"{self.name}-{self.tag}",
            host_addr=str(base + 1),
            node_addr=str(base + 2),
            prefix=30,
        )

    def load_state(self) -> NodeState | None:
        try:
            return NodeState(**json.loads(self.state_path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise FreshNodeError(f"unreadable {self.state_path}: {exc}") from None

    def _save_state(self, state: NodeState) -> None:
        _atomic_write(self.state_path, json.dumps(asdict(state), indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    @staticmethod
    @contextlib.contextmanager
    def _global_lock() -> Iterator[None]:
        with GLOBAL_LOCK.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    # up ---------------------------------------------------------------------
    def up(self, *, timeout: float = 60.0, log=print) -> Path:
        """Start the node (fresh rootfs, namespace, sshd); return the inventory path.

        A node that is already up is left running. Anything left by an earlier failed or
        foreign-process ``up`` is torn down first; a failure here tears down what it built.
        """
        if os.geteuid() != 0:
            raise FreshNodeError("freshnode needs root (network namespaces, chroot, nftables)")
        if _UNSAFE_PATH.search(str(self.root)):
            raise FreshNodeError(f"root {self.root} contains whitespace, quotes, '%' or '#'; choose a plain path")
        if len(str(self.cp_dir)) > MAX_CONTROL_DIR_LEN:
            raise FreshNodeError(f"root {self.root} is too long for SSH control sockets below it")
        for command, package in (("ip", "iproute2"), ("nft", "nftables"), ("ssh", "openssh-client")):
            _need(command, package)
        tarball = ensure_cache(self.cache_dir, mirror=self.mirror, log=log)
        with self._locked():
            state = self.load_state()
            if state and self._launcher(state) and self._login_ok(state):
                return self.inventory_path
            self._down_locked()
            try:
                started = time.monotonic()
                state = self._up_locked(tarball, timeout)
                log(f"freshnode: {self.name} up at {state.node_addr} in {time.monotonic() - started:.1f} s")
            except BaseException:
                with contextlib.suppress(Exception):
                    self._down_locked()
                raise
        return self.inventory_path

    def _up_locked(self, tarball: Path, timeout: float) -> NodeState:
        self.cp_dir.mkdir(mode=0o700, exist_ok=True)
        _keygen(self.client_key, f"specfleet-freshnode-{self.name}")
        mirrors = debian_mirrors(self.mirror)
        with self._global_lock():
            state = self._allocate()
            self._save_state(state)  # before creating anything: down must find it
            self._make_network(state, mirrors)
            self._save_state(state)
        self._unpack(tarball)
        self._customize(state, mirrors)
        self._launch(state)
        self._save_state(state)
        known = self._wait_ready(state, time.monotonic() + timeout)
        _atomic_write(self.known_hosts, known + "\n")
        self._write_inventory(state)
        if not self._login_ok(state):
            raise FreshNodeError(f"key login to root@{state.node_addr} failed (log: {self.log_path})", _tail(self.log_path))
        self._self_check(state, mirrors)
        return state

    def _allocate(self) -> NodeState:
        """The derived names plus the first /30 (from the hashed one on) no host interface uses."""
        out = _run(["ip", "-4", "-j", "addr", "show"]).stdout
        used = [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}") for link in json.loads(out) for a in link["addr_info"]]
        first = int(self.tag, 16) % (SUBNET.num_addresses // 4)
        for step in range(SUBNET.num_addresses // 4):
            state = self.derived_state(first + step)
            net = ipaddress.IPv4Network(f"{state.host_addr}/{state.prefix}", strict=False)
            if not any(iface.network.overlaps(net) for iface in used):
                return state
        raise FreshNodeError(f"no free /30 left in {SUBNET}")

    def _resolv_conf(self) -> tuple[str, list[str]]:
        """The host's resolv.conf (or systemd-resolved's upstream one) and its IPv4 nameservers."""
        for candidate in (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf")):
            with contextlib.suppress(OSError):
                text = candidate.read_text()
                servers = re.findall(r"^\s*nameserver\s+(\S+)", text, re.MULTILINE)
                v4 = []
                for server in servers:
                    with contextlib.suppress(ValueError):
                        addr = ipaddress.ip_address(server)
                        if addr.version == 4 and not addr.is_loopback:
                            v4.append(server)
                if v4:
                    keep = [ln for ln in text.splitlines() if not ln.strip().startswith("nameserver")]
                    return "\n".join(keep + [f"nameserver {s}" for s in v4]) + "\n", v4
        raise FreshNodeError("the host has no non-loopback IPv4 nameserver the node could use")

    def _make_network(self, state: NodeState, mirrors: dict[str, str]) -> None:
        ns, host, node = state.netns, state.veth_host, state.veth_node
        if str(NETNS_DIR) not in mounts_under(NETNS_DIR):
            NETNS_MARKER.touch()
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", host, "type", "veth", "peer", "name", node])
        _run(["ip", "link", "set", node, "netns", ns])
        _run(["ip", "addr", "add", f"{state.host_addr}/{state.prefix}", "dev", host])
        _run(["ip", "link", "set", host, "up"])
        inside = ["ip", "netns", "exec", ns]
        _run([*inside, "ip", "link", "set", node, "name", "eth0"])
        _run([*inside, "ip", "addr", "add", f"{state.node_addr}/{state.prefix}", "dev", "eth0"])
        _run([*inside, "ip", "link", "set", "lo", "up"])
        _run([*inside, "ip", "link", "set", "eth0", "up"])
        _run([*inside, "ip", "route", "add", "default", "via", state.host_addr])
        # No IPv6 route out: without an address the node's resolvers and clients stick to IPv4.
        _run([*inside, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"], check=False)
        _, resolvers = self._resolv_conf()
        allowed = set()
        ports = {80, 443}
        for url in [*mirrors.values(), NPM_REGISTRY]:
            parts = urlsplit(url)
            ports.add(parts.port or (443 if parts.scheme == "https" else 80))
            with contextlib.suppress(OSError):
                allowed |= {info[4][0] for info in socket.getaddrinfo(parts.hostname, None, socket.AF_INET)}
        _run(["nft", "-f", "-"], input_text=self._ruleset(state, resolvers, sorted(allowed), sorted(ports)))
        before = IP_FORWARD.read_text().strip()
        if before != "1":
            if not FORWARD_MARKER.exists():
                FORWARD_MARKER.write_text(before + "\n")
            IP_FORWARD.write_text("1\n")

    def _ruleset(self, state: NodeState, resolvers: list[str], allowed: list[str], ports: list[int]) -> str:
        net = ipaddress.IPv4Network(f"{state.host_addr}/{state.prefix}", strict=False)
        dev = state.veth_host

        def elements(items: list[str]) -> str:
            return f"elements = {{ {', '.join(items)} }}" if items else ""

        port_set = ", ".join(str(p) for p in ports)
        return f"""
table ip {state.table} {{
    set resolvers {{ type ipv4_addr; {elements(resolvers)} }}
    set mirrors {{ type ipv4_addr; {elements(allowed)} }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {net} oifname != "{dev}" masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{dev}" jump egress
        oifname "{dev}" ct state established,related accept
        oifname "{dev}" drop
    }}
    chain egress {{
        ip daddr @resolvers udp dport 53 accept
        ip daddr @resolvers tcp dport 53 accept
        ip daddr @mirrors tcp dport {{ {port_set} }} accept
        ip daddr {{ {", ".join(PRIVATE)} }} drop
        tcp dport {{ 80, 443 }} accept
        drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{dev}" ct state established,related accept
        iifname "{dev}" drop
    }}
}}
"""

    @staticmethod
    def _release_netns_dir() -> None:
        """Undo the /run/netns mount a freshnode caused, once no namespace at all is left in it."""
        if not NETNS_MARKER.exists():
            return
        with contextlib.suppress(OSError):
            if NETNS_DIR.is_dir() and any(NETNS_DIR.iterdir()):
                return
        if str(NETNS_DIR) in mounts_under(NETNS_DIR) and _run(["umount", str(NETNS_DIR)], check=False).returncode != 0:
            return
        with contextlib.suppress(OSError):
            NETNS_DIR.rmdir()
        NETNS_MARKER.unlink(missing_ok=True)

    def _other_nodes(self) -> list[str]:
        """Namespaces of other freshnode harnesses on this host."""
        out = _run(["ip", "netns", "list"], check=False).stdout
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return [n for n in names if n.startswith(NS_PREFIX) and n != NS_PREFIX + self.tag]

    def _unpack(self, tarball: Path) -> None:
        _rmtree_checked(self.rootfs)
        self.rootfs.mkdir(mode=0o755)
        if self.tmpfs_size != "0":
            # In memory: unpacking, apt and npm are several times faster than on a busy disk,
            # and `down` frees it all with one umount.
            _run(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_size},mode=755", "specfleet-freshnode", str(self.rootfs)])
        _run(
            ["tar", "-C", str(self.rootfs), "--numeric-owner", "--xattrs", "--xattrs-include=*",
             *_tar_compress_args(tarball), "-xpf", str(tarball)],
            timeout=600,
        )  # fmt: skip
        self.rootfs.chmod(0o755)

    def _chroot(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["chroot", str(self.rootfs), *cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL,
            env=CHROOT_ENV, timeout=300, check=check,
        )  # fmt: skip

    def _customize(self, state: NodeState, mirrors: dict[str, str]) -> None:
        """First boot: identity, name resolution, apt sources, trust, SSH access. Nothing else."""
        r = self.rootfs
        (r / "etc" / "hostname").write_text(state.hostname + "\n")
        (r / "etc" / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{state.hostname}\n\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
        )
        (r / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        resolv = r / "etc" / "resolv.conf"
        resolv.unlink(missing_ok=True)
        resolv.write_text(self._resolv_conf()[0])
        lines = []
        for suite, comps in ((SUITE, "main"), (f"{SUITE}-updates", "main"), (f"{SUITE}-security", "main")):
            if suite in mirrors:
                lines.append(f"deb {mirrors[suite]} {suite} {comps}")
        (r / "etc" / "apt" / "sources.list").write_text("\n".join(lines) + "\n")
        policy = r / "usr" / "sbin" / "policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        self._trust_host_cas()
        ssh_dir = r / "etc" / "ssh"
        for kind in ("rsa", "ecdsa", "ed25519"):
            key = ssh_dir / f"ssh_host_{kind}_key"
            _run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{state.hostname}", "-f", str(key)])
        dropin = ssh_dir / "sshd_config.d"
        dropin.mkdir(exist_ok=True)
        (dropin / "specfleet-freshnode.conf").write_text(SSHD_DROPIN)
        dot_ssh = r / "root" / ".ssh"
        dot_ssh.mkdir(mode=0o700, exist_ok=True)
        auth = dot_ssh / "authorized_keys"
        auth.write_text(self.client_key.with_name(self.client_key.name + ".pub").read_text())
        auth.chmod(0o600)

    def _trust_host_cas(self) -> None:
        """Add the CAs the host trusts beyond Debian's (a site or proxy CA) the Debian way.

        Without them a node behind a TLS-intercepting proxy cannot reach the npm registry.
        On an ordinary host the bundles agree and nothing is added.
        """
        host = Path("/") / CA_BUNDLE
        node = self.rootfs / CA_BUNDLE
        try:
            have = {re.sub(r"\s+", "", pem) for pem in _PEM.findall(node.read_text())}
            extra = [pem for pem in _PEM.findall(host.read_text()) if re.sub(r"\s+", "", pem) not in have]
        except OSError:
            return
        if not extra:
            return
        local = self.rootfs / "usr" / "local" / "share" / "ca-certificates"
        local.mkdir(parents=True, exist_ok=True)
        for i, pem in enumerate(extra):
            (local / f"specfleet-host-{i}.crt").write_text(pem + "\n")
        out = self._chroot("update-ca-certificates", check=False)
        if out.returncode != 0:
            raise FreshNodeError("update-ca-certificates failed in the rootfs", out.stderr.strip())

    def _launch(self, state: NodeState) -> None:
        cmd = [
            "ip", "netns", "exec", state.netns,
            "unshare", "--mount", "--pid", "--uts", "--ipc", "--fork", "--kill-child",
            "sh", "-c", LAUNCH_SCRIPT, "freshnode-init", str(self.rootfs), state.hostname,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            log.write(f"--- specfleet freshnode: starting {state.hostname} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            popen = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                start_new_session=True,
                env={"PATH": HOST_PATH, "LANG": "C.UTF-8"},
            )
        self._popen = popen
        proc = proc_of(popen.pid)
        if proc is None:
            raise FreshNodeError(f"node launcher exited at once (log: {self.log_path})", _tail(self.log_path))
        state.launcher = asdict(proc)

    def _launcher(self, state: NodeState) -> Proc | None:
        """The recorded launcher if this exact process still runs and still is ours."""
        if not state.launcher:
            return None
        proc = Proc(**state.launcher)
        cmd = _cmdline(proc.pid).split()
        if is_alive(proc) and "unshare" in " ".join(cmd) and str(self.rootfs) in cmd:
            return proc
        return None

    def _wait_ready(self, state: NodeState, deadline: float) -> str:
        pub = _pub_blob(self.rootfs / "etc" / "ssh" / "ssh_host_ed25519_key.pub")
        while True:
            popen = getattr(self, "_popen", None)
            if popen is not None and popen.poll() is not None:
                raise FreshNodeError(
                    f"node sshd exited with status {popen.returncode} on start (log: {self.log_path})",
                    _tail(self.log_path, getattr(self, "_log_offset", 0)),
                )
            if _banner(state.node_addr, NODE_PORT, 2.0):
                out = _run(
                    [_tool("ssh-keyscan"), "-T", "3", "-t", "ed25519", "-p", str(NODE_PORT), state.node_addr],
                    check=False, timeout=10,
                )  # fmt: skip
                for line in out.stdout.splitlines():
                    fields = line.split()
                    if len(fields) >= 3 and fields[1] == "ssh-ed25519":
                        if fields[2] != pub:
                            raise FreshNodeError(f"{state.node_addr}:{NODE_PORT} presents a foreign host key")
                        return f"{state.node_addr} ssh-ed25519 {pub}"
            if time.monotonic() >= deadline:
                raise FreshNodeError(
                    f"node sshd on {state.node_addr}:{NODE_PORT} did not answer in time (log: {self.log_path})",
                    _tail(self.log_path, getattr(self, "_log_offset", 0)),
                )
            time.sleep(0.1)

    def ssh_command(self, state: NodeState, *remote: str) -> list[str]:
        """A plain (non-multiplexed) key login to the node running ``remote``."""
        return [
            _tool("ssh"), "-F", "/dev/null", "-i", str(self.client_key), "-p", str(NODE_PORT),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ControlMaster=no", "-o", "ControlPath=none",
            "-o", "ConnectTimeout=5", f"root@{state.node_addr}", *remote,
        ]  # fmt: skip

    def _login_ok(self, state: NodeState) -> bool:
        if not self.known_hosts.exists():
            return False
        try:
            return _run(self.ssh_command(state, "true"), check=False, timeout=20).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def _self_check(self, state: NodeState, mirrors: dict[str, str]) -> None:
        """From inside the node: DNS works and the apt mirror and npm registry answer."""
        urls = [f"{mirrors[SUITE]}/dists/{SUITE}/Release", NPM_REGISTRY]
        out = _run(self.ssh_command(state, "python3", "-", *urls), check=False, timeout=90, input_text=SELF_CHECK)
        if out.returncode != 0:
            raise FreshNodeError("the node cannot reach its mirrors", (out.stderr or out.stdout).strip()[-1500:])

    def _write_inventory(self, state: NodeState) -> None:
        host = {
            "ansible_host": state.node_addr,
            "ansible_port": NODE_PORT,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
            ),
            "ansible_control_path_dir": str(self.cp_dir),
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        text = f"# Generated by tools/freshnode.py for the node in {self.root}; do not edit.\n" + yaml.safe_dump(
            {"all": {"children": {GROUP: {"hosts": {self.name: host}}}}},
            sort_keys=False, explicit_start=True, default_flow_style=False,
        )  # fmt: skip
        _atomic_write(self.inventory_path, text)

    # down -------------------------------------------------------------------
    def down(self, *, grace: float = 5.0) -> None:
        """Stop and remove everything ``up`` made (idempotent; fine after a half-done ``up``)."""
        if not self.root.is_dir():
            return
        with self._locked():
            self._down_locked(grace)

    def _netns_inode(self, netns: str) -> int | None:
        try:
            return os.stat(f"/run/netns/{netns}").st_ino
        except OSError:
            return None

    def _netns_members(self, netns: str) -> set[Proc]:
        """Every process whose network namespace is the node's (they can only be the node's)."""
        inode = self._netns_inode(netns)
        found: set[Proc] = set()
        if inode is None:
            return found
        for pid in _pids():
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino != inode:
                    continue
            except OSError:
                continue
            proc = proc_of(pid)
            if proc:
                found.add(proc)
        return found

    def _down_locked(self, grace: float = 5.0) -> None:
        state = self.load_state() or self.derived_state()
        problems: list[str] = []
        # 1. processes: the launcher, everything below it, anything else in the namespace,
        #    and Ansible's control masters to the node. One snapshot, then signals.
        roots: set[Proc] = set()
        launcher = self._launcher(state)
        if launcher:
            roots.add(launcher)
        roots |= self._netns_members(state.netns)
        procs = roots | descendants(roots) | LocalCluster(self.root, []).control_masters()
        popen = getattr(self, "_popen", None)
        survivors = terminate(procs, grace, popen.poll if popen else None)
        if survivors:
            problems.append("processes survived SIGKILL: " + ", ".join(str(p.pid) for p in sorted(survivors, key=str)))
        if self.cp_dir.is_dir():
            for sock in self.cp_dir.iterdir():
                if sock.is_socket():
                    sock.unlink(missing_ok=True)
        # 2. mounts left in the host's namespace (normally none: the node mounts privately).
        try:
            _unmount_all(self.rootfs)
        except FreshNodeError as exc:
            problems.append(exc.message)
        # 3. network: namespace (takes the veth pair with it), veth, nftables table.
        with self._global_lock():
            if self._netns_inode(state.netns) is not None or state.netns in _run(["ip", "netns", "list"], check=False).stdout:
                out = _run(["ip", "netns", "delete", state.netns], check=False)
                if out.returncode != 0:
                    problems.append(f"ip netns delete {state.netns}: {out.stderr.strip()}")
            # The kernel dismantles a namespace (and the veth pair with it) asynchronously.
            veth = Path(f"/sys/class/net/{state.veth_host}")
            deadline = time.monotonic() + 5.0
            while veth.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            if veth.exists():
                _run(["ip", "link", "delete", state.veth_host], check=False)
            if (
                shutil.which("nft", path=HOST_PATH)
                and _run(["nft", "list", "table", "ip", state.table], check=False).returncode == 0
            ):
                out = _run(["nft", "delete", "table", "ip", state.table], check=False)
                if out.returncode != 0:
                    problems.append(f"nft delete table ip {state.table}: {out.stderr.strip()}")
            if FORWARD_MARKER.exists() and not self._other_nodes():
                with contextlib.suppress(OSError):
                    IP_FORWARD.write_text(FORWARD_MARKER.read_text().strip() + "\n")
                    FORWARD_MARKER.unlink()
            self._release_netns_dir()
        # 4. files: the rootfs only once nothing is mounted in it.
        if not problems:
            _rmtree_checked(self.rootfs)
            for path in (self.state_path, self.known_hosts, self.inventory_path):
                path.unlink(missing_ok=True)
        if problems:
            raise FreshNodeError(f"down of {self.root} incomplete", "\n".join(problems))

    # status -----------------------------------------------------------------
    def status(self) -> dict[str, object]:
        state = self.load_state()
        if state is None:
            return {"root": str(self.root), "up": False, "state": None}
        launcher = self._launcher(state)
        login = bool(launcher) and self._login_ok(state)
        return {
            "root": str(self.root),
            "name": state.name,
            "address": state.node_addr,
            "netns": state.netns,
            "netns_exists": self._netns_inode(state.netns) is not None,
            "launcher_pid": launcher.pid if launcher else None,
            "ssh_login": login,
            "inventory": str(self.inventory_path),
            "up": bool(launcher) and login,
        }


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freshnode", description="A fresh debootstrapped Debian 12 node for specfleet.")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a fresh node (builds the rootfs cache first if needed)")
    down = sub.add_parser("down", help="stop the node and remove everything it used")
    status = sub.add_parser("status", help="show the node's state")
    cache = sub.add_parser("cache", help="build the debootstrap rootfs cache")
    for p in (up, down, status):
        p.add_argument("--root", type=Path, default=default_root(), help="node directory (default: %(default)s)")
    for p in (up, status):
        p.add_argument("--name", default="freshnode", help="inventory host name (default: %(default)s)")
    for p in (up, cache):
        p.add_argument("--cache-dir", type=Path, default=None, help=f"rootfs cache (default: {default_cache_dir()})")
        p.add_argument("--mirror", help="Debian mirror URL (default: the host's apt sources)")
    up.add_argument("--inventory", type=Path, help="also copy the inventory here")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node's sshd")
    up.add_argument(
        "--tmpfs-size", default=DEFAULT_TMPFS_SIZE, help="rootfs in a tmpfs of this size; 0 = on disk (default: %(default)s)"
    )
    cache.add_argument("--rebuild", action="store_true", help="rebuild even when a cache exists")
    args = parser.parse_args(argv)
    try:
        if args.command == "cache":
            print(ensure_cache(args.cache_dir, mirror=args.mirror, rebuild=args.rebuild))
        elif args.command == "up":
            node = FreshNode(args.root, name=args.name, cache_dir=args.cache_dir, mirror=args.mirror, tmpfs_size=args.tmpfs_size)
            inventory = node.up(timeout=args.timeout)
            if args.inventory:
                args.inventory.parent.mkdir(parents=True, exist_ok=True)
                _atomic_write(args.inventory.absolute(), inventory.read_text())
                inventory = args.inventory
            print(f"inventory: {inventory}")
            print(f"stop with: {sys.executable} {Path(__file__).resolve()} down --root {node.root}")
        elif args.command == "down":
            FreshNode(args.root).down()
            print(f"freshnode down: {Path(args.root).expanduser()}")
        else:
            info = FreshNode(args.root, name=args.name).status()
            print(json.dumps(info, indent=2))
            return 0 if info["up"] else 1
    except (ClusterError, ValueError, OSError, subprocess.SubprocessError) as exc:
        message = str(exc)
        print(f"freshnode {args.command}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
