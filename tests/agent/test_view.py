"""The live view hides raw call JSON however the stream is split; inspect shows a recorded run."""
import io
import re

from hypothesis import given, strategies as st
from rich.console import Console

from loopcoder.agent.view import CallHider, LiveView, call_summary, observation_head
from loopcoder.runtime.toolcalls import ToolCall
from loopcoder.tools.base import Observation

PARTS = st.sampled_from(["<tool_call>", "</tool_call>", "<tool", "_call>", "</", "<", ">", "a", "b c", "\n", "{}"])


def without_calls(text: str) -> str:
    return re.sub(r"<tool_call>.*?(</tool_call>|\Z)", "", text, flags=re.DOTALL)


@given(st.lists(PARTS, max_size=30), st.data())
def test_call_hider_matches_reference_for_any_split(parts, data):
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=10)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    hider = CallHider()
    shown = "".join(hider.feed(p) for p in pieces) + hider.flush()
    assert shown == without_calls(text)


def test_call_summary_and_heads():
    assert call_summary("bash", {"command": "sed -n '/^    return /p'  a.py"}) == "sed -n '/^    return /p'  a.py"
    assert call_summary("bash", {"command": "pytest -q\n  tests/"}) == ""  # shown whole below the `> bash` line
    assert call_summary("str_replace_editor", {"command": "view", "path": "a.py"}) == "view a.py"
    assert call_summary("str_replace_editor", {"command": "view", "path": "/w/copy/a.py", "view_range": [1, 5]},
                        "/w/copy") == "view a.py [1, 5]"
    assert call_summary("search", {"pattern": "x" * 500, "path": "/w/copy"}, "/w/copy") == "x" * 500 + " ."
    assert call_summary("run_tests", {"paths": ["a.py", "b.py"]}) == "a.py b.py"
    assert call_summary("submit", {}) == ""
    assert call_summary("run_tests", {"paths": ["a.py"], "timeout": 5}) == '{"paths": ["a.py"], "timeout": 5}'
    text = "\n".join(str(i) for i in range(20))
    assert observation_head(text, 3) == "0\n1\n2\n... (17 more lines)"
    assert observation_head("one\n", 3) == "one"


def test_calls_show_exactly_what_ran_with_edits_as_diffs_and_paths_relative_to_the_repo():
    out = io.StringIO()
    view = LiveView(Console(file=out, width=60, color_system=None))
    view.on_start("/cache/worktrees/proj-1234")
    command = "cat <<'EOF' > notes.txt\n    indented   twice\nEOF"
    view.on_call(ToolCall("bash", {"command": command}, ""))
    edit = {"command": "str_replace", "path": "/cache/worktrees/proj-1234/src/calc.py",
            "old_str": "def add(a, b):\n    return a - b", "new_str": "def add(a, b):\n    return a + b"}
    view.on_call(ToolCall("str_replace_editor", edit, ""))
    view.on_observation(ToolCall("str_replace_editor", edit, ""),
                        Observation("The file /cache/worktrees/proj-1234/src/calc.py has been edited."))
    shown = out.getvalue()
    assert "> bash \n" + command + "\n" in shown
    assert "> str_replace_editor str_replace src/calc.py\n" in shown
    assert " def add(a, b):\n-    return a - b\n+    return a + b\n" in shown
    assert "The file src/calc.py has been edited." in shown and "/cache/worktrees" not in shown


def test_live_view_streams_prose_and_shows_calls_readably():
    out = io.StringIO()
    view = LiveView(Console(file=out, width=100, color_system=None))
    text = 'Checking.\n<tool_call>\n{"name": "bash", "arguments": {"command": "ls -la"}}\n</tool_call>'
    view.on_step(0)
    for i in range(0, len(text), 3):
        view.on_text(text[i:i + 3])
    view.on_call(ToolCall("bash", {"command": "ls -la"}, ""))
    view.on_observation(ToolCall("bash", {}, ""), Observation("\n".join(map(str, range(12))), is_error=True))
    shown = out.getvalue()
    assert "step 1" in shown and "Checking." in shown and "> bash ls -la" in shown
    assert '"arguments"' not in shown and "... (4 more lines)" in shown
