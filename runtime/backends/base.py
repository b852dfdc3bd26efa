"""The backend protocol: messages and tool schemas in, assistant text out.

Every way of running a model (our PLT in process, any transformers model,
an OpenAI-compatible server, scripted replays) implements `Backend`, so the
agent never knows which one it talks to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from loopcoder.runtime.params import GenerationParams  # noqa: F401 - part of the backend protocol

Message = dict  # {"role": "system"|"user"|"assistant"|"tool", "content": str, "tool_calls"?: [...]}
ToolSchema = dict  # {"type": "function", "function": {"name", "description", "parameters"}}


class BackendError(RuntimeError):
    """A backend that cannot start (missing or bad model, bad option), worded for the user."""


@dataclass
class Completion:
    """One assistant turn with its accounting."""

    text: str
    finish_reason: str  # "stop" (stop id or string), "length" (max_new_tokens), "context" (window full)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prefilled_tokens: int = 0  # prompt tokens actually run through the model this call
    reused_tokens: int = 0  # prompt tokens served from a kept KV cache
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    compile_seconds: float = 0.0  # of decode_seconds, compiled decode's warm-up (plt --compile)
    tool_calls: list[dict] | None = None  # set by backends whose server already parsed calls


@runtime_checkable
class Backend(Protocol):
    name: str
    context_window: int

    def complete(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        params: GenerationParams | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """Generate the next assistant turn; stream text pieces to on_text."""
        ...

    def count_tokens(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> int:
        """Prompt length in tokens of these messages as this backend renders them."""
        ...

    def close(self) -> None:
        ...
