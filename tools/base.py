"""What a tool is: a name, a JSON schema and a function (arguments, sandbox) -> Observation."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from workspace.sandbox import Sandbox


@dataclass
class Observation:
    text: str
    is_error: bool = False
    exit_code: int | None = None
    submitted: bool = False  # the submit tool ends the run
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object
    run: Callable[[dict, Sandbox], Observation]

    def schema(self) -> dict:
        """The OpenAI/Hermes function schema rendered into the system prompt."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }
