"""Validate a `/v1/chat/completions` body into messages, tools and sampling settings.

Everything here is client input: each check names the offending field
(`param`) so the client sees exactly what to fix, and nothing raises anything
but `ApiError`. Messages come out normalized (text content, tool-call
arguments as dicts) so the chat template renders them the same way the model
wrote them, which keeps the KV cache reusable across requests.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from agent.server.errors import ApiError, bad_request
from model.backends.base import GenerationParams

ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_STOP_STRINGS = 16
FILL_WINDOW = 2**31 - 1  # no max_tokens: generate until the window is full (the engine clamps to the room left)


@dataclass
class ChatRequest:
    messages: list[dict]
    tools: list[dict] | None
    params: GenerationParams
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk carries usage
    parse_tools: bool  # tool_choice "none" returns the text as content


def parse_chat_request(body: bytes, model_names: list[str]) -> ChatRequest:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad_request(f"The request body is not valid JSON ({_reason(exc)}). Send a JSON object.") from None
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {_kind(data)}.")
    model = data.get("model")
    if not isinstance(model, str):
        raise bad_request("'model' is required and must be a string; GET /v1/models lists the served model.", "model")
    if model not in model_names:
        raise ApiError(
            404,
            f"The model '{_clip(model)}' does not exist on this server; it serves {', '.join(map(repr, model_names))}.",
            param="model",
            code="model_not_found",
        )
    for field, allowed in (("n", (1, None)), ("logprobs", (False, None))):
        if data.get(field, None) not in allowed:
            raise bad_request(f"'{field}' is not supported by this server; leave it out.", field)
    response_format = _response_format(data.get("response_format"))

    tools = _tools(data.get("tools"))
    messages = normalize_messages(data.get("messages"))
    parse_tools = _tool_choice(data.get("tool_choice"), tools)
    stream = _typed(data, "stream", bool, False)
    options = _typed(data, "stream_options", dict, {}) or {}
    include_usage = _typed(options, "include_usage", bool, False, "stream_options.include_usage")

    max_tokens = _max_tokens(data)
    seed = _typed(data, "seed", int, None)
    params = GenerationParams(
        temperature=_number(data, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(data, "top_p", 1.0, 0.0, 1.0, low_open=True),
        top_k=_typed(data, "top_k", int, 0) or 0,
        seed=seed,
        max_new_tokens=max_tokens or FILL_WINDOW,
        stop=_stop(data.get("stop")),
        tool_choice=data.get("tool_choice") or "auto",
        response_format=response_format,
    )
    if params.top_k < 0:
        raise bad_request("'top_k' must be 0 (off) or a positive integer.", "top_k")
    return ChatRequest(messages, tools, params, stream, include_usage, parse_tools)


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)


def _kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _typed(data: dict, key: str, kind: type, default, param: str | None = None):
    """data[key] if it has the right JSON type (booleans are not integers), else a 400."""
    value = data.get(key)
    if value is None:
        return default
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        want = {bool: "a boolean", int: "an integer", dict: "an object", str: "a string", list: "an array"}[kind]
        raise bad_request(f"'{param or key}' must be {want}, not {_kind(value)}.", param or key)
    return value


def _number(data: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"'{key}' must be a number, not {_kind(value)}.", key)
    if value < low or value > high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise bad_request(f"'{key}' must be in {interval}; got {value}.", key)
    return float(value)


def _max_tokens(data: dict) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = _typed(data, key, int, None)
        if value is not None:
            if value < 1:
                raise bad_request(f"'{key}' must be at least 1; got {value}.", key)
            return value
    return None


def _stop(value) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise bad_request("'stop' must be a non-empty string or an array of non-empty strings.", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"'stop' may hold at most {MAX_STOP_STRINGS} strings; got {len(stops)}.", "stop")
    return stops


def _tools(value) -> list[dict] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request(f"'tools' must be an array of function tools, not {_kind(value)}.", "tools")
    out, names = [], set()
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            raise bad_request(f"'{where}' must be {{'type': 'function', 'function': {{...}}}}.", where)
        fn = tool["function"]
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise bad_request(f"'{where}.function.name' must be a non-empty string.", f"{where}.function.name")
        if name in names:
            raise bad_request(f"Tool '{_clip(name)}' is defined twice in 'tools'.", f"{where}.function.name")
        names.add(name)
        description = _typed(fn, "description", str, None, f"{where}.function.description")
        parameters = _typed(fn, "parameters", dict, None, f"{where}.function.parameters")
        clean = {"name": name}
        if description is not None:
            clean["description"] = description
        clean["parameters"] = parameters if parameters is not None else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": clean})
    return out or None


def _response_format(value) -> dict | None:
    """None for plain text; else the format the whole reply must follow (in-process backends
    constrain decoding to it)."""
    if value is None or (isinstance(value, dict) and value.get("type") == "text"):
        return None
    if isinstance(value, dict) and value.get("type") == "json_object":
        return {"type": "json_object"}
    spec = value.get("json_schema") if isinstance(value, dict) and value.get("type") == "json_schema" else None
    if isinstance(spec, dict) and isinstance(spec.get("schema"), (dict, bool)):
        return {"type": "json_schema", "json_schema": {"schema": spec["schema"]}}
    raise bad_request("'response_format' must be {'type': 'text'}, {'type': 'json_object'} or "
                      "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}.", "response_format")


def _tool_choice(value, tools: list[dict] | None) -> bool:
    """Whether calls are parsed out of the reply. The in-process backends also constrain decoding
    to it: "required" makes the reply call a tool, a named function makes it that one call."""
    if value is None or value in ("auto", "required"):
        if value == "required" and not tools:
            raise bad_request("tool_choice 'required' needs 'tools'.", "tool_choice")
        return True
    if value == "none":
        return False
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        known = [t["function"]["name"] for t in tools or []]
        if name not in known:
            raise bad_request(
                f"tool_choice names the function {_clip(repr(name))}, which is not in 'tools' ({', '.join(known) or 'none given'}).",
                "tool_choice",
            )
        return True
    raise bad_request("'tool_choice' must be 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}.", "tool_choice")


def normalize_messages(value) -> list[dict]:
    """Client messages, checked, in the one shape the chat template and the session pool see."""
    if not isinstance(value, list) or not value:
        raise bad_request("'messages' is required and must be a non-empty array.", "messages")
    out: list[dict] = []
    call_ids: set[str] = set()
    for i, msg in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise bad_request(f"'{where}' must be an object, not {_kind(msg)}.", where)
        role = msg.get("role")
        if role not in ROLES:
            raise bad_request(f"'{where}.role' must be one of {sorted(ROLES)}; got {_clip(repr(role))}.", f"{where}.role")
        clean = {"role": "system" if role == "developer" else role, "content": _content(msg.get("content"), where)}
        if role == "assistant" and msg.get("tool_calls") is not None:
            clean["tool_calls"] = _history_calls(msg["tool_calls"], where)
            call_ids.update(c["id"] for c in clean["tool_calls"] if c["id"])
        elif clean["content"] is None:
            raise bad_request(f"'{where}.content' is required for role '{role}'.", f"{where}.content")
        if role == "tool":
            call_id = _typed(msg, "tool_call_id", str, None, f"{where}.tool_call_id")
            if call_id is not None:
                if call_id not in call_ids:
                    raise bad_request(
                        f"'{where}.tool_call_id' {_clip(repr(call_id))} does not match a tool call of an earlier assistant message.",
                        f"{where}.tool_call_id",
                    )
                clean["tool_call_id"] = call_id
        if clean["content"] is None:
            clean["content"] = ""
        out.append(clean)
    return out


def _content(value, where: str) -> str | None:
    """Text content; an array of text parts is joined, other part types are refused."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(
                    f"'{where}.content[{j}]' must be a text part {{'type': 'text', 'text': ...}}; this server reads text only.",
                    f"{where}.content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"'{where}.content' must be a string or an array of text parts, not {_kind(value)}.", f"{where}.content")


def _history_calls(value, where: str) -> list[dict]:
    if not isinstance(value, list):
        raise bad_request(f"'{where}.tool_calls' must be an array.", f"{where}.tool_calls")
    calls = []
    for j, call in enumerate(value):
        at = f"{where}.tool_calls[{j}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise bad_request(f"'{at}' must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}.", at)
        arguments = fn.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError):
                arguments = None
        if arguments is None and "arguments" not in fn:
            arguments = {}
        if not isinstance(arguments, dict):
            raise bad_request(f"'{at}.function.arguments' must be a JSON object (or a string holding one).", f"{at}.function.arguments")
        call_id = _typed(call, "id", str, "", f"{at}.id")
        calls.append({"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": arguments}})
    return calls
