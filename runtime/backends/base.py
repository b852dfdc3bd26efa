"""The backend protocol: messages and tool schemas in, assistant text out.

Every way of running a model (our PLT in process, any transformers model,
an OpenAI-compatible server, scripted replays) implements `Backend`, so the
agent never knows which one it talks to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

Message = dict  # {"role": "system"|"user"|"assistant"|"tool", "content": str, "tool_calls"?: [...]}
ToolSchema = dict  # {"type": "function", "function": {"name", "description", "parameters"}}


class BackendError(RuntimeError):
    """A backend that cannot start (missing or bad model, bad option), worded for the user."""


@dataclass
class GenerationParams:
    """Sampling settings; temperature 0 means greedy.

    `speculative`: "prompt_lookup" drafts up to `speculative_tokens` tokens from
    the context and verifies them in one forward (in-process backends; the
    output distribution is unchanged), "off" decodes one token per forward.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    max_new_tokens: int = 1024
    stop: list[str] = field(default_factory=list)
    speculative: str = "prompt_lookup"
    speculative_tokens: int = 8
    # In-process backends: once the model opens <tool_call>, the call follows the tools' schemas
    # (runtime/constrained.py); tool_choice "auto", "required", "none" or {"type": "function", "function": {"name": N}}.
    constrained_tool_calls: bool = True
    tool_choice: str | dict = "auto"
    response_format: dict | None = None  # JSON schema of the whole reply: {"type": "json_schema", "json_schema": {...}}


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
