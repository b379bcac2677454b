"""The daily report end to end: ``playbooks/report.yml`` on a prepared store, then the HTML in a real browser.

The store holds the known day of ``tests/unit/test_daily_report.py`` (finished: F ends at
11:00). ``ansible-playbook`` writes the report; headless Chromium renders it:

* ``--dump-dom`` of the report with a probe script appended to a copy (the report itself
  has no script) gives the DOM after layout: every Gantt bar is measured in the page;
* ``--screenshot`` keeps a PNG of the report, in ``$SPECFLEET_TEST_ARTIFACTS`` when set,
  else in the test's tmp dir.

Chromium is a test dependency (``scripts/setup.sh --dev`` installs it): without it the test
fails, saying so, rather than passing unseen.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from specfleet.report import daily
from specfleet.store import base as store_base
from specfleet.store.core import Store
from tests.conftest import ProjectFactory
from tests.integration.conftest import Controller, controller_env
from tests.unit.test_daily_report import ALL_ATTEMPTS, DAY, DAY_END, DAY_START, UTC, Clock, at, good_day

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|srcset)\s*=\s*["']?\s*(?:[a-z]+:)?//)|url\(|@import""", re.I)
# Appended to a copy of the report: measures what the browser laid out and writes it into the DOM.
PROBE = """<script>
const svg = document.querySelector("svg.gantt").getBoundingClientRect();
const bars = [...document.querySelectorAll("svg.gantt rect.bar")].map(b => {
  const r = b.getBoundingClientRect();
  return {task: b.dataset.task, attempt: +b.dataset.attempt, cls: b.getAttribute("class"),
          x: r.x, y: r.y, w: r.width, h: r.height, fill: getComputedStyle(b).fill};
});
const out = document.createElement("pre");
out.id = "layout";
out.textContent = JSON.stringify({svg: {x: svg.x, y: svg.y, w: svg.width, h: svg.height}, bars,
                                  width: document.documentElement.scrollWidth});
document.body.appendChild(out);
</script>"""


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory):
    """A controller home whose store holds the known day, and the playbook's run over it."""
    root = tmp_path_factory.mktemp("daily")
    home = root / "home"
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_base, "now", clock)
        with Store(home / "state.db") as store:
            run = good_day(ProjectFactory(root), store, clock, home / "artifacts" / "demo")
            run.at(at("11:00")).end("F")
    controller = Controller(home, controller_env(home, {"TZ": "UTC"}))
    result = controller.playbook("playbooks/report.yml", "-e", "project=demo", "-e", f"day={DAY}", timeout=120)
    with Store(controller.db) as store:
        figures = daily.figures(store, "demo", DAY_START, DAY_END, tz=UTC)
    return controller, result, figures


def test_the_playbook_writes_both_reports_into_the_home(reported):
    controller, result, figures = reported
    assert result.returncode == 0, result.output
    folder = controller.home / "reports" / "demo"
    assert sorted(p.name for p in folder.iterdir()) == [f"{DAY}.html", f"{DAY}.md"]   # no temporary file left
    printed = " ".join(result.output.split())   # the YAML callback wraps long lines
    assert f"demo {DAY}: success 83.3 % (5 of 6), 3 merged, 3 in review, 1 blocked, utilisation 50.0 %, " \
           "tokens 68,000 in / 13,000 out, cost $0.0520 (+1 unknown)" in printed
    markdown = (folder / f"{DAY}.md").read_text()
    assert "| success rate | 83.3 % (5 of 6) |" in markdown
    assert "| cycle time median / p90 | 1 h 00 min / 1 h 20 min |" in markdown
    assert "Times in UTC (UTC+00:00)" in markdown and "the day is not over" not in markdown
    assert "| cost | $0.0520 (+1 unknown) |" in markdown and "| codex | 1 | 8,000 | 1,000 | unknown |" in markdown
    assert figures["utilisation"]["average"] == pytest.approx(240 / 480)    # F ran on until 11:00
    again = controller.playbook("playbooks/report.yml", "-e", "project=nope", "-e", f"day={DAY}", timeout=120)
    assert again.returncode != 0 and "no project 'nope' in the state store" in again.output


def test_the_report_renders_in_a_headless_browser_with_the_store_s_numbers(reported, tmp_path):
    assert BROWSER is not None, "chromium is not installed: run scripts/setup.sh --dev (apt-get install chromium)"
    controller, result, figures = reported
    assert result.returncode == 0, result.output
    report = controller.home / "reports" / "demo" / f"{DAY}.html"
    text = report.read_text()
    assert EXTERNAL.search(text) is None and "<script" not in text.lower()

    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = chromium(tmp_path, "--dump-dom", probed.as_uri())
    page = Page()
    page.feed(dom)
    assert EXTERNAL.search(dom) is None
    # One bar per attempt, each laid out inside the chart, in the colour of its outcome.
    assert page.bars == ALL_ATTEMPTS == len(figures["gantt"]["attempts"])
    layout = json.loads(page.layout)
    svg, bars = layout["svg"], layout["bars"]
    assert len(bars) == ALL_ATTEMPTS and layout["width"] <= 1400
    for bar in bars:
        assert bar["w"] >= 2 and bar["h"] > 10
        assert svg["x"] <= bar["x"] and bar["x"] + bar["w"] <= svg["x"] + svg["w"] + 0.5
        assert svg["y"] <= bar["y"] and bar["y"] + bar["h"] <= svg["y"] + svg["h"]
    fills = {bar["cls"].split()[1]: bar["fill"] for bar in bars}
    assert set(fills) == {"succeeded", "failed", "infra"} and len(set(fills.values())) == 3
    lanes = {(a["task_id"], a["number"]): (a["node"], a["lane"]) for a in figures["gantt"]["attempts"]}
    rows: dict[tuple[str, int], set[float]] = {}
    for bar in bars:
        rows.setdefault(lanes[(bar["task"], bar["attempt"])], set()).add(round(bar["y"], 1))
    assert all(len(ys) == 1 for ys in rows.values()) and len({y for ys in rows.values() for y in ys}) == len(rows)
    # widths are proportional to the attempts' durations (F#2 ran 60 min, B#1 10 min)
    minutes = {(a["task_id"], a["number"]): (a["shown_end"] - a["shown_start"]) / 60 for a in figures["gantt"]["attempts"]}
    per_minute = next(b["w"] for b in bars if (b["task"], b["attempt"]) == ("F", 2)) / 60
    assert per_minute > 5
    for bar in bars:
        assert bar["w"] == pytest.approx(minutes[(bar["task"], bar["attempt"])] * per_minute, abs=1.0)

    # The numbers the page shows are the store's.
    success, util = figures["success"], figures["utilisation"]
    expected = {"success.rate": f"{success['rate'] * 100:.1f} %", "success.succeeded": str(success["succeeded"]),
                "success.decided": str(success["decided"]), "merged": str(len(figures["merges"]["today"])),
                "in_review": str(len(figures["merges"]["in_review"])), "blocked": str(len(figures["blocked"])),
                "attempts": str(figures["attempts_per_spec"]["attempts"]),
                "utilisation.average": f"{util['average'] * 100:.1f} %", "capacity": str(util["capacity_slots"]),
                "cycle.median": "1 h 00 min", "cycle.p90": "1 h 20 min", "failures.total": str(figures["failures"]["total"]),
                "conflicts": str(figures["conflicts"]["count"]), "specs_total": str(figures["specs_total"])}
    assert {k: page.figures.get(k) for k in expected} == expected
    assert (expected["success.rate"], expected["success.succeeded"], expected["success.decided"]) == ("83.3 %", "5", "6")
    assert (expected["merged"], expected["in_review"], expected["utilisation.average"]) == ("3", "3", "50.0 %")
    # Tokens and cost: the store's sums for the day (Store.usage), an unknown cost shown as unknown.
    with Store(controller.db) as store:
        (day,) = store.usage("demo", since=DAY_START, until=DAY_END, by="project")
    spent = {"usage.attempts": str(day["attempts"]), "usage.total.input_tokens": f"{day['input_tokens']:,}",
             "usage.total.output_tokens": f"{day['output_tokens']:,}", "usage.input_tokens": f"{day['input_tokens']:,}",
             "usage.total.cost": f"${day['cost_usd']:.4f} (+1 unknown)", "usage.cost": f"${day['cost_usd']:.4f} (+1 unknown)"}
    assert {k: page.figures.get(k) for k in spent} == spent
    assert (spent["usage.attempts"], spent["usage.total.input_tokens"], spent["usage.total.cost"]) == (
        "4", "68,000", "$0.0520 (+1 unknown)")
    assert page.signals == {"add_nodes": "off", "spec_quality": "off", "work_split": "off"}

    artifacts = Path(os.environ.get("SPECFLEET_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    png = artifacts / "daily-report.png"
    chromium(tmp_path, f"--screenshot={png}", "--window-size=1400,2000", report.as_uri())
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1400, 2000)
    assert png.stat().st_size > 20_000      # a blank page compresses to a few KiB
    shutil.copy(report, artifacts / "daily-report.html")


def chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    result = subprocess.run([BROWSER, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                            timeout=90, check=False, env=dict(os.environ, HOME=str(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class Page(HTMLParser):
    """What the browser's DOM holds: Gantt bars, tagged figures, signal states and the probe's layout."""

    def __init__(self) -> None:
        super().__init__()
        self.bars = 0
        self.figures: dict[str, str] = {}
        self.signals: dict[str, str] = {}
        self.layout = ""
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        if tag == "rect" and "bar" in classes:
            self.bars += 1
        if tag == "span" and "figure" in classes:
            self._open = "figure:" + (values.get("data-key") or "")
        if tag == "pre" and values.get("id") == "layout":
            self._open = "layout"
        if values.get("data-signal"):
            self.signals[values["data-signal"]] = values.get("data-triggered") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("span", "pre"):
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open == "layout":
            self.layout += data
        elif self._open and self._open.startswith("figure:"):
            key = self._open.split(":", 1)[1]
            self.figures[key] = self.figures.get(key, "") + data
