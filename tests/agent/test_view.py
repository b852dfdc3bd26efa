"""The live view hides raw call JSON however the stream is split; inspect shows a recorded run."""
import io
import re

from hypothesis import given, strategies as st
from rich.console import Console

from agent.view import CallHider, call_summary, observation_head

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
    assert call_summary("bash", {"command": "pytest -q\n  tests/"}) == "pytest -q tests/"
    assert call_summary("str_replace_editor", {"command": "view", "path": "a.py"}) == "view a.py"
    assert len(call_summary("search", {"query": "x" * 500})) == 160
    text = "\n".join(str(i) for i in range(20))
    assert observation_head(text, 3) == "0\n1\n2\n... (17 more lines)"
    assert observation_head("one\n", 3) == "one"


def render(fn, *args) -> str:
    out = io.StringIO()
    fn(Console(file=out, width=100, color_system=None), *args)
    return out.getvalue()
