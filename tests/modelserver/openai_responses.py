"""openai_responses: OpenAI's Responses API (``POST /v1/responses``), as OpenAI Codex speaks it.

Requests: ``{"model", "instructions", "input": [items], "tools": [...], "stream": true, ...}``.
The items of ``input`` are messages (``{"type": "message", "role", "content": [{"type":
"input_text"|"output_text", "text"}]}``), the model's earlier tool calls (``function_call``,
``custom_tool_call``, ``local_shell_call``) and their results (``function_call_output``,
``custom_tool_call_output``, ...), which :attr:`Turn.tool_results` counts.

Answers, streamed (server-sent events, ``event: <type>`` + ``data: {"type": <type>, ...}``):
``response.created``, ``response.in_progress``, then per output item
``response.output_item.added`` / deltas (``response.output_text.delta``,
``response.function_call_arguments.delta``, ``response.custom_tool_call_input.delta``) /
``response.output_item.done``, and ``response.completed`` whose ``response.usage`` has
``input_tokens``, ``input_tokens_details.cached_tokens``, ``output_tokens``,
``output_tokens_details.reasoning_tokens`` and ``total_tokens``. Codex builds its history from
``response.output_item.done`` items and ends the turn on ``response.completed``; a stream that
ends without it is an error that Codex retries. ``stream: false`` gets the same response object
as JSON.

The tool is picked from the request by name and schema, never by CLI:

* a file-write function (``write_file``/``write``/``create_file``... with a path and a content
  parameter): one call per file;
* ``apply_patch``: a freeform (``"type": "custom"``) tool gets the patch as its raw ``input``;
  a function tool gets it as its string parameter (``input``, ``patchText``...); the patch is ``*** Add File: <relative path>``
  per file (Codex resolves relative paths against the turn's cwd; Add File overwrites);
* a shell: a function with a ``cmd`` string (``exec_command``: ``{"cmd", "workdir"?}``), a
  shell-like function with a ``command`` (``shell``: ``{"command": [argv], "workdir"?}``;
  ``shell_command``/``bash``: ``{"command": str}``), or a ``local_shell`` tool (a
  ``local_shell_call`` item); the command writes each file with ``printf %s '<content>'``.

The working directory is read from the request (Codex's ``<environment_context><cwd>...``).
HTTP 429 carries OpenAI's error body (``type`` ``requests``, ``code``
``rate_limit_exceeded``, "Please try again in Ns") and ``Retry-After``.
Codex 0.171.0 with a provider of its own makes no other request (no ``GET /v1/models``, which
the anthropic and openai_chat modules serve anyway); its context compaction is an ordinary
``/responses`` request (see :func:`_responses`).
"""
from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from typing import Any

from .core import Turn, all_text, send_events, send_json, send_rate_limit

API = "openai_responses"

_RESULT_TYPES = {"function_call_output", "custom_tool_call_output", "local_shell_call_output",
                 "tool_search_output", "mcp_tool_call_output", "computer_call_output"}
_WRITE_NAMES = ("write_file", "write", "create_file", "writefile", "file_write", "str_replace_based_edit_tool")
_PATH_KEYS = ("path", "file_path", "filePath", "filepath", "absolute_path", "filename", "file")
_CONTENT_KEYS = ("content", "contents", "text", "file_text")


def register(server) -> None:
    server.route(lambda method, path: method == "POST" and path.rstrip("/").endswith("/responses"), _responses)


# -- reading the request ------------------------------------------------------------------

def _tool_name(tool: dict) -> str:
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):   # chat-style entry
        return str(tool["function"].get("name") or "")
    return str(tool.get("name") or tool.get("type") or "")


def _tool_params(tool: dict) -> dict:
    if isinstance(tool.get("function"), dict):
        return tool["function"].get("parameters") or {}
    return tool.get("parameters") or {}


def _flat_tools(tools: list) -> list[dict]:
    """The tools, namespaces (``{"type": "namespace", "tools": [...]}``) opened up."""
    out = []
    for tool in tools or []:
        if not isinstance(tool, dict):
            continue
        if isinstance(tool.get("tools"), list):
            out.extend(_flat_tools(tool["tools"]))
        else:
            out.append(tool)
    return out


def _workspace(body: dict) -> str | None:
    text = all_text([body.get("instructions"), body.get("input")])
    found = re.findall(r"<cwd>\s*([^<\n]+?)\s*</cwd>", text)
    if found:
        return found[-1]
    found = re.findall(r"(?:[Cc]urrent )?[Ww]orking directory(?: is)?:?\s+`?(/[^\s`'\"]+)", text)
    return found[-1] if found else None


def _turn(body: dict) -> Turn:
    items = body.get("input")
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    items = items if isinstance(items, list) else []
    results = sum(1 for item in items if isinstance(item, dict) and item.get("type") in _RESULT_TYPES)
    return Turn(api=API, model=str(body.get("model") or ""),
                text=all_text([body.get("instructions"), items]),
                tools=[_tool_name(tool) for tool in _flat_tools(body.get("tools") or [])],
                tool_results=results, stream=bool(body.get("stream")), workspace=_workspace(body))


# -- choosing the tool and its call ---------------------------------------------------------

def _key(props: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in props:
            return name
    return None


def _shell_write(path: str, content: str) -> str:
    """A POSIX shell command that writes ``content`` to ``path`` byte for byte."""
    directory = path.rsplit("/", 1)[0] if "/" in path.strip("/") else ""
    mkdir = f"mkdir -p {shlex.quote(directory)} && " if directory else ""
    return f"{mkdir}printf %s {shlex.quote(content)} > {shlex.quote(path)}"


def _patch(edits: dict[str, str]) -> str:
    """An apply_patch envelope adding (or overwriting) each file. Each ``+`` line gets a newline,
    so a content without a final newline gains one."""
    lines = ["*** Begin Patch"]
    for path, content in edits.items():
        lines.append(f"*** Add File: {path}")
        body = content[:-1] if content.endswith("\n") else content
        lines.extend("+" + line for line in body.split("\n"))
    lines.append("*** End Patch")
    return "\n".join(lines) + "\n"


def _calls(tools: list[dict], edits: dict[str, str], workspace: str | None) -> list[dict] | None:
    """Output items (tool calls) that write ``edits`` with a tool the request offers."""
    def absolute(path: str) -> str:
        return path if path.startswith("/") or not workspace else workspace.rstrip("/") + "/" + path

    def call_id() -> str:
        return "call_" + uuid.uuid4().hex[:24]

    def function(name: str, arguments: dict) -> dict:
        return {"type": "function_call", "id": "fc_" + uuid.uuid4().hex[:24], "call_id": call_id(),
                "name": name, "arguments": json.dumps(arguments), "status": "completed"}

    by_name = {_tool_name(tool): tool for tool in tools}
    # 1. a file-write function with a path and a content parameter
    for tool in tools:
        name = _tool_name(tool)
        props = (_tool_params(tool).get("properties") or {})
        if name.lower() in _WRITE_NAMES or name.lower().endswith("write_file"):
            path_key, content_key = _key(props, _PATH_KEYS), _key(props, _CONTENT_KEYS)
            if path_key and content_key:
                extra = {"command": "create"} if "command" in props else {}
                return [function(name, {**extra, path_key: absolute(path), content_key: content})
                        for path, content in edits.items()]
    # 2. apply_patch (freeform custom tool or function with an "input" string)
    tool = by_name.get("apply_patch")
    if tool is not None:
        patch = _patch(edits)
        if tool.get("type") == "custom":
            return [{"type": "custom_tool_call", "id": "ctc_" + uuid.uuid4().hex[:24], "call_id": call_id(),
                     "name": "apply_patch", "input": patch, "status": "completed"}]
        props = _tool_params(tool).get("properties") or {}
        key = "input" if "input" in props or not props else next(iter(props))
        return [function("apply_patch", {key: patch})]
    # 3. a shell
    script = " && ".join(_shell_write(path, content) for path, content in edits.items())
    for name, tool in by_name.items():
        props = _tool_params(tool).get("properties") or {}
        if tool.get("type") == "local_shell":
            action = {"type": "exec", "command": ["bash", "-lc", script], "timeout_ms": 60000}
            if workspace:
                action["working_directory"] = workspace
            return [{"type": "local_shell_call", "id": "lsc_" + uuid.uuid4().hex[:24], "call_id": call_id(),
                     "status": "completed", "action": action}]
        if "cmd" in props and (props["cmd"].get("type") in (None, "string")):
            args = {"cmd": script}
            if workspace and "workdir" in props:
                args["workdir"] = workspace
            return [function(name, args)]
        if "command" in props and any(word in name.lower() for word in ("shell", "bash", "exec", "run", "terminal")):
            kind = props["command"].get("type")
            args = {"command": ["bash", "-lc", script] if kind == "array" else script}
            if workspace and "workdir" in props:
                args["workdir"] = workspace
            return [function(name, args)]
    return None


# -- answering ------------------------------------------------------------------------------

def _usage(plan) -> dict:
    return {"input_tokens": plan.input_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": plan.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": plan.input_tokens + plan.output_tokens}


def _message(text: str) -> dict:
    return {"type": "message", "id": "msg_" + uuid.uuid4().hex[:24], "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def _response(body: dict, status: str, output: list, usage: dict | None) -> dict:
    return {"id": "resp_" + uuid.uuid4().hex[:24], "object": "response", "created_at": int(time.time()),
            "status": status, "error": None, "incomplete_details": None, "model": body.get("model"),
            "output": output, "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
            "tool_choice": body.get("tool_choice", "auto"), "tools": [], "usage": usage}


def _stream(body: dict, output: list, usage: dict) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    seq = iter(range(10 ** 6))

    def emit(kind: str, **data) -> None:
        events.append((kind, {"type": kind, "sequence_number": next(seq), **data}))

    started = _response(body, "in_progress", [], None)
    emit("response.created", response=started)
    emit("response.in_progress", response=started)
    for index, item in enumerate(output):
        kind = item["type"]
        if kind == "message":
            text = item["content"][0]["text"]
            emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
            part = {"type": "output_text", "text": "", "annotations": []}
            emit("response.content_part.added", item_id=item["id"], output_index=index, content_index=0, part=part)
            emit("response.output_text.delta", item_id=item["id"], output_index=index, content_index=0, delta=text)
            emit("response.output_text.done", item_id=item["id"], output_index=index, content_index=0, text=text)
            emit("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                 part={**part, "text": text})
        elif kind == "function_call":
            emit("response.output_item.added", output_index=index,
                 item={**item, "arguments": "", "status": "in_progress"})
            emit("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                 delta=item["arguments"])
            emit("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                 arguments=item["arguments"])
        elif kind == "custom_tool_call":
            emit("response.output_item.added", output_index=index, item={**item, "input": "", "status": "in_progress"})
            emit("response.custom_tool_call_input.delta", item_id=item["id"], output_index=index, delta=item["input"])
            emit("response.custom_tool_call_input.done", item_id=item["id"], output_index=index, input=item["input"])
        else:
            emit("response.output_item.added", output_index=index, item=item)
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.completed", response={**_response(body, "completed", output, usage), "id": started["id"]})
    return events


def _responses(server, handler, method, path, body) -> None:
    body = body if isinstance(body, dict) else {}
    turn = _turn(body)
    plan = server.plan_for(turn.text)
    if plan.edits and plan.reply and plan.reply in all_text(body.get("input")):
        # the scripted reply is already in the history: the CLI compacted the conversation (Codex
        # does when the reported usage nears the context window: it asks for a summary, gets the
        # reply, and replaces the tool calls with it). The edits were made; do not make them again.
        turn.tool_results = max(turn.tool_results, 1)
    action, value = server.decide(turn)
    if action == "rate_limit":
        send_rate_limit(server, handler, {"error": {
            "type": "requests", "code": "rate_limit_exceeded", "param": None,
            "message": f"Rate limit reached for {turn.model or 'the model'} (scripted). "
                       f"Please try again in {server.retry_after}s."}})
        return
    output = None
    if action == "edit":
        output = _calls(_flat_tools(body.get("tools") or []), value.edits, turn.workspace)
    if output is None:
        output = [_message(value if isinstance(value, str) else plan.reply)]
    usage = _usage(plan)
    if turn.stream:
        send_events(handler, _stream(body, output, usage))
    else:
        send_json(handler, 200, _response(body, "completed", output, usage))
