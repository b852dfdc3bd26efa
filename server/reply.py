"""Split a reply into content and tool calls, the same way whether it is streamed or not.

Content is the text before the first call marker (trailing space dropped)
plus whatever non-call text the parser finds after it. While streaming, text
that might begin a call is held back, so a client never sees half a
`<tool_call>` as content.
"""
from __future__ import annotations

import json
import re

from loopcoder.runtime.holdback import held_back
from loopcoder.runtime.toolcalls import OPEN, parse_tool_calls
from loopcoder.server.responses import new_id

MARKERS = (OPEN, "<function=", "```")
_MARKER = re.compile("|".join(re.escape(m) for m in MARKERS))


def _openai_calls(calls) -> list[dict]:
    return [
        {
            "id": new_id("call_"),
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
        }
        for c in calls
    ]


def split_reply(text: str, tools: list[dict] | None) -> tuple[str, str, list[dict]]:
    """(head, tail, calls): content is head + tail; without calls head is the whole text."""
    m = _MARKER.search(text)
    if m is None:
        return text, "", []
    parsed = parse_tool_calls(text[m.start() :], tools)
    if not parsed.calls:
        return text, "", []
    head = text[: m.start()].rstrip()
    tail = parsed.content
    if head and tail:
        tail = "\n" + tail
    return head, tail, _openai_calls(parsed.calls)


def assistant_message(text: str, tools: list[dict] | None, parse_tools: bool) -> dict:
    """The reply as an OpenAI message; without calls the text is returned untouched,
    so a client echoing it back renders to the tokens already in the cache."""
    stream = ContentStream(tools, parse_tools)
    stream.feed(text)
    return stream.finish()[1]


class ContentStream:
    """Feed generated pieces, get the content safe to send now; `finish` settles the rest."""

    def __init__(self, tools: list[dict] | None, parse_tools: bool):
        self.tools = tools
        self.parse_tools = parse_tools
        self.text = ""
        self.sent = 0  # characters of self.text already sent as content
        self.held = False  # a marker was seen: send nothing more until finish

    def feed(self, piece: str) -> str:
        self.text += piece
        if not self.parse_tools:
            return self._send_to(len(self.text))
        if self.held:
            return ""
        m = _MARKER.search(self.text, self.sent)
        if m is not None:
            self.held = True
            return self._send_to(len(self.text[: m.start()].rstrip()))
        end = len(self.text) - held_back(self.text, MARKERS)
        end = len(self.text[:end].rstrip())
        return self._send_to(max(end, self.sent))

    def finish(self) -> tuple[str, dict]:
        """(content still to send, the final message)."""
        if self.parse_tools:
            head, tail, calls = split_reply(self.text, self.tools)
            if calls:
                message = {"role": "assistant", "content": (head + tail) or None, "tool_calls": calls}
                return head[self.sent :] + tail, message
        return self._send_to(len(self.text)), {"role": "assistant", "content": self.text}

    def _send_to(self, end: int) -> str:
        out = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return out
