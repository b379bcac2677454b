#!/usr/bin/env bash
# The README's demo: three SSH worker nodes on loopback, the example project's repository,
# then the user's two commands (bootstrap, dispatch) against them.
#   scripts/demo.sh           run, then stop the nodes
#   scripts/demo.sh --keep    leave the nodes running (stop: .venv/bin/python tools/localcluster.py down)
# State goes to $SPECFLEET_HOME (default ~/.local/state/specfleet), never into the git tree.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1

export PATH="$PWD/.venv/bin:$PATH"
python tools/example_repo.py >/dev/null
python tools/localcluster.py up --inventory inventory/local/hosts.yml
if [ "$keep" -eq 0 ]; then
    trap 'python tools/localcluster.py down >/dev/null' EXIT
fi
ansible-playbook bootstrap.yml
# The agent runner is not built yet: each spec's job only says what it would hand to an
# agent. A separate database keeps the demo from marking the example specs done for real.
home="${SPECFLEET_HOME:-$HOME/.local/state/specfleet}"
export SPECFLEET_DB="$home/demo.db"
rm -f "$SPECFLEET_DB" "$SPECFLEET_DB-wal" "$SPECFLEET_DB-shm"
ansible-playbook dispatch.yml -e project=clawmarketing \
    -e 'specfleet_job_command=echo "would hand $SPECFLEET_TASK_ID to an agent, then run: $SPECFLEET_VERIFY"; sleep 1'
echo "STOPPED: the specs were scheduled and run as placeholder jobs; the coding-agent runner is not built yet."
