# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who runs the agent: never root, and only through folders it may pass."""
from __future__ import annotations

import os
import pwd


class AgentUser:
    """The unprivileged user agents and verify commands run as.

    A runner started as root (e.g. a node whose login user is root) switches to ``name``
    for every command of the agent's; it refuses to run agents as root. A runner started
    as another user runs them as itself (production logs in as the agent user).
    """

    def __init__(self, name: str | None):
        self.switch = os.geteuid() == 0
        if not self.switch:
            entry = pwd.getpwuid(os.geteuid())
        else:
            if not name or name == "root":
                raise PermissionError("agents never run as root: this runner runs as root, and specfleet_agent_user "
                                      f"is {name or 'not set'}; set it to the unprivileged user bootstrap creates")
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise PermissionError(f"the agent user {name!r} does not exist on this node (run bootstrap.yml "
                                      f"for it, or scripts/setup.sh for the local cluster)") from None
            if entry.pw_uid == 0:
                raise PermissionError(f"the agent user {name!r} has uid 0: agents never run as root")
        self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid

    def preexec(self):
        """For ``subprocess.Popen(preexec_fn=...)``: drop to the agent user (None: already it)."""
        if not self.switch:
            return None
        uid, gid = self.uid, self.gid

        def drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        return drop

    def own(self, *paths: str) -> None:
        """Give ``paths`` (recursively, links not followed) to the agent user."""
        if not self.switch:
            return
        for top in paths:
            os.lchown(top, self.uid, self.gid)
            for folder, dirs, files in os.walk(top):
                for name in dirs + files:
                    os.lchown(os.path.join(folder, name), self.uid, self.gid)

    def can_reach(self, path: str) -> str | None:
        """The first folder on the way to ``path`` the agent user may not pass, or None."""
        if not self.switch:
            return None
        parts = os.path.abspath(path).split(os.sep)
        for index in range(1, len(parts)):
            folder = os.sep.join(parts[:index]) or os.sep
            info = os.stat(folder)
            mode = info.st_mode
            allowed = (mode & 0o001 or (info.st_uid == self.uid and mode & 0o100)
                       or (info.st_gid == self.gid and mode & 0o010) or _acl_allows(folder, self.uid))
            if not allowed:
                return folder
        return None


def _acl_allows(folder: str, uid: int) -> bool:
    """Whether a POSIX ACL on ``folder`` grants ``uid`` search permission (bootstrap's way)."""
    try:
        raw = os.getxattr(folder, "system.posix_acl_access")
    except OSError:
        return False
    # struct posix_acl_xattr: u32 version, then entries of (u16 tag, u16 perm, u32 id); tag 2 = ACL_USER.
    mask_ok, user_ok = True, False
    for offset in range(4, len(raw) - 7, 8):
        tag = int.from_bytes(raw[offset:offset + 2], "little")
        perm = int.from_bytes(raw[offset + 2:offset + 4], "little")
        ident = int.from_bytes(raw[offset + 4:offset + 8], "little")
        if tag == 2 and ident == uid:
            user_ok = bool(perm & 1)
        elif tag == 0x10:  # ACL_MASK
            mask_ok = bool(perm & 1)
    return user_ok and mask_ok
