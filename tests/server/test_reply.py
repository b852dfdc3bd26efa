"""Streamed and whole replies split into the same content and tool calls, whatever the chunking."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.server.reply import MARKERS, ContentStream, assistant_message

TOOLS = [{"type": "function", "function": {"name": "view", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
CALL = '<tool_call>\n{"name": "view", "arguments": {"path": "a.py"}}\n</tool_call>'
FRAGMENTS = st.sampled_from([
    CALL, "<tool_call>", "</tool_call>", '{"name": "view", "arguments": {}}', "```", "```json\n", "<function=view>",
    "<parameter=path>b.py</parameter></function>", "<tool", "<", "`", "\n", " ", "Let me look.", "x < y", "done",
])
TEXTS = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=8).map("".join)


def without_ids(message: dict) -> dict:
    calls = [{**c, "id": None} for c in message.get("tool_calls") or []]
    return {**message, "tool_calls": calls} if calls else message


def stream(text: str, cuts: list[int], parse_tools: bool = True):
    s = ContentStream(TOOLS, parse_tools)
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    sent = [s.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])]
    last, message = s.finish()
    return sent, last, message


@settings(max_examples=300, deadline=None)
@given(TEXTS, st.lists(st.integers(0, 200), max_size=12), st.booleans())
def test_streaming_matches_the_whole_reply(text, cuts, parse_tools):
    sent, last, message = stream(text, cuts, parse_tools)
    whole = assistant_message(text, TOOLS, parse_tools)
    assert without_ids(message) == without_ids(whole)
    assert "".join(sent) + last == (message["content"] or "")
    if message.get("tool_calls"):
        assert not any(m in "".join(sent) for m in MARKERS)  # no half call ever reached the client as content


def test_calls_become_openai_tool_calls():
    message = assistant_message("Let me look.\n" + CALL + "\n" + CALL, TOOLS, True)
    assert message["content"] == "Let me look."
    assert [c["function"] for c in message["tool_calls"]] == [{"name": "view", "arguments": '{"path": "a.py"}'}] * 2
    ids = [c["id"] for c in message["tool_calls"]]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)


def test_text_without_calls_is_untouched_and_tool_choice_none_keeps_calls_as_text():
    assert assistant_message("  plain\n", TOOLS, True) == {"role": "assistant", "content": "  plain\n"}
    assert assistant_message(CALL, TOOLS, False) == {"role": "assistant", "content": CALL}
    sent, last, message = stream("a <tool", [3, 5])
    assert sent == ["a", "", ""] and last == " <tool" and message["content"] == "a <tool"
