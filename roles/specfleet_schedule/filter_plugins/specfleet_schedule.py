# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cron entries of the specfleet_schedule role and the job script they run, rendered in one place.

Each cron entry is only ``<script> <job>``: the script (one file, written by Ansible) holds
every job. Debian's cron refuses a command field longer than 998 characters
(debian/patches/fixes/Dont-silently-truncate-commands.patch), which the evening job's four
playbooks with their paths and quoted extra vars can exceed, and it turns every unescaped
``%`` of a cron line into a newline; the script has neither limit and can be read and run
by hand (``<script> evening-clawmarketing``; without an argument it lists the jobs). For the
job named, it

* appends everything to ``<log_dir>/<job>[-<project>].log``, stdin from /dev/null;
* takes ``flock -n`` on ``<lock_dir>/<lock>[-<project>].lock`` and, when the previous run
  still holds it, logs that and exits 0 (an overrunning job never overlaps itself); the
  lock's file descriptor is closed for the playbooks, so nothing they leave running (an SSH
  ControlPersist master, say) keeps holding it;
* runs the job's playbooks from the checkout, one after the other, each even when an
  earlier one failed, and exits with the last failure's status.

Every value is quoted with ``shlex.quote``; extra vars travel as one JSON argument
(``-e '{"project": "x"}'``), which ansible-playbook reads verbatim, unlike ``key=value``
(split on spaces). Characters a line cannot carry (newline, carriage return, NUL) are refused.
"""
from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from ansible.errors import AnsibleFilterError

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CRON_FIELD = re.compile(r"^[A-Za-z0-9*/,-]+$")
SAFE_FILE_PART = re.compile(r"[^A-Za-z0-9._-]")
TIME_FIELDS = ("minute", "hour", "day", "month", "weekday")
# The line after the shebang of the job script: how the role recognises its own file.
MARKER = "# specfleet_schedule job script"


def _one_line(value: object, what: str) -> str:
    text = str(value)
    for char, label in (("\n", "a newline"), ("\r", "a carriage return"), ("\0", "a NUL byte")):
        if char in text:
            raise AnsibleFilterError(f"specfleet_schedule: {what} {text!r} contains {label}, which cannot be scheduled")
    return text


def _file_part(value: str) -> str:
    """``value`` as a file name part; anything unusual is replaced and disambiguated by a hash."""
    safe = SAFE_FILE_PART.sub("_", value)
    if safe != value or safe.strip(".") == "":
        safe = f"{safe}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"
    return safe


def cron_command(path: str) -> str:
    """The command field of a cron line that runs ``path``.

    cron ends the command at an unescaped ``%`` (the rest becomes stdin) and reads ``\\%`` as
    ``%``; what it makes of other backslashes differs between implementations (Debian's, with
    its patch Handle-escapes-in-job-input, also reads ``\\\\`` as ``\\``), so a path with a
    backslash is refused.
    """
    if "\\" in _one_line(path, "script path"):
        raise AnsibleFilterError(f"specfleet_schedule: script path {path!r} contains a backslash, which cron lines mangle")
    return shlex.quote(path).replace("%", "\\%")


def _playbook_command(settings: Mapping[str, Any], playbook: str, extra_vars: Mapping[str, Any]) -> str:
    argv = [str(settings["ansible_playbook"])]
    if settings.get("inventory"):
        argv += ["-i", str(settings["inventory"])]
    if settings.get("vault_password_file"):
        argv += ["--vault-password-file", str(settings["vault_password_file"])]
    argv.append(playbook)
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars), sort_keys=True, ensure_ascii=False)]
    return " ".join(shlex.quote(_one_line(arg, "argument")) for arg in argv)


def _time_fields(job: Mapping[str, Any]) -> dict[str, str]:
    fields = {}
    for field in TIME_FIELDS:
        value = "*" if job.get(field) is None else str(job.get(field))
        if not CRON_FIELD.match(value):
            raise AnsibleFilterError(
                f"specfleet_schedule: job {job.get('name')!r}: {field}={value!r} is not a cron time field "
                "(digits, names, *, /, - and , only, e.g. '*/10' or '1-5')")
        fields[field] = value
    return fields


def specfleet_schedule_entries(jobs: Iterable[Mapping[str, Any]], projects: Iterable[str],
                               settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One cron entry per job (``per_project: false``) or per job and project.

    ``settings``: ``ansible_playbook``, ``inventory``, ``vault_password_file``, ``log_dir``,
    ``lock_dir``, ``script``, ``extra_vars`` (mapping, every job), ``name_prefix`` and
    ``skip`` (playbooks to leave out, e.g. optional ones that are absent). Each entry:
    ``name`` (the cron entry's stable identity), ``id`` (the job's name in the script, and
    its log and lock file name), the five time fields, ``job`` (the cron command),
    ``commands`` (shell lines), ``log``, ``lock``, ``playbooks`` and ``project`` (or None).
    """
    projects = [_one_line(p, "project") for p in projects or []]
    if len(set(projects)) != len(projects):
        raise AnsibleFilterError(f"specfleet_schedule: a project is listed twice in {projects}")
    skip = set(settings.get("skip") or [])
    log_dir, lock_dir = (_one_line(settings[key], key).rstrip("/") for key in ("log_dir", "lock_dir"))
    script = cron_command(str(settings["script"]))
    prefix = _one_line(settings.get("name_prefix") or "", "name_prefix")

    entries: list[dict[str, Any]] = []
    names: set[str] = set()
    ids: set[str] = set()
    for job in jobs or []:
        name = str(job.get("name") or "")
        if not JOB_NAME.match(name):
            raise AnsibleFilterError(f"specfleet_schedule: job name {name!r} must match {JOB_NAME.pattern}")
        playbooks = job.get("playbooks")
        if isinstance(playbooks, str) or not playbooks:
            raise AnsibleFilterError(f"specfleet_schedule: job {name!r}: playbooks must be a non-empty list of paths")
        playbooks = [_one_line(p, "playbook") for p in playbooks if p not in skip]
        if not playbooks:
            continue
        fields = _time_fields(job)
        lock_name = str(job.get("lock") or name)
        if not JOB_NAME.match(lock_name):
            raise AnsibleFilterError(f"specfleet_schedule: job {name!r}: lock {lock_name!r} must match {JOB_NAME.pattern}")
        base_vars = {**dict(settings.get("extra_vars") or {}), **dict(job.get("extra_vars") or {})}
        targets: list[str | None] = list(projects) if job.get("per_project", True) else [None]
        for project in targets:
            extra_vars = dict(base_vars) if project is None else {**base_vars, "project": project}
            suffix = "" if project is None else f"-{_file_part(project)}"
            entry_id = f"{name}{suffix}"
            entry_name = f"{prefix}{name}" if project is None else f"{prefix}{name} {project}"
            if entry_name in names or entry_id in ids:
                raise AnsibleFilterError(f"specfleet_schedule: two cron entries would be named {entry_name!r}")
            names.add(entry_name)
            ids.add(entry_id)
            entries.append({
                "name": entry_name, "id": entry_id, **fields, "job": f"{script} {entry_id}",
                "commands": [_playbook_command(settings, playbook, extra_vars) for playbook in playbooks],
                "log": f"{log_dir}/{entry_id}.log", "lock": f"{lock_dir}/{lock_name}{suffix}.lock",
                "playbooks": playbooks, "project": project,
            })
    return entries


def specfleet_schedule_script(entries: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> str:
    """The job script of ``entries`` (``specfleet_schedule_entries``); ``settings``: ``repo_dir``, ``env``."""
    q = shlex.quote
    env = {str(key): _one_line(value, f"environment variable {key}") for key, value in dict(settings.get("env") or {}).items()}
    for key in env:
        if not ENV_NAME.match(key):
            raise AnsibleFilterError(f"specfleet_schedule: environment variable name {key!r} is not a shell name")
    entries = list(entries or [])
    lines = [
        "#!/bin/sh",
        MARKER,
        "# Written by Ansible (role specfleet_schedule); changes here are overwritten.",
        "# Each cron entry of specfleet's schedule runs one job: <this script> <job>. Run a job by",
        "# hand the same way, as the jobs' user; without a job, the jobs are listed.",
        'job=${1:-}',
        'case $job in',
    ]
    for entry in entries:
        lines += [
            f"    {entry['id']})",
            f"        name={q(entry['name'])}",
            f"        log={q(entry['log'])}",
            f"        lock={q(entry['lock'])}",
            "        steps() {",
            *(f"            {command} 9>&- || rc=$?" for command in entry["commands"]),
            "        }",
            "        ;;",
        ]
    lines += [
        "    *)",
        '        [ -z "$job" ] || echo "no job named $job" >&2',
        '        echo "usage: $0 JOB, one of:" >&2',
        *(f"        echo {q('  ' + entry['id'] + ': ' + ', '.join(entry['playbooks']))} >&2" for entry in entries),
        "        exit 64",
        "        ;;",
        "esac",
        'exec < /dev/null >> "$log" 2>&1',
        'exec 9>> "$lock"',
        "if ! flock -n 9; then",
        '    echo "=== $(date -Iseconds) $name: skipped, the previous run still holds $lock"',
        "    exit 0",
        "fi",
        f"cd {q(_one_line(settings['repo_dir'], 'repo_dir'))} || exit 1",
        *(f"export {key}={q(str(value))}" for key, value in sorted(env.items())),
        'echo "=== $(date -Iseconds) $name: start"',
        "rc=0",
        "steps",
        'echo "=== $(date -Iseconds) $name: end (exit $rc)"',
        "exit $rc",
    ]
    return "\n".join(lines) + "\n"


def specfleet_schedule_probed(lines: Iterable[str], key: str) -> list[str]:
    """The values of ``key`` in the ``key=value`` lines files/probe.sh prints."""
    start = f"{key}="
    return [line[len(start):] for line in lines or [] if line.startswith(start)]


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"specfleet_schedule_entries": specfleet_schedule_entries,
                "specfleet_schedule_script": specfleet_schedule_script,
                "specfleet_schedule_probed": specfleet_schedule_probed}
