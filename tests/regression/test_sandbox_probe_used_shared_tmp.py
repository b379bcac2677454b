"""Regression: the sandbox probe ran bwrap in $TMPDIR itself (default /tmp), a folder every process
shares. Whatever was there decided whether the controller could verify at all: a `.git` another
process created in /tmp and removed a moment later made bwrap fail ("Can't find source path
/tmp/.git"), and dispatch refused to verify with advice about user namespaces. The probe now runs
in an empty folder of its own."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CHECK = "from specfleet.land import sandbox; sandbox.check(); print('usable')"


@pytest.mark.parametrize("tmpdir", [
    "{tmp}/not-a-folder",   # $TMPDIR names nothing: the probe used to bind it and fail
    "{tmp}/with-git",       # $TMPDIR holds a .git of someone else's: never the probe's business
])
def test_the_sandbox_probe_does_not_depend_on_what_tmpdir_holds(tmp_path, tmpdir):
    (tmp_path / "with-git" / ".git" / "objects" / "info").mkdir(parents=True)
    (tmp_path / "with-git" / ".git" / "objects" / "info" / "alternates").write_text("/nonexistent/objects\n")
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "TMPDIR": tmpdir.format(tmp=tmp_path),
                                 "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0 and "usable" in result.stdout, result.stderr
