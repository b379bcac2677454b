# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daily report: what a project's fleet did on one day, from the state store alone.

The entry the action plugin (``specfleet_daily_report``) and ``specfleet report`` use. The
report is made in stages, one module each:

* :mod:`specfleet.report.day`: the day's bounds in a time zone, and :class:`ReportError`;
* :mod:`specfleet.report.figures`: every number, read from the store (its docstring defines
  each figure), helped by :mod:`~specfleet.report.slots` (lanes, capacity, utilisation),
  :mod:`~specfleet.report.failures` (failures, rate limits) and :mod:`~specfleet.report.signals`;
* :mod:`specfleet.report.markdown` and :mod:`specfleet.report.html` (with
  :mod:`~specfleet.report.charts`, the SVG): the two renderings, which compute nothing;
* :mod:`specfleet.report.files`: writing both files.
"""
from __future__ import annotations

from specfleet.report import day as _day
from specfleet.report import figures as _figures
from specfleet.report import files as _files
from specfleet.report import html as _html
from specfleet.report import markdown as _markdown
from specfleet.report import text as _text

ReportError = _day.ReportError
day_bounds = _day.day_bounds
figures = _figures.figures
markdown = _markdown.markdown
html = _html.html
headline = _text.headline
summary_line = _text.summary_line
write_report = _files.write_report

__all__ = ["ReportError", "day_bounds", "figures", "headline", "html", "markdown", "summary_line", "write_report"]
