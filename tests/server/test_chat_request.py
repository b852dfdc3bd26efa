"""Client input never breaks the request parser: any JSON (or bytes) is a ChatRequest or an ApiError."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.server.chat_request import ChatRequest, parse_chat_request
from loopcoder.server.errors import ApiError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["model", "messages", "tools", "tool_choice", "stream", "stream_options", "temperature", "top_p", "top_k",
          "max_tokens", "max_completion_tokens", "stop", "seed", "n", "logprobs", "response_format"]
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "x"])},
                                optional={"content": JSON, "tool_calls": JSON, "tool_call_id": JSON})
BODIES = st.one_of(
    JSON,
    st.dictionaries(st.sampled_from(FIELDS), JSON),
    st.fixed_dictionaries({"model": st.just("tiny"), "messages": st.lists(MESSAGE, max_size=4)},
                          optional={k: JSON for k in FIELDS[2:]}),
)


def outcome(body: bytes):
    try:
        return parse_chat_request(body, ["tiny"])
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.message
        json.dumps(exc.body())
        return exc


@settings(max_examples=150, deadline=None)
@given(BODIES)
def test_any_json_body_is_a_request_or_a_4xx(body):
    result = outcome(json.dumps(body).encode())
    if isinstance(result, ChatRequest):
        assert result.messages and all(isinstance(m["content"], str) for m in result.messages)
        assert result.params.max_new_tokens >= 1


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_a_request_or_a_4xx(raw):
    outcome(raw)
