"""The specfleet_schedule role's renderer: what it refuses, and how it names and quotes.

The rendered scripts and cron lines are run for real in tests/integration/test_schedule.py.
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess

import pytest
from ansible.errors import AnsibleFilterError

from tests.conftest import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    "specfleet_schedule_filter", REPO_ROOT / "roles" / "specfleet_schedule" / "filter_plugins" / "specfleet_schedule.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

SETTINGS = {"repo_dir": "/srv/specfleet", "ansible_playbook": "/srv/specfleet/.venv/bin/ansible-playbook",
            "log_dir": "/var/log/specfleet", "lock_dir": "/var/log/specfleet/locks", "script": "/usr/local/bin/specfleet-cron",
            "name_prefix": "specfleet "}
DISPATCH = {"name": "dispatch", "playbooks": ["dispatch.yml"], "minute": "0", "hour": "9"}


def entries(jobs=(DISPATCH,), projects=("demo",), **settings):
    return render.specfleet_schedule_entries(list(jobs), list(projects), {**SETTINGS, **settings})


@pytest.mark.parametrize(("jobs", "projects", "settings", "message"), [
    ([DISPATCH], ["a\nb"], {}, "project 'a\\nb' contains a newline"),
    ([DISPATCH], ["a\rb"], {}, "contains a carriage return"),
    ([DISPATCH], ["a", "a"], {}, "a project is listed twice"),
    ([{**DISPATCH, "hour": "9 * * * root rm -rf /"}], ["a"], {}, "hour='9 * * * root rm -rf /' is not a cron time field"),
    ([{**DISPATCH, "name": "../x"}], ["a"], {}, "job name '../x' must match"),
    ([{**DISPATCH, "lock": "a b"}], ["a"], {}, "lock 'a b' must match"),
    ([{**DISPATCH, "playbooks": "dispatch.yml"}], ["a"], {}, "playbooks must be a non-empty list"),
    ([DISPATCH, DISPATCH], ["a"], {}, "two cron entries would be named 'specfleet dispatch a'"),
    ([DISPATCH], ["a"], {"script": "/opt/back\\slash"}, "contains a backslash"),
    ([DISPATCH], ["a\0b"], {}, "contains a NUL byte"),
])
def test_what_cron_cannot_carry_is_refused_with_the_reason(jobs, projects, settings, message):
    with pytest.raises(AnsibleFilterError) as caught:
        entries(jobs, projects, **settings)
    assert message in str(caught.value)


def test_names_files_and_times():
    evening = {"name": "evening", "playbooks": ["playbooks/collect.yml", "playbooks/merge.yml"], "hour": "17", "minute": "0"}
    health = {"name": "health", "playbooks": ["playbooks/health.yml"], "per_project": False, "minute": "*/10"}
    got = entries([DISPATCH, evening, health], ["demo", "a b", "a_b"])
    assert [e["name"] for e in got] == [
        "specfleet dispatch demo", "specfleet dispatch a b", "specfleet dispatch a_b",
        "specfleet evening demo", "specfleet evening a b", "specfleet evening a_b", "specfleet health"]
    by_name = {e["name"]: e for e in got}
    demo = by_name["specfleet dispatch demo"]
    assert (demo["minute"], demo["hour"], demo["day"], demo["month"], demo["weekday"]) == ("0", "9", "*", "*", "*")
    assert demo["id"] == "dispatch-demo"
    assert demo["job"] == "/usr/local/bin/specfleet-cron dispatch-demo"
    assert demo["log"] == "/var/log/specfleet/dispatch-demo.log"
    assert demo["lock"] == "/var/log/specfleet/locks/dispatch-demo.lock"
    # "a b" and "a_b" must not share a log or a lock: the unusual name gets a hash.
    assert by_name["specfleet dispatch a_b"]["lock"].endswith("/dispatch-a_b.lock")
    spaced = by_name["specfleet dispatch a b"]["lock"]
    assert spaced.startswith("/var/log/specfleet/locks/dispatch-a_b-") and spaced != by_name["specfleet dispatch a_b"]["lock"]
    assert by_name["specfleet health"]["project"] is None
    assert by_name["specfleet health"]["log"] == "/var/log/specfleet/health.log"


def test_a_job_of_only_skipped_playbooks_is_left_out_and_skipped_steps_are_dropped():
    evening = {"name": "evening", "playbooks": ["playbooks/collect.yml", "playbooks/report.yml"]}
    report = {"name": "report", "playbooks": ["playbooks/report.yml"]}
    got = entries([evening, report], ["demo"], skip=["playbooks/report.yml"])
    assert [e["name"] for e in got] == ["specfleet evening demo"]
    assert got[0]["playbooks"] == ["playbooks/collect.yml"]
    assert "report.yml" not in render.specfleet_schedule_script(got, {"repo_dir": "/srv/specfleet"})


def test_extra_vars_are_one_json_argument_merged_in_order():
    # A newline inside a value is fine: JSON escapes it, so the command stays on one line.
    job = {**DISPATCH, "extra_vars": {"specfleet_executor": "replay", "shared": "job", "reason": "two\nlines"}}
    [entry] = entries([job], ["demo"], extra_vars={"shared": "global", "only_global": 1})
    [command] = entry["commands"]
    argv = shlex.split(command)
    assert argv[:2] == ["/srv/specfleet/.venv/bin/ansible-playbook", "dispatch.yml"]
    assert json.loads(argv[argv.index("-e") + 1]) == {
        "only_global": 1, "shared": "job", "specfleet_executor": "replay", "reason": "two\nlines", "project": "demo"}


def test_the_environment_must_be_shell_names():
    with pytest.raises(AnsibleFilterError, match="environment variable name 'A B' is not a shell name"):
        render.specfleet_schedule_script(entries(), {"repo_dir": "/srv", "env": {"A B": "1"}})


def cron_command_part(field: str) -> str:
    """What Debian's cron (do_command.c, patch Handle-escapes-in-job-input) hands to the shell."""
    out, escaped = [], False
    for char in field:
        if escaped:
            escaped = False
            if char in "%\\":
                out[-1] = char
            else:
                out.append(char)
            continue
        assert char != "%", f"an unescaped % would end the command (the rest becomes stdin): {field!r}"
        out.append(char)
        escaped = char == "\\"
    return "".join(out)


@pytest.mark.parametrize("path", ["/opt/spec fleet/run.sh", "/opt/50%/run.sh", "/opt/it's/%%/run.sh"])
def test_a_cron_command_survives_crons_percent_handling(path):
    """Debian's cron (do_command.c with Handle-escapes-in-job-input): ``\\%`` -> ``%``, ``%`` ends the command."""
    command = cron_command_part(render.cron_command(path))
    result = subprocess.run(["/bin/sh", "-c", "printf '%s' " + command], capture_output=True, text=True, check=True)
    assert result.stdout == path
