"""The specfleet_progress stdout callback on real dispatch runs against real sshd nodes.

Golden-output tests in the style of ansible-core's callback tests: the real output is
normalised (times, durations, slot counts, paths, the order of per-host lines of parallel
plays) and compared with ``tests/golden/<name>.txt``. ``SPECFLEET_UPDATE_GOLDEN=1`` rewrites
the golden files from the run instead (then review the diff).

Jobs are plain shell commands (``specfleet_job_command``), so every run takes seconds.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, make_repo, spec_text
from tests.integration.conftest import VENV_BIN

GOLDEN = REPO_ROOT / "tests" / "golden"
CHAIN = ("S01-base", "S02-flaky", "S03-broken", "S04-after")
# S02-flaky fails its first attempt and succeeds on its second; S03-broken always fails.
CHAIN_JOB = ('test "$SPECFLEET_TASK_ID" != S03-broken && '
             '{ test "$SPECFLEET_TASK_ID" != S02-flaky || test "$SPECFLEET_ATTEMPT" -gt 1; }')
TIME = r"\d\d:\d\d:\d\d"
RESULT_LINE = re.compile(r"^(ok|changed|skipping|fatal|failed): \[")
CURSOR_UP_ERASE = "\x1b[1A\x1b[2K"


def project(root: Path, name: str, specs: dict[str, dict]) -> Path:
    """specs/<name>/ under ``root`` with one spec file per entry, and its repository."""
    repo = make_repo(root / f"repo-{name}", {f"src/{task.lower()}.py": "x\n" for task in specs})
    folder = root / "specs" / name
    folder.mkdir(parents=True)
    (folder / "project.yml").write_text(f"repository: {repo}\nbase_branch: main\nverify: 'true'\n")
    for task, fields in specs.items():
        (folder / f"{task}.md").write_text(spec_text(task, modifies=[f"src/{task.lower()}.py"], **fields))
    return root / "specs"


def dispatch_args(name: str, specs_root: Path, job: str) -> list[str]:
    return [str(VENV_BIN / "ansible-playbook"), "dispatch.yml", "-e", f"project={name}",
            "-e", f"specfleet_specs_root={specs_root}", "-e", json.dumps({"specfleet_job_command": job})]


def progress_env(fleet, **options: str) -> dict[str, str]:
    return dict(fleet.env, ANSIBLE_STDOUT_CALLBACK="specfleet_progress", **options)


def run(args: list[str], env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 180) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal; everything it printed, and the exit code."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(timeout=30), b"".join(chunks).decode()


def normalise(text: str, spec_ids=CHAIN) -> str:
    """Make a run's output comparable: what may differ between two identical runs is replaced."""
    text = text.replace("\r\n", "\n")
    # The strategy prints its own start and end lines (display, not the callback); the callback's
    # thread interleaves with them in whatever order the store is read, so they are left out here.
    own = re.compile(rf"^(?:{'|'.join(map(re.escape, spec_ids))}): .*\n", re.M)
    text = own.sub("", text)
    text = re.sub(rf"^\[{TIME}\] ", "[<time>] ", text, flags=re.M)
    text = re.sub(rf"^{TIME}  ", "<time>  ", text, flags=re.M)
    text = re.sub(r"elapsed \S+", "elapsed <t>", text)
    text = re.sub(r"eta ~\S+", "eta ~<t>", text)
    text = re.sub(r"slots \d+/", "slots <n>/", text)  # leases held fleet-wide right now
    # An error's origin: the file, without line numbers and the quoted source.
    text = re.sub(r"^(Origin: \S+?):\d+:\d+\n\n(?:\d+ .*\n|\n(?=\d)|\s+\^ column \d+\n)+", r"\1\n", text, flags=re.M)
    text = text.replace(str(REPO_ROOT), "<repo>")
    lines = [line.rstrip() for line in text.split("\n")]
    # Per-host result lines of one task arrive in any order (forks).
    out, block = [], []
    for line in [*lines, None]:
        if line is not None and RESULT_LINE.match(line) and (not block or RESULT_LINE.match(block[-1])):
            block.append(line)
            continue
        out.extend(sorted(block))
        block = []
        if line is not None:
            out.append(line)
    return "\n".join(out)


def golden(name: str, output: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("SPECFLEET_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(output)
    assert path.is_file(), f"no golden file {path}: run with SPECFLEET_UPDATE_GOLDEN=1 to write it"
    assert output == path.read_text(), f"output differs from {path} (SPECFLEET_UPDATE_GOLDEN=1 rewrites it)"


def test_a_dispatch_prints_one_line_per_state_change_and_a_progress_line_after_each(fleet, tmp_path):
    specs_root = project(tmp_path, "chain", {
        "S01-base": {"estimate": "2m"},
        "S02-flaky": {"estimate": "3m", "retries": 1, "depends_on": ["S01-base"]},
        "S03-broken": {"estimate": "1m", "retries": 0, "depends_on": ["S02-flaky"]},
        "S04-after": {"estimate": "1m", "depends_on": ["S03-broken"]},
    })
    result = run(dispatch_args("chain", specs_root, CHAIN_JOB), progress_env(fleet, SPECFLEET_PROGRESS_INTERVAL="0"))
    out = result.stdout
    assert result.returncode == 2, out + result.stderr  # S03-broken failed: the report fails the run
    assert "Traceback" not in result.stderr and "callback" not in result.stderr.lower(), result.stderr

    # Spec hosts print no per-task results or task banners; the other plays and the recap do.
    assert not re.search(rf"^(ok|changed|skipping|fatal|failed): \[(?:{'|'.join(CHAIN)})", out, re.M), out
    assert "TASK [Start the job]" not in out and "TASK [Wait for the job]" not in out
    assert "ok: [localhost] => (item=S04-after)" in out and "fatal: [localhost]: FAILED!" in out
    recap = out[out.index("PLAY RECAP"):]
    assert all(re.search(rf"^{task}\s+: ok=", recap, re.M) for task in CHAIN), recap
    assert "\r" not in out and "\x1b" not in out  # not a terminal: plain lines, no colour
    # The strategy leaves the state changes to the callback: no second start or ending line.
    assert not re.search(r"^S0\S+: (started on|failed \()", out, re.M), out

    def changes(task: str, label: str) -> list[str]:
        return re.findall(rf"^{TIME}  {task}\s+{re.escape(label)}(?=\s|$).*$", out, re.M)

    assert [len(changes(t, "completed")) for t in CHAIN] == [1, 1, 0, 0]
    assert [len(changes(t, "failed:")) for t in CHAIN] == [0, 0, 1, 0]
    assert changes("S02-flaky", "requeued:") == [re.search(rf"{TIME}  S02-flaky\s+requeued: .*", out)[0]]
    assert changes("S04-after", "blocked:")[0].endswith("blocked:  dependency S03-broken failed")
    # Every attempt the store recorded was announced, on the node and slot it names.
    db = sqlite3.connect(fleet.db)
    attempts = db.execute("SELECT task_id, number, node, slot FROM attempts WHERE project = 'chain' ORDER BY id").fetchall()
    started = re.findall(rf"^{TIME}  (\S+)\s+started   (\S+) slot (\d+)  attempt (\d+)$", out, re.M)
    assert [(t, int(n), node, int(s)) for t, node, s, n in started] == [tuple(a) for a in attempts]
    # The last progress line agrees with the store and the report.
    states = dict(db.execute("SELECT task_id, state FROM specs WHERE project = 'chain'").fetchall())
    assert states == {"S01-base": "completed", "S02-flaky": "completed", "S03-broken": "failed", "S04-after": "blocked"}
    last = re.findall(rf"^\[{TIME}\] (done .*)$", out, re.M)[-1]
    assert re.fullmatch(r"done 2/4  running 0  waiting 0  failed 2  slots \d+/12  elapsed \S+  eta -", last), last
    assert "chain: 4 specs in this run: 1 blocked, 2 completed, 1 failed" in out

    golden("dispatch_progress", normalise(out))


def test_other_playbooks_and_a_dispatch_with_nothing_to_run_print_as_the_default(fleet, tmp_path):
    specs_root = project(tmp_path, "same", {"S01-one": {}, "S02-two": {"depends_on": ["S01-one"]}})
    for args in (["playbooks/validate.yml", "-e", "project=same", "-e", f"specfleet_specs_root={specs_root}"],
                 ["dispatch.yml", "--check", "-e", "project=same", "-e", f"specfleet_specs_root={specs_root}",
                  "-e", "specfleet_job_command=true"]):
        default = run([str(VENV_BIN / "ansible-playbook"), *args], fleet.env)
        ours = run([str(VENV_BIN / "ansible-playbook"), *args], progress_env(fleet))
        assert default.returncode == ours.returncode == 0, default.stdout + ours.stdout
        assert normalise(ours.stdout) == normalise(default.stdout)
        assert "PLAY RECAP" in ours.stdout


@pytest.mark.parametrize("colour", [True, False], ids=["colour", "nocolor"])
def test_on_a_terminal_progress_lines_come_every_interval(fleet, tmp_path, colour):
    specs_root = project(tmp_path, "slow", {"S01-slow": {"estimate": "2m"}})
    env = progress_env(fleet, SPECFLEET_PROGRESS_INTERVAL="1", SPECFLEET_PROGRESS_TIMESTAMPS="false", TERM="xterm")
    if colour:
        env.pop("ANSIBLE_NOCOLOR")
        env.pop("ANSIBLE_FORCE_COLOR")
    code, text = run_on_terminal(dispatch_args("slow", specs_root, "sleep 3.5"), env)
    assert code == 0, text
    section = text[text.index("PLAY [Dispatch the specs]"):text.index("PLAY [Report]")]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", section)  # colours only; the cursor movements stay
    # The 3.5 s job spans at least two ticks of the 1 s interval (no timestamps: lines start with the spec).
    running = re.findall(r"^(?:\x1b\[1A\x1b\[2K)?done 0/1  running 1  waiting 0  failed 0  slots \d+/12"
                         r"  elapsed \d+s  eta ~2m\r?$", plain, re.M)
    assert len(running) >= 3, section
    assert re.search(r"^(?:\x1b\[1A\x1b\[2K)?S01-slow  completed\r?$", plain, re.M), section
    last = re.findall(r"done .*?eta \S+", plain)[-1]
    assert re.fullmatch(r"done 1/1  running 0  waiting 0  failed 0  slots \d+/12  elapsed \d+s  eta -", last), section
    if colour:
        # The progress line is rewritten in place while nothing else was printed after it.
        assert section.count(CURSOR_UP_ERASE) >= 2 and "\x1b[0;34m" in section, section
    else:
        assert "\x1b" not in text, text  # ANSIBLE_NOCOLOR: plain lines, no colour, no cursor movement
