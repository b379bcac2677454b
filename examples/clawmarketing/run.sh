#!/usr/bin/env sh
# One-command entry point. Usage: ./run.sh test [extra pytest args]
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

case "${1:-help}" in
  test)
    shift
    exec "$PYTHON" -m pytest -q "$@"
    ;;
  *)
    echo "usage: ./run.sh test [pytest args]" >&2
    echo "  PYTHON=/path/to/python ./run.sh test   # use another interpreter" >&2
    exit 2
    ;;
esac
