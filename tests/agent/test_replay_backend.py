"""ReplayBackend: scripts from JSON, JSONL or trajectories; streamed; a submit call when the script runs out."""
import json

import pytest

from loopcoder.runtime.backends.replay import ReplayBackend, ReplayScriptError, load_script
from loopcoder.runtime.toolcalls import parse_tool_calls


def test_script_formats(tmp_path):
    outputs = ["first <tool_call>\n{\"name\": \"bash\", \"arguments\": {\"command\": \"ls\"}}\n</tool_call>", "second"]
    (tmp_path / "a.json").write_text(json.dumps(outputs))
    (tmp_path / "b.jsonl").write_text(json.dumps(outputs[0]) + "\n\n" + json.dumps({"raw_output": outputs[1]}) + "\n")
    (tmp_path / "c.json").write_text(json.dumps({"format": "loopcoder-trajectory",
                                                  "steps": [{"raw_output": o} for o in outputs]}))
    for name in ("a.json", "b.jsonl", "c.json"):
        assert load_script(tmp_path / name) == outputs


@pytest.mark.parametrize("content, words", [
    ('{"a": 1}', "expected a JSON list"),
    ('["ok", 3]', "entry 1"),
    ('"x"\n{bad\n', ":2: not JSON"),
])
def test_bad_scripts(tmp_path, content, words):
    path = tmp_path / "s.json"
    path.write_text(content)
    with pytest.raises(ReplayScriptError, match=words):
        load_script(path)
    with pytest.raises(ReplayScriptError, match="cannot read"):
        load_script(tmp_path / "missing.json")


def test_streams_in_order_then_submits():
    backend = ReplayBackend(["hello world, this is   step one", "two"])
    pieces = []
    first = backend.complete([{"role": "user", "content": "hi"}], on_text=pieces.append)
    assert "".join(pieces) == first.text == "hello world, this is   step one" and len(pieces) > 3
    assert first.finish_reason == "stop" and first.completion_tokens == (len(first.text) + 3) // 4
    assert first.prompt_tokens == backend.count_tokens([{"role": "user", "content": "hi"}]) > 0
    assert backend.complete([]).text == "two" and not backend.exhausted
    last = backend.complete([])
    assert backend.exhausted
    assert [c.name for c in parse_tool_calls(last.text).calls] == ["submit"]
