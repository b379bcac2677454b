"""Who runs the agent (agents.AgentUser): never root, and only through folders it may pass."""
from __future__ import annotations

import os
import subprocess

import pytest

from specfleet.node import agents
from tests.conftest import AGENT_USER


@pytest.mark.parametrize("name,problem", [
    (None, "specfleet_agent_user is not set"),
    ("root", "agents never run as root"),
    ("no-such-user-here", "does not exist on this node"),
])
def test_a_runner_started_as_root_refuses_to_run_agents_as_root(name, problem):
    if os.geteuid() != 0:  # a runner that is not root cannot switch: it runs agents as itself
        user = agents.AgentUser(name)
        assert not user.switch and user.uid == os.geteuid() and user.preexec() is None
        return
    with pytest.raises(PermissionError, match=problem):
        agents.AgentUser(name)


@pytest.mark.parametrize("mode,acl,blocked", [
    (0o700, None, True),                      # root's private folder: the agent cannot pass
    (0o701, None, False),                     # search permission for everyone
    (0o700, f"u:{AGENT_USER}:x", False),      # bootstrap's way: an ACL entry for the agent user alone
    (0o700, f"u:{AGENT_USER}:r", True),       # read without search is not passing
    (0o700, "u:nobody:x", True),              # someone else's entry
])
@pytest.mark.skipif(os.geteuid() != 0, reason="becoming the agent user to check what it can reach needs root "
                                                "(scripts/test.sh runs as root; a runner that is not root never switches)")
def test_the_agent_user_can_reach_its_workspace_only_through_folders_it_may_pass(tmp_path, mode, acl, blocked):
    outer = tmp_path / "outer"
    inner = outer / "work" / "ws"
    inner.mkdir(parents=True)
    outer.chmod(mode)
    (outer / "work").chmod(0o711)
    if acl:
        subprocess.run(["setfacl", "-m", acl, str(outer)], check=True)
    user = agents.AgentUser(AGENT_USER)
    assert user.can_reach(str(inner)) == (str(outer) if blocked else None)
    # The kernel agrees with the reading of the mode bits and the ACL.
    passed = subprocess.run(["runuser", "-u", AGENT_USER, "--", "test", "-x", str(inner)]).returncode == 0
    assert passed is not blocked
