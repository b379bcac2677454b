# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node side of one attempt: workspace, agent rounds, verify, gates, commit, bundle.

The controller copies this file, ``agents.py`` and ``paths.py`` into the attempt's run directory with
``job.json`` (everything the attempt needs, no secrets), ``prompt.md`` and, when an
executor needs keys, ``secrets.json`` (read once and deleted). The job wrapper of
``jobs.py`` runs ``python3 runner.py run <run dir>`` detached from SSH; this module only
uses the Python standard library, so a node needs nothing but ``python3`` and ``git``.

What it leaves in the run directory:

====================  ==============================================================
``status.json``       state (running, succeeded, failed, killed), phase, error,
                      rounds, executor that produced the result, commit, timings.
                      Always finalised: by the runner, by its SIGTERM handler, or by
                      ``runner.py finalize`` which the wrapper runs after a SIGKILL.
``heartbeat``         node time, rewritten every ``heartbeat_s`` (job.json, default 10 s) while the
                      runner lives; the controller's waiter reads its age (stall detection)
``runner_pid``        the runner; ``child_pgids`` the process groups of its children
``round-N.prompt.md`` the prompt of each agent round (feedback appended)
``round-N.agent.log`` the agent's output (secrets redacted), one per executor try
``round-N.verify.log`` the verify command's output
``round-N.gates.json`` the gate results of the round
``changes.patch``     the diff against the start of the workspace (also on failure)
``result.bundle``     the committed branch, for the controller (bundle transport)
====================  ==============================================================

Every ``modifies`` path check uses :func:`paths.covers`, the same rule as the locks.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

try:  # inside the controller's package
    from . import agents
    from .paths import covers
except ImportError:  # copied next to this file on a node
    import agents  # type: ignore[no-redef]
    from paths import covers  # type: ignore[no-redef]

# The files an attempt ships to the node (this module imports only these and the stdlib).
FILES = ("runner.py", "paths.py", "agents.py")
KILL_GRACE_S = 10
HEARTBEAT_S = 10
TAIL_LINES = 40
TAIL_BYTES = 8192
FEEDBACK_BYTES = 6000

STUB_PATTERNS = (
    (re.compile(r"\b(?:TODO|FIXME|XXX)\b"), "TODO/FIXME/XXX marker"),
    (re.compile(r"placeholder(?!\s*[=:]|[\"']\s*[=:])", re.I), "placeholder"),
    (re.compile(r"\bNotImplemented(?:Error)?\b"), "NotImplementedError"),
    (re.compile(r"\b(?:todo|unimplemented)!\s*\("), "todo!/unimplemented! macro"),
    (re.compile(r"not (?:yet )?implemented", re.I), "'not implemented'"),
    (re.compile(r"^\s*(?:pass|\.\.\.)\s*#\s*(?:stub|later)\b", re.I), "stub body"),
)
SKIP_PATTERNS = re.compile(
    r"@pytest\.mark\.(?:skip|skipif|xfail)\b|\bpytest\.(?:skip|xfail)\s*\(|@unittest\.(?:skip|expectedFailure)"
    r"|\bself\.skipTest\s*\(|\b(?:it|test|describe)\.(?:skip|todo)\s*\(|\bx(?:it|describe|test)\s*\("
    r"|@Disabled\b|@Ignore\b|\bt\.Skip(?:f|Now)?\s*\(|#\[ignore\]")
TEST_PATH = re.compile(
    r"(?:^|/)(?:tests?|__tests__|spec)/|(?:^|/)test_[^/]*\.py$|_test\.(?:py|go)$|\.(?:test|spec)\.[cm]?[jt]sx?$"
    r"|(?:^|/)conftest\.py$|Test\.java$|_spec\.rb$")
# "the verify command actually ran tests": a runner's own summary with a count > 0.
TEST_COUNTS = (
    re.compile(r"\b(\d+) passed\b"),                 # pytest, jest ("Tests: 3 passed"), vitest
    re.compile(r"^Ran (\d+) tests? in ", re.M),      # unittest
    re.compile(r"\b(\d+) passing\b"),                # mocha
    re.compile(r"test result: ok\. (\d+) passed"),   # cargo
    re.compile(r"^ok\s+\S+\s+[\d.]+s", re.M),        # go test (a package with tests)
    re.compile(r"\b(\d+) examples?, 0 failures"),    # rspec
    re.compile(r"Tests run: (\d+)"),                 # maven/junit
)
DEFAULT_EXCLUDES = ("__pycache__/", "*.pyc", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/", "node_modules/",
                    ".venv/", ".tox/", "*.egg-info/", ".coverage", "coverage/", "dist/", "build/")


class RunnerError(Exception):
    """A failure with a message for the status file, ``phase`` says where."""


class InfrastructureError(RunnerError):
    """The node, not the spec, failed (e.g. its mirror lacks the start commit): no attempt is charged."""


def now() -> float:
    return time.time()


def write_atomic(path: str, text: str, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def tail(text: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    return "\n".join(text[-limit:].splitlines()[-lines:])


class Redactor:
    """Replaces every secret value with ``***`` (values under 4 characters are too short to find safely)."""

    def __init__(self, secrets: list[str]):
        self.values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text

    def bytes(self, data: bytes) -> bytes:
        for value in self.values:
            data = data.replace(value.encode(), b"***")
        return data


@dataclass
class Executor:
    """One executor of the chain as the controller shipped it (see executors.runner_chain)."""
    name: str
    kind: str = "cli"                         # cli | replay
    cli: str = "custom"                       # the dialect: claude, codex, opencode, gemini, aider, custom
    command: list = field(default_factory=list)
    prompt: str = "stdin"                     # stdin | argument | file (custom executors)
    model: str | None = None
    base_url: str | None = None
    api: str | None = None
    key_env: str | None = None
    max_retries: int = 2
    args: list = field(default_factory=list)
    env: dict = field(default_factory=dict)
    secret_env: list = field(default_factory=list)
    rate_limit_patterns: list = field(default_factory=list)
    rate_limit_grace_s: float = 45.0          # a run still going this long after a rate-limit line is stopped
    backoff_s: float = 30.0
    timeout_s: int = 3600
    prices: dict = field(default_factory=dict)  # USD per million tokens: {"input": x, "output": y}

    @classmethod
    def from_dict(cls, data: dict) -> Executor:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def dialect(self) -> agents.Dialect:
        return agents.dialect(self.cli)

    @property
    def settings(self) -> dict:
        return {"cli": self.cli, "model": self.model, "base_url": self.base_url, "api": self.api,
                "key_env": self.key_env, "max_retries": self.max_retries, "args": list(self.args),
                "command": list(self.command), "prompt": self.prompt}

    @property
    def prompt_mode(self) -> str:
        return self.prompt if self.cli == "custom" else self.dialect.prompt

    def argv(self, prompt_text: str, prompt_file: str) -> list[str]:
        """The command with the prompt placed as the CLI documents it."""
        return self.dialect.argv(self.settings, prompt_text, prompt_file)

    def rate_limit_line(self, output: str) -> str | None:
        return agents.rate_limit_line(output, self.rate_limit_patterns)

    def read(self, output: str, rc: int, timed_out: bool) -> dict:
        """What the CLI said: usage (cost from the inventory's prices when the CLI gives none), rate limit, error."""
        try:
            said = self.dialect.read(output, rc, timed_out)
        except Exception as exc:  # a CLI changed its output: say so, never lose the round over it
            said = {"usage": None, "rate_limited": False, "error": f"could not read {self.cli}'s output: {exc!r}"}
        # A dialect reads its CLI's structured output; a custom CLI's evidence is its error lines,
        # and only when it failed: one that ended well has no rate limit, whatever its log says.
        if self.cli == "custom" and not said.get("rate_limited") and (rc != 0 or timed_out):
            line = self.rate_limit_line(tail(output, 80, 32768))
            if line:
                said.update(rate_limited=True, error=said.get("error") or line)
        spent = said.get("usage") or None
        if spent is not None:
            spent = dict(spent)
            spent.setdefault("model", self.model)
            if spent.get("model") is None:
                spent["model"] = self.model
            if spent.get("cost_usd") is None and self.prices and spent.get("input_tokens") is not None:
                spent["cost_usd"] = round(
                    (float(spent.get("input_tokens") or 0) * float(self.prices.get("input", 0))
                     + float(spent.get("output_tokens") or 0) * float(self.prices.get("output", 0))) / 1e6, 6)
            spent["cost_source"] = "cli" if (said.get("usage") or {}).get("cost_usd") is not None else (
                "prices" if spent.get("cost_usd") is not None else None)
        said["usage"] = spent
        return said


# -- diff analysis (also used by tests and, later, by the controller's verify stage) ------

@dataclass
class Change:
    status: str          # A, M, D, R, C, T
    path: str
    old_path: str | None = None


def parse_name_status(raw: str) -> list[Change]:
    """``git diff --name-status -z`` output -> changes (renames keep both paths)."""
    parts = raw.split("\x00")
    changes, index = [], 0
    while index < len(parts) and parts[index]:
        status = parts[index]
        if status[0] in "RC":
            changes.append(Change(status[0], parts[index + 2], parts[index + 1]))
            index += 3
        else:
            changes.append(Change(status[0], parts[index + 1]))
            index += 2
    return changes


def added_lines(unified_diff: str) -> dict[str, list[tuple[int, str]]]:
    """Added lines per file, with their line numbers in the new file, from ``git diff -U0``."""
    result: dict[str, list[tuple[int, str]]] = {}
    current = None
    line_no = 0
    for line in unified_diff.splitlines():
        if line.startswith("+++ "):
            target = line[4:]
            current = target[2:] if target.startswith("b/") else None
            if current is not None:
                result.setdefault(current, [])
        elif line.startswith("@@"):
            match = re.search(r"\+(\d+)", line)
            line_no = int(match.group(1)) if match else 0
        elif line.startswith("+") and current is not None:
            result[current].append((line_no, line[1:]))
            line_no += 1
    return result


def is_test_path(path: str, extra: list[str] | tuple[str, ...] = ()) -> bool:
    return bool(TEST_PATH.search(path)) or any(covers(p, path) for p in extra)


def tests_counted(output: str) -> int:
    """How many tests the output says ran (0: no recognised test summary)."""
    if re.search(r"\bno tests ran\b|collected 0 items", output):
        return 0
    # Per runner, its summaries add up (several test commands); runners overlap, so take the largest.
    best = 0
    for pattern in TEST_COUNTS:
        best = max(best, sum(int(m.group(1)) if m.groups() else 1 for m in pattern.finditer(output)))
    return best


def run_gates(changes: list[Change], added: dict[str, list[tuple[int, str]]], modifies: list[str],
              test_paths: list[str], verify_output: str | None, require_tests: bool = True) -> list[dict]:
    """The gates of one round, in order; each ``{"gate", "ok", "detail"}``. Fail closed."""
    gates = []

    def gate(name: str, problems: list[str], ok_detail: str) -> None:
        gates.append({"gate": name, "ok": not problems, "detail": "; ".join(problems[:20]) if problems else ok_detail,
                      "problems": problems})

    gate("diff", [] if changes else ["the agent changed nothing (empty diff against the base)"],
         f"{len(changes)} files changed")
    stubs = []
    for path, lines in sorted(added.items()):
        for number, text in lines:
            for pattern, label in STUB_PATTERNS:
                if pattern.search(text):
                    stubs.append(f"{path}:{number}: {label}: {text.strip()[:120]}")
                    break
    gate("stubs", stubs, "no TODO/FIXME/placeholder/stub in added lines")
    outside = []
    for change in changes:
        for path in filter(None, (change.path, change.old_path)):
            if not any(covers(m, path) for m in modifies) and not any(covers(t, path) for t in test_paths):
                outside.append(path)
    gate("scope", [f"{p} is outside modifies" for p in sorted(set(outside))],
         "every changed path is within modifies")
    weakened = [f"{c.old_path or c.path} deleted (a test file)" for c in changes
                if c.status in "DR" and is_test_path(c.old_path or c.path, test_paths)
                and not (c.status == "R" and is_test_path(c.path, test_paths))]
    for path, lines in sorted(added.items()):
        for number, text in lines:
            if SKIP_PATTERNS.search(text) and (is_test_path(path, test_paths) or "test" in text.lower()):
                weakened.append(f"{path}:{number}: test skipped or disabled: {text.strip()[:120]}")
    gate("tests_kept", weakened, "no test deleted, skipped or disabled")
    if verify_output is not None and require_tests:
        count = tests_counted(verify_output)
        gate("tests_ran", [] if count > 0 else ["the verify command ran no tests (no test summary with a count > 0)"],
             f"verify ran {count} tests")
    return gates


# -- the node's credentials file and the runner's version ------------------------------

CREDENTIAL_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def read_credentials(path: str) -> dict[str, str]:
    """``NAME='value'`` lines of the bootstrap's credentials file (shell quoting); {} if absent."""
    import shlex
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        match = CREDENTIAL_LINE.match(line.strip())
        if match:
            try:
                words = shlex.split(match.group(2))
            except ValueError:
                continue
            found[match.group(1)] = words[0] if len(words) == 1 else ""
    return found


def runner_version(folder: str | None = None) -> str:
    """A fingerprint of the runner's files (:data:`FILES`): equal files, equal version."""
    import hashlib
    folder = folder or os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in FILES:
        with open(os.path.join(folder, name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:12]


# -- the attempt ------------------------------------------------------------------------

class Attempt:
    def __init__(self, run_dir: str):
        self.run_dir = os.path.abspath(run_dir)
        self.secrets = self._load_secrets()       # first: the file must go whatever else fails
        with open(self.path("job.json"), encoding="utf-8") as handle:
            self.job = json.load(handle)
        self.notes: list[str] = []
        self._node_secrets()
        self.redact = Redactor([v for env in self.secrets.values() for v in env.values()])
        self.status: dict = {"state": "running", "phase": "starting", "task_id": self.job["task_id"],
                             "project": self.job["project"], "attempt": self.job["attempt"],
                             "run_id": self.job["run_id"], "pid": os.getpid(), "pgid": os.getpgid(0),
                             "started_at": now(), "rounds": [], "executor": None, "final": False,
                             "notes": list(self.notes)}
        self.children: set[int] = set()
        self.lock = threading.RLock()   # the SIGTERM handler may save while the main thread is saving
        self.workspace = os.path.expanduser(self.job["workspace"])
        self.agent: agents.AgentUser | None = None
        self.start_commit: str | None = None

    def path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def _node_secrets(self) -> None:
        """Keys the controller did not ship come from the node's credentials file (bootstrap wrote it).

        A fallback executor whose key is not there is left out of the chain; the first one
        cannot be, and the attempt fails naming the variable and the file.
        """
        wanted = [e for e in self.job["executors"] if e.get("node_secret_env")]
        if not wanted:
            return
        name = os.path.expanduser(self.job.get("credentials_file") or "")
        found = read_credentials(name)
        kept = []
        for index, executor in enumerate(self.job["executors"]):
            needs = executor.get("node_secret_env") or {}
            missing = sorted(var for var in needs.values() if not found.get(var))
            if missing:
                text = (f"executor {executor['name']} needs {', '.join(missing)}, which neither the controller's "
                        f"vault nor {name or 'a credentials file'} on this node holds (run bootstrap.yml --tags "
                        f"credentials for this node)")
                if index == 0:
                    raise RuntimeError(text)
                self.notes.append(text + ": left out of the fallback chain")
                continue
            self.secrets.setdefault(executor["name"], {}).update({env: found[var] for env, var in needs.items()})
            kept.append(executor)
        self.job["executors"] = kept

    def _load_secrets(self) -> dict[str, dict[str, str]]:
        name = self.path("secrets.json")
        try:
            with open(name, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return {}
        finally:
            if os.path.exists(name):
                os.unlink(name)
        return {str(name): {str(k): str(v) for k, v in env.items()} for name, env in data.items()}

    # status -------------------------------------------------------------------------

    def save(self, **changes) -> None:
        with self.lock:
            self.status.update(changes)
            self.status["updated_at"] = now()
            write_atomic(self.path("status.json"), self.redact(json.dumps(self.status, indent=1, sort_keys=True)))

    def finalise(self, state: str, error: str | None = None, exit_code: int | None = None) -> None:
        """The final status, with the runner's exit code (0 succeeded, 1 failed, 128+N killed by signal N)."""
        if self.status.get("final"):
            return
        ended = now()
        code = exit_code if exit_code is not None else (0 if state == "succeeded" else 1)
        self.save(usage=sum_usage(self.status.get("rounds") or []), state=state, exit_code=code,
                  error=self.redact(error) if error else None, ended_at=ended,
                  duration_s=round(ended - self.status["started_at"], 3), final=True)

    def heartbeat(self) -> None:
        while not self.status.get("final"):
            write_atomic(self.path("heartbeat"), f"{now():.3f}\n", 0o644)
            time.sleep(float(self.job.get("heartbeat_s") or HEARTBEAT_S))

    # processes ----------------------------------------------------------------------

    def _record_children(self) -> None:
        write_atomic(self.path("child_pgids"), "".join(f"{p}\n" for p in sorted(self.children)), 0o644)

    def run_process(self, argv: list[str], log_name: str, timeout_s: float, stdin_path: str | None = None,
                    env: dict | None = None, watch: Executor | None = None) -> tuple[int, str, bool, str | None]:
        """Run as the agent user in its own process group; -> (rc, output, timed_out, rate-limit line).

        On timeout the whole group is killed. ``watch``: an executor whose output is read
        while it runs; a run still going ``rate_limit_grace_s`` after a rate-limit error line
        is stopped (the CLI's own retries would hold the fallback back).
        """
        log_path = self.path(log_name)
        raw_path = log_path + ".raw"
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        started = time.monotonic()
        limited_line, limited_at, stopped = None, None, False
        try:
            with open(raw_path, "wb") as out:
                proc = subprocess.Popen(argv, cwd=self.workspace, stdin=stdin, stdout=out, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True, preexec_fn=self.agent.preexec())
                self.children.add(proc.pid)
                self._record_children()
                timed_out = False
                seen = 0
                deadline = started + timeout_s
                while True:
                    try:
                        proc.wait(timeout=1.0 if watch else max(0.0, deadline - time.monotonic()))
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    moment = time.monotonic()
                    if watch and limited_line is None:
                        with open(raw_path, "rb") as handle:
                            handle.seek(max(0, seen - 4096))
                            fresh = handle.read(1 << 20)
                        seen += max(0, len(fresh) - min(seen, 4096))
                        limited_line = watch.dialect.retrying(self.redact(fresh.decode("utf-8", "replace")),
                                                              watch.rate_limit_patterns)
                        limited_at = moment if limited_line else None
                    if moment >= deadline or (limited_at and moment - limited_at >= watch.rate_limit_grace_s):
                        timed_out = moment >= deadline
                        stopped = not timed_out
                        kill_group(proc.pid)
                        proc.wait()
                        break
                # Children the command left behind in its group die with it.
                kill_group(proc.pid, grace=0)
                self.children.discard(proc.pid)
                self._record_children()
        finally:
            if stdin_path:
                stdin.close()
        with open(raw_path, "rb") as handle:
            output = self.redact(handle.read().decode("utf-8", "replace"))
        os.unlink(raw_path)
        elapsed = time.monotonic() - started
        why = " (timed out)" if timed_out else " (stopped: still retrying a rate limit)" if stopped else ""
        write_atomic(log_path, output + f"\n[specfleet] exit {proc.returncode}{why} after {elapsed:.1f} s\n", 0o644)
        return (124 if timed_out else proc.returncode), output, timed_out, (limited_line if stopped else None)

    def clean_env(self, home: str) -> dict:
        """What an agent or verify command sees: nothing of the runner's own environment but PATH and locale."""
        env = {"PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin", "HOME": home, "USER": self.agent.name,
               "LOGNAME": self.agent.name, "LANG": os.environ.get("LANG") or "C.UTF-8", "TERM": "dumb", "NO_COLOR": "1",
               "CI": "1", "TMPDIR": os.path.join(home, "tmp"), "XDG_CONFIG_HOME": os.path.join(home, ".config"),
               "XDG_CACHE_HOME": os.path.join(home, ".cache"), "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
               "XDG_STATE_HOME": os.path.join(home, ".local", "state"), "SPECFLEET_WORKSPACE": self.workspace}
        if os.environ.get("TZ"):
            env["TZ"] = os.environ["TZ"]
        return env

    def home(self, name: str) -> str:
        """A private HOME for the agent user below the run directory (kept: it holds the CLI's session)."""
        home = self.path(name)
        os.makedirs(os.path.join(home, "tmp"), mode=0o700, exist_ok=True)
        self.agent.own(home)
        return home

    def kill_children(self) -> None:
        for pgid in list(self.children):
            kill_group(pgid, grace=2)

    # git ----------------------------------------------------------------------------

    def git(self, *args: str, cwd: str | None = None, check: bool = True, input_text: str | None = None,
            binary: bool = False, as_agent: bool = True):
        """git in the workspace; once the agent user owns it, git runs as that user.

        A workspace the agent wrote may hold a ``.git/config`` with commands (fsmonitor,
        filters, hooks): never run those as root. ``as_agent=False`` is for the root-side
        clone before the agent owns anything.
        """
        identity = self.job.get("identity") or {}
        cmd = ["git", "-c", "core.quotePath=false", "-c", "core.attributesFile=/dev/null", "-c", "diff.noprefix=false",
               "-c", "diff.mnemonicPrefix=false", "-c", f"user.name={identity.get('name', 'specfleet')}",
               "-c", f"user.email={identity.get('email', 'specfleet@localhost')}", "-c", "core.hooksPath=/dev/null",
               "-c", "commit.gpgsign=false", "-c", "core.fsmonitor=false", *args]
        env = self.git_env() if as_agent else dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        result = subprocess.run(cmd, cwd=cwd or self.workspace, capture_output=True, text=not binary,
                                input=input_text, env=env, check=False,
                                preexec_fn=self.agent.preexec() if as_agent else None)
        if check and result.returncode != 0:
            stderr = result.stderr if not binary else result.stderr.decode("utf-8", "replace")
            raise RunnerError(f"git {' '.join(args[:3])} failed: {tail(stderr.strip(), 5)}")
        return result.stdout

    def git_env(self) -> dict:
        """git's environment as the agent user: a HOME of its own (git dies on an unreadable ~/.gitconfig)."""
        if not self.agent.switch:
            return dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
        return dict(self.clean_env(self.path("git-home")), GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_CONFIG_NOSYSTEM="1")

    def prepare(self) -> None:
        """A fresh clone sharing the mirror's objects, on the spec's branch, dependencies merged."""
        self.save(phase="workspace")
        job = self.job
        mirror = os.path.expanduser(job["mirror"])
        if job.get("remote_url"):
            fetched = subprocess.run(["flock", mirror + ".lock", "git", "--git-dir", mirror, "fetch", "-q", "--no-tags",
                                      job["remote_url"], *[f"+{ref}:{ref}" for ref in job.get("remote_refs", [])]],
                                     capture_output=True, text=True, timeout=600,
                                     env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
            if fetched.returncode != 0:
                raise RunnerError(f"could not fetch {job['remote_url']} into {mirror}: {tail(fetched.stderr, 5)}")
        if os.path.isdir(os.path.join(self.workspace, ".git")):
            raise RunnerError(f"workspace {self.workspace} already exists: an attempt never reuses one")
        os.makedirs(self.workspace, exist_ok=True)
        if os.listdir(self.workspace):
            raise RunnerError(f"workspace {self.workspace} is not empty")
        # Switching to the agent user: the clone stops borrowing the mirror's objects, so the
        # agent needs nothing of the node's but its own workspace.
        self.git("clone", "-q", "--shared", *(["--dissociate"] if self.agent.switch else []), "--no-checkout", mirror,
                 self.workspace, cwd=self.run_dir, as_agent=False)
        try:
            self.git("checkout", "-q", "-b", job["branch"], job["base"], as_agent=False)
        except RunnerError as exc:
            if re.search(r"reference is not a tree|not a valid object|bad object|unable to read", str(exc)):
                raise InfrastructureError(f"the node's mirror {mirror} lacks the start commit {job['base'][:12]}: "
                                          f"{exc}") from None
            raise
        excludes = list(DEFAULT_EXCLUDES) + list(job.get("exclude", []))
        with open(os.path.join(self.workspace, ".git", "info", "exclude"), "a", encoding="utf-8") as handle:
            handle.write("\n".join(excludes) + "\n")
        self.hand_over(os.path.commonpath([mirror, self.workspace]))
        # The base is the integration tip, which holds the spec's merged dependencies.
        self.start_commit = self.git("rev-parse", "HEAD").strip()
        self.save(base=job["base"], start_commit=self.start_commit, workspace=self.workspace, branch=job["branch"])

    def hand_over(self, work_root: str) -> None:
        """Give the workspace to the agent user and let it pass the work root's own folders to it.

        Folders between the work root and the workspace or run directory get search
        permission only (0711: no listing); the run directory's files stay the runner's.
        Above the work root nothing is changed: bootstrap grants the agent user search
        permission there (an ACL) when the login user is another user.
        """
        if not self.agent.switch:
            return
        self.agent.own(self.workspace)
        for target in (os.path.dirname(self.workspace), self.run_dir):
            folder = target
            while folder.startswith(work_root.rstrip("/") + "/") or folder == work_root:
                info = os.stat(folder)
                if info.st_uid == os.geteuid() and not info.st_mode & 0o001:
                    os.chmod(folder, (info.st_mode & 0o7777) | 0o111)
                if folder == work_root:
                    break
                folder = os.path.dirname(folder)
        blocked = self.agent.can_reach(self.workspace) or self.agent.can_reach(self.run_dir)
        if blocked:
            raise InfrastructureError(
                f"the agent user {self.agent.name} cannot pass {blocked} on the way to its workspace (run "
                f"bootstrap.yml for this node: it grants {self.agent.name} search permission on the work root's "
                f"parent folders)")

    def diff(self) -> tuple[list[Change], dict[str, list[tuple[int, str]]], list[str]]:
        """Stage everything; -> changes, added lines, and the names of secrets found in the diff."""
        # An agent that committed on its own: its commits are folded into the one final commit.
        self.git("reset", "-q", "--soft", self.start_commit)
        self.git("add", "-A")
        changes = parse_name_status(self.git("diff", "--cached", "--name-status", "-z", "-M", self.start_commit))
        added = added_lines(self.git("diff", "--cached", "-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--text",
                                     "--src-prefix=a/", "--dst-prefix=b/", self.start_commit))
        patch = self.git("diff", "--cached", "--binary", "--no-textconv", self.start_commit)
        leaked = [f"{executor}:{name}" for executor, env in self.secrets.items() for name, value in env.items()
                  if len(value) >= 4 and value in patch]
        write_atomic(self.path("changes.patch"), self.redact(patch), 0o644)
        if leaked:
            self.scrub(changes)
        return changes, added, leaked

    def scrub(self, changes: list[Change]) -> None:
        """Replace secret values in the changed files with ``***`` and drop every git object that held them.

        The secrets gate fails the round either way; this keeps the key out of the workspace,
        which stays on the node for the next round and for inspection.
        """
        for change in changes:
            path = os.path.join(self.workspace, change.path)
            # The agent owns these files: never follow a link it may have put there.
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            with os.fdopen(fd, "r+b") as handle:
                if not stat_is_file(os.fstat(fd)):
                    continue
                data = handle.read()
                clean = self.redact.bytes(data)
                if clean != data:
                    handle.seek(0)
                    handle.write(clean)
                    handle.truncate()
        self.git("add", "-A")
        self.git("reflog", "expire", "--expire=now", "--all")
        self.git("prune", "--expire=now")

    # agent ----------------------------------------------------------------------------

    def agent_env(self, executor: Executor, home: str) -> dict:
        env = self.clean_env(home)
        env.update({str(k): str(v) for k, v in executor.env.items()})
        env.update(executor.dialect.setup(executor.settings, home, self.workspace))
        env.update(self.secrets.get(executor.name, {}))
        return env

    def run_agent(self, round_no: int, prompt_file: str) -> dict:
        """One agent round through the executor chain; a rate limit moves to the fallback.

        Each try records the executor, its exit, whether it timed out or was rate limited
        (and the line that said so), its usage, and its log.
        """
        chain = [Executor.from_dict(e) for e in self.job["executors"]]
        with open(prompt_file, encoding="utf-8") as handle:
            prompt_text = handle.read()
        tries = []
        for index, executor in enumerate(chain):
            self.save(phase=f"agent round {round_no}", executor_trying=executor.name)
            log = f"round-{round_no}.agent.{index + 1}-{executor.name}.log"
            said: dict = {"usage": None, "rate_limited": False, "error": None}
            started = time.monotonic()
            if executor.kind == "replay":
                rc, output, timed_out = self.replay(log)
            else:
                home = self.home(f"home-{executor.name}")
                agent_prompt = os.path.join(home, "prompt.md")
                write_atomic(agent_prompt, prompt_text, 0o600)
                try:
                    env = self.agent_env(executor, home)
                    self.agent.own(home)      # the CLI's config files, written by the dialect, are its own
                    rc, output, timed_out, stopped = self.run_process(
                        executor.argv(prompt_text, agent_prompt), log, self.budget(executor.timeout_s),
                        stdin_path=prompt_file if executor.prompt_mode == "stdin" else None, env=env, watch=executor)
                except (OSError, ValueError) as exc:
                    rc, output, timed_out, stopped = 127, f"cannot run {executor.argv('', '')[:1]}: {exc}", False, None
                    write_atomic(self.path(log), output + "\n", 0o644)
                said = executor.read(output, rc, timed_out)
                if stopped:
                    said.update(rate_limited=True, error=said.get("error") or stopped)
            limited = bool(said.get("rate_limited"))
            tries.append({"executor": executor.name, "cli": executor.cli, "model": executor.model, "exit": rc,
                          "timed_out": timed_out, "rate_limited": limited, "error": said.get("error"),
                          "usage": said.get("usage"), "seconds": round(time.monotonic() - started, 1), "log": log})
            self.save()
            end = tail(output)
            if not limited:
                return {"executor": executor.name, "exit": rc, "timed_out": timed_out, "tries": tries,
                        "output_tail": end, "error": said.get("error")}
            if index + 1 < len(chain):
                delay = executor.backoff_s * (2 ** index)
                self.save(phase=f"agent round {round_no}: {executor.name} rate limited, {chain[index + 1].name} in "
                                f"{delay:g} s")
                time.sleep(delay)
        return {"executor": chain[-1].name, "exit": tries[-1]["exit"], "timed_out": False, "tries": tries,
                "rate_limited": True, "output_tail": ""}

    def replay(self, log: str) -> tuple[int, str, bool]:
        """The ``replay`` executor: apply a recorded session's changes (no model involved)."""
        patch = self.path("recording.patch")
        if not os.path.exists(patch):
            output = "replay: no recording was shipped for this spec"
            rc = 2
        else:
            with open(patch, encoding="utf-8") as handle:
                recorded = handle.read()
            # As the agent user (it owns the workspace), the patch on standard input.
            first = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=self.workspace, input=recorded,
                                   capture_output=True, text=True, preexec_fn=self.agent.preexec(), env=self.git_env())
            if first.returncode == 0:
                rc, output = 0, "replay: applied the recorded changes"
            else:
                second = subprocess.run(["git", "apply", "--3way", "--whitespace=nowarn", "-"], cwd=self.workspace,
                                        input=recorded, capture_output=True, text=True,
                                        preexec_fn=self.agent.preexec(), env=self.git_env())
                rc = second.returncode
                output = ("replay: applied the recorded changes with a three-way merge" if rc == 0 else
                          "replay: the recorded changes do not apply here:\n" + first.stderr + second.stderr)
        write_atomic(self.path(log), f"[replay executor: recorded changes, no model ran]\n{output}\n", 0o644)
        return rc, output, False

    def verify(self, round_no: int) -> tuple[int, str, bool]:
        self.save(phase=f"verify round {round_no}")
        # Python caches bytecode by source mtime in whole seconds and size: a file the agent
        # rewrote within the second, same length (a - b -> b + a), would run the old code.
        for folder, dirs, _files in os.walk(self.workspace):
            dirs[:] = [d for d in dirs if d != ".git"]
            if "__pycache__" in dirs:
                shutil.rmtree(os.path.join(folder, "__pycache__"), ignore_errors=True)
                dirs.remove("__pycache__")
        env = dict(self.clean_env(self.home("home-verify")), PYTHONDONTWRITEBYTECODE="1")
        rc, output, timed_out, _ = self.run_process(["/bin/sh", "-c", self.job["verify"]], f"round-{round_no}.verify.log",
                                                    self.budget(float(self.job.get("verify_timeout_s", 1200))), env=env)
        return rc, output, timed_out

    def budget(self, limit: float) -> float:
        """``limit``, cut to what is left of the attempt's time (minus a reserve for gates and commit).

        The job wrapper kills everything at the attempt's timeout; giving each run only the
        time left means a slow round ends as a timed-out round, with its patch and feedback.
        """
        total = float(self.job.get("attempt_timeout_s") or 0)
        if not total:
            return limit
        left = self.status["started_at"] + total - min(60.0, total / 10) - now()
        if left <= 1:
            raise RunnerError(f"the attempt's time limit ({total:g} s) is used up")
        return min(limit, left)

    # the loop -------------------------------------------------------------------------

    def run(self) -> int:
        threading.Thread(target=self.heartbeat, daemon=True).start()
        write_atomic(self.path("runner_pid"), f"{os.getpid()}\n", 0o644)
        self.save()
        try:
            self.agent = agents.AgentUser(self.job.get("agent_user"))
        except PermissionError as exc:
            raise InfrastructureError(str(exc)) from None
        self.save(agent_user=self.agent.name)
        self.prepare()
        job = self.job
        rounds_allowed = 1 + int(job.get("retries", 0))
        with open(self.path("prompt.md"), encoding="utf-8") as handle:
            prompt = handle.read()
        feedback: list[str] = []
        for round_no in range(1, rounds_allowed + 1):
            prompt_file = self.path(f"round-{round_no}.prompt.md")
            write_atomic(prompt_file, prompt + "".join(feedback), 0o600)
            record: dict = {"round": round_no, "started_at": now()}
            self.status["rounds"].append(record)
            agent = self.run_agent(round_no, prompt_file)
            record.update(executor=agent["executor"], agent_exit=agent["exit"], tries=agent["tries"],
                          timed_out=agent["timed_out"])
            problems: list[str] = []
            verify_output = None
            if agent.get("rate_limited"):
                problems.append("every executor of the chain was rate limited: "
                                + ", ".join(t["executor"] for t in agent["tries"]))
                record.update(ended_at=now(), ok=False, problems=problems)
                self.save()
                raise RunnerError(problems[0])
            if agent["timed_out"]:
                problems.append(f"the agent ({agent['executor']}) timed out; its process group was killed")
            elif agent["exit"] != 0:
                said = f" ({agent['error']})" if agent.get("error") else ""
                problems.append(f"the agent ({agent['executor']}) exited with {agent['exit']}{said}:\n"
                                f"{agent['output_tail']}")
            else:
                rc, verify_output, timed_out = self.verify(round_no)
                record.update(verify_exit=rc, verify_timed_out=timed_out)
                if timed_out:
                    problems.append(f"verify timed out after {job.get('verify_timeout_s', 1200)} s")
                elif rc != 0:
                    problems.append(f"verify `{job['verify']}` failed with exit {rc}:\n{tail(verify_output)}")
            self.save(phase=f"gates round {round_no}")
            changes, added, leaked = self.diff()
            gates = run_gates(changes, added, job.get("modifies", []), job.get("test_paths", []),
                              verify_output if not problems else None, job.get("require_tests", True))
            gates.append({"gate": "secrets", "ok": not leaked, "problems": leaked,
                          "detail": ("the changes contain the value of " + ", ".join(leaked)) if leaked
                          else "no secret value in the changes"})
            gates = json.loads(self.redact(json.dumps(gates)))
            write_atomic(self.path(f"round-{round_no}.gates.json"), json.dumps(gates, indent=1), 0o644)
            problems += [f"gate {g['gate']}: {g['detail']}" for g in gates if not g["ok"]]
            record.update(ended_at=now(), ok=not problems, problems=[p[:2000] for p in problems],
                          files_changed=[c.path for c in changes], gates={g["gate"]: g["ok"] for g in gates})
            self.save()
            if not problems:
                return self.commit(agent["executor"], changes)
            feedback.append(self.feedback(round_no, problems))
        last = [p.splitlines()[0].rstrip(":") for p in self.status["rounds"][-1]["problems"]]
        raise RunnerError(f"not done after {rounds_allowed} round(s): " + "; ".join(last)[:1500])

    def feedback(self, round_no: int, problems: list[str]) -> str:
        text = "\n\n".join(problems)
        if len(text) > FEEDBACK_BYTES:
            text = text[:FEEDBACK_BYTES // 2] + "\n[... cut ...]\n" + text[-FEEDBACK_BYTES // 2:]
        return (f"\n\n## Feedback from round {round_no} (specfleet)\n\nYour changes so far are still in the "
                f"workspace. They did not pass:\n\n```\n{self.redact(text)}\n```\n\nFix these problems; keep every "
                f"change inside `modifies`.\n")

    def commit(self, executor: str, changes: list[Change]) -> int:
        self.save(phase="commit", executor=executor)
        job = self.job
        message = (f"specfleet({job['project']}): {job['task_id']}: {job.get('title') or 'spec work'}\n\n"
                   f"Spec: {job['task_id']}\nAttempt: {job['attempt']} (run {job['run_id']})\n"
                   f"Executor: {executor}\nRounds: {len(self.status['rounds'])}\n")
        self.git("commit", "-q", "--no-verify", "-m", message)
        commit = self.git("rev-parse", "HEAD").strip()
        self.save(commit=commit, files_changed=[c.path for c in changes], phase="bring back")
        # Written by git as the agent user to its output, saved by the runner into its own folder.
        data = self.git("bundle", "create", "-q", "-", f"refs/heads/{job['branch']}", f"^{job['base']}", binary=True)
        with open(self.path("result.bundle"), "wb") as handle:
            handle.write(data)
        if job.get("remote_url"):
            self.push(self.path("result.bundle"), commit)
            self.save(pushed=True)
        else:
            self.save(bundle="result.bundle")
        self.finalise("succeeded")
        return 0


    def push(self, bundle: str, commit: str) -> None:
        """Push the result from the node's mirror, never from the workspace.

        The workspace's ``.git/config`` is the agent's to write (an ``sshCommand``, an
        ``insteadOf``, a credential helper): the runner's credentials only ever meet the
        mirror, which the agent cannot touch. The bundle's prerequisite (the base) is there.
        """
        job = self.job
        mirror = os.path.expanduser(job["mirror"])
        ref = f"refs/specfleet-results/{job['run_id']}/{job['attempt']}"
        env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
        steps = [["flock", mirror + ".lock", "git", "--git-dir", mirror, "fetch", "-q", "--no-tags", bundle,
                  f"+refs/heads/{job['branch']}:{ref}"],
                 ["git", "--git-dir", mirror, "push", "-q", "--force", job["remote_url"],
                  f"{commit}:refs/heads/{job['branch']}"]]
        try:
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True, timeout=600, env=env)
                if done.returncode != 0:
                    raise RunnerError(f"git {step[step.index('--git-dir') + 3]} failed: {tail(done.stderr.strip(), 5)}")
        finally:
            subprocess.run(["git", "--git-dir", mirror, "update-ref", "-d", ref], capture_output=True, env=env)


def sum_usage(rounds: list[dict]) -> dict:
    """Tokens and cost of every agent try of the attempt, with the models that answered."""
    total: dict = {"input_tokens": 0, "output_tokens": 0, "cost_usd": None, "models": []}
    for record in rounds:
        for attempt_try in record.get("tries") or []:
            spent = attempt_try.get("usage") or {}
            for key in ("input_tokens", "output_tokens"):
                total[key] += int(spent.get(key) or 0)
            if spent.get("cost_usd") is not None:
                total["cost_usd"] = round((total["cost_usd"] or 0.0) + float(spent["cost_usd"]), 6)
            if spent.get("model") and spent["model"] not in total["models"]:
                total["models"].append(spent["model"])
    return total


def stat_is_file(info: os.stat_result) -> bool:
    import stat
    return stat.S_ISREG(info.st_mode)


def kill_group(pgid: int, grace: float = KILL_GRACE_S) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def finalize_after_exit(run_dir: str, exit_code: int, error: str | None = None) -> None:
    """Run by the job wrapper when the runner is gone: kill leftovers, remove what must not stay, finalise."""
    for name in os.listdir(run_dir):
        if name == "secrets.json" or name.endswith(".raw"):
            os.unlink(os.path.join(run_dir, name))
    try:
        with open(os.path.join(run_dir, "child_pgids"), encoding="utf-8") as handle:
            for line in handle:
                if line.strip().isdigit():
                    kill_group(int(line), grace=2)
    except FileNotFoundError:
        pass
    path = os.path.join(run_dir, "status.json")
    try:
        with open(path, encoding="utf-8") as handle:
            status = json.load(handle)
    except (OSError, ValueError):
        status = {"phase": "starting", "rounds": []}
    if not isinstance(status, dict):
        status = {"phase": "starting", "rounds": []}
    if status.get("final"):
        return
    why = {124: "the attempt hit its time limit and was killed", 137: "the runner was killed (SIGKILL)",
           143: "the runner was terminated (SIGTERM)"}.get(exit_code, f"the runner ended with exit {exit_code}")
    stamp = now()
    status.update(usage=sum_usage(status.get("rounds") if isinstance(status.get("rounds"), list) else []),
                  state="killed" if exit_code in (124, 137, 143) else "failed", final=True, ended_at=stamp,
                  error=error or f"{why} during {status.get('phase', 'an unknown phase')}", updated_at=stamp,
                  exit_code=exit_code)
    write_atomic(path, json.dumps(status, indent=1, sort_keys=True))


def main(argv: list[str]) -> int:
    if argv == ["version"]:
        print(runner_version())
        return 0
    if len(argv) == 3 and argv[0] == "finalize":
        finalize_after_exit(argv[1], int(argv[2]) if argv[2].lstrip("-").isdigit() else 1)
        return 0
    if len(argv) != 2 or argv[0] != "run":
        print("usage: runner.py run RUN_DIR | runner.py finalize RUN_DIR EXIT_CODE | runner.py version", file=sys.stderr)
        return 2
    try:
        attempt = Attempt(argv[1])
    except Exception as exc:  # unreadable job.json: say so in the status, never crash silently
        finalize_after_exit(argv[1], 1, f"the runner could not start: {exc!r}")
        return 1

    def terminated(signum, _frame):
        attempt.kill_children()
        attempt.finalise("killed", f"terminated by signal {signum} during {attempt.status.get('phase')}",
                         exit_code=128 + signum)
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return attempt.run()
    except InfrastructureError as exc:
        attempt.status["infrastructure"] = True
        attempt.finalise("failed", str(exc))
    except RunnerError as exc:
        attempt.finalise("failed", str(exc))
    except Exception as exc:  # the status must say what broke, whatever it was
        attempt.finalise("failed", f"runner crashed in {attempt.status.get('phase')}: {exc!r}\n"
                                   f"{tail(traceback.format_exc(), 12)}")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
