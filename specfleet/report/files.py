# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Writing the daily report's files: ``<day>.md`` and ``<day>.html`` under the project's report folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from specfleet.report.day import ReportError, day_bounds
from specfleet.report.figures import figures
from specfleet.report.html import html
from specfleet.report.markdown import markdown
from specfleet.report.text import headline, summary_line
from specfleet.store.core import Store


def write_report(db: str | Path, project: str, day: str | None = None, report_dir: str | Path | None = None,
                 dry_run: bool = False) -> dict[str, Any]:
    """Compute the day's figures and write ``<day>.md`` and ``<day>.html`` (each replaced in one step).

    Used by the action plugin (``playbooks/report.yml``) and ``specfleet report``. Returns the
    day, both paths, the headline figures and the lines to show.
    """
    from specfleet.model.settings import specfleet_home
    from specfleet.node.runfiles import write_atomic

    if not project or project in (".", "..") or Path(project).name != project:
        raise ReportError(f"project {project!r} is not a project name")
    day, start, end = day_bounds(day)
    if not Path(db).is_file():
        raise ReportError(f"{db}: no state database here: dispatch or feed a project first")
    with Store(db) as store:
        fig = figures(store, project, start, end, day=day)
    folder = Path(report_dir or specfleet_home() / "reports" / project)
    paths = {"markdown": folder / f"{day}.md", "html": folder / f"{day}.html"}
    if not dry_run:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(str(paths["markdown"]), markdown(fig), 0o644)
        write_atomic(str(paths["html"]), html(fig), 0o644)
    signals = [f"{s['rule']}: {s['measure']}; {s['advice']}" for s in fig["signals"] if s["triggered"]]
    return {"day": day, "markdown": str(paths["markdown"]), "html": str(paths["html"]), "headline": headline(fig),
            "lines": [summary_line(fig), *signals, f"report: {paths['html']}"]}
