"""A `/v1/chat/completions` body: pydantic models for its shape, then the checks across fields.

Everything here is client input. The models are strict (no "10" for 10, no
true for 1, no NaN) and bound every number the model code will use (a seed
torch cannot take is a 400, not a 500); any violation becomes one OpenAI 400
whose `param` is the offending field's path in the client's JSON
(`messages[1].content`). Fields OpenAI defines that this server ignores pass
through. Messages come out normalized (text content, tool-call arguments as
dicts) so the chat template renders them the same way the model wrote them,
which keeps the KV cache reusable across requests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.server.errors import ApiError, bad_request

MAX_STOP_STRINGS = 16
FILL_WINDOW = 2**31 - 1  # no max_tokens: generate until the window is full (the engine clamps to the room left)
NonEmpty = Annotated[str, Field(min_length=1)]
Positive = Annotated[int, Field(ge=1)]


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class CalledFunction(Strict):
    name: NonEmpty
    arguments: str | dict[str, Any] | None = None


class HistoryCall(Strict):
    id: str | None = None
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[HistoryCall] | None = None
    tool_call_id: str | None = None


class FunctionSchema(Strict):
    name: NonEmpty
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSchema(Strict):
    type: Literal["function"]
    function: FunctionSchema


class FunctionName(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: FunctionName


class StreamOptions(Strict):
    include_usage: bool | None = None


class JsonSchemaFormat(Strict):
    name: str | None = None
    schema_: dict[str, Any] | bool = Field(alias="schema")


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(Strict):
    """The fields this server reads; `null` means the default, as in the OpenAI API."""

    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    tools: list[ToolSchema] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None  # an extension vLLM and SGLang take too
    seed: Annotated[int, Field(ge=-(2**63), lt=2**64)] | None = None  # what torch.Generator.manual_seed takes
    max_tokens: Positive | None = None
    max_completion_tokens: Positive | None = None
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP_STRINGS)] | None = None
    n: Literal[1] | None = None
    logprobs: Literal[False] | None = None


@dataclass
class ChatRequest:
    messages: list[dict]
    tools: list[dict] | None
    params: GenerationParams
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk carries usage
    parse_tools: bool  # tool_choice "none" returns the text as content


def parse_chat_request(body: bytes, model_names: list[str]) -> ChatRequest:
    """The request, or an ApiError (4xx) that names the field to fix."""
    try:
        req = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _field_error(exc, body) from None
    if req.model not in model_names:
        raise ApiError(
            404,
            f"The model '{_clip(req.model)}' does not exist on this server; it serves {', '.join(map(repr, model_names))}.",
            param="model",
            code="model_not_found",
        )
    tools = _tools(req.tools)
    params = GenerationParams(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        seed=req.seed,
        max_new_tokens=req.max_completion_tokens or req.max_tokens or FILL_WINDOW,
        stop=[req.stop] if isinstance(req.stop, str) else req.stop or [],
        tool_choice=req.tool_choice.model_dump() if isinstance(req.tool_choice, NamedToolChoice) else req.tool_choice or "auto",
        response_format=_response_format(req.response_format),
    )
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return ChatRequest(_messages(req.messages), tools, params, bool(req.stream), include_usage,
                       _tool_choice(req.tool_choice, tools))


def normalize_messages(value: list[dict]) -> list[dict]:
    """Messages in the OpenAI shape (a reply, say), checked, in the one shape the chat template
    and the session pool see."""
    try:
        messages = [ChatMessage.model_validate(m, strict=False) for m in value]
    except ValidationError as exc:
        raise bad_request(f"A message is not in the OpenAI shape: {exc.errors()[0]['msg']}.", "messages") from None
    return _messages(messages)


# --- a pydantic error as one OpenAI 400 -------------------------------------------


def _field_error(exc: ValidationError, body: bytes) -> ApiError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first["msg"].removeprefix("Invalid JSON: ")
        return bad_request(f"The request body is not valid JSON ({reason}). Send a JSON object.")
    if not first["loc"]:
        return bad_request(f"The request body must be a JSON object, not {_kind(first['input'])}.")
    data = json.loads(body)  # valid JSON: pydantic just parsed it
    paths = [_path(data, e) for e in errors]
    # a field with several allowed shapes fails once per shape; the deepest path is the one that
    # matched the client's shape (content: [{"type": "image"}] -> messages[0].content[0].type)
    related = [p for p in paths if p[: len(paths[0])] == paths[0]]
    path = max(related, key=len)
    problems = list(dict.fromkeys(e["msg"] for e, p in zip(errors, paths) if p == path))
    param = _param(path)
    where = f"'{param}'" if param else "The request body"
    got = next(e["input"] for e, p in zip(errors, paths) if p == path)
    shown = "" if isinstance(got, (dict, list)) or (isinstance(got, str) and not got) or problems[0] == "Field required" \
        else f" (got {_clip(json.dumps(got))})"
    text = " or ".join(problems[:1] + [p.removeprefix("Input should be ") for p in problems[1:]])
    return bad_request(f"{where}: {text[0].lower() + text[1:]}{shown}.", param or None)


def _path(data: Any, error: dict) -> list:
    """The error's location in the client's JSON: pydantic's loc without its union-member tags."""
    out, node, loc = [], data, error["loc"]
    for i, part in enumerate(loc):
        missing = error["type"] == "missing" and i == len(loc) - 1
        if isinstance(node, dict) and isinstance(part, str) and (part in node or missing):
            out.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
    return out


def _param(path: list) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


# --- checks across fields -----------------------------------------------------


def _tools(tools: list[ToolSchema] | None) -> list[dict] | None:
    out, names = [], set()
    for i, tool in enumerate(tools or []):
        fn = tool.function
        if fn.name in names:
            raise bad_request(f"Tool '{_clip(fn.name)}' is defined twice in 'tools'.", f"tools[{i}].function.name")
        names.add(fn.name)
        clean: dict = {"name": fn.name}
        if fn.description is not None:
            clean["description"] = fn.description
        clean["parameters"] = fn.parameters if fn.parameters is not None else {"type": "object", "properties": {}}
        out.append({"type": "function", "function": clean})
    return out or None


def _response_format(fmt: ResponseFormat | None) -> dict | None:
    """None for plain text; else the format the whole reply must follow (in-process backends
    constrain decoding to it)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.json_schema is None:
        raise bad_request("'response_format' of type 'json_schema' needs "
                          "'json_schema': {'name': ..., 'schema': {...}}.", "response_format.json_schema")
    return {"type": "json_schema", "json_schema": {"schema": fmt.json_schema.schema_}}


def _tool_choice(choice: str | NamedToolChoice | None, tools: list[dict] | None) -> bool:
    """Whether calls are parsed out of the reply. The in-process backends also constrain decoding
    to it: "required" makes the reply call a tool, a named function makes it that one call."""
    if choice == "none":
        return False
    if choice == "required" and not tools:
        raise bad_request("tool_choice 'required' needs 'tools'.", "tool_choice")
    if isinstance(choice, NamedToolChoice):
        known = [t["function"]["name"] for t in tools or []]
        if choice.function.name not in known:
            raise bad_request(
                f"tool_choice names the function {_clip(repr(choice.function.name))}, which is not in 'tools' "
                f"({', '.join(known) or 'none given'}).",
                "tool_choice",
            )
    return True


def _messages(messages: list[ChatMessage]) -> list[dict]:
    out: list[dict] = []
    call_ids: set[str] = set()
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        content = msg.content if not isinstance(msg.content, list) else "".join(p.text for p in msg.content)
        clean: dict = {"role": "system" if msg.role == "developer" else msg.role, "content": content}
        if msg.role == "assistant" and msg.tool_calls is not None:
            clean["tool_calls"] = [_history_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(msg.tool_calls)]
            call_ids.update(c["id"] for c in clean["tool_calls"] if c["id"])
        elif content is None:
            raise bad_request(f"'{where}.content' is required for role '{msg.role}'.", f"{where}.content")
        if msg.role == "tool" and msg.tool_call_id is not None:
            if msg.tool_call_id not in call_ids:
                raise bad_request(
                    f"'{where}.tool_call_id' {_clip(repr(msg.tool_call_id))} does not match a tool call of an earlier "
                    "assistant message.",
                    f"{where}.tool_call_id",
                )
            clean["tool_call_id"] = msg.tool_call_id
        if clean["content"] is None:
            clean["content"] = ""
        out.append(clean)
    return out


def _history_call(call: HistoryCall, at: str) -> dict:
    arguments = call.function.arguments
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            arguments = None
    elif arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise bad_request(f"'{at}.function.arguments' must be a JSON object (or a string holding one).",
                          f"{at}.function.arguments")
    return {"id": call.id or "", "type": "function", "function": {"name": call.function.name, "arguments": arguments}}
