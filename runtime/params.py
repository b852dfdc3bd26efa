"""Generation settings: what every backend and the sampler read; a leaf module, importing nothing of the project."""
from __future__ import annotations

from dataclasses import dataclass, field


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
