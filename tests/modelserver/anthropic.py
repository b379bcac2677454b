"""anthropic: the Anthropic Messages API (``POST /v1/messages``, streaming or not).

Routes:
  POST /v1/messages               the turn: text, or ``tool_use`` blocks that write the plan's files,
                                  or HTTP 429 ``rate_limit_error``; SSE when ``"stream": true``
  POST /v1/messages/count_tokens  ``{"input_tokens": n}`` (a rough count of the request's text)
  GET  /v1/models[/{id}]          the models asked for so far (``data``), or the one model named

The write tool is picked from the tools the request offers, by schema, never by CLI:
first a file-write tool (a path property and a content property), else a shell tool (a
``command`` property). A path property whose description says "absolute" gets
``workspace/rel``; the workspace is read from the request's text ("Primary working
directory: /x", "Working directory: /x", "cwd: /x"...).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from collections.abc import Callable
from typing import Any

from .core import Turn, all_text, send_events, send_json, send_rate_limit

API = "anthropic"
_ids = itertools.count(1)

PATH_KEYS = ("file_path", "filePath", "path", "file", "filename", "target_file", "absolute_path")
CONTENT_KEYS = ("content", "contents", "file_text", "text", "new_content", "data")
COMMAND_KEYS = ("command", "cmd", "script")
WRITE_WORDS = ("write", "create", "save")

# most specific first: "Primary working directory: /x" (Claude Code), then the generic spellings
WORKSPACE_RES = [re.compile(p, re.IGNORECASE) for p in (
    r"primary working directory\s*[:=]\s*[`'\"]?(/[^\s`'\"<>]*)",
    r"(?:current working directory|working directory|workspace(?: root)?|cwd)\s*(?:is)?\s*[:=]?\s*[`'\"]?"
    r"(/[^\s`'\"<>]*)",
)]


# -- reading a request -------------------------------------------------------------------

def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def find_workspace(text: str) -> str | None:
    for pattern in WORKSPACE_RES:
        for match in pattern.finditer(text):
            path = match.group(1).rstrip(".,;:)")
            if len(path) > 1:
                return path
    return None


def make_turn(body: dict) -> Turn:
    messages = body.get("messages") or []
    tool_results = sum(1 for m in messages for b in _blocks(m.get("content"))
                       if b.get("type") == "tool_result")
    text = all_text({"system": body.get("system"), "messages": messages})
    tools = [t.get("name") for t in body.get("tools") or [] if isinstance(t, dict) and t.get("name")]
    return Turn(api=API, model=str(body.get("model") or ""), text=text, tools=tools,
                tool_results=tool_results, stream=bool(body.get("stream")), workspace=find_workspace(text))


# -- choosing the tool and its arguments -------------------------------------------------

def _props(tool: dict) -> dict:
    schema = tool.get("input_schema") or tool.get("parameters") or {}
    return schema.get("properties") or {}


def _first(props: dict, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if key in props:
            return key
    return None


def pick_tool(tools: list[dict]) -> tuple[str, dict, dict] | None:
    """``(kind, tool, keys)``: kind "write" (keys path/content) or "shell" (keys command)."""
    writes, shells = [], []
    for tool in tools:
        if not isinstance(tool, dict) or not tool.get("name"):
            continue
        props = _props(tool)
        path, content, command = _first(props, PATH_KEYS), _first(props, CONTENT_KEYS), _first(props, COMMAND_KEYS)
        if path and content and not ({"old_string", "old_str", "oldString", "edits"} & set(props)):
            name = tool["name"].lower()
            score = 0 if any(w in name for w in WRITE_WORDS) else 1
            writes.append((score, len(props), tool, {"path": path, "content": content}))
        elif command:
            name = tool["name"].lower()
            score = 0 if any(w in name for w in ("bash", "shell", "exec", "run", "command", "terminal")) else 1
            shells.append((score, len(props), tool, {"command": command}))
    if writes:
        writes.sort(key=lambda w: (w[0], w[1]))
        return "write", writes[0][2], writes[0][3]
    if shells:
        shells.sort(key=lambda s: (s[0], s[1]))
        return "shell", shells[0][2], shells[0][3]
    return None


def _needs_absolute(tool: dict, key: str) -> bool:
    prop = _props(tool).get(key) or {}
    return "absolute" in str(prop.get("description", "")).lower()


def _filler(prop: dict) -> Any:
    kind = prop.get("type")
    if "enum" in prop and prop["enum"]:
        return prop["enum"][0]
    return {"string": "write the planned file", "integer": 60000, "number": 60000, "boolean": False,
            "array": [], "object": {}}.get(kind if isinstance(kind, str) else "string", "")


def tool_calls(tools: list[dict], edits: dict[str, str], workspace: str | None) -> list[tuple[str, dict]]:
    """``[(tool name, input)]`` writing every planned file, or [] when no usable tool is offered."""
    picked = pick_tool(tools)
    if picked is None:
        return []
    kind, tool, keys = picked
    schema = tool.get("input_schema") or tool.get("parameters") or {}
    props = _props(tool)
    required = [k for k in schema.get("required") or [] if k in props]
    calls = []
    if kind == "write":
        absolute = _needs_absolute(tool, keys["path"])
        for rel, content in edits.items():
            path = os.path.join(workspace, rel) if (absolute or os.path.isabs(rel)) and workspace else rel
            args = {keys["path"]: path, keys["content"]: content}
            for key in required:
                args.setdefault(key, _filler(props[key]))
            calls.append((tool["name"], args))
    else:
        lines = []
        for n, (rel, content) in enumerate(edits.items()):
            path = os.path.join(workspace, rel) if workspace else rel
            tag = f"SPECFLEET_EOF_{n}"
            folder = os.path.dirname(path)
            if folder:
                lines.append(f"mkdir -p {shlex.quote(folder)}")
            # a heredoc for content ending in a newline; printf keeps any other content exact
            if content.endswith("\n"):
                lines.append(f"cat > {shlex.quote(path)} <<'{tag}'\n{content}{tag}")
            else:
                lines.append(f"printf %s {shlex.quote(content)} > {shlex.quote(path)}")
        args = {keys["command"]: "\n".join(lines)}
        for key in required:
            args.setdefault(key, _filler(props[key]))
        calls.append((tool["name"], args))
    return calls


def shell_retry(body: dict, edits: Callable[[], dict[str, str]], workspace: str | None) -> list[tuple[str, dict]]:
    """When the file-write calls came back as errors (e.g. a tool that wants a Read first), write the
    same files (``edits()``) once more through the shell tool; never twice."""
    messages = body.get("messages") or []
    last = next((m for m in reversed(messages) if m.get("role") == "user"
                 and any(b.get("type") == "tool_result" for b in _blocks(m.get("content")))), None)
    if last is None or not any(b.get("is_error") for b in _blocks(last.get("content"))
                               if b.get("type") == "tool_result"):
        return []
    tools = body.get("tools") or []
    shells = [t for t in tools if isinstance(t, dict) and _first(_props(t), COMMAND_KEYS)
              and not _first(_props(t), CONTENT_KEYS)]
    if not shells:
        return []
    shell_names = {t["name"] for t in shells}
    used = {b.get("name") for m in messages if m.get("role") == "assistant"
            for b in _blocks(m.get("content")) if b.get("type") == "tool_use"}
    if used & shell_names:
        return []
    return tool_calls(shells, edits(), workspace)


# -- answering ---------------------------------------------------------------------------

def _usage(plan_in: int, plan_out: int) -> dict:
    return {"input_tokens": plan_in, "output_tokens": plan_out,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def build_message(model: str, content: list[dict], stop_reason: str, usage: dict) -> dict:
    return {"id": f"msg_scripted_{next(_ids):06d}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": None, "usage": usage}


def message_events(message: dict) -> list[tuple[str, Any]]:
    """The SSE events of one message, the way the real API streams it."""
    usage = message["usage"]
    start = dict(message, content=[], stop_reason=None,
                 usage=dict(usage, output_tokens=1))
    events: list[tuple[str, Any]] = [("message_start", {"type": "message_start", "message": start}),
                                     ("ping", {"type": "ping"})]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            text = block["text"]
            for part in [text[i:i + 40] for i in range(0, len(text), 40)] or [""]:
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "text_delta", "text": part}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "tool_use", "id": block["id"],
                                                                     "name": block["name"], "input": {}}}))
            raw = json.dumps(block["input"])
            for part in [raw[i:i + 64] for i in range(0, len(raw), 64)]:
                events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": part}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def rate_limit_body() -> dict:
    return {"type": "error", "error": {"type": "rate_limit_error",
                                       "message": "This request would exceed the rate limit for your "
                                                  "organization (scripted model server)."}}


def messages(server, handler, method: str, path: str, body: Any) -> None:
    body = body if isinstance(body, dict) else {}
    turn = make_turn(body)
    action, value = server.decide(turn)
    if action == "rate_limit":
        send_rate_limit(server, handler, rate_limit_body())
        return
    plan = server.plan_for(turn.text)
    usage = _usage(plan.input_tokens, plan.output_tokens)
    if action == "edit":
        calls = tool_calls(body.get("tools") or [], value.edits, turn.workspace)
    elif plan.edits and turn.tool_results:
        calls = shell_retry(body, lambda: server.resolved(plan, turn.workspace).edits, turn.workspace)
    else:
        calls = []
    if calls:
        content = [{"type": "text", "text": "I will write the planned file(s)."}]
        content += [{"type": "tool_use", "id": f"toolu_scripted_{next(_ids):06d}", "name": name, "input": args}
                    for name, args in calls]
        stop = "tool_use"
    else:
        content = [{"type": "text", "text": value if action == "text" else plan.reply}]
        stop = "end_turn"
    message = build_message(turn.model, content, stop, usage)
    if turn.stream:
        send_events(handler, message_events(message))
    else:
        send_json(handler, 200, message)


def count_tokens(server, handler, method: str, path: str, body: Any) -> None:
    body = body if isinstance(body, dict) else {}
    text = all_text({k: body.get(k) for k in ("system", "messages", "tools")})
    send_json(handler, 200, {"input_tokens": max(1, len(text) // 4)})


def models(server, handler, method: str, path: str, body: Any) -> None:
    with server.lock:
        seen = [r["body"].get("model") for r in server.requests
                if isinstance(r.get("body"), dict) and r["path"].startswith("/v1/messages")]
    names = list(dict.fromkeys(m for m in seen if m))

    def entry(name: str) -> dict:
        return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}

    rest = path.split("?", 1)[0][len("/v1/models"):].strip("/")
    if rest:
        send_json(handler, 200, entry(rest))
        return
    data = [entry(n) for n in names]
    send_json(handler, 200, {"data": data, "has_more": False,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})


def register(server):
    server.route(lambda method, path: method == "POST" and path.rstrip("/") == "/v1/messages/count_tokens",
                 count_tokens)
    server.route(lambda method, path: method == "POST" and path.rstrip("/") == "/v1/messages", messages)
    server.route(lambda method, path: method == "GET" and (path.rstrip("/") == "/v1/models"
                                                          or path.startswith("/v1/models/")), models)
