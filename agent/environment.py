"""The environment the agent acts in: a sandbox, the tools bound to it, and the diff.

Tools turn their own failures into error observations (tools.base.define).
The environment tells apart the calls that are malformed (a name that is no
tool, arguments that do not fit the schema): those observations carry
`extra["call_error"]`, and the agent counts them as format errors.
"""
from __future__ import annotations

from typing import Callable

from loopcoder.tools.arguments import validate
from loopcoder.tools.base import Observation, Tool
from loopcoder.workspace.sandbox import Sandbox


class Environment:
    """Tools run against `sandbox`; `diff` returns the change against the base commit."""

    def __init__(self, sandbox: Sandbox, tools: list[Tool], diff: Callable[[], str]):
        self.sandbox = sandbox
        self.tools = {tool.name: tool for tool in tools}
        self._diff = diff

    def schemas(self) -> list[dict]:
        return [tool.schema() for tool in self.tools.values()]

    def execute(self, name: str, arguments: dict) -> Observation:
        error = self.call_error(name, arguments)
        if error:
            return Observation(error, is_error=True, extra={"call_error": True})
        return self.tools[name].run(arguments, self.sandbox)

    def call_error(self, name: str, arguments: dict) -> str | None:
        """Why this call cannot run (unknown tool, missing or invalid arguments), naming the valid tools; else None."""
        known = f"The available tools are: {', '.join(self.tools)}."
        tool = self.tools.get(name)
        if tool is None:
            return f"Unknown tool `{name}`. {known}"
        error, _ = validate(name, arguments, tool.parameters)
        return f"{error} {known}" if error else None

    def diff(self) -> str:
        return self._diff()
