#!/usr/bin/env bash
# Set up specfleet on Debian 12: system packages, then a virtualenv in .venv.
#   scripts/setup.sh          runtime (ansible-core, jsonschema, PyYAML)
#   scripts/setup.sh --dev    plus pytest, ruff, yamllint
# Safe to run again. Uses sudo for apt when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
# python3-pytest: the example's verify runs the system python3's pytest, on the local worker nodes (this
# machine) and in the controller's sandbox (never specfleet's venv).
# bubblewrap: the controller runs verify and the project's tests (code agents wrote) in its sandbox.
# cron, logrotate: the scheduling role (playbooks/schedule.yml) writes cron entries and a logrotate config.
# acl: the local cluster's nodes log in as root and run agents as an unprivileged user, which
# bootstrap lets pass the folders above each node's work root with an ACL entry.
packages=(git openssh-client openssh-server python3 python3-venv python3-pytest sqlite3 cron logrotate bubblewrap acl)
# Node.js runs the npm agent CLIs the local cluster's nodes (this machine) use; Debian's nodejs
# comes without npm, NodeSource's includes it.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
# --dev: the report's browser test renders the HTML in headless Chromium.
[ "$dev" -eq 1 ] && packages+=(chromium fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # A third-party source that is unreachable must not stop the Debian packages.
    $sudo apt-get update -qq || echo "setup: apt-get update reported errors; continuing with what it fetched" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The local cluster's agent user (inventory/local: specfleet_agent_user). Agents never run as
# root; a node logged in as root runs them as this user. No login, no home of its own (each
# attempt gives it a private HOME).
if ! id -u specfleet-agent >/dev/null 2>&1; then
    $sudo useradd --system --user-group --shell /usr/sbin/nologin --home-dir /nonexistent --no-create-home \
        specfleet-agent
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "$dev" -eq 1 ]; then
    .venv/bin/python -m pip install -q -r requirements-dev.txt
else
    .venv/bin/python -m pip install -q -r requirements.txt
fi
.venv/bin/ansible-galaxy collection install -r requirements.yml >/dev/null
# The core (specfleet/) and the Ansible glue (ansible_specfleet/) as an editable install: the
# plugins, the `specfleet` command and the tests import them from this checkout.
# setuptools warns about every editable install; the output is shown only when it fails.
log=$(mktemp)
.venv/bin/python -m pip install -q --no-deps -e . >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
rm -f "$log"
# The pinned agent CLIs (inventory/shared/executors.yml), installed as bootstrap installs them
# on a node: the local cluster's nodes are this machine. Only root may install them there.
if [ "$(id -u)" -eq 0 ]; then
    echo "setup: installing the pinned agent CLIs (playbooks/agent_clis.yml)"
    ANSIBLE_NOCOLOR=1 .venv/bin/ansible-playbook playbooks/agent_clis.yml >/tmp/specfleet-agent-clis.log 2>&1 || {
        cat /tmp/specfleet-agent-clis.log >&2; exit 1; }
else
    echo "setup: not root: install the agent CLIs yourself (see README, Agent CLIs) or run bootstrap.yml" >&2
fi
echo "setup: ready ($(.venv/bin/ansible --version | sed -n 1p))"
