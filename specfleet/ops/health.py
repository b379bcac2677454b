# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health guardian's judgement of one worker node (``playbooks/health.yml``).

One SSH command (:func:`probe_script`) measures the node: its clock, the free space under
the work root, what every configured agent CLI answers to ``--version``, the installed
runner's version, what bootstrap recorded in ``node-info.json`` and how many workspaces
are stale. :func:`judge` turns that into problems, which take the node out of dispatch,
and warnings, which are only shown:

=========================  ===========================================================
problem                    unreachable; free space below ``min_free``; a configured
                           CLI missing or not answering; clock skew above ``max_skew``;
                           with ``strict_versions`` also a CLI version other than the
                           inventory's pin
warning                    a CLI version other than the pin or than what bootstrap
                           recorded (drift); the runner differs from the controller's;
                           the node was never bootstrapped; stale workspaces
=========================  ===========================================================
"""
from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from specfleet.dispatch.jobs import JOB_STATE, shell_path

VERSION = re.compile(r"[0-9]+\.[0-9]+[0-9A-Za-z.+-]*")
GIB = 1024 ** 3
DEFAULTS = {"min_free_gib": 5.0, "max_skew_s": 30.0, "stale_after_h": 24.0, "strict_versions": False}
COLUMNS = ("NODE", "HEALTH", "FREE", "SKEW", "CLIS", "RUNNER", "STALE", "WHY")


# The clock is read by a command of its own, so slow CLIs cannot widen the bracket around it.
CLOCK_SCRIPT = "printf 'time\\t%s\\n' \"$(date +%s.%N)\""


def probe_script(root: str, clis: Sequence[Mapping[str, Any]], stale_after_h: float,
                 path: str = "/usr/local/bin:/usr/bin:/bin") -> str:
    """A POSIX shell script printing one ``key<TAB>...`` line per measurement (the clock: :data:`CLOCK_SCRIPT`)."""
    root_q = shell_path(root)
    lines = [JOB_STATE,
             'to=$(command -v timeout) || to=/usr/bin/timeout',
             f"printf 'df\\t%s\\n' \"$(df -Pk {root_q} 2>/dev/null | awk 'NR==2 {{print $4}}')\"",
             f"printf 'runner\\t%s\\n' \"$(\"$to\" 20 python3 -B {root_q}/runner/runner.py version 2>/dev/null)\"",
             f"if [ -r {root_q}/node-info.json ]; then printf 'info\\t%s\\n' \"$(tr -d '\\n' < {root_q}/node-info.json)\"; fi"]
    for cli in clis:
        argv = " ".join(shlex.quote(a) for a in [str(cli["name"]), *cli.get("version_args", ["--version"])])
        lines.append(f"out=$(PATH={shlex.quote(path)} \"$to\" 20 {argv} 2>&1 </dev/null); rc=$?; "
                     f"printf 'cli\\t%s\\t%s\\t%s\\n' {shlex.quote(str(cli['name']))} \"$rc\" "
                     "\"$(printf '%s' \"$out\" | head -n 1 | cut -c1-200)\"")
    minutes = max(1, int(stale_after_h * 60))
    lines.append(f"if cd {root_q}/workspaces 2>/dev/null; then for w in */*/*; do [ -d \"$w\" ] || continue; "
                 f"[ -n \"$(find \"$w\" -maxdepth 0 -mmin +{minutes})\" ] || continue; "
                 "[ \"$(job_state \"../runs/$w\")\" = running ] && continue; printf 'stale\\t%s\\n' \"$w\"; done; fi")
    return "\n".join(lines) + "\n"


@dataclass
class Probe:
    time: float | None = None
    free_bytes: int | None = None
    runner: str | None = None
    info: dict = field(default_factory=dict)
    clis: dict[str, tuple[int, str]] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)


def parse(stdout: str) -> Probe:
    probe = Probe()
    for line in stdout.splitlines():
        key, _, rest = line.partition("\t")
        if key == "time":
            try:
                probe.time = float(rest)
            except ValueError:
                pass
        elif key == "df" and rest.strip().isdigit():
            probe.free_bytes = int(rest) * 1024
        elif key == "runner" and re.fullmatch(r"[0-9a-f]{12}", rest.strip()):
            probe.runner = rest.strip()
        elif key == "info":
            try:
                probe.info = json.loads(rest)
            except ValueError:
                probe.info = {}
        elif key == "cli":
            parts = rest.split("\t", 2) + ["", ""]
            probe.clis[parts[0]] = (int(parts[1]) if parts[1].lstrip("-").isdigit() else 127, parts[2])
        elif key == "stale":
            probe.stale.append(rest)
    return probe


@dataclass
class Verdict:
    node: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    free_bytes: int | None = None
    skew_s: float | None = None
    clis: dict[str, str | None] = field(default_factory=dict)
    clis_ok: int = 0
    runner: str = "-"
    stale: int = 0
    reachable: bool = True

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"node": self.node, "healthy": self.healthy, "reachable": self.reachable,
                "problems": self.problems, "warnings": self.warnings, "free_bytes": self.free_bytes,
                "skew_s": self.skew_s, "clis": self.clis, "runner": self.runner, "stale_workspaces": self.stale}

    def row(self) -> tuple[str, ...]:
        free = "-" if self.free_bytes is None else f"{self.free_bytes / GIB:.1f}G"
        skew = "-" if self.skew_s is None else f"{self.skew_s:+.1f}s"
        clis = f"{self.clis_ok}/{len(self.clis)}" if self.clis else "-"
        why = "; ".join(self.problems + [f"warning: {w}" for w in self.warnings]) or "-"
        health = "healthy" if self.healthy else ("unreachable" if not self.reachable else "unhealthy")
        return (self.node, health, free, skew, clis, self.runner, str(self.stale), why)


def unreachable(node: str, message: str) -> Verdict:
    verdict = Verdict(node, reachable=False)
    verdict.problems.append("unreachable: " + (message.strip().splitlines() or ["no answer"])[-1][:200])
    return verdict


def judge(node: str, probe: Probe, clis: Sequence[Mapping[str, Any]], sent_at: float, answered_at: float,
          controller_runner: str, limits: Mapping[str, Any] | None = None) -> Verdict:
    """Problems and warnings of one node; ``sent_at``/``answered_at`` bracket the probe (controller clock)."""
    limits = {**DEFAULTS, **(limits or {})}
    verdict = Verdict(node, free_bytes=probe.free_bytes)
    if probe.time is None:
        verdict.problems.append("the node's clock could not be read")
    else:
        # The node read its clock between sending and answering; the midpoint is within half the round trip.
        verdict.skew_s = round(probe.time - (sent_at + answered_at) / 2, 3)
        slack = (answered_at - sent_at) / 2
        if abs(verdict.skew_s) - slack > float(limits["max_skew_s"]):
            verdict.problems.append(f"clock is {verdict.skew_s:+.1f} s off the controller's (limit "
                                    f"{float(limits['max_skew_s']):g} s): set up NTP")
    if probe.free_bytes is None:
        verdict.problems.append("the work root is missing or its free space could not be read (run bootstrap.yml)")
    elif probe.free_bytes < float(limits["min_free_gib"]) * GIB:
        verdict.problems.append(f"{probe.free_bytes / GIB:.1f} GiB free under the work root, below "
                                f"{float(limits['min_free_gib']):g} GiB (cleanup.yml frees finished attempts)")
    recorded = probe.info.get("clis") or {}
    for cli in clis:
        name = str(cli["name"])
        rc, line = probe.clis.get(name, (127, ""))
        found = VERSION.search(line) if rc == 0 else None
        verdict.clis[name] = found.group(0) if found else None
        if rc != 0:
            verdict.problems.append(f"{name} does not answer --version" if rc != 127 else f"{name} is not installed")
            continue
        verdict.clis_ok += 1
        pin = str(cli.get("version", "latest"))
        version = verdict.clis[name]
        if pin != "latest" and version != pin:
            text = f"{name} is {version}, the inventory pins {pin} (run bootstrap.yml --tags clis)"
            (verdict.problems if limits["strict_versions"] else verdict.warnings).append(text)
        elif recorded.get(name) and version != recorded.get(name):
            verdict.warnings.append(f"{name} changed since bootstrap: {recorded.get(name)} -> {version}")
    if not probe.info:
        verdict.warnings.append("never bootstrapped (no node-info.json)")
    if probe.runner is None:
        verdict.runner = "missing"
        if probe.info:
            verdict.warnings.append("the runner does not start (run bootstrap.yml --tags runner)")
    elif probe.runner != controller_runner:
        verdict.runner = "drift"
        verdict.warnings.append(f"runner {probe.runner} differs from the controller's {controller_runner} "
                                "(attempts bring their own; run bootstrap.yml --tags runner)")
    else:
        verdict.runner = "ok"
    verdict.stale = len(probe.stale)
    if probe.stale:
        verdict.warnings.append(f"{len(probe.stale)} workspaces older than {float(limits['stale_after_h']):g} h "
                                "with no running job (cleanup.yml)")
    return verdict


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned lines, header first; the last column is not padded."""
    rows = [COLUMNS, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return ["  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]]).rstrip() for r in rows]
