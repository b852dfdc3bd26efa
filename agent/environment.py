"""The environment the agent acts in: a sandbox, the tools bound to it, and the diff.

Tools turn their own failures into error observations (tools.base.define);
the environment adds the one failure no tool can see: a name that is no tool.
"""
from __future__ import annotations

from typing import Callable

from tools.base import Observation, Tool
from workspace.sandbox import Sandbox


class Environment:
    """Tools run against `sandbox`; `diff` returns the change against the base commit."""

    def __init__(self, sandbox: Sandbox, tools: list[Tool], diff: Callable[[], str]):
        self.sandbox = sandbox
        self.tools = {tool.name: tool for tool in tools}
        self._diff = diff

    def schemas(self) -> list[dict]:
        return [tool.schema() for tool in self.tools.values()]

    def execute(self, name: str, arguments: dict) -> Observation:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(self.tools)
            return Observation(f"Unknown tool `{name}`. The available tools are: {known}.", is_error=True)
        return tool.run(arguments, self.sandbox)

    def diff(self) -> str:
        return self._diff()
