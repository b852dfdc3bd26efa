"""Model output is untrusted: every tool's run returns an Observation for any arguments, never raises."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from loopcoder.tools import TOOL_NAMES, default_tools, get_tool
from loopcoder.tools.arguments import validate
from loopcoder.tools.base import Observation

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
EXAMPLES = {"run_tests": 15}  # each valid call runs a test command in the sandbox
WORDS = st.sampled_from(["a.py", ".", "pkg", "pkg/sub/mod.py", "../x", "/etc/passwd", "logo.bin", "return 1", "def",
                         "echo hi", "ls", "\n", "*.py", "(", "needle", "vim a.py", "tests/test_x.py::test_y"])
TYPED = {
    "string": st.text(max_size=30) | WORDS,
    "integer": st.integers(min_value=-3, max_value=12),
    "number": st.floats(max_value=2.0),  # timeouts: short, or negative, infinite, NaN
    "boolean": st.booleans(),
    "array": st.lists(st.integers(min_value=-2, max_value=8) | st.text(max_size=10) | WORDS, max_size=3),
}


@st.composite
def arguments_for(draw, name: str):
    """Mostly well-typed argument dicts (so calls get past validation into the tool), some with junk, some junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON)
    schema = get_tool(name).parameters
    arguments = {}
    for key, spec in schema.get("properties", {}).items():
        if key in schema.get("required", []) or draw(st.booleans()):
            right = st.sampled_from(spec["enum"]) if "enum" in spec else TYPED[spec["type"]]
            arguments[key] = draw(JSON if draw(st.integers(0, 7)) == 0 else right)
    if draw(st.integers(0, 5)) == 0:
        arguments.update(draw(st.dictionaries(st.text(max_size=12), JSON, max_size=2)))
    return arguments


@pytest.fixture
def quick_path(monkeypatch):
    """Keep commands cheap: no pytest on this PATH, so run_tests fails fast the same way every time."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_run_never_raises(name, sandbox, quick_path):
    tool = get_tool(name, default_tools())

    @settings(max_examples=EXAMPLES.get(name, 40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(arguments_for(name))
    def check(arguments):
        observation = tool.run(arguments, sandbox)
        assert isinstance(observation, Observation) and isinstance(observation.text, str)
        assert observation.text.strip()  # always something the model can read

    check()


@given(JSON, st.sampled_from(TOOL_NAMES))
def test_validate_never_raises(arguments, name):
    error, clean = validate(name, arguments, get_tool(name).parameters)
    assert error is None or isinstance(error, str)
