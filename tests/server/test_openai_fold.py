"""Server replies are hostile input: whatever JSON a server sends as tool calls, the backend never
raises and hands the agent calls its parser reads back exactly."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from loopcoder.runtime.backends.openai_backend import _merge_call_delta, _openai_calls, hermes_call
from loopcoder.runtime.toolcalls import parse_tool_calls

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
NAMES = st.text(min_size=1, max_size=20).filter(lambda s: s.strip() == s and "\n" not in s)
ARGUMENTS = st.dictionaries(st.text(max_size=10), JSON, max_size=4)


@given(JSON)
def test_any_tool_calls_value_gives_well_formed_calls(value):
    for call in _openai_calls(value):
        assert isinstance(call["function"]["name"], str) and isinstance(call["function"]["arguments"], str)
        parse_tool_calls(hermes_call(call))  # never raises


@given(NAMES, ARGUMENTS, st.booleans())
def test_a_call_round_trips_through_the_hermes_block(name, arguments, as_string):
    call = {"id": "c", "function": {"name": name, "arguments": json.dumps(arguments) if as_string else arguments}}
    [rendered] = _openai_calls([call])
    parsed = parse_tool_calls(hermes_call(rendered))
    assert [(c.name, c.arguments) for c in parsed.calls] == [(name, arguments)]


@given(st.lists(JSON, max_size=6), NAMES, ARGUMENTS, st.integers(1, 5))
def test_streamed_fragments_fold_into_the_call(noise, name, arguments, pieces):
    """Fragments of one call (name once, arguments in parts) among junk fragments a server may send."""
    calls: dict[int, dict] = {}
    for junk in noise:
        _merge_call_delta(calls, junk if not isinstance(junk, dict) else {**junk, "index": 7})
    text = json.dumps(arguments)
    step = -(-len(text) // pieces)
    _merge_call_delta(calls, {"index": 0, "id": "call_1", "function": {"name": name}})
    for i in range(0, len(text), step):
        _merge_call_delta(calls, {"index": 0, "function": {"arguments": text[i:i + step]}})
    assert calls[0]["id"] == "call_1" and calls[0]["function"] == {"name": name, "arguments": text}
