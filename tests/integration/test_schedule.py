"""playbooks/schedule.yml (role specfleet_schedule) for real: the cron file and job script it
writes, each entry then run the way cron runs it (Debian cron's ``%`` handling, /bin/sh, cron's
bare environment, no terminal). Everything goes to temporary paths: nothing is written to
/etc/cron.d, /etc/logrotate.d or a crontab.

The ansible-playbook the entries run is, in most tests, a probe that records its arguments,
working directory, environment and stdin; ``test_an_entry_runs_a_real_playbook_in_crons_environment``
runs the real one.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.integration.conftest import VENV_BIN
from tests.unit.test_schedule_entries import cron_command_part

HOSTILE = "x'; touch PWNED #50% $(id) \\% \"q\""

PROBE = f"""#!{sys.executable}
# Stands in for ansible-playbook: records how it was started, fails for verify.yml, and with
# PROBE_LINGER leaves a child behind that keeps every inherited file descriptor.
import json, os, sys
try:
    os.fstat(9)
    fd9 = True
except OSError:
    fd9 = False
record = {{"argv": sys.argv[1:], "cwd": os.getcwd(), "stdin": sys.stdin.read(), "stdin_tty": os.isatty(0),
          "fd9": fd9, "env": {{k: os.environ.get(k) for k in
                              ("ANSIBLE_NOCOLOR", "ANSIBLE_FORCE_COLOR", "SPECFLEET_HOME", "PATH")}}}}
if os.environ.get("PROBE_LINGER") and os.path.exists(os.environ["PROBE_LINGER"]):
    pid = os.fork()
    if pid == 0:
        os.execvp("sleep", ["sleep", "60"])
    record["lingering"] = pid
with open(os.environ["PROBE_RECORDS"], "a") as out:
    out.write(json.dumps(record) + "\\n")
print("probe ran", sys.argv[1:])
sys.exit(3 if "playbooks/verify.yml" in sys.argv else 0)
"""


class Schedule:
    """Temporary targets for the role, and runs of playbooks/schedule.yml against them."""

    def __init__(self, root: Path, controller):
        self.root = root
        self.controller = controller
        self.cron_file = root / "cron.d" / "specfleet"
        self.logrotate = root / "logrotate.d" / "specfleet"
        self.logs = root / "logs"
        # A space and a % in the script's path: the cron lines must survive both.
        self.script = root / "bin 50%" / "specfleet-cron"
        self.records = root / "records.jsonl"
        self.probe = root / "probe-bin" / "ansible-playbook"
        for path in (self.cron_file.parent, self.logrotate.parent, self.probe.parent, self.script.parent):
            path.mkdir(parents=True)
        self.probe.write_text(PROBE)
        self.probe.chmod(0o755)

    def vars(self, **overrides) -> dict:
        values = {
            "specfleet_schedule_projects": ["clawmarketing"],
            "specfleet_schedule_cron_file": str(self.cron_file),
            "specfleet_schedule_logrotate_file": str(self.logrotate),
            "specfleet_schedule_log_dir": str(self.logs),
            "specfleet_schedule_script": str(self.script),
            "specfleet_schedule_ansible_playbook": str(self.probe),
            "specfleet_schedule_env": {"SPECFLEET_HOME": str(self.controller.home), "PROBE_RECORDS": str(self.records),
                                       "PROBE_LINGER": str(self.root / "linger")},
        }
        values.update({f"specfleet_schedule_{key}": value for key, value in overrides.items()})
        return values

    def apply(self, *args: str, **overrides):
        path = self.root / "vars.json"
        path.write_text(json.dumps(self.vars(**overrides)))
        return self.controller.playbook("playbooks/schedule.yml", "-e", f"@{path}", *args)

    def entries(self) -> dict[str, dict]:
        """The cron file's entries by name: the five time fields, the user and the command."""
        entries, name = {}, None
        for line in self.cron_file.read_text().splitlines():
            if line.startswith("#Ansible: "):
                name = line[len("#Ansible: "):]
            elif name is not None:
                minute, hour, day, month, weekday, user, command = line.split(None, 6)
                entries[name] = {"time": f"{minute} {hour} {day} {month} {weekday}", "user": user, "command": command}
                name = None
        return entries

    def records_read(self) -> list[dict]:
        return [json.loads(line) for line in self.records.read_text().splitlines()] if self.records.exists() else []


def run_like_cron(command: str, home: Path) -> subprocess.CompletedProcess:
    """/bin/sh -c <command> in cron's environment: only HOME, LOGNAME, SHELL and PATH, no terminal."""
    env = {"HOME": str(home), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["/bin/sh", "-c", cron_command_part(command)], cwd=home, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def schedule(tmp_path, controller) -> Schedule:
    return Schedule(tmp_path / "schedule", controller)


def evening_steps() -> list[str]:
    steps = ["playbooks/collect.yml", "playbooks/verify.yml", "playbooks/merge.yml", "playbooks/report.yml"]
    return [step for step in steps if (REPO_ROOT / step).exists()]


def test_entries_run_their_playbooks_once_each_under_a_lock_with_the_project_quoted(schedule, tmp_path):
    hostile = HOSTILE.replace("PWNED", str(tmp_path / "pwned"))
    run = schedule.apply(projects=["clawmarketing", hostile])
    assert run.returncode == 0, run.output

    entries = schedule.entries()
    expected = {f"specfleet {job} {project}" for job in ("dispatch", "evening") for project in ("clawmarketing", hostile)}
    if (REPO_ROOT / "playbooks" / "health.yml").exists():
        expected.add("specfleet health")
    assert set(entries) == expected
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    for name, entry in entries.items():
        assert entry["user"] == user
        assert entry["time"] == {"dispatch": "0 9 * * *", "evening": "0 17 * * *", "health": "*/10 * * * *"}[name.split()[1]]

    for name, entry in entries.items():
        result = run_like_cron(entry["command"], tmp_path / "cron-home")
        # The probe fails verify.yml: the evening job ends with that status.
        assert result.returncode == (3 if " evening " in name else 0), (name, result)
        assert result.stdout == result.stderr == "", (name, result)  # all of it went to the log

    assert not (tmp_path / "pwned").exists()
    records = schedule.records_read()
    by_project: dict[str | None, list[tuple[str, dict]]] = {}
    for record in records:
        playbook, *rest = record["argv"]
        extra = json.loads(rest[rest.index("-e") + 1]) if "-e" in rest else {}
        by_project.setdefault(extra.get("project"), []).append((playbook, extra))
        assert record["cwd"] == str(REPO_ROOT)
        assert record["stdin"] == "" and not record["stdin_tty"]
        assert not record["fd9"], "the lock's file descriptor leaked into the playbook"
        assert record["env"]["ANSIBLE_NOCOLOR"] == "1" and record["env"]["ANSIBLE_FORCE_COLOR"] == "0"
        assert record["env"]["SPECFLEET_HOME"] == str(schedule.controller.home)
        assert record["env"]["PATH"].split(":")[0] == str(schedule.probe.parent)
    for project in ("clawmarketing", hostile):
        assert by_project[project] == [("dispatch.yml", {"project": project})] + [
            (step, {"project": project}) for step in evening_steps()]
    if "specfleet health" in entries:
        assert by_project[None] == [("playbooks/health.yml", {})]

    # The log of each entry: the probe's output between start and end marks; verify.yml's
    # failure does not stop merge.yml, and the job ends with its status.
    evening_log = (schedule.logs / "evening-clawmarketing.log").read_text()
    assert "specfleet evening clawmarketing: start" in evening_log
    assert "probe ran ['playbooks/merge.yml'" in evening_log
    assert evening_log.rstrip().endswith("end (exit 3)")
    assert (schedule.logs / "dispatch-clawmarketing.log").read_text().rstrip().endswith("end (exit 0)")
    assert (schedule.logs / "dispatch-clawmarketing.lock").exists()

    # Run by hand without a job, the script lists them.
    listing = subprocess.run([str(schedule.script)], capture_output=True, text=True, check=False)
    assert listing.returncode == 64
    assert "  dispatch-clawmarketing: dispatch.yml" in listing.stderr


def test_an_overrunning_job_is_skipped_and_what_a_job_leaves_running_does_not_hold_the_lock(schedule, tmp_path):
    run = schedule.apply(jobs=[{"name": "dispatch", "playbooks": ["dispatch.yml"], "minute": "0", "hour": "9"}])
    assert run.returncode == 0, run.output
    command = schedule.entries()["specfleet dispatch clawmarketing"]["command"]
    lock = schedule.logs / "dispatch-clawmarketing.lock"
    log = schedule.logs / "dispatch-clawmarketing.log"

    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the previous run, still going
        assert run_like_cron(command, tmp_path / "cron-home").returncode == 0
    assert schedule.records_read() == []
    assert f"specfleet dispatch clawmarketing: skipped, the previous run still holds {lock}" in log.read_text()

    # A run that leaves a process behind (as an SSH ControlPersist master would be) ...
    (schedule.root / "linger").touch()
    assert run_like_cron(command, tmp_path / "cron-home").returncode == 0
    [first] = schedule.records_read()
    try:
        # ... does not make the next run a skipped one.
        (schedule.root / "linger").unlink()
        assert run_like_cron(command, tmp_path / "cron-home").returncode == 0
        assert len(schedule.records_read()) == 2
        assert log.read_text().count("skipped") == 1
    finally:
        os.kill(first["lingering"], signal.SIGKILL)


def test_an_entry_runs_a_real_playbook_in_crons_environment(schedule, tmp_path):
    run = schedule.apply(jobs=[{"name": "validate", "playbooks": ["playbooks/validate.yml"], "minute": "*/5"}],
                         ansible_playbook=str(VENV_BIN / "ansible-playbook"))
    assert run.returncode == 0, run.output
    [entry] = schedule.entries().values()
    assert entry["time"] == "*/5 * * * *"
    result = run_like_cron(entry["command"], tmp_path / "cron-home")
    assert result.returncode == 0, result
    log = (schedule.logs / "validate-clawmarketing.log").read_text()
    assert "project clawmarketing: 8 specs valid" in log, log
    assert log.rstrip().endswith("end (exit 0)"), log
    assert "\x1b[" not in log  # no colour codes in the log


def test_logrotate_accepts_the_config_and_rotates_the_logs(schedule, tmp_path):
    run = schedule.apply(jobs=[{"name": "dispatch", "playbooks": ["dispatch.yml"]}], logrotate_size="1k",
                         logrotate_rotate=2)
    assert run.returncode == 0, run.output
    log = schedule.logs / "dispatch-clawmarketing.log"
    log.write_text("x" * 4096)
    state = tmp_path / "logrotate.state"
    result = subprocess.run(["logrotate", "--state", str(state), str(schedule.logrotate)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == ""  # copytruncate: the file a running job appends to stays in place
    assert (schedule.logs / "dispatch-clawmarketing.log.1").read_text() == "x" * 4096


def test_dropped_entries_go_and_foreign_ones_stay(schedule):
    assert schedule.apply(projects=["clawmarketing", "other"]).returncode == 0
    assert {"specfleet dispatch other", "specfleet evening other"} <= set(schedule.entries())
    # Someone else's entry in the same file.
    with schedule.cron_file.open("a") as cron:
        cron.write("#Ansible: backup\n0 1 * * * root /usr/local/bin/backup\n")

    run = schedule.apply(projects=["clawmarketing"])
    assert run.returncode == 0, run.output
    names = set(schedule.entries())
    assert "backup" in names and "specfleet dispatch clawmarketing" in names
    assert not any(name.endswith(" other") for name in names)
    assert "dispatch-other)" not in schedule.script.read_text()

    run = schedule.apply(state="absent")
    assert run.returncode == 0, run.output
    assert set(schedule.entries()) == {"backup"}
    assert not schedule.script.exists()
    assert not schedule.logrotate.exists()
    assert schedule.logs.is_dir()  # logs are kept


def test_a_file_the_role_did_not_write_is_not_overwritten(schedule):
    schedule.script.write_text("#!/bin/sh\necho mine\n")
    run = schedule.apply()
    assert run.returncode == 2
    assert f"{schedule.script} exists and was not written by this role" in run.output
    assert schedule.script.read_text() == "#!/bin/sh\necho mine\n"
    assert not schedule.cron_file.exists()


def test_a_missing_playbook_stops_the_role_unless_it_is_optional(schedule):
    jobs = [{"name": "nightly", "playbooks": ["playbooks/nightly-cleanup.yml"]}]
    run = schedule.apply(jobs=jobs)
    assert run.returncode == 2
    assert "playbooks/nightly-cleanup.yml not found in" in run.output
    assert not schedule.cron_file.exists()

    run = schedule.apply(jobs=jobs, optional_playbooks=["playbooks/nightly-cleanup.yml"])
    assert run.returncode == 0, run.output
    assert "Left out while absent" in run.output and "playbooks/nightly-cleanup.yml" in run.output
    assert not schedule.cron_file.exists()
