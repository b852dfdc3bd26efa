"""What a tool is: a name, a JSON schema and a function (arguments, sandbox) -> Observation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from loopcoder.tools.arguments import validate
from loopcoder.tools.output import truncate
from loopcoder.workspace.sandbox import Sandbox, SandboxError

log = logging.getLogger(__name__)
MAX_OBSERVATION = 20_000  # characters; above what any tool shows on purpose


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


def define(name: str, description: str, parameters: dict, impl: Callable[[dict, Sandbox], Observation]) -> Tool:
    """A Tool whose run validates the arguments first and turns every failure into an error observation.

    Model output is untrusted: a bad argument, a path outside the working copy
    (SandboxError) or a bug in the tool must reach the model as text, never as
    an exception that ends the agent loop.
    """

    def attempt(arguments: dict, sandbox: Sandbox) -> Observation:
        error, clean = validate(name, arguments, parameters)
        if error:
            return Observation(error, is_error=True)
        try:
            return impl(clean, sandbox)
        except SandboxError as exc:
            return Observation(str(exc), is_error=True)
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the log keeps the traceback
            log.exception("tool %s failed on %r", name, arguments)
            return Observation(
                f"The `{name}` tool failed unexpectedly ({type(exc).__name__}: {exc}). "
                "This is a problem in the tool, not in your call; try another way (for example the `bash` tool).",
                is_error=True,
            )

    def run(arguments: dict, sandbox: Sandbox) -> Observation:
        observation = attempt(arguments, sandbox)
        observation.text = truncate(observation.text, MAX_OBSERVATION)  # a safety net; tools cut their own output
        return observation

    return Tool(name, description, parameters, run)
