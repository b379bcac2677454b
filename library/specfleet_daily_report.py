# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The work is done by the action plugin plugins/action/specfleet_daily_report.py on the controller;
# this file carries the documentation.
from __future__ import annotations

DOCUMENTATION = r"""
---
module: specfleet_daily_report
short_description: Write a project's daily report (Markdown and one self-contained HTML file)
description:
  - Computes, from the state store alone (events, attempts, specs, merges, nodes), what the
    project's fleet did on one day, and writes it as C(<day>.md) and C(<day>.html).
  - "Contents: specs by state at the end of the day; the success rate with its denominator
    (attempted specs that reached C(completed) or later, out of those plus the C(failed) ones);
    merged today; in review (on integration, neither promoted nor reverted); blocked specs with
    their reasons; a Gantt chart of the attempts per node and slot, coloured by outcome; slot
    utilisation per 10 minutes and its average over the active period, next to the 80 % target;
    cycle time (first attempt to merge) median and p90; attempts per spec; failures by executor
    and by node; rate-limit fallbacks; tokens and cost per executor and per node and the day's
    total (a cost nobody reported or priced shown as unknown, never 0); the scaling signals
    (queued > 2 x running, spec-level failure rate > 30 %, merge conflicts >= 3 and > 15 % of
    merge tries) with their numbers."
  - The HTML file has inline CSS and inline SVG charts, no script and no external address.
    Strings from the store are escaped.
  - Both files are replaced atomically. A day that is not over is reported up to now.
options:
  project:
    description: Project name.
    type: str
    required: true
  day:
    description:
      - The day to report, C(YYYY-MM-DD), from local midnight to the next.
      - Default today, in the controller's local time.
    type: str
  report_dir:
    description:
      - Where the files go. Default C($SPECFLEET_HOME/reports/<project>/).
    type: path
  db:
    description: As for M(specfleet_feed).
    type: path
attributes:
  check_mode:
    support: full
    details: Computes the figures and writes nothing.
notes:
  - Runs on the controller; target C(localhost).
  - Rate-limit fallbacks are read from each attempt's collected C(status.json) (the store keeps the
    artifact folder); attempts whose artifacts are gone are left out of that count, and the report
    says how many were read.
author:
  - specfleet contributors
"""

EXAMPLES = r"""
- name: Today's report for clawmarketing
  specfleet_daily_report:
    project: clawmarketing

- name: Yesterday's, into a folder of its own
  specfleet_daily_report:
    project: clawmarketing
    day: "{{ '%Y-%m-%d' | strftime((now().timestamp() - 86400) | int) }}"
    report_dir: /srv/reports/clawmarketing
"""

RETURN = r"""
day:
  description: The day reported, C(YYYY-MM-DD).
  type: str
  returned: always
markdown:
  description: Path of the Markdown file (written unless in check mode).
  type: str
  returned: always
html:
  description: Path of the HTML file (written unless in check mode).
  type: str
  returned: always
headline:
  description:
    - The main figures; rates are fractions (0.8 is 80 %), times are seconds, null when there
      was nothing to measure.
    - Keys C(day), C(specs), C(attempted), C(succeeded), C(decided), C(success_rate), C(merged),
      C(in_review), C(blocked), C(failed), C(attempts), C(utilisation), C(cycle_median_s),
      C(cycle_p90_s), C(input_tokens), C(output_tokens), C(cost_usd) (null when no collected
      attempt's cost is known), C(cost_unknown) (collected attempts of the day whose cost is
      unknown) and C(signals) (the keys of the scaling signals that fired, among
      C(add_nodes), C(spec_quality), C(work_split)).
  type: dict
  returned: always
msg:
  description: A summary line, one line per scaling signal that fired, and the HTML file's path.
  type: list
  elements: str
  returned: always
"""
