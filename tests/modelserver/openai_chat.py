"""openai_chat: the OpenAI Chat Completions API (``POST /v1/chat/completions``).

Serves every client that speaks Chat Completions (OpenCode's ``@ai-sdk/openai-compatible``
provider, aider through litellm, ...):

* ``POST .../chat/completions`` (``/v1/chat/completions``, ``/chat/completions`` or any
  prefix ending in ``/chat/completions``): streaming (server-sent ``chat.completion.chunk``
  events, ``choices[].delta`` with ``content`` or ``tool_calls`` deltas, ``finish_reason``, a
  last chunk with ``usage`` when ``stream_options.include_usage``, then ``data: [DONE]``) or a
  plain ``chat.completion`` JSON answer.
* ``GET /v1/models`` (and ``/models``): the model list.
* HTTP 429 ``{"error": {"message", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}``
  with ``Retry-After`` when the plan says ``rate_limit``.

Edits are made with whichever tool the client offers, picked by name and JSON schema: a
file-write tool (a path property and a content property, nothing else required) first, else a
shell tool (a ``command`` property), never by knowing the client. Clients without tools that
edit through a text edit format (aider: its *file listing* "whole" format, or its
*SEARCH/REPLACE block* formats) are recognised by the edit-format instructions in their system
prompt and answered in that format.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import replace
from typing import Any

from .core import Turn, all_text, send_events, send_json, send_rate_limit

# -- the request -------------------------------------------------------------------------

PATH_KEYS = ("filePath", "file_path", "absolute_path", "path", "filename", "file", "target_file")
CONTENT_KEYS = ("content", "contents", "file_text", "text", "new_content", "data")
SHELL_NAME = re.compile(r"bash|shell|exec|command|terminal|run", re.I)
WORKSPACE_PATTERNS = (
    re.compile(r"<cwd>\s*(/[^<\n]*?)\s*</cwd>"),
    re.compile(r"[Ww]orking directory:\s*(/\S+)"),
    re.compile(r"[Cc]urrent working directory(?: is)?:?\s*`?(/[^\s`]+)"),
    re.compile(r"\bcwd:\s*(/\S+)"),
)


def _is_chat(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/").endswith("/chat/completions")


def _is_models(method: str, path: str) -> bool:
    return method == "GET" and path.rstrip("/") in ("/v1/models", "/models")


def _tools(body: dict) -> list[dict]:
    """The offered tools as ``{"name", "description", "parameters"}`` (also legacy ``functions``)."""
    out = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and fn.get("name"):
            out.append({"name": fn["name"], "description": fn.get("description") or "",
                        "parameters": fn.get("parameters") or {}})
    for fn in body.get("functions") or []:
        if isinstance(fn, dict) and fn.get("name"):
            out.append({"name": fn["name"], "description": fn.get("description") or "",
                        "parameters": fn.get("parameters") or {}})
    return out


def _system_text(messages: list) -> str:
    return all_text([m.get("content") for m in messages
                     if isinstance(m, dict) and m.get("role") in ("system", "developer")])


def find_workspace(text: str) -> str | None:
    for pattern in WORKSPACE_PATTERNS:
        match = pattern.search(text)
        if match:
            return match.group(1).rstrip(".,;:'\")`")
    return None


def make_turn(body: dict) -> Turn:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    text = all_text(messages)
    system = _system_text(messages)
    return Turn(
        api="openai_chat",
        model=str(body.get("model") or ""),
        text=text,
        tools=[tool["name"] for tool in _tools(body)],
        tool_results=sum(1 for m in messages if m.get("role") in ("tool", "function")),
        stream=bool(body.get("stream")),
        workspace=find_workspace(system) or find_workspace(text),
    )


# -- text edit formats (clients without tools, e.g. aider) -------------------------------

def text_edit_format(system: str) -> tuple[str, tuple[str, str]] | None:
    """``(format, fence)`` when the system prompt teaches a text edit format, else None."""
    if "*file listing*" in system:
        match = re.search(r"path/to/filename\.js\n(\S+)\n// entire file content[^\n]*\n[^\n]*\n(\S+)\n", system)
        fence = (match.group(1), match.group(2)) if match else ("```", "```")
        return "whole", fence
    if "*SEARCH/REPLACE block*" in system:
        match = re.search(r"\n(\S+?)(?:python)?\n<<<<<<< SEARCH\n", system)
        fence0 = match.group(1) if match else "```"
        fence1 = "</" + fence0[1:] if fence0.startswith("<") else fence0
        return "diff", (fence0, fence1)
    return None


def text_edits(fmt: str, fence: tuple[str, str], edits: dict[str, str]) -> str:
    out = []
    for path, content in edits.items():
        body = content if content.endswith("\n") or not content else content + "\n"
        if fmt == "whole":
            out.append(f"{path}\n{fence[0]}\n{body}{fence[1]}\n")
        else:  # SEARCH/REPLACE with an empty SEARCH: creates a new file (appends to an existing one)
            out.append(f"{path}\n{fence[0]}\n<<<<<<< SEARCH\n=======\n{body}>>>>>>> REPLACE\n{fence[1]}\n")
    return "\n".join(out)


# -- tool choice ---------------------------------------------------------------------------

def _props(tool: dict) -> tuple[dict, list]:
    params = tool.get("parameters") or {}
    return params.get("properties") or {}, list(params.get("required") or [])


def _write_tool(tools: list[dict]) -> tuple[dict, str, str] | None:
    best = None
    for tool in tools:
        props, required = _props(tool)
        path_key = next((k for k in PATH_KEYS if k in props), None)
        content_key = next((k for k in CONTENT_KEYS if k in props), None)
        if not path_key or not content_key:
            continue
        if any(k not in (path_key, content_key) for k in required):
            continue   # e.g. an edit tool that also needs old_string
        name = tool["name"].lower()
        score = 2 * ("write" in name) + ("create" in name or "file" in name)
        if best is None or score > best[0]:
            best = (score, tool, path_key, content_key)
    return best[1:] if best else None


def _shell_tool(tools: list[dict]) -> dict | None:
    for tool in tools:
        props, _ = _props(tool)
        if ("command" in props or "cmd" in props) and SHELL_NAME.search(tool["name"]):
            return tool
    for tool in tools:
        props, _ = _props(tool)
        if "command" in props or "cmd" in props:
            return tool
    return None


def _wants_absolute(tool: dict, key: str) -> bool:
    props, _ = _props(tool)
    desc = str((props.get(key) or {}).get("description") or "")
    return "absolute" in key.lower() or "absolute" in desc.lower()


def _join(workspace: str | None, path: str) -> str:
    if path.startswith("/") or not workspace:
        return path
    return workspace.rstrip("/") + "/" + path


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def tool_calls(tools: list[dict], edits: dict[str, str], workspace: str | None) -> list[dict] | None:
    """``[{"id", "name", "arguments"}]`` making the edits with the best offered tool."""
    found = _write_tool(tools)
    if found:
        tool, path_key, content_key = found
        absolute = _wants_absolute(tool, path_key)
        return [{"id": "call_" + uuid.uuid4().hex[:24], "name": tool["name"],
                 "arguments": json.dumps({path_key: _join(workspace, path) if absolute else path,
                                          content_key: content})}
                for path, content in edits.items()]
    tool = _shell_tool(tools)
    if tool:
        props, _ = _props(tool)
        key = "command" if "command" in props else "cmd"
        steps = []
        for path, content in edits.items():
            parent = path.rsplit("/", 1)[0] if "/" in path else ""
            steps.append((f"mkdir -p {_quote(parent)} && " if parent else "")
                         + f"printf '%s' {_quote(content)} > {_quote(path)}")
        command = " && ".join(steps)
        args: dict[str, Any] = {key: ["bash", "-lc", command] if props[key].get("type") == "array" else command}
        for extra in ("workdir", "cwd", "directory"):
            if extra in props and workspace:
                args[extra] = workspace
        if "description" in props:
            args["description"] = "Write the planned files"
        return [{"id": "call_" + uuid.uuid4().hex[:24], "name": tool["name"], "arguments": json.dumps(args)}]
    return None


# -- the answer ----------------------------------------------------------------------------

def _usage(plan_in: int, plan_out: int) -> dict:
    return {"prompt_tokens": plan_in, "completion_tokens": plan_out, "total_tokens": plan_in + plan_out,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}


def _split(text: str, parts: int = 3) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // parts))
    return [text[i:i + size] for i in range(0, len(text), size)]


def answer(server, handler, body: dict, text: str | None, calls: list[dict] | None, plan) -> None:
    model = str(body.get("model") or "scripted")
    cid = "chatcmpl-" + uuid.uuid4().hex[:24]
    created = int(time.time())
    usage = _usage(plan.input_tokens, plan.output_tokens)
    finish = "tool_calls" if calls else "stop"
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": text if text is not None else None}
        if calls:
            message["tool_calls"] = [{"id": c["id"], "type": "function",
                                      "function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        send_json(handler, 200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish,
                                              "logprobs": None}],
                                 "usage": usage})
        return

    def chunk(delta: dict, finish_reason: str | None = None) -> tuple[None, dict]:
        return None, {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                      "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}

    events = [chunk({"role": "assistant", "content": ""})]
    for piece in _split(text or ""):
        events.append(chunk({"content": piece}))
    for index, call in enumerate(calls or []):
        events.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                             "function": {"name": call["name"], "arguments": ""}}]}))
        for piece in _split(call["arguments"], 2):
            events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    events.append(chunk({}, finish))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                              "choices": [], "usage": usage}))
    events.append((None, "[DONE]"))
    send_events(handler, events)


def serve_chat(server, handler, method: str, path: str, body: Any) -> None:
    if not isinstance(body, dict):
        body = {}
    turn = make_turn(body)
    plan = server.plan_for(turn.text)
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    # aider sends its edit-format rules as the system message (as a user message for models
    # without a system role)
    edit_format = None if turn.tools else (text_edit_format(_system_text(messages))
                                           or text_edit_format(turn.text))
    # a text edit format counts as the client's (only) tool; it never sends tool results, and
    # answering with the edits again is right: aider asks again only after adding files to its chat
    kind, value = server.decide(replace(turn, tools=[f"text-edit-format:{edit_format[0]}"])
                                if edit_format else turn)
    if kind == "rate_limit":
        send_rate_limit(server, handler, {"error": {
            "message": f"Rate limit reached for requests (scripted model server). "
                       f"Please try again in {server.retry_after}s.",
            "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}})
        return
    if kind == "edit":
        if edit_format:
            fmt, fence = edit_format
            answer(server, handler, body, text_edits(fmt, fence, value.edits) + "\n" + value.reply, None, value)
            return
        calls = tool_calls(_tools(body), value.edits, turn.workspace)
        if calls:
            answer(server, handler, body, None, calls, value)
            return
        answer(server, handler, body, "The scripted model found no tool to write files with.", None, plan)
        return
    answer(server, handler, body, value, None, plan)


def serve_models(server, handler, method: str, path: str, body: Any) -> None:
    names: list[str] = list(getattr(server, "model_ids", None) or [])
    with server.lock:
        for request in server.requests:
            model = (request.get("body") or {}).get("model") if isinstance(request.get("body"), dict) else None
            if isinstance(model, str) and model and model not in names:
                names.append(model)
    names = names or ["scripted-model"]
    send_json(handler, 200, {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": "specfleet-modelserver"} for name in names]})


def register(server) -> None:
    server.route(_is_chat, serve_chat)
    server.route(_is_models, serve_models)
