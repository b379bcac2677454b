# Copyright: specfleet contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The agent's prompt: the whole spec plus five context layers within a size budget.

Layers, in the order they appear:

1. **instructions**: the repository's ``CLAUDE.md`` (or ``AGENTS.md``);
2. **memory**: lessons of this project (failed attempts, gate and review feedback),
   this spec's own first, newest first;
3. **shared context**: the spec folder's ``SHARED_CONTEXT.md`` (interface contracts);
4. **siblings**: the project's other specs (id, state, goal, ``modifies``), so the agent
   knows which files belong to someone else;
5. **environment**: the node, the workspace rules, the verify command.

The spec itself comes last, whole, and is never trimmed. When everything does not fit
in the budget (characters), layers shrink in this fixed order until it fits:
environment, siblings, memory, shared context, instructions. Each layer is first cut
at the end (whole entries for lists), then left out; the prompt's last section lists
what was cut or left out, so the agent knows it did not see everything.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_BUDGET = 60_000
SHRINK_ORDER = ("environment", "siblings", "memory", "shared_context", "instructions")
TITLES = {"instructions": "Repository instructions", "memory": "Project memory: lessons from earlier attempts",
          "shared_context": "Shared context (interface contract for every spec of this project)",
          "siblings": "Other specs of this project (do not edit their files)", "environment": "Environment"}
MIN_USEFUL = 400


@dataclass
class Layer:
    key: str
    entries: list[str]          # a text layer is one entry; list layers cut whole entries
    cut: str = ""               # what happened to it: "", "cut", "left out"
    dropped: int = 0

    def text(self) -> str:
        return "\n".join(self.entries).strip()


@dataclass
class Prompt:
    text: str
    left_out: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)


def _render(spec_text: str, task_id: str, layers: list[Layer]) -> str:
    parts = [f"# specfleet task {task_id}\n\nYou are a coding agent working alone in a git workspace on the "
             f"branch of spec {task_id}. Implement the spec at the end of this prompt completely: no TODO, "
             "FIXME, placeholder or stub, no skipped or deleted tests, no edits outside its `modifies` "
             "list. Do not commit; specfleet commits and verifies your work."]
    for layer in layers:
        body = layer.text()
        if body:
            note = {"cut": f"\n\n[specfleet: this section was cut to fit the prompt budget; {layer.dropped} "
                           f"characters or entries left out]", "": ""}.get(layer.cut, "")
            parts.append(f"## {TITLES[layer.key]}\n\n{body}{note}")
    cut = [f"- {TITLES[layer.key]}: {layer.cut}" for layer in layers if layer.cut]
    if cut:
        parts.append("## Left out to fit the prompt budget\n\n" + "\n".join(cut))
    parts.append(f"## The spec ({task_id}), complete\n\n{spec_text.strip()}\n")
    return "\n\n---\n\n".join(parts)


def build(spec_text: str, task_id: str, instructions: str = "", memory: list[str] | None = None,
          shared_context: str = "", siblings: list[str] | None = None, environment: str = "",
          budget: int = DEFAULT_BUDGET) -> Prompt:
    layers = {
        "instructions": Layer("instructions", [instructions.strip()] if instructions.strip() else []),
        "memory": Layer("memory", [m.strip() for m in (memory or []) if m.strip()]),
        "shared_context": Layer("shared_context", [shared_context.strip()] if shared_context.strip() else []),
        "siblings": Layer("siblings", [s.strip() for s in (siblings or []) if s.strip()]),
        "environment": Layer("environment", [environment.strip()] if environment.strip() else []),
    }
    ordered = [layers[k] for k in ("instructions", "memory", "shared_context", "siblings", "environment")]
    text = _render(spec_text, task_id, ordered)
    for key in SHRINK_ORDER:
        if len(text) <= budget:
            break
        layer = layers[key]
        if not layer.entries:
            continue
        excess = len(text) - budget + 200       # room for the cut notes
        if len(layer.entries) > 1:
            while layer.entries and excess > 0:
                removed = layer.entries.pop()
                excess -= len(removed) + 1
                layer.dropped += 1
        else:
            keep = len(layer.entries[0]) - excess
            if keep >= MIN_USEFUL:
                layer.dropped = excess
                layer.entries[0] = layer.entries[0][:keep].rsplit("\n", 1)[0]
            else:
                layer.dropped = len(layer.entries[0])
                layer.entries = []
        layer.cut = "left out" if not layer.entries else "cut"
        text = _render(spec_text, task_id, ordered)
    left_out = [f"{layer.key}: {layer.cut}" for layer in ordered if layer.cut]
    return Prompt(text, left_out, {layer.key: len(layer.text()) for layer in ordered})
