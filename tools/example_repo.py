"""Create the example project's git repository from ``examples/<name>/``.

``specs/clawmarketing/project.yml`` points at ``${SPECFLEET_HOME}/repos/clawmarketing``;
this makes that repository (one commit on ``main``, executable bits kept) so the demo,
the tests and the benchmarks start from the same real code. An existing repository is
left alone unless ``--force`` is given.

    python tools/example_repo.py [--name clawmarketing] [--dest DIR] [--force]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IDENTITY = {"GIT_AUTHOR_NAME": "specfleet example", "GIT_AUTHOR_EMAIL": "example@specfleet.invalid",
            "GIT_COMMITTER_NAME": "specfleet example", "GIT_COMMITTER_EMAIL": "example@specfleet.invalid"}


def default_destination(name: str) -> Path:
    home = Path(os.environ.get("SPECFLEET_HOME") or "~/.local/state/specfleet").expanduser()
    return home / "repos" / name


def create(name: str = "clawmarketing", dest: Path | None = None, force: bool = False) -> Path:
    """Copy ``examples/<name>`` to ``dest`` and commit it on ``main``; return ``dest``."""
    source = REPO_ROOT / "examples" / name
    if not source.is_dir():
        raise FileNotFoundError(f"no example named {name!r} in {source.parent}")
    dest = dest or default_destination(name)
    if (dest / ".git").exists() and not force:
        return dest
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc"))
    env = dict(os.environ, **IDENTITY)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", f"{name}: example project"]):
        subprocess.run(["git", "-C", str(dest), *args], check=True, env=env, capture_output=True)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="clawmarketing")
    parser.add_argument("--dest", type=Path)
    parser.add_argument("--force", action="store_true", help="recreate an existing repository")
    args = parser.parse_args(argv)
    try:
        print(create(args.name, args.dest, args.force))
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"example_repo: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
