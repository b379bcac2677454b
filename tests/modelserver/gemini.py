"""gemini: the Gemini API (``generativelanguage``) as Gemini CLI and the @google/genai SDK call it.

Routes (any API version prefix, ``/v1beta`` or ``/v1``)::

    POST /{version}/models/{model}:generateContent                 one GenerateContentResponse (JSON)
    POST /{version}/models/{model}:streamGenerateContent?alt=sse   the same answer as SSE ``data:`` chunks
    POST /{version}/models/{model}:countTokens                     {"totalTokens": n}
    POST /{version}/models/{model}:embedContent / :batchEmbedContents   zero vectors
    GET  /v1beta/models[/{model}]                                  a model list naming the models asked for

A request is reduced to a :class:`Turn`: its model (from the path), every text in it, the
function declarations it offers (``tools[].functionDeclarations``) and how many
``functionResponse`` parts the conversation holds. The script then answers with:

- ``rate_limit``: HTTP 429, Google's error body ``{"error": {"code": 429, "status":
  "RESOURCE_EXHAUSTED", "message": ..., "details": [RetryInfo {"retryDelay": "<retry_after>s"}]}}``
  and ``Retry-After`` (Gemini CLI reads only the RetryInfo delay);
- ``edit``: one ``functionCall`` part per planned file (each in its own SSE chunk), through the
  write tool the request offers (a tool whose parameters name a path and a content: Gemini CLI's
  ``write_file {file_path, content}``; the path is absolute only when the parameter's description
  asks for it, made from the workspace found in the request, Gemini CLI's "Workspace
  Directories" session context), else its shell tool (a ``command`` parameter) with ``printf``;
- ``text``: the plan's reply.

Side calls that ask for JSON (``generationConfig.responseMimeType: application/json``, as
Gemini CLI's next-speaker, loop-detection and routing checks do) get a value that fits the
given ``responseSchema`` / ``responseJsonSchema``: the calm answer (the user speaks next, no
loop, confidence 0), never a tool call. Usage goes in ``usageMetadata`` (``promptTokenCount``,
``candidatesTokenCount``, ``totalTokenCount``) with ``modelVersion`` set to the model asked for.
"""
from __future__ import annotations

import json
import re
import shlex
from typing import Any

from .core import Turn, all_text, send_events, send_json, send_rate_limit

API = "gemini"

_MODEL_PATH = re.compile(r"^/(?:v\d+\w*/)?models/(?P<model>[^/:]+):(?P<method>[A-Za-z]+)$")
# only the beta versions: GET /v1/models is OpenAI's model list, served by the openai modules
_LIST_PATH = re.compile(r"^/v\d+(?:beta|alpha)\w*/models(?:/(?P<model>[^/:]+))?$")

# "I'm currently working in the directory: /x", "current working directory ... is /x",
# "<cwd>/x</cwd>", "Directory: /x" ... the first absolute path after such words.
_CWD_PATTERNS = [
    re.compile(r"Workspace Directories:\**\s*\n\s*-\s*(/[^\s`'\"]+)"),   # Gemini CLI's session context
    re.compile(r"currently working in the directory:?\s*`?(/[^\s`'\"]+)"),
    re.compile(r"working directory[^\n/]{0,40}?(/[^\s`'\"]+)", re.IGNORECASE),
    re.compile(r"<cwd>\s*(/[^<\s]+)\s*</cwd>"),
    re.compile(r"project (?:root|directory)[^\n/]{0,40}?(/[^\s`'\"]+)", re.IGNORECASE),
]

_PATH_KEYS = ("file_path", "filePath", "absolute_path", "path", "filename", "file")
_CONTENT_KEYS = ("content", "contents", "text", "file_text", "new_content")
_COMMAND_KEYS = ("command", "cmd", "script")


def register(server) -> None:
    server.route(lambda method, path: method == "POST" and bool(_MODEL_PATH.match(path)), _serve_model)
    server.route(lambda method, path: method == "GET" and bool(_LIST_PATH.match(path)), _serve_list)


# -- the request ----------------------------------------------------------------------------

def _declarations(body: dict) -> list[dict]:
    out = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
                if isinstance(decl, dict) and decl.get("name"):
                    out.append(decl)
    return out


def _schema_of(decl: dict) -> dict:
    schema = decl.get("parametersJsonSchema") or decl.get("parameters") or {}
    return schema if isinstance(schema, dict) else {}


def _properties(decl: dict) -> dict:
    props = _schema_of(decl).get("properties") or {}
    return props if isinstance(props, dict) else {}


def _tool_results(body: dict) -> int:
    count = 0
    for content in body.get("contents") or []:
        for part in (content or {}).get("parts") or []:
            if isinstance(part, dict) and ("functionResponse" in part or "function_response" in part):
                count += 1
    return count


def workspace_of(text: str) -> str | None:
    for pattern in _CWD_PATTERNS:
        found = pattern.search(text)
        if found:
            return found.group(1).rstrip(".,;:)")
    return None


def turn_of(body: dict, model: str, stream: bool) -> Turn:
    text = all_text({"system": body.get("systemInstruction") or body.get("system_instruction"),
                     "contents": body.get("contents")})
    return Turn(api=API, model=model, text=text, tools=[d["name"] for d in _declarations(body)],
                tool_results=_tool_results(body), stream=stream, workspace=workspace_of(text))


def _json_schema(body: dict) -> dict | None:
    """The schema of a JSON-mode request, or None when the request wants free text."""
    config = body.get("generationConfig") or body.get("generation_config") or {}
    mime = config.get("responseMimeType") or config.get("response_mime_type") or ""
    schema = (config.get("responseJsonSchema") or config.get("responseSchema")
              or config.get("response_json_schema") or config.get("response_schema"))
    if mime == "application/json" or schema:
        return schema if isinstance(schema, dict) else {}
    return None


# -- values for JSON-mode side calls ----------------------------------------------------------

_CALM_ENUM = ("user", "false", "no", "none", "continue", "simple", "flash", "default")


def value_for(schema: Any, name: str = "") -> Any:
    """A small value that fits ``schema`` (OpenAPI subset or JSON Schema), on the calm side."""
    if not isinstance(schema, dict):
        return "ok"
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return value_for(schema[key][0], name)
    enum = schema.get("enum")
    if enum:
        for calm in _CALM_ENUM:
            if calm in enum:
                return calm
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "string")
    kind = str(kind or ("object" if "properties" in schema else "string")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: value_for(sub, key) for key, sub in props.items()}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        low = schema.get("minimum")
        return low if isinstance(low, (int, float)) else 0
    if kind == "boolean":
        return False
    lowered = name.lower()
    if "reason" in lowered or "analysis" in lowered:
        return "The last turn finished the task; no further model turn is needed."
    return "ok"


# -- tool calls -------------------------------------------------------------------------------

def _key(props: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in props:
            return name
    return None


def _write_tool(decls: list[dict]) -> tuple[dict, str, str] | None:
    best = None
    for decl in decls:
        props = _properties(decl)
        path_key, content_key = _key(props, _PATH_KEYS), _key(props, _CONTENT_KEYS)
        if not (path_key and content_key):
            continue
        name = decl["name"].lower()
        score = 2 if "write" in name or "create" in name else 1
        if best is None or score > best[0]:
            best = (score, decl, path_key, content_key)
    return best[1:] if best else None


def _shell_tool(decls: list[dict]) -> tuple[dict, str] | None:
    for decl in decls:
        key = _key(_properties(decl), _COMMAND_KEYS)
        if key:
            return decl, key
    return None


def _abs(workspace: str | None, rel: str) -> str:
    if rel.startswith("/") or not workspace:
        return rel
    return workspace.rstrip("/") + "/" + rel


def _path_needs_absolute(decl: dict, path_key: str) -> bool:
    desc = json.dumps(_properties(decl).get(path_key) or {}).lower()
    return "absolute" in desc and "relative" not in desc


def function_calls(plan, decls: list[dict], workspace: str | None) -> list[dict]:
    """``functionCall`` parts that make the plan's edits with the tools on offer."""
    calls = []
    write = _write_tool(decls)
    if write:
        decl, path_key, content_key = write
        absolute = _path_needs_absolute(decl, path_key)
        for rel, content in plan.edits.items():
            path = _abs(workspace, rel) if absolute else rel
            args = {path_key: path, content_key: content}
            calls.append({"functionCall": {"name": decl["name"], "args": args}})
        return calls
    shell = _shell_tool(decls)
    if shell:
        decl, key = shell
        lines = []
        for rel, content in plan.edits.items():
            target = shlex.quote(rel)
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            if parent:
                lines.append(f"mkdir -p {shlex.quote(parent)}")
            lines.append(f"printf '%s' {shlex.quote(content)} > {target}")
        args = {key: " && ".join(lines)}
        for name, sub in _properties(decl).items():   # a description parameter the tool requires
            if name != key and name in (_schema_of(decl).get("required") or []) and isinstance(sub, dict):
                args[name] = value_for(sub, name) if sub.get("type", "string") != "string" else "write the planned files"
        calls.append({"functionCall": {"name": decl["name"], "args": args}})
    return calls


# -- answers ----------------------------------------------------------------------------------

def _usage(plan_in: int, plan_out: int) -> dict:
    return {"promptTokenCount": plan_in, "candidatesTokenCount": plan_out,
            "totalTokenCount": plan_in + plan_out}


def _response(model: str, parts: list[dict], usage: dict | None, finish: str | None = "STOP") -> dict:
    candidate: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict = {"candidates": [candidate], "modelVersion": model, "responseId": "scripted"}
    if usage:
        out["usageMetadata"] = usage
    return out


def rate_limit_body(model: str, retry_after: int = 1) -> dict:
    """Google's 429 body. Gemini CLI ignores the Retry-After header and reads the delay from the
    RetryInfo detail; without any detail it still retries (5 s, 10 s, 20 s, 30 s... backoff)."""
    return {"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                      "message": f"Resource has been exhausted (e.g. check quota). The scripted model server "
                                 f"rate-limits {model}.",
                      "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                   "retryDelay": f"{retry_after}s"}]}}


def _serve_model(server, handler, method: str, path: str, body: Any) -> None:
    found = _MODEL_PATH.match(path.split("?", 1)[0])
    model, rpc = found.group("model"), found.group("method")
    body = body if isinstance(body, dict) else {}
    if rpc == "countTokens":
        request = body.get("generateContentRequest") or body
        send_json(handler, 200, {"totalTokens": max(1, len(all_text(request.get("contents"))) // 4)})
        return
    if rpc in ("embedContent", "batchEmbedContents"):
        count = len(body.get("requests") or [body])
        send_json(handler, 200, {"embeddings": [{"values": [0.0] * 8} for _ in range(count)]}
                  if rpc == "batchEmbedContents" else {"embedding": {"values": [0.0] * 8}})
        return
    if rpc not in ("generateContent", "streamGenerateContent"):
        send_json(handler, 404, {"error": {"code": 404, "status": "NOT_FOUND",
                                           "message": f"the scripted model server has no {rpc}"}})
        return
    stream = rpc == "streamGenerateContent"
    turn = turn_of(body, model, stream)
    action, arg = server.decide(turn)
    plan = server.plan_for(turn.text)
    if action == "rate_limit":
        send_rate_limit(server, handler, rate_limit_body(model, server.retry_after))
        return
    schema = _json_schema(body)
    if schema is not None:
        parts = [{"text": json.dumps(value_for(schema))}]
        usage = _usage(max(1, len(turn.text) // 4), 20)
    elif action == "edit":
        parts = function_calls(arg, _declarations(body), turn.workspace) or [{"text": plan.reply}]
        usage = _usage(plan.input_tokens, plan.output_tokens)
    else:
        parts = [{"text": arg}]
        usage = _usage(plan.input_tokens, plan.output_tokens)
    if not stream:
        send_json(handler, 200, _response(model, parts, usage))
        return
    # SSE: each part in its own chunk, the usage and finish reason with the last one
    chunks = [_response(model, [part], None, None) for part in parts[:-1]]
    chunks.append(_response(model, parts[-1:], usage))
    send_events(handler, [(None, chunk) for chunk in chunks])


def _serve_list(server, handler, method: str, path: str, body: Any) -> None:
    found = _LIST_PATH.match(path.split("?", 1)[0])
    def entry(name: str) -> dict:
        return {"name": f"models/{name}", "displayName": name, "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]}
    if found.group("model"):
        send_json(handler, 200, entry(found.group("model")))
        return
    with server.lock:
        asked = sorted({m.group("model") for r in server.requests
                        for m in [_MODEL_PATH.match(r["path"].split("?", 1)[0])] if m})
    send_json(handler, 200, {"models": [entry(name) for name in asked]})
