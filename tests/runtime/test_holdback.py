"""held_back: the end of streamed text that may still become a marker is never sent."""
from hypothesis import given
from hypothesis import strategies as st

from loopcoder.runtime.holdback import held_back

TEXT = st.text(alphabet="<tol_c>`ab\n", max_size=30)


@given(TEXT, st.lists(st.text(alphabet="<tol_c>`ab\n", min_size=1, max_size=12), max_size=4))
def test_the_longest_end_that_starts_a_marker(text, markers):
    n = held_back(text, markers)
    assert 0 <= n <= len(text)
    if n:
        assert any(m.startswith(text[len(text) - n:]) and n < len(m) for m in markers)
    longer = range(n + 1, len(text) + 1)
    assert not any(m.startswith(text[len(text) - k:]) and k < len(m) for k in longer for m in markers)


def test_examples():
    assert held_back("Let me <tool_", ["<tool_call>"]) == 6
    assert held_back("done.\n``", ["<tool_call>", "```"]) == 2
    assert held_back("<tool_call>", ["<tool_call>"]) == 0  # a whole marker is found, not held
    assert held_back("plain", ["</s>"]) == 0
