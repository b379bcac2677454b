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
# The demo starts over each time: a fresh example repository (no integration branch from
# an earlier demo) to go with the fresh demo database below.
python tools/example_repo.py --force >/dev/null
python tools/localcluster.py up --inventory inventory/local/hosts.yml
if [ "$keep" -eq 0 ]; then
    trap 'python tools/localcluster.py down >/dev/null' EXIT
fi
# A separate database keeps the demo from marking the example specs done in the main one.
home="${SPECFLEET_HOME:-$HOME/.local/state/specfleet}"
export SPECFLEET_DB="$home/demo.db"
rm -f "$SPECFLEET_DB" "$SPECFLEET_DB-wal" "$SPECFLEET_DB-shm"
# Bootstrap admits the nodes in the store; the guardian prints the fleet's health table.
ansible-playbook bootstrap.yml
ansible-playbook playbooks/health.yml
executor=replay
extra=()
if [ -n "${ANTHROPIC_API_KEY:-}" ]; then
    executor=claude
    # An Anthropic-compatible gateway and model of the user's (ANTHROPIC_BASE_URL, ANTHROPIC_MODEL):
    # the agent's environment is its own, so the executor definition must name them.
    overrides="$home/demo-executors.json"
    python3 - "$overrides" <<'PY'
import json, os, sys, yaml
executors = yaml.safe_load(open("inventory/shared/executors.yml"))["specfleet_executors"]
claude = executors["claude"]
claude["base_url"] = os.environ.get("ANTHROPIC_BASE_URL") or claude.get("base_url")
claude["model"] = os.environ.get("ANTHROPIC_MODEL") or claude["model"]
claude = {k: v for k, v in claude.items() if v is not None}
json.dump({"specfleet_executors": dict(executors, claude=claude)}, open(sys.argv[1], "w"))
print(f"demo: ANTHROPIC_API_KEY is set: every spec runs with Claude Code (executor claude, model "
      f"{claude['model']}, endpoint {claude.get('base_url') or 'Anthropic'})")
PY
    extra=(-e "@$overrides")
else
    echo "demo: no model key: executor 'replay' applies recorded agent sessions; NO MODEL RUNS"
fi
ansible-playbook dispatch.yml -e project=clawmarketing -e specfleet_executor=$executor "${extra[@]}"
# The demo worked only if every example spec merged (dispatch fails otherwise; this says it plainly).
expected=$(find specs/clawmarketing -maxdepth 1 -name 'S[0-9]*.md' | wc -l)
specfleet status clawmarketing --json | python3 -c '
import json, sys
counts = json.load(sys.stdin)["projects"]["clawmarketing"]
merged, expected = counts.get("merged", 0), int(sys.argv[1])
print(f"demo: {merged} of {expected} example specs merged")
sys.exit(0 if merged == expected else 1)' "$expected"
repo="$home/repos/clawmarketing"
echo
echo "Results: branches specfleet/clawmarketing/<task id> in $repo"
git -C "$repo" for-each-ref --format='  %(refname:short) %(objectname:short) %(subject)' 'refs/heads/specfleet/'
echo "Merged and tested on specfleet/clawmarketing/integration; main waits for your review:"
echo "  SPECFLEET_DB=$SPECFLEET_DB ansible-playbook playbooks/review.yml -e project=clawmarketing [-e approve=all]"
echo "Logs, prompts, patches and status of every attempt: $home/artifacts/clawmarketing/"
