#!/usr/bin/env bash
# Every check CI runs: linters, playbook syntax, then the whole pytest suite (unit tests
# and the integration tests that start real sshd worker nodes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
yamllint -s .
for playbook in dispatch.yml bootstrap.yml playbooks/*.yml; do
    ansible-playbook --syntax-check "$playbook" >/dev/null 2>&1 || ansible-playbook --syntax-check "$playbook"
done
pytest -n 2 "$@"
