"""The tool-call parser: every lenient form, the error text, and properties over arbitrary text."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.runtime.toolcalls import EXPECTED_FORMAT, ParseResult, ToolCall, parse_tool_calls, render_tool_call

BASH_LS = {"name": "bash", "arguments": {"command": "ls"}}


def calls(result: ParseResult) -> list[tuple[str, dict]]:
    return [(c.name, c.arguments) for c in result.calls]


def test_render_is_the_hermes_form():
    assert render_tool_call("bash", {"command": "ls -l", "timeout": 5}) == (
        '<tool_call>\n{"name": "bash", "arguments": {"command": "ls -l", "timeout": 5}}\n</tool_call>'
    )
    assert render_tool_call("x", {"s": "ü"}) == '<tool_call>\n{"name": "x", "arguments": {"s": "ü"}}\n</tool_call>'


def test_several_calls_with_content():
    text = "Let me look.\n" + render_tool_call("bash", {"command": "ls"}) + "\n" + render_tool_call("view", {"path": "a.py"})
    result = parse_tool_calls(text)
    assert result.content == "Let me look."
    assert calls(result) == [("bash", {"command": "ls"}), ("view", {"path": "a.py"})]
    assert result.errors == []
    assert result.calls[0].raw == render_tool_call("bash", {"command": "ls"})


def test_no_calls_is_plain_content():
    assert parse_tool_calls("  Just an answer.\n") == ParseResult("Just an answer.", [], [])


def test_unclosed_final_tag():
    result = parse_tool_calls('Run it.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}')
    assert calls(result) == [("bash", {"command": "ls"})] and result.errors == [] and result.content == "Run it."
    (warning,) = result.warnings  # it ran, and the model hears that the block was not closed
    assert "not closed with </tool_call>" in warning and EXPECTED_FORMAT in warning
    xml = parse_tool_calls("<tool_call>\n<function=bash>\n<parameter=command>\nls\n</parameter>\n</function>")
    assert calls(xml) == [("bash", {"command": "ls"})] and len(xml.warnings) == 1


@given(st.lists(st.tuples(st.sampled_from(["bash", "submit", "x"]), st.dictionaries(st.text(max_size=5),
                                                                                  st.text(max_size=20), max_size=2)),
                max_size=3), st.text(alphabet="ab .:\n", max_size=30))
def test_closed_calls_never_warn(pairs, prose):
    text = prose + "\n".join(render_tool_call(name, args) for name, args in pairs)
    result = parse_tool_calls(text)
    assert calls(result) == pairs and result.warnings == [] and result.errors == []


def test_unclosed_tag_followed_by_another_call():
    text = '<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {}}</tool_call>'
    assert calls(parse_tool_calls(text)) == [("a", {}), ("b", {})]


def test_fence_inside_the_tags():
    text = '<tool_call>\n```json\n{"name": "bash", "arguments": {"command": "ls"}}\n```\n</tool_call>'
    assert calls(parse_tool_calls(text)) == [("bash", {"command": "ls"})]


def test_fence_instead_of_the_tags():
    result = parse_tool_calls('I will list.\n```json\n{"name": "bash", "arguments": {"command": "ls"}}\n```\n')
    assert calls(result) == [("bash", {"command": "ls"})] and result.content == "I will list."


def test_fence_with_other_json_is_content():
    text = 'The config is:\n```json\n{"name": "pkg", "version": "1.0"}\n```'
    assert parse_tool_calls(text) == ParseResult(text, [], [])


def test_broken_call_in_a_fence_is_an_error():
    result = parse_tool_calls('```json\n{"name": "bash", "arguments": {"command": }}\n```')
    assert result.calls == [] and len(result.errors) == 1


def test_arguments_as_a_json_string():
    text = '<tool_call>\n{"name": "bash", "arguments": "{\\"command\\": \\"ls\\"}"}\n</tool_call>'
    assert calls(parse_tool_calls(text)) == [("bash", {"command": "ls"})]


def test_missing_or_empty_arguments_and_openai_wrapping():
    text = (
        '<tool_call>{"name": "submit"}</tool_call>'
        '<tool_call>{"name": "submit", "arguments": ""}</tool_call>'
        '<tool_call>{"type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}}</tool_call>'
    )
    assert calls(parse_tool_calls(text)) == [("submit", {}), ("submit", {}), ("bash", {"command": "ls"})]


def test_dropped_final_brace_in_a_closed_block_is_repaired():
    text = '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}\n</tool_call>'
    assert calls(parse_tool_calls(text)) == [("bash", {"command": "ls"})]


def test_cut_off_call_is_an_error_not_a_guess():
    result = parse_tool_calls('<tool_call>\n{"name": "bash", "arguments": {"command": "rm -rf build"')
    assert result.calls == [] and len(result.errors) == 1


def test_xml_form_in_tags():
    text = (
        "<tool_call>\n<function=editor>\n<parameter=path>\nx.py\n</parameter>\n"
        "<parameter=line>\n3\n</parameter>\n<parameter=flags>\n{\"a\": [1, true]}\n</parameter>\n"
        "<parameter=text>\nhello\n  world\n\n</parameter>\n</function>\n</tool_call>"
    )
    result = parse_tool_calls(text)
    assert calls(result) == [("editor", {"path": "x.py", "line": 3, "flags": {"a": [1, True]}, "text": "hello\n  world\n"})]
    assert result.content == "" and result.errors == []


def test_xml_form_without_tags_and_unclosed():
    result = parse_tool_calls("First:\n<function=bash><parameter=command>ls -la</parameter></function>\nthen")
    assert calls(result) == [("bash", {"command": "ls -la"})] and result.content == "First:\n\nthen"
    unclosed = parse_tool_calls("<tool_call>\n<function=bash>\n<parameter=command>\nls\n</tool_call>")
    assert calls(unclosed) == [("bash", {"command": "ls"})]


def test_xml_values_follow_the_schema_when_given():
    tools = [{"type": "function", "function": {"name": "editor", "parameters": {"properties": {"new_str": {"type": "string"}}}}}]
    text = "<function=editor><parameter=new_str>42</parameter><parameter=line>7</parameter></function>"
    assert calls(parse_tool_calls(text, tools)) == [("editor", {"new_str": "42", "line": 7})]
    assert calls(parse_tool_calls(text)) == [("editor", {"new_str": 42, "line": 7})]
    not_json = "<function=f><parameter=a>NaN</parameter><parameter=b>\"q\"</parameter></function>"
    assert calls(parse_tool_calls(not_json)) == [("f", {"a": "NaN", "b": '"q"'})]


def test_error_text_quotes_the_expected_format():
    result = parse_tool_calls('Try:\n<tool_call>\n{"name": "bash", "arguments": {"command" "ls"}}\n</tool_call>\nok')
    assert result.calls == [] and result.content == "Try:\n\nok"
    (error,) = result.errors
    assert error.startswith("Tool call format error: invalid JSON (Expecting ':' delimiter")
    assert '{"command" "ls"}' in error  # quotes what the model wrote
    assert error.endswith('Write each call exactly like this:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')
    assert EXPECTED_FORMAT in error


def test_error_reasons():
    cases = {
        "<tool_call>hello</tool_call>": "expected a JSON object after <tool_call>",
        '<tool_call>{"arguments": {}}</tool_call>': 'the call has no "name" string',
        '<tool_call>{"name": "a", "arguments": [1]}</tool_call>': '"arguments" must be a JSON object, not list',
        '<tool_call>{"name": "a", "arguments": "ls"}</tool_call>': '"arguments" is a string that is not a JSON object',
        "<tool_call>[1, 2]</tool_call>": "expected a JSON object",
        "<function=>x</function>": "no name",
        "<tool_call>\n<function=bash\nls": "malformed <function=NAME> tag",
    }
    for text, reason in cases.items():
        result = parse_tool_calls(text)
        assert result.calls == [], text
        assert len(result.errors) == 1 and reason in result.errors[0], (text, result.errors)


def test_pathological_inputs_do_not_raise():
    for text in ["<tool_call>{" + "[" * 100_000, "<tool_call>" + '{"name": "a", "arguments": ' * 5000, "```json\n{" * 1000]:
        result = parse_tool_calls(text)
        assert isinstance(result, ParseResult) and result.calls == []


# ---- properties ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
arguments = st.dictionaries(st.text(), json_values, max_size=5)
names = st.text(min_size=1).filter(lambda s: s.strip() == s and s)
tricky_strings = st.sampled_from(["</tool_call>", "<tool_call>", "```json\n{", "<function=x>", '"}', "\\", "\n"])
tricky_arguments = st.dictionaries(st.text(max_size=5), st.lists(st.text() | tricky_strings, max_size=3).map("".join), max_size=4)
markup = st.sampled_from(["<tool_call>", "</tool_call>", "<function=f>", "<parameter=p>", "</parameter>", "</function>",
                          "```json\n", "```", "{", "}", '"name"', '"arguments"', ":", ",", '"', "\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, arguments | tricky_arguments), max_size=3), st.text().filter(lambda s: "<" not in s and "`" not in s))
def test_render_then_parse_round_trips(specs, content):
    text = content + "".join("\n" + render_tool_call(n, a) for n, a in specs)
    result = parse_tool_calls(text)
    assert result.errors == []
    assert calls(result) == [(n, a) for n, a in specs]
    assert result.content == content.strip()
    assert [c.raw for c in result.calls] == [render_tool_call(n, a) for n, a in specs]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=8) | markup, max_size=30).map("".join))
def test_parse_never_raises_on_arbitrary_text(text):
    result = parse_tool_calls(text)
    assert isinstance(result.content, str)
    assert all(isinstance(c, ToolCall) and isinstance(c.arguments, dict) and c.name for c in result.calls)
    assert all(EXPECTED_FORMAT in e for e in result.errors)


@settings(max_examples=300, deadline=None)
@given(names, arguments, st.data())
def test_near_valid_mutations_never_raise_and_never_vanish(name, args, data):
    """Cut, drop or insert a character in a valid call: never a crash, and a started call is never silently lost."""
    text = render_tool_call(name, args)
    i = data.draw(st.integers(0, len(text)))
    op = data.draw(st.sampled_from(["cut", "drop", "insert"]))
    if op == "cut":
        mutated = text[:i]
    elif op == "drop":
        mutated = text[:i] + text[i + 1 :]
    else:
        mutated = text[:i] + data.draw(st.sampled_from(list('{}[]":,\\<>` \n') + ["x"])) + text[i:]
    result = parse_tool_calls(mutated)
    assert all(isinstance(c.arguments, dict) for c in result.calls)
    if "<tool_call>" in mutated:
        assert result.calls or result.errors


def test_round_trip_matches_json_semantics_for_numbers():
    args = {"n": 1.0, "big": 10**30, "neg": -0.0}
    (call,) = parse_tool_calls(render_tool_call("f", args)).calls
    assert json.dumps(call.arguments) == json.dumps(args)
