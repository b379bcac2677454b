# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secret variables on the way to ansible-playbook: which they are, handed over by a pipe, scrubbed from what is written.

ansible-runner writes the environment and every event of a run under ``$SPECFLEET_HOME/runner``;
nothing there may hold the value of a secret (:func:`specfleet.ops.playbook.run` lists what
is written and what is done about each).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import yaml

from specfleet.ops.controller import REPO_ROOT

SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
SHORTEST_SCRUBBED = 8     # shorter values ("1", "true") would be "found" all over the output
EXECUTORS_FILE = REPO_ROOT / "inventory" / "shared" / "executors.yml"

# ansible-playbook's argv[0] under ansible-runner: reads the secret variables from the pipe
# SecretPipe made, adds them to its environment and becomes the real ansible-playbook.
LAUNCHER = ("import json, os, sys; fifo = open(os.environ.pop('SPECFLEET_SECRETS_FIFO'), 'rb'); "
            "os.environ.update(json.load(fifo)); fifo.close(); os.execv(sys.argv[1], sys.argv[1:])")


def declared_secret_names(path: Path = EXECUTORS_FILE) -> frozenset[str]:
    """Both sides of every executor's ``env_from_vars``: what agents get and the vault variable behind it."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return frozenset()
    names: set[str] = set()
    for definition in (data.get("specfleet_executors") or {}).values():
        for env, var in ((definition or {}).get("env_from_vars") or {}).items():
            names.update((str(env), str(var)))
    return frozenset(names)


# Variables ansible-runner may record in ``artifacts/<ident>/command``: they say where and
# how things run, never what unlocks them. Every other variable (an executor's key whose
# name no pattern catches, say) reaches ansible-playbook through the pipe as well.
RECORDABLE = re.compile(r"(PATH|HOME|USER|LOGNAME|SHELL|LANG|LC_[A-Z]+|TERM|TZ|TMPDIR|PWD|SHLVL|VIRTUAL_ENV"
                        r"|PYTHONPATH|SSH_AUTH_SOCK|ANSIBLE_[A-Z0-9_]+|SPECFLEET_[A-Z0-9_]+)\Z")


def recordable(name: str, declared: frozenset[str] = frozenset()) -> bool:
    """May ansible-runner write this variable's value to disk?"""
    return RECORDABLE.match(name) is not None and not is_secret(name, declared)


def is_secret(name: str, declared: frozenset[str] = frozenset()) -> bool:
    """The one definition of a secret variable (environment or extra var): its name ends in
    KEY, TOKEN, SECRET, PASSWORD, PASSWD or CREDENTIAL(S), or an executor declares it."""
    return name in declared or SECRET_NAME.search(name) is not None


class Redactor:
    """Replaces the values of secret variables with ``<NAME redacted>`` in what goes to disk.

    A value is looked for as itself and as it appears inside a JSON string (escaped), so
    event files and the ``command`` artifact stay valid JSON after a replacement.
    """

    def __init__(self, secrets: Mapping[str, str]):
        forms: dict[bytes, bytes] = {}
        for name, value in secrets.items():
            if len(value) < SHORTEST_SCRUBBED:
                continue
            mark = f"<{name} redacted>".encode()
            for form in (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
                with contextlib.suppress(UnicodeEncodeError):  # os.environ keeps undecodable bytes this way
                    forms.setdefault(form.encode("utf-8", "surrogateescape"), mark)
        # Longest first: a value that contains another is replaced whole.
        self.forms = sorted(forms.items(), key=lambda item: -len(item[0]))

    def scrub(self, data: bytes) -> bytes:
        for form, mark in self.forms:
            data = data.replace(form, mark)
        return data

    def event(self, event: dict) -> bool:
        """ansible-runner's event_handler: clean the event before it is written (True: write it)."""
        if self.forms:
            raw = json.dumps(event).encode()
            clean = self.scrub(raw)
            if clean != raw:
                data = json.loads(clean)
                event.clear()
                event.update(data)
        return True

    def tree(self, root: Path) -> list[Path]:
        """Scrub every file under ``root`` in place; -> the files that held a secret."""
        changed = []
        for path in sorted(root.rglob("*")) if self.forms and root.is_dir() else []:
            if path.is_symlink() or not path.is_file():
                continue
            try:
                raw = path.read_bytes()
                clean = self.scrub(raw)
                if clean != raw:
                    spare = path.with_name(path.name + ".scrub")
                    spare.write_bytes(clean)
                    os.chmod(spare, path.stat().st_mode & 0o777)
                    os.replace(spare, path)
                    changed.append(path)
            except OSError:
                continue
        return changed


class SecretPipe:
    """Hands secret variables to ansible-playbook through a FIFO, never through a file.

    ansible-runner records the environment it is given in ``artifacts/<ident>/command`` and
    offers no setting against it, so secrets are left out of that environment; LAUNCHER
    reads them from this pipe (ansible-runner hands an SSH key to ssh-agent the same way).
    The FIFO lives in a private temporary directory and holds no data once read.
    """

    def __init__(self, values: Mapping[str, str]):
        self.dir = tempfile.mkdtemp(prefix="specfleet-secrets-")
        self.path = os.path.join(self.dir, "fifo")
        os.mkfifo(self.path, 0o600)
        self._thread = threading.Thread(target=self._write, args=(json.dumps(dict(values)).encode(),), daemon=True)
        self._thread.start()

    def _write(self, data: bytes) -> None:
        with open(self.path, "wb") as fifo:  # blocks until the launcher opens it
            fifo.write(data)

    def close(self) -> None:
        if self._thread.is_alive():  # the launcher never ran: open the other end so the writer ends
            reader = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            self._thread.join(timeout=5)
            os.close(reader)
        shutil.rmtree(self.dir, ignore_errors=True)

