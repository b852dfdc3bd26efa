"""`serve` constrains decoding like vLLM: tool_choice required/named, response_format json_schema."""
from __future__ import annotations

import json

import openai
import pytest
from jsonschema import Draft202012Validator

TOOLS = [
    {"type": "function", "function": {"name": "view", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}, "line": {"type": "integer"}},
        "required": ["path", "line"]}}},
    {"type": "function", "function": {"name": "grep", "parameters": {
        "type": "object", "properties": {"pattern": {"type": "string"}, "mode": {"enum": ["files", "lines"]}},
        "required": ["pattern", "mode"]}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Find the bug."}]


def client_for(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url, api_key="unused", max_retries=0, timeout=120)


def finished(client: openai.OpenAI, **request):
    """The first reply over a few seeds that ends before its token limit: random weights sampled at
    temperature 1 may wander inside a JSON string for hundreds of tokens (drafting changes the draws)."""
    for seed in range(8):
        reply = client.chat.completions.create(model="tiny", messages=ASK, temperature=1.0, seed=seed, **request)
        if reply.choices[0].finish_reason != "length":
            return reply
    pytest.fail("no seed of 8 finished its reply within max_tokens")


def test_tool_choice_required_returns_calls_that_validate(plt_server):
    reply = finished(client_for(plt_server), tools=TOOLS, tool_choice="required", max_tokens=400)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        Draft202012Validator(SCHEMAS[call.function.name]).validate(json.loads(call.function.arguments))


def test_named_tool_choice_calls_exactly_that_function(plt_server):
    reply = finished(client_for(plt_server), tools=TOOLS, max_tokens=400,
                     tool_choice={"type": "function", "function": {"name": "grep"}})
    calls = reply.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["grep"]
    Draft202012Validator(SCHEMAS["grep"]).validate(json.loads(calls[0].function.arguments))


def test_response_format_json_schema_and_json_object(plt_server):
    client = client_for(plt_server)
    schema = {"type": "object", "properties": {"verdict": {"enum": ["bug", "fine"]}, "score": {"type": "integer"}},
              "required": ["verdict", "score"]}
    reply = finished(client, max_tokens=200,
                     response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}})
    assert reply.choices[0].finish_reason == "stop"
    Draft202012Validator(schema).validate(json.loads(reply.choices[0].message.content))
    reply = client.chat.completions.create(model="tiny", messages=ASK, temperature=1.0, seed=8, max_tokens=60,
                                           response_format={"type": "json_object"})
    content = reply.choices[0].message.content
    assert content.startswith("{")  # random weights wander inside the object until the token limit
    assert reply.choices[0].finish_reason == "length" or isinstance(json.loads(content), dict)


def test_a_schema_no_grammar_can_follow_is_a_400_naming_the_field(plt_server):
    client = client_for(plt_server)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny", messages=ASK, max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": 5}}})
    assert err.value.body["param"] == "response_format" and "grammar" in err.value.body["message"]
    reply = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=4)  # the server keeps serving
    assert reply.choices[0].finish_reason in ("stop", "length")
