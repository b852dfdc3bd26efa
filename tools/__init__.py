"""The tools the model can call, each a name, a JSON schema and run(arguments, sandbox) -> Observation.

`default_tools()` returns a fresh set (the editor's undo history and the
timeout streak live in the instances) in a stable order, which is the order
the system prompt lists them in; `timeouts_to_stop` is the run's
agent.max_consecutive_timeouts, which the timeout note announces.
"""
from __future__ import annotations

from typing import Iterable

from loopcoder.tools import bash, run_tests, search, str_replace_editor, submit
from loopcoder.tools.base import Observation, Tool
from loopcoder.tools.shell import TIMEOUTS_TO_STOP, TimeoutStreak

__all__ = ["Observation", "Tool", "default_tools", "get_tool", "TOOL_NAMES"]

_MODULES = (bash, str_replace_editor, search, run_tests, submit)
TOOL_NAMES = tuple(module.NAME for module in _MODULES)


def default_tools(timeouts_to_stop: int = TIMEOUTS_TO_STOP) -> list[Tool]:
    timeouts = TimeoutStreak(timeouts_to_stop)  # bash and run_tests count one streak
    return [bash.make(timeouts), str_replace_editor.make(), search.make(), run_tests.make(timeouts), submit.make()]


def get_tool(name: str, tools: Iterable[Tool] | None = None) -> Tool:
    """The tool called `name` in `tools` (default: a fresh default set); KeyError naming the known tools."""
    found = {tool.name: tool for tool in (default_tools() if tools is None else tools)}
    if name not in found:
        raise KeyError(f"Unknown tool {name!r}; the tools are: {', '.join(found)}.")
    return found[name]
