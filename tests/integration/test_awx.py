"""The playbooks run the way AWX runs a job template: through ansible-runner.

Each job gets a fresh private data directory holding only ``env/extravars`` (the job's extra
vars; nothing on the command line), ``env/envvars``, ``env/settings`` (idle and job timeouts:
a job that waits for input ends as ``timeout``, not ``failed``) and ``inventory/`` (the test
cluster's nodes), and runs in a copy of the project, as AWX runs a project checkout. ansible-
runner drives ansible-playbook through pexpect, with no one to answer a prompt.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import ansible_runner
import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.integration.conftest import VENV_BIN
from tools import example_repo


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project as AWX checks it out: the files git knows, none it ignores."""
    dest = tmp_path_factory.mktemp("awx") / "project"
    listed = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO_ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    return dest


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    example_repo.create(dest=home / "repos" / "clawmarketing")
    return home


@pytest.fixture
def awx(tmp_path, project, cluster, home, monkeypatch):
    """Run one job: ``awx(playbook, extravars, check=False)`` -> the ansible-runner Runner."""
    for key in list(os.environ):
        if key.startswith(("ANSIBLE_", "SPECFLEET_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    jobs = iter(range(1, 1000))

    def run(playbook: str, extravars: dict, *, check: bool = False):
        data = tmp_path / f"job-{next(jobs)}"
        (data / "env").mkdir(parents=True)
        (data / "env" / "extravars").write_text(json.dumps(extravars))
        (data / "env" / "envvars").write_text(json.dumps({
            "SPECFLEET_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "ansible-tmp"),
            "ANSIBLE_HOME": str(home / "ansible-home"), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cluster.cp_dir)}))
        (data / "env" / "settings").write_text(json.dumps({"idle_timeout": 60, "job_timeout": 180}))
        cluster.write_inventory(data / "inventory" / "hosts.yml", group_vars_dir=project / "inventory" / "local" / "group_vars")
        runner = ansible_runner.run(private_data_dir=str(data), project_dir=str(project), playbook=playbook,
                                    cmdline="--check" if check else None, quiet=True)
        command = json.loads(next((data / "artifacts").glob("*/command")).read_text())["command"]
        # Extra vars reach the playbook only through the extravars file, as in AWX.
        extra = [command[i + 1] for i, arg in enumerate(command) if arg in ("-e", "--extra-vars")]
        assert extra == [f"@{data / 'env' / 'extravars'}"], command
        return runner

    return run


def ok_results(runner, kind: str = "runner_on_ok") -> dict[str, list[dict]]:
    """Task name -> its results (ok or changed): per host, or with ``runner_item_on_ok`` per loop item."""
    results: dict[str, list[dict]] = {}
    for event in runner.events:
        data = event.get("event_data", {})
        if event["event"] == kind:
            results.setdefault(data.get("task"), []).append(data.get("res", {}))
    return results


def changed(runner) -> int:
    return runner.stats["changed"].get("localhost", 0)


@pytest.mark.cluster
def test_validate_runs_as_an_awx_job(awx):
    runner = awx("playbooks/validate.yml", {"project": "clawmarketing"})
    assert (runner.status, runner.rc) == ("successful", 0), runner.stdout.read()
    results = ok_results(runner)
    assert {"Require a project", "Validate specs/clawmarketing", "Report"} <= set(results)
    [report] = results["Report"]
    assert "project clawmarketing: 8 specs valid" in report["msg"]


@pytest.mark.cluster
def test_a_missing_extra_var_fails_at_once_instead_of_waiting_for_input(awx):
    runner = awx("dispatch.yml", {})
    assert (runner.status, runner.rc) == ("failed", 2), runner.stdout.read()
    failures = [e["event_data"] for e in runner.events if e["event"] == "runner_on_failed"]
    assert [f["task"] for f in failures] == ["Require a project"]
    assert "name the project: -e project=<folder under specs/>" in failures[0]["res"]["msg"]
    # It stopped there: no node was contacted, nothing else ran.
    hosts = {e["event_data"].get("host") for e in runner.events if e["event"].startswith("runner_on_")}
    assert hosts == {"localhost"}


@pytest.mark.cluster
def test_schedule_installs_idempotently_checks_without_writing_and_removes(awx, project, home, tmp_path):
    root = tmp_path / "schedule"
    cron_file, logrotate, logs, script = (root / "cron.d" / "specfleet", root / "logrotate.d" / "specfleet",
                                          root / "logs", root / "bin" / "specfleet-cron")
    for path in (cron_file, logrotate, script):
        path.parent.mkdir(parents=True)
    extravars = {
        "specfleet_schedule_projects": ["clawmarketing"],
        "specfleet_schedule_cron_file": str(cron_file), "specfleet_schedule_logrotate_file": str(logrotate),
        "specfleet_schedule_log_dir": str(logs), "specfleet_schedule_script": str(script),
        # The copy has no virtualenv; the jobs would run the one the tests run with.
        "specfleet_schedule_ansible_playbook": str(VENV_BIN / "ansible-playbook"),
        "specfleet_schedule_env": {"SPECFLEET_HOME": str(home)},
    }

    first = awx("playbooks/schedule.yml", extravars)
    assert first.status == "successful", first.stdout.read()
    assert changed(first) > 0
    installed = cron_file.read_text()
    names = [line[len("#Ansible: "):] for line in installed.splitlines() if line.startswith("#Ansible: ")]
    expected = ["specfleet dispatch clawmarketing", "specfleet evening clawmarketing"]
    if (project / "playbooks" / "health.yml").exists():
        expected.append("specfleet health")
    assert names == expected
    assert f"0 17 * * * {_user()} {script} evening-clawmarketing" in installed
    # The jobs run in the project the playbook ran from (the role's checkout by default).
    assert f"cd {project} || exit 1" in script.read_text()
    assert logrotate.exists() and logs.is_dir()

    again = awx("playbooks/schedule.yml", extravars)
    assert again.status == "successful", again.stdout.read()
    assert changed(again) == 0

    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (cron_file, script, logrotate)}
    check = awx("playbooks/schedule.yml", {**extravars, "specfleet_schedule_evening_hour": "18"}, check=True)
    assert check.status == "successful", check.stdout.read()
    assert changed(check) == 1
    [evening] = [r for r in ok_results(check, "runner_item_on_ok")["Install the cron entries"] if r.get("changed")]
    assert evening["item"]["name"] == "specfleet evening clawmarketing" and evening["item"]["hour"] == "18"
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in before} == before

    removed = awx("playbooks/schedule.yml", {**extravars, "specfleet_schedule_state": "absent"})
    assert removed.status == "successful", removed.stdout.read()
    assert not cron_file.exists() and not script.exists() and not logrotate.exists()
    assert logs.is_dir()


def _user() -> str:
    return subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()


# --- static checks -------------------------------------------------------------------------

PAUSE = {"pause", "ansible.builtin.pause", "ansible.legacy.pause"}
TASK_LISTS = ("tasks", "pre_tasks", "post_tasks", "handlers", "block", "rescue", "always")


def waits_for_input(path: Path) -> list[str]:
    """What in a playbook or task file would wait for someone to type: vars_prompt, pause without a time."""
    problems = []

    def tasks(items, where):
        for task in items or []:
            if not isinstance(task, dict):
                continue
            for key in TASK_LISTS:
                tasks(task.get(key), where)
            for module in PAUSE & set(task):
                args = task[module] if isinstance(task[module], dict) else {}
                if not ({"seconds", "minutes"} & set(args)) and "seconds=" not in str(task[module]) \
                        and "minutes=" not in str(task[module]):
                    problems.append(f"{where}: task {task.get('name', module)!r} pauses without seconds/minutes")

    document = yaml.safe_load(path.read_text())
    if not isinstance(document, list):
        return problems
    for item in document:
        if not isinstance(item, dict):
            continue
        if "vars_prompt" in item:
            problems.append(f"{path}: play {item.get('name')!r} has vars_prompt")
        if "hosts" in item:
            for key in TASK_LISTS:
                tasks(item.get(key), path)
        else:
            tasks([item], path)
    return problems


def playbook_files(root: Path) -> list[Path]:
    return sorted({*root.glob("*.yml"), *root.glob("playbooks/**/*.yml"), *root.glob("roles/*/tasks/**/*.yml"),
                   *root.glob("roles/*/handlers/**/*.yml")})


def test_no_playbook_waits_for_input():
    files = playbook_files(REPO_ROOT)
    assert REPO_ROOT / "dispatch.yml" in files and REPO_ROOT / "playbooks" / "schedule.yml" in files
    problems = [problem for path in files for problem in waits_for_input(path)]
    assert problems == []


def test_the_input_check_finds_what_it_looks_for(tmp_path):
    playbook = tmp_path / "bad.yml"
    playbook.write_text(yaml.safe_dump([
        {"name": "asks", "hosts": "localhost", "vars_prompt": [{"name": "project", "prompt": "Project?"}], "tasks": [
            {"name": "wait for enter", "ansible.builtin.pause": {"prompt": "press enter"}},
            {"name": "waits a bit", "ansible.builtin.pause": {"seconds": 5}},
            {"block": [{"name": "nested", "pause": None}]},
        ]},
    ]))
    assert waits_for_input(playbook) == [
        f"{playbook}: play 'asks' has vars_prompt",
        f"{playbook}: task 'wait for enter' pauses without seconds/minutes",
        f"{playbook}: task 'nested' pauses without seconds/minutes",
    ]


def test_awx_finds_the_same_requirements_as_setup():
    """AWX installs collections from collections/requirements.yml (and, in newer releases, the
    top-level requirements.yml) and roles from roles/requirements.yml; scripts/setup.sh reads the
    top-level file, the canonical list."""
    canonical = yaml.safe_load((REPO_ROOT / "requirements.yml").read_text())
    collections = yaml.safe_load((REPO_ROOT / "collections" / "requirements.yml").read_text())
    roles = yaml.safe_load((REPO_ROOT / "roles" / "requirements.yml").read_text())
    assert set(canonical) == {"collections", "roles"}
    assert collections == {"collections": canonical["collections"]}
    assert roles == {"roles": canonical["roles"]}
    ignored = subprocess.run(["git", "-C", str(REPO_ROOT), "check-ignore", "-q", "collections/requirements.yml"], check=False)
    assert ignored.returncode == 1, "collections/requirements.yml is git-ignored: AWX would never see it"
