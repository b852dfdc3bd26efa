"""Grammar-constrained tool calls on tiny random checkpoints: sampled calls always parse and validate."""
from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from loopcoder.runtime.backends import create_backend
from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.runtime.constrained import GrammarError
from loopcoder.runtime.tokenizer import encode
from loopcoder.runtime.toolcalls import parse_tool_calls, render_tool_call

BASH = {"type": "function", "function": {"name": "bash", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}},
    "required": ["command"]}}}
EDITOR = {"type": "function", "function": {"name": "str_replace_editor", "parameters": {
    "type": "object", "properties": {"command": {"enum": ["view", "create"]}, "path": {"type": "string"}},
    "required": ["command", "path"]}}}
TOOLS = [BASH, EDITOR]
ASK = [{"role": "user", "content": "List the files."}]


@pytest.fixture(scope="module")
def plt(plt_dir):
    backend = create_backend("plt", model_path=plt_dir, device="cpu")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(llama_dir):
    backend = create_backend("hf", model_path=llama_dir, device="cpu")
    yield backend
    backend.close()


def ids(backend, text: str) -> list[int]:
    return encode(backend.tokenizer, text)


def walk(backend, grammar, text: str) -> int:
    """How many of `text`'s tokens the grammar accepts, one by one, from its start."""
    constraint = backend.grammars.constraint(grammar)
    tokens = ids(backend, text)
    for n, token in enumerate(tokens):
        if not constraint.accept(token):
            return n
    return len(tokens)


def check_calls(text: str, tools: list[dict]) -> int:
    """Assert every call in `text` names a tool and validates against its schema; the number of calls."""
    parsed = parse_tool_calls(text, tools)
    assert not parsed.errors, text
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    for call in parsed.calls:
        assert call.name in schemas, text
        Draft202012Validator(schemas[call.name]).validate(call.arguments)
    return len(parsed.calls)


# --- the grammar itself ---------------------------------------------------------------


def test_free_text_and_several_calls_are_accepted_and_bad_calls_are_refused_where_they_go_wrong(plt):
    grammar = plt.grammars.tool_calls(TOOLS)
    good = ("Let me look first.\n" + render_tool_call("bash", {"command": "ls -la"}) + "\nand then\n"
            + render_tool_call("str_replace_editor", {"command": "view", "path": "a.py"}) + " done")
    assert walk(plt, grammar, good) == len(ids(plt, good))
    stem = "Text.\n<tool_call>\n{\"name\": \""
    for bad, refused_at in [
        (stem + 'str_replace", "arguments": {}}\n</tool_call>', 'str_replace"'),  # no such tool
        (stem + 'bash", "arguments": {"path": "a.py"}}\n</tool_call>', 'path'),  # a key bash does not have
        (stem + 'bash", "arguments": {"command": 1}}\n</tool_call>', '1'),  # wrong type
        (stem + 'bash", "arguments": {}}\n</tool_call>', '}}'),  # required key left out
        (stem + 'str_replace_editor", "arguments": {"command": "sed", "path": "a"}}\n</tool_call>', 'sed'),
        ('<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}\n</tool_call>', "\n</"),  # brace lost
    ]:
        accepted = len(plt.tokenizer.decode(ids(plt, bad)[: walk(plt, grammar, bad)]))
        at = bad.index(refused_at)
        assert at - 4 <= accepted < at + len(refused_at), bad  # refused within a token of the mistake


def test_rollback_undoes_accepted_tokens_for_a_draft_checker(plt):
    constraint = plt.grammars.constraint(plt.grammars.tool_calls(TOOLS))
    prefix = ids(plt, '<tool_call>\n{"name": "bash", "arguments": {"command": "')
    assert all(constraint.accept(t) for t in prefix)
    draft = ids(plt, 'ls"}}\n</tool_call>')
    assert all(constraint.accept(t) for t in draft)
    constraint.rollback(len(draft))  # back inside the command string: a second argument may follow now
    assert all(constraint.accept(t) for t in ids(plt, 'pwd", "timeout": 5}}\n</tool_call>'))
    assert not constraint.terminated
    assert constraint.accept(min(plt.stop_ids)) and constraint.terminated


def test_tool_choice_none_or_no_tools_leave_decoding_free_and_bad_schemas_are_one_clear_error(plt):
    assert plt.grammars.tool_calls([], "auto") is None
    assert plt.grammars.tool_calls(TOOLS, "none") is None
    bad = [{"type": "function", "function": {"name": "x", "parameters": {"type": "object", "properties": 5}}}]
    with pytest.raises(GrammarError, match="cannot be turned into a grammar") as err:
        plt.grammars.tool_calls(bad)
    assert "\n" not in str(err.value)


def test_config_switch_turns_the_grammar_off(plt):
    assert plt.grammar(TOOLS, GenerationParams()) is not None
    assert plt.grammar(TOOLS, GenerationParams(constrained_tool_calls=False)) is None


# --- sampling under the grammar ----------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True)
LEAVES = st.one_of(
    st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"},
                     {"type": "array", "items": {"type": "string"}}]),
    st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=4, unique=True)
    .map(lambda values: {"enum": values}),
)


@st.composite
def object_schemas(draw, leaves=LEAVES) -> dict:
    props = draw(st.dictionaries(NAMES, leaves, max_size=3))
    required = draw(st.lists(st.sampled_from(sorted(props)), unique=True)) if props else []
    return {"type": "object", "properties": props, "required": required}


@st.composite
def tool_lists(draw) -> list[dict]:
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    nested = LEAVES | object_schemas()
    return [{"type": "function", "function": {"name": n, "parameters": draw(object_schemas(nested))}} for n in names]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@example(tools=[{"type": "function", "function": {"name": "a", "parameters": {  # "<tool_call>" inside a cut string
    "type": "object", "properties": {"d": {"type": "string"}}, "required": []}}}], seed=460, top_k=0, top_p=1.0)
@given(tools=tool_lists(), seed=st.integers(0, 2**31), top_k=st.sampled_from([0, 50]),
       top_p=st.sampled_from([1.0, 0.9]))
def test_every_sampled_call_parses_and_validates_against_its_tool(plt, tools, seed, top_k, top_p):
    """Random weights at temperature 1 write garbage; under the grammar every call is still valid."""
    params = GenerationParams(temperature=1.0, top_k=top_k, top_p=top_p, seed=seed, max_new_tokens=200,
                              tool_choice="required")
    done = plt.complete(ASK, tools, params)
    if done.finish_reason == "stop":
        assert check_calls(done.text, tools) >= 1
    else:  # cut by the token limit: the calls before the cut one are complete and valid
        check_calls(before_the_cut_call(done.text), tools)


def before_the_cut_call(text: str) -> str:
    """`text` up to the call the token limit cut. JSON-aware: a string value may hold "<tool_call>"
    as text (random weights write anything inside strings), which does not start a call."""
    decoder, pos = json.JSONDecoder(), 0
    while (start := text.find("<tool_call>", pos)) >= 0:
        body = start + len("<tool_call>")
        body += len(text[body:]) - len(text[body:].lstrip())
        try:
            _, end = decoder.raw_decode(text, body)
        except json.JSONDecodeError:
            return text[:start]
        close = text.find("</tool_call>", end)
        if close < 0 or text[end:close].strip():
            return text[:start]
        pos = close + len("</tool_call>")
    return text


def test_named_tool_choice_makes_the_reply_exactly_one_call_of_that_tool(hf):
    params = GenerationParams(temperature=1.0, seed=3, max_new_tokens=300,
                              tool_choice={"type": "function", "function": {"name": "str_replace_editor"}})
    done = hf.complete(ASK, TOOLS, params)
    assert done.finish_reason == "stop"
    parsed = parse_tool_calls(done.text, TOOLS)
    assert [c.name for c in parsed.calls] == ["str_replace_editor"] and parsed.content == ""
    check_calls(done.text, TOOLS)


@pytest.mark.parametrize("kind", ["plt", "hf"])
def test_kept_cache_gives_what_a_fresh_session_gives_under_the_grammar(kind, request):
    backend = request.getfixturevalue(kind)
    backend.close()
    params = GenerationParams(temperature=1.0, seed=11, max_new_tokens=40, tool_choice="required")
    messages = list(ASK)
    for turn in range(3):
        prompt = backend.prompt_ids(messages, TOOLS)
        done = backend.complete(messages, TOOLS, params)
        assert turn == 0 or done.reused_tokens > 0
        fresh = backend.spawn()
        again = fresh.session.generate(prompt, params, backend.stop_ids,
                                       constraint=fresh.grammars.constraint(fresh.grammar(TOOLS, params)))
        assert done.text == backend.tokenizer.decode(again.ids, skip_special_tokens=False,
                                                     clean_up_tokenization_spaces=False)
        messages += [{"role": "assistant", "content": done.text}, {"role": "tool", "content": f"out {turn}"}]


def test_stop_string_still_cuts_a_constrained_reply(plt):
    params = GenerationParams(temperature=1.0, seed=5, max_new_tokens=300, tool_choice="required",
                              stop=['"arguments"'])
    done = plt.complete(ASK, TOOLS, params)
    assert done.finish_reason == "stop"
    assert done.text.startswith('<tool_call>\n{"name": "') and done.text.endswith(", ")


def test_batched_generate_follows_the_grammar_in_every_row(plt):
    grammar = plt.grammars.tool_calls(TOOLS, "required")
    prompts = [plt.prompt_ids(ASK, TOOLS), plt.prompt_ids([{"role": "user", "content": "Show a.py please"}], TOOLS)]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # left-padded
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    torch.manual_seed(0)
    out = plt.model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=1.0,
                             top_k=0, max_new_tokens=300, eos_token_id=sorted(plt.stop_ids), pad_token_id=0,
                             logits_processor=[plt.grammars.logits_processor(grammar)])
    for row in out[:, width:].tolist():
        text = plt.tokenizer.decode([t for t in row if t not in plt.stop_ids and t != 0],
                                    skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert check_calls(text, TOOLS) >= 1


@pytest.mark.parametrize("kind", ["plt", "hf"])
def test_prompt_lookup_drafts_under_the_grammar_give_the_tokens_of_plain_decoding(kind, request):
    """Drafts are copied from a context full of the tools' JSON; a draft token the grammar refuses ends the draft."""
    backend = request.getfixturevalue(kind)
    messages = [{"role": "user", "content": 'Run <tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n'
                                            '</tool_call> again, then "bash" "command" "ls" once more.'}]
    prompt = backend.prompt_ids(messages, TOOLS)
    texts, drafted = [], []
    for speculative in ("off", "prompt_lookup"):
        params = GenerationParams(temperature=0.0, max_new_tokens=80, tool_choice="required", speculative=speculative)
        fresh = backend.spawn()
        gen = fresh.session.generate(prompt, params, backend.stop_ids,
                                     constraint=fresh.grammars.constraint(fresh.grammar(TOOLS, params)))
        texts.append(gen.ids)
        drafted.append(gen.drafted_tokens)
        fresh.close()
    assert texts[0] == texts[1]
    assert drafted == [0, drafted[1]] and drafted[1] > 0  # the drafting path ran under the grammar


def test_a_drafted_stop_token_the_grammar_accepts_ends_the_choice(plt):
    """A draft copied from an earlier turn may carry the stop token right after a call: once the grammar has
    accepted it nothing may follow (xgrammar refuses to mask a terminated matcher), so the choice ends there."""
    from loopcoder.runtime.session import _choose

    constraint = plt.grammars.constraint(plt.grammars.tool_calls(TOOLS))
    assert all(constraint.accept(t) for t in ids(plt, render_tool_call("bash", {"command": "ls"})))
    stop = min(plt.stop_ids)
    logits = torch.zeros(2, plt.grammars.vocab_size)
    logits[:, stop] = 1.0  # row 0: the model agrees with the drafted stop; row 1 would follow it
    emitted = _choose(logits, [stop], GenerationParams(temperature=0.0), torch.Generator(), constraint)
    assert emitted == [stop] and constraint.terminated
