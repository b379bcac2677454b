# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planning stage: a one-line direction becomes validated atomic specs.

A model behind an OpenAI-compatible endpoint (:mod:`chat`) gets a versioned Jinja2 prompt
(``templates/plan/``): the spec contract, the project's existing specs, its repository
tree and context files, the direction and the seeds' rules. It answers with one JSON
object: an execution plan and the specs. Each spec is rendered as a spec file and the
whole project (existing specs plus the new ones) goes through the same validator as
hand-written specs, plus the planner's own rules (no two specs that may run in parallel
modify the same path; 5-15 minutes each; no placeholders). Invalid answers are sent back
with the exact errors, up to a number of repair rounds. Nothing invalid is ever written:
the specs land only when every one is valid, in ``specs/<project>/pending/`` (or the
project itself), with the execution plan and a Mermaid picture of the DAG beside them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from specfleet.ops.controller import REPO_ROOT
from specfleet.plan import base, chat, write
from specfleet.plan.answer import parse_answer, render_spec
from specfleet.plan.check import check_and_parse
from specfleet.plan.document import plan_document
from specfleet.plan.prompt import SYSTEM, prompt

# The names the plan action plugin and the tests use, whichever module holds them.
Plan = base.Plan
PlanError = base.PlanError
PlanInvalid = base.PlanInvalid
Settings = base.Settings
land = write.land
approve = write.approve

DIRECTION_LIMIT = 4000


def read_direction(text: str | None, path: str | None) -> str:
    """The direction from ``-e direction`` or a file (e.g. ``inputs/directions/<date>.md``)."""
    if text and path:
        raise PlanError("give the direction either as text (direction) or as a file (direction_file), not both")
    if path:
        file = Path(path).expanduser()
        if not file.is_absolute():
            file = REPO_ROOT / file
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"direction_file {path}: cannot be read ({exc})") from None
    text = (text or "").strip()
    if not text:
        raise PlanError("no direction: -e direction='...' or -e direction_file=inputs/directions/<date>.md")
    if len(text) > DIRECTION_LIMIT:
        raise PlanError(f"the direction is {len(text)} characters; at most {DIRECTION_LIMIT} (a direction is a few "
                        "lines, the plan is the model's)")
    return text



def make_plan(endpoint: chat.Endpoint, specs_root: Path, project: str, direction: str, settings: Settings,
              executors: Iterable[str] | None = None, default_executor: str | None = None,
              ask: Callable[[chat.Endpoint, Sequence[Mapping[str, str]]], str] = chat.ask,
              log: Callable[[str], None] = lambda _text: None) -> Plan:
    """Ask, check, repair; -> a valid :class:`Plan`. :class:`PlanInvalid` or :class:`chat.ChatUnavailable` else."""
    executors = None if executors is None else sorted(executors)
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt(settings, project, direction, specs_root, default_executor,
                                                   executors)}]
    history: list[list[str]] = []
    for round_no in range(1, settings.rounds + 1):
        text = ask(endpoint, messages)
        problems, rendered, data = [], {}, None
        try:
            data = parse_answer(text)
        except ValueError as exc:
            problems = [str(exc)]
        if data is not None:
            if len(data["specs"]) > settings.max_specs:
                problems.append(f"specs: {len(data['specs'])} specs; at most {settings.max_specs} per direction")
            for index, item in enumerate(data["specs"]):
                name, spec_text, own = render_spec(project, item, index, direction, endpoint.model)
                problems += own
                if name in rendered:
                    problems.append(f"specs[{index}].task_id: {name[:-3]!r} is used twice")
                elif name:
                    rendered[name] = spec_text
            if not problems:
                problems, final = check_and_parse(specs_root, project, rendered, executors, default_executor, settings)
        history.append(problems)
        log(f"round {round_no}: " + ("valid" if not problems else f"{len(problems)} problem(s)"))
        if not problems:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
            return Plan(rendered, plan_document(data, direction, endpoint.model, round_no, project, final, stamp,
                                                settings.template),
                        endpoint.model, round_no, history, sorted(final))
        messages += [{"role": "assistant", "content": text},
                     {"role": "user", "content": "Your split is not valid. Fix every problem below and answer again "
                      "with the whole corrected JSON object (all specs, not only the changed ones):\n"
                      + "\n".join(f"- {p}" for p in problems)}]
    raise PlanInvalid(settings.rounds, history[-1])

