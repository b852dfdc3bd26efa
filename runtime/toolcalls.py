"""Tool calls in model text: parse leniently, report strictly, render exactly.

The model was trained on Hermes/Qwen calls,
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, but open
coder models drift: unclosed final tags, ```json fences, `arguments` given as
a JSON string, the `<function=NAME><parameter=K>V</parameter></function>` form.
All of those are accepted; an unclosed block also gets a warning for the model
(it ran, but the next one must be closed). Anything else becomes an error
message that quotes the expected format, so the model can fix its next turn. Model output is
untrusted input: `parse_tool_calls` never raises.

JSON calls are read with a JSON decoder, not a regex, so argument strings may
contain `</tool_call>`, `<tool_call>` or fences and still round-trip. The XML
form has no escaping: a parameter value cannot contain `</parameter>`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

OPEN, CLOSE = "<tool_call>", "</tool_call>"
EXPECTED_FORMAT = OPEN + '\n{"name": <function-name>, "arguments": <args-json-object>}\n' + CLOSE

_START = re.compile(r"<tool_call>|<function=|```[ \t]*(?:json|JSON)?[ \t]*\r?\n?(?=\s*\{)")
_FENCE_OPEN = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\r?\n?")
_FUNCTION_TAG = re.compile(r"<function=([^>\n]*)>")
_PARAMETER = re.compile(r"<parameter=([^>\n]*)>(.*?)(?:</parameter>|(?=<parameter=)|\Z)", re.DOTALL)
_LOOKS_LIKE_CALL = re.compile(r'\{\s*"(?:name|function)"\s*:')
_TRAILER = re.compile(r"(?:\s|```|\})*")  # stray fence ends and braces models leave after the object
_SNIPPET_CHARS = 200


@dataclass
class ToolCall:
    name: str
    arguments: dict
    raw: str  # the exact text the call was parsed from


@dataclass
class ParseResult:
    content: str  # the text outside the calls, stripped
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # messages for the model, one per bad call
    warnings: list[str] = field(default_factory=list)  # calls that ran but were malformed (an unclosed block)


def render_tool_call(name: str, arguments: dict | str) -> str:
    """One call exactly as the chat template writes it (and as the model was trained to).

    Arguments that are not an object (a string a server sent) are written as a JSON string, which
    `parse_tool_calls` then reports to the model."""
    name_json = json.dumps(name, ensure_ascii=False)
    return f'{OPEN}\n{{"name": {name_json}, "arguments": {json.dumps(arguments, ensure_ascii=False)}}}\n{CLOSE}'


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> ParseResult:
    """Split model text into content and tool calls; never raises.

    `tools` (OpenAI-style schemas) is optional: with it, XML-form parameters
    whose schema type is "string" stay strings even when they look like JSON.
    """
    try:
        return _Parser(text, _string_params(tools)).run()
    except Exception as exc:  # model output must never crash the agent
        return ParseResult(str(text).strip(), [], [format_error(f"the reply could not be read ({type(exc).__name__})", "")])


def format_error(reason: str, raw: str) -> str:
    """The message fed back to the model for a call it got wrong."""
    snippet = raw.strip()
    if len(snippet) > _SNIPPET_CHARS:
        snippet = snippet[:_SNIPPET_CHARS] + "..."
    quoted = f" in:\n{snippet}\n" if snippet else ". "
    return f"Tool call format error: {reason}{quoted}Write each call exactly like this:\n{EXPECTED_FORMAT}"


UNCLOSED = f"the {OPEN} block is not closed with {CLOSE} (it was run as if closed; close every call)"


def _string_params(tools: list[dict] | None) -> dict[str, set[str]]:
    """Function name -> parameters declared as strings."""
    out: dict[str, set[str]] = {}
    for tool in tools or []:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        props = (fn.get("parameters") or {}).get("properties") or {}
        out[str(fn.get("name"))] = {k for k, v in props.items() if isinstance(v, dict) and v.get("type") == "string"}
    return out


def _decode_json(text: str, start: int):
    """(value, end) of the JSON value at `start`, or (None, error message)."""
    try:
        return json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        return None, exc.msg + f" at character {exc.pos - start}"
    except RecursionError:
        return None, "JSON nested too deeply"


def _close_braces(block: str):
    """A closed block whose object lost its last brace or two (a common slip), repaired; else None.

    Unclosed blocks are not repaired: they may be a reply cut off by the token limit.
    """
    if not block.endswith(CLOSE):
        return None
    body = block.removesuffix(CLOSE).strip().removesuffix("```").rstrip()
    for extra in ("}", "}}"):
        obj, end = _decode_json(body + extra, 0)
        if isinstance(obj, dict) and end == len(body) + len(extra):
            return obj
    return None


def _call_from_object(obj, raw: str) -> ToolCall | str:
    """A ToolCall, or the reason the object is not one."""
    if not isinstance(obj, dict):
        return 'the call must be a JSON object with "name" and "arguments"'
    if "name" not in obj and isinstance(obj.get("function"), dict):  # OpenAI-style {"function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return 'the call has no "name" string'
    args = obj.get("arguments", obj.get("parameters"))
    if isinstance(args, str):
        if not args.strip():
            args = {}
        else:
            decoded, end = _decode_json(args, 0)
            if decoded is None or args[end:].strip():
                return '"arguments" is a string that is not a JSON object'
            args = decoded
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return f'"arguments" must be a JSON object, not {type(args).__name__}'
    return ToolCall(name.strip(), args, raw)


def _xml_value(value: str, decode: bool):
    """A parameter value: one surrounding newline dropped; JSON numbers, bools, arrays, objects decoded."""
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    if decode:
        try:
            decoded = json.loads(value, parse_constant=_reject)
        except (ValueError, RecursionError):
            return value
        if isinstance(decoded, (bool, int, float, dict, list)):
            return decoded
    return value


def _reject(constant: str):
    raise ValueError(constant)  # NaN and Infinity are not JSON


class _Parser:
    def __init__(self, text: str, string_params: dict[str, set[str]]):
        self.text = text
        self.string_params = string_params
        self.content: list[str] = []
        self.calls: list[ToolCall] = []
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def run(self) -> ParseResult:
        text, pos = self.text, 0
        while (m := _START.search(text, pos)) is not None:
            self.content.append(text[pos : m.start()])
            if m.group() == OPEN:
                pos = self._tagged(m.start(), m.end())
            elif m.group() == "<function=":
                pos = self._xml(m.start(), self._block_end(m.end()))
            else:
                pos = self._fenced(m.start(), m.end())
        self.content.append(text[pos:])
        return ParseResult("".join(self.content).strip(), self.calls, self.errors, self.warnings)

    def _add(self, result: ToolCall | str, raw: str) -> None:
        if isinstance(result, ToolCall):
            self.calls.append(result)
        else:
            self.errors.append(format_error(result, raw))

    def _block_end(self, start: int) -> int:
        """Where an unparseable block ends: its close tag, the next call, or the end of the text."""
        ends = [len(self.text)]
        for marker, extra in ((CLOSE, len(CLOSE)), (OPEN, 0)):
            i = self.text.find(marker, start)
            if i >= 0:
                ends.append(i + extra)
        return min(ends)

    def _skip_ws(self, i: int) -> int:
        while i < len(self.text) and self.text[i].isspace():
            i += 1
        return i

    def _close(self, i: int) -> int:
        """Consume trailing fence ends, stray braces and the close tag, if they follow."""
        j = _TRAILER.match(self.text, i).end()
        return j + len(CLOSE) if self.text.startswith(CLOSE, j) else i

    def _tagged(self, start: int, body: int) -> int:
        """A `<tool_call>` block: one or more JSON objects, or the XML form."""
        text = self.text
        i = self._skip_ws(body)
        if (fence := _FENCE_OPEN.match(text, i)) is not None:
            i = self._skip_ws(fence.end())
        if text.startswith("<function=", i):
            return self._closed(start, self._close(self._xml(start, self._block_end(i))))
        if not text.startswith("{", i):
            end = self._block_end(body)
            self._add("expected a JSON object after <tool_call>", text[start:end])
            return end
        objects = []
        while True:  # several objects in one block are several calls
            obj, end = _decode_json(text, i)
            if obj is None:
                block_end = self._block_end(i)
                repaired = _close_braces(text[i:block_end])
                objects.append(repaired if repaired is not None else f"invalid JSON ({end})")
                break
            objects.append(obj)
            i = self._skip_ws(end)
            if not text.startswith("{", i):
                block_end = self._close(end)
                break
        raw = text[start:block_end]
        for obj in objects:
            self._add(obj if isinstance(obj, str) else _call_from_object(obj, raw), raw)
        return block_end if any(isinstance(obj, str) for obj in objects) else self._closed(start, block_end)

    def _closed(self, start: int, end: int) -> int:
        """`end`, after warning the model when the block from `start` ran without its close tag."""
        if not self.text[start:end].endswith(CLOSE):
            self.warnings.append(format_error(UNCLOSED, self.text[start:end]))
        return end

    def _xml(self, start: int, limit: int) -> int:
        """`<function=NAME><parameter=K>V</parameter>...</function>`, ending by `limit` if unclosed."""
        text = self.text
        tag_at = text.find("<function=", start)
        tag = _FUNCTION_TAG.match(text, tag_at, limit) if tag_at >= 0 else None
        if tag is None:
            self._add("malformed <function=NAME> tag", text[start:limit])
            return limit
        close = text.find("</function>", tag.end(), limit)
        stop = text.find(CLOSE, tag.end(), limit)
        body_end = close if close >= 0 else stop if stop >= 0 else limit
        end = close + len("</function>") if close >= 0 else limit
        raw = text[start:end]
        name = tag.group(1).strip()
        if not name:
            self._add("the <function=NAME> tag has no name", raw)
            return end
        keep_strings = self.string_params.get(name, set())
        arguments = {
            p.group(1).strip(): _xml_value(p.group(2), p.group(1).strip() not in keep_strings)
            for p in _PARAMETER.finditer(text, tag.end(), body_end)
        }
        self.calls.append(ToolCall(name, arguments, raw))
        return end

    def _fenced(self, start: int, body: int) -> int:
        """A ```json fence outside the tags: a call if it holds one, else ordinary content."""
        text = self.text
        i = self._skip_ws(body)
        obj, end = _decode_json(text, i)
        fence_close = text.find("```", i)
        if obj is None:
            block_end = fence_close + 3 if fence_close >= 0 else len(text)
            if _LOOKS_LIKE_CALL.match(text, i):
                self._add(f"invalid JSON ({end})", text[start:block_end])
            else:
                self.content.append(text[start:block_end])
            return block_end
        after = self._skip_ws(end)
        block_end = after + 3 if text.startswith("```", after) else end
        call_keys = {"name", "arguments", "parameters", "function"}
        if isinstance(obj, dict) and obj and set(obj) <= call_keys and ("name" in obj or "function" in obj):
            self._add(_call_from_object(obj, text[start:block_end]), text[start:block_end])
        else:
            self.content.append(text[start:block_end])
        return block_end
