"""The official `openai` client against the server: a tiny PLT for the model path, a scripted
backend where exact replies are needed (tool calls, sampling settings)."""
from __future__ import annotations

import openai
import pytest

from tests.server.conftest import ScriptedBackend

TOOLS = [{"type": "function", "function": {
    "name": "view", "description": "Show a file.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def client_for(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=60)


def test_tiny_plt_whole_and_streamed_with_kv_reuse_across_requests(plt_server):
    client = client_for(plt_server)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Write a haiku."}]

    first = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, temperature=0)
    reply = first.choices[0].message
    assert reply.role == "assistant" and isinstance(reply.content, str)
    assert first.choices[0].finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens > 0 and 0 < first.usage.completion_tokens <= 12
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # a fresh session

    follow_up = messages + [{"role": "assistant", "content": reply.content}, {"role": "user", "content": "Another."}]
    stream = client.chat.completions.create(model="tiny", messages=follow_up, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["stop"], ["length"])
    assert usage.completion_tokens > 0 and (text or usage.completion_tokens)
    # the extended conversation ran only the tokens past the first prompt through the model
    cached = usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens
    assert usage.model_extra["prefilled_tokens"] == usage.prompt_tokens - cached <= usage.prompt_tokens - first.usage.prompt_tokens

    other = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Unrelated."}],
                                           max_tokens=4, tools=TOOLS)
    assert other.usage.prompt_tokens_details.cached_tokens == 0  # a second session: the first one is kept
    again = client.chat.completions.create(model="tiny", messages=follow_up, max_tokens=4)
    assert again.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens


def test_tools_in_tool_calls_out_and_back(serve):
    call = '<tool_call>\n{"name": "view", "arguments": {"path": "src/a.py"}}\n</tool_call>'
    backend = ScriptedBackend([f"I will look.\n{call}", "It prints hi."])
    served = serve(lambda: backend)
    client = client_for(served)
    messages = [{"role": "user", "content": "What does src/a.py do?"}]

    first = client.chat.completions.create(model="tiny", messages=messages, tools=TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "I will look."
    (tc,) = choice.message.tool_calls
    assert tc.type == "function" and tc.function.name == "view" and tc.function.arguments == '{"path": "src/a.py"}'
    assert tc.id.startswith("call_")

    history = messages + [choice.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": tc.id, "content": "print('hi')"}]
    stream = client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "It prints hi."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_streamed_tool_calls_and_sampling_settings_reach_the_backend(serve):
    backend = ScriptedBackend(['<tool_call>\n{"name": "view", "arguments": {"path": "x"}}\n</tool_call>'])
    served = serve(lambda: backend)
    stream = client_for(served).chat.completions.create(
        model="tiny", messages=[{"role": "developer", "content": "d"}, {"role": "user", "content": "u"}], tools=TOOLS,
        stream=True, temperature=0.6, top_p=0.85, max_completion_tokens=300, stop=["\n\n"], seed=7,
        extra_body={"top_k": 20})
    chunks = list(stream)
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.index, tc.function.name, tc.function.arguments) for tc in calls] == [(0, "view", '{"path": "x"}')]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ""
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    params = backend.calls[-1]
    assert (params.temperature, params.top_p, params.top_k, params.seed, params.stop) == (0.6, 0.85, 20, 7, ["\n\n"])
    assert params.max_new_tokens == 300


def test_client_sees_openai_errors(serve):
    client = client_for(serve(lambda: ScriptedBackend(["ok"], context_window=100)))
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 200}])
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=-1)
