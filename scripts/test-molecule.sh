#!/usr/bin/env bash
# roles/specfleet_node's molecule scenario against a genuinely fresh Debian 12 machine:
# tools/freshnode.py debootstraps a minimal bookworm once (cached), then every run unpacks a
# pristine copy into its own network namespace with its own sshd, and molecule runs
# destroy, syntax, create, converge, idempotence, verify, destroy over real SSH.
#   scripts/test-molecule.sh              molecule test
#   scripts/test-molecule.sh converge     any other molecule command (create, verify, login, destroy...)
# Needs root (network namespaces, chroot, nftables) on Debian 12, after scripts/setup.sh --dev.
# Reaches the host's Debian mirror and the npm registry from the node.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "test-molecule: needs root (network namespaces, chroot, nftables)" >&2; exit 1; }
    exec sudo --preserve-env=SPECFLEET_CACHE "$0" "$@"
fi
start=$SECONDS

# debootstrap builds the node's rootfs, nftables gives it its own firewall table, zstd
# compresses the rootfs cache; the rest is already there after scripts/setup.sh.
packages=(debootstrap nftables zstd iproute2 openssh-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test-molecule: installing ${missing[*]}"
    apt-get update -qq || echo "test-molecule: apt-get update reported errors; continuing with what it fetched" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || scripts/setup.sh --dev
if ! .venv/bin/python -c "import molecule" 2>/dev/null; then
    echo "test-molecule: installing requirements-dev.txt (molecule) into .venv"
    .venv/bin/python -m pip install -q -r requirements-dev.txt
fi
export PATH="$PWD/.venv/bin:$PATH"

# The rootfs cache: built once (about a minute), reused by every later run.
python tools/freshnode.py cache

status=0
(cd roles/specfleet_node && molecule "${@:-test}") || status=$?
echo "test-molecule: molecule ${*:-test} exited $status after $((SECONDS - start)) s"
exit "$status"
