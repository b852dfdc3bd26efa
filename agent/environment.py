"""The environment the agent acts in: a sandbox, the tools bound to it, and the diff.

Tool failures of every kind come back as error observations, so nothing a
model asks for can raise out of the loop.
"""
from __future__ import annotations

from typing import Callable

from tools.base import Observation, Tool
from workspace.sandbox import Sandbox, SandboxError


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
        try:
            return tool.run(arguments, self.sandbox)
        except SandboxError as exc:
            return Observation(str(exc), is_error=True)
        except Exception as exc:  # a tool bug must not end the run; the model sees what happened
            return Observation(f"The tool `{name}` failed: {type(exc).__name__}: {exc}", is_error=True)

    def diff(self) -> str:
        return self._diff()
