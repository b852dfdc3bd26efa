"""The shared pieces: truncation, argument checking, test-report parsing, the registry."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from loopcoder.tools import TOOL_NAMES, default_tools, get_tool
from loopcoder.tools.arguments import validate
from loopcoder.tools.output import printable, truncate
from loopcoder.tools.test_report import from_junit, from_summary

SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "x": {"type": "number"}, "flag": {"type": "boolean"},
                   "ids": {"type": "array", "items": {"type": "integer"}}, "mode": {"type": "string", "enum": ["a", "b"]}},
    "required": ["n"],
}


@given(st.text(), st.integers(min_value=10, max_value=500))
def test_truncate_keeps_head_and_tail_and_says_what_was_cut(text, limit):
    out = truncate(text, limit)
    if len(text) <= limit:
        assert out == text
        return
    head, note, tail = out.partition("\n[... ")
    assert note and text.startswith(head) and text.endswith(tail.split(" ...]\n", 1)[1])
    assert len(head) <= limit // 2 and " characters" in tail and "cut from the middle" in tail


def test_truncate_cuts_at_line_boundaries_and_counts():
    text = "".join(f"line {i}\n" for i in range(1000))
    out = truncate(text, 200, hint="see the file")
    assert out.startswith("line 0\nline 1\n") and out.endswith("line 998\nline 999\n")
    assert "lines) cut from the middle; see the file ...]" in out
    assert all(line.startswith(("line ", "[... ")) for line in out.splitlines())


def test_printable_drops_escapes_and_replaces_control_bytes():
    assert printable("\x1b[31mred\x1b[0m\x00\x07 ok\ttab\r\n") == "red\ufffd\ufffd ok\ttab\r\n"


@pytest.mark.parametrize("arguments, error, clean", [
    ({"n": 3}, None, {"n": 3}),
    ({"n": "12", "x": "0.5", "flag": "true", "ids": "[1, 2]"}, None, {"n": 12, "x": 0.5, "flag": True, "ids": [1, 2]}),
    ({"n": 4.0, "mode": None}, None, {"n": 4}),
    ({}, "Missing required parameter `n` (integer) for tool `t`.", None),
    ({"n": True}, "Parameter `n` must be an integer, got true.", None),
    ({"n": 1.5}, "Parameter `n` must be an integer, got 1.5.", None),
    ({"n": 1, "ids": [1, "x"]}, 'Parameter `ids` must be a list of integers; item 1 is "x".', None),
    ({"n": 1, "mode": "c"}, 'Parameter `mode` must be one of "a", "b"; got "c".', None),
    ({"n": 1, "bogus": 2}, "Unknown parameter `bogus` for tool `t`; it takes `n` (integer), `x` (number), "
                           "`flag` (boolean), `ids` (array), `mode` (string).", None),
    ([1], "The arguments of `t` must be a JSON object with `n` (integer), `x` (number), `flag` (boolean), "
          "`ids` (array), `mode` (string); got [1].", None),
])
def test_validate(arguments, error, clean):
    got_error, got_clean = validate("t", arguments, SCHEMA)
    assert got_error == error
    if clean is not None:
        assert got_clean == clean


@given(st.text())
def test_report_parsers_never_raise(text):
    for parse in (from_junit, from_summary):
        report = parse(text)
        assert report is None or report.counts()


def test_summary_parser_reads_counts_ids_and_first_failure():
    output = (
        "F.s\n=================================== FAILURES ===================================\n"
        "___________________________________ test_bad ___________________________________\n"
        "    def test_bad():\n>       assert 1 == 2\nE       assert 1 == 2\n\nt.py:2: AssertionError\n"
        "=========================== short test summary info ============================\n"
        "FAILED t.py::test_bad - assert 1 == 2\nERROR t.py::test_setup - RuntimeError\n"
        "========== 1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error in 0.12s ==========\n"
    )
    report = from_summary(output)
    assert (report.passed, report.failed, report.errors, report.skipped) == (1, 1, 1, 2)
    assert report.failing == ["t.py::test_bad", "t.py::test_setup"]
    assert report.first_failure.startswith("    def test_bad():") and report.first_failure.endswith("AssertionError")


def test_registry_order_and_lookup():
    tools = default_tools()
    assert [tool.name for tool in tools] == list(TOOL_NAMES) == ["bash", "str_replace_editor", "search", "run_tests", "submit"]
    assert get_tool("search", tools) is tools[2]
    assert all(tool.schema()["function"]["parameters"]["type"] == "object" for tool in tools)
    with pytest.raises(KeyError, match="bash, str_replace_editor"):
        get_tool("nope")


def test_submit_ends_the_run(call):
    obs = call("submit", message="Fixed the bug.")
    assert obs.submitted and obs.text == "Submitted. Fixed the bug."
    assert call("submit").submitted


def test_unexpected_exceptions_and_sandbox_errors_become_observations(repo):
    from loopcoder.tools.base import define
    from loopcoder.workspace.local import LocalSandbox

    def broken(arguments, sandbox):
        raise ZeroDivisionError("division by zero")

    with LocalSandbox(repo) as sandbox:
        obs = define("broken", "fails", {"type": "object", "properties": {}}, broken).run({}, sandbox)
        assert obs.is_error and obs.text.startswith("The `broken` tool failed unexpectedly (ZeroDivisionError: division by zero).")
    closed = get_tool("bash").run({"command": "true"}, sandbox)  # the sandbox is closed now
    assert closed.is_error and closed.text == "The sandbox is closed."
