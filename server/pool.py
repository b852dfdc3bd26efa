"""A few backends, each keeping one conversation's KV cache; requests go where their prefix is.

An OpenAI client resends the whole conversation every turn. A backend reuses
its cache for the longest common prefix with the previous prompt, so the
request that extends a conversation must reach the backend that served that
conversation. Routing compares whole messages (tools first), which needs no
tokenizer; each backend then does the exact token-level match itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from loopcoder.runtime.backends.base import Backend, Message, ToolSchema


def conversation_key(messages: list[Message], tools: list[ToolSchema] | None) -> list[str]:
    return [json.dumps(tools, sort_keys=True)] + [json.dumps(m, sort_keys=True) for m in messages]


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Slot:
    backend: Backend
    history: list[str] = field(default_factory=list)  # conversation_key of the last prompt plus its reply
    prompt_len: int = 0  # how much of history was the prompt
    last_used: int = 0


class SessionPool:
    """Not thread-safe: the server touches it only while holding its generation lock."""

    def __init__(self, factory: Callable[[], Backend], size: int):
        if size < 1:
            raise ValueError("the session pool needs at least one session")
        self.factory = factory
        self.size = size
        self.slots: list[Slot] = []
        self._clock = 0

    def acquire(self, messages: list[Message], tools: list[ToolSchema] | None) -> Slot:
        """The slot that served this conversation's earlier turns; else an unused one (made while
        there is room); else the one sharing the longest prefix (least recently used on ties)."""
        key = conversation_key(messages, tools)
        self._clock += 1
        scored = [(_common_prefix(s.history, key), s) for s in self.slots]
        continuing = [(n, s) for n, s in scored if s.prompt_len and n >= s.prompt_len]
        free = [s for s in self.slots if not s.history]
        if continuing:
            slot = max(continuing, key=lambda pair: pair[0])[1]
        elif free:
            slot = free[0]
        elif len(self.slots) < self.size:
            slot = Slot(self.factory())
            self.slots.append(slot)
        else:
            slot = max(scored, key=lambda pair: (pair[0], -pair[1].last_used))[1]
        slot.last_used = self._clock
        return slot

    def record(self, slot: Slot, messages: list[Message], tools: list[ToolSchema] | None, reply: Message) -> None:
        slot.history = conversation_key(messages + [reply], tools)
        slot.prompt_len = len(messages) + 1

    def forget(self, slot: Slot) -> None:
        """After a generation cut short: the backend resets its own cache; routing must not count on it."""
        slot.history, slot.prompt_len = [], 0

    def close(self) -> None:
        for slot in self.slots:
            slot.backend.close()
        self.slots.clear()
