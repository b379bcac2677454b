#!/usr/bin/env bash
# Every check CI runs: linters, playbook syntax, the whole pytest suite (unit tests and the
# integration tests that start real sshd worker nodes on loopback), then the bootstrap role's
# molecule scenario on a fresh debootstrapped Debian (scripts/test-molecule.sh, ~2-3 min).
# With arguments, they go to pytest and molecule is skipped (scripts/test.sh tests/unit -x);
# SPECFLEET_SKIP_MOLECULE=1 skips it too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
ruff check .
yamllint -s .
for playbook in dispatch.yml bootstrap.yml playbooks/*.yml; do
    ansible-playbook --syntax-check "$playbook" >/dev/null 2>&1 || ansible-playbook --syntax-check "$playbook"
done
pytest -n 2 "$@"
if [ "$#" -eq 0 ] && [ "${SPECFLEET_SKIP_MOLECULE:-0}" != 1 ]; then
    scripts/test-molecule.sh
fi
