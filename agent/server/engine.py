"""One generation at a time: pick the session, check the context window, generate, remember.

The HTTP layer runs a thread per connection; everything that touches a model
goes through `Engine.generate`, which holds a lock, so requests queue here.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable

from agent.server.chat_request import ChatRequest, normalize_messages
from agent.server.errors import bad_request
from agent.server.pool import SessionPool
from agent.server.reply import ContentStream
from model.backends.base import Backend, Completion
from model.constrained import GrammarError


@dataclass
class Generated:
    done: Completion
    message: dict  # the assistant message in the OpenAI shape
    last_content: str  # content that was still held back when generation ended


class Engine:
    def __init__(self, factory: Callable[[], Backend], sessions: int = 4):
        self.pool = SessionPool(factory, sessions)
        self.lock = threading.Lock()
        self.context_window = self._probe_window()

    def _probe_window(self) -> int:
        with self.lock:
            slot = self.pool.acquire([], None)
            return slot.backend.context_window

    def generate(
        self,
        request: ChatRequest,
        on_start: Callable[[], None] = lambda: None,
        on_content: Callable[[str], None] = lambda _: None,
    ) -> Generated:
        """Raises ApiError before `on_start` for a prompt that does not fit; exceptions raised by
        the callbacks (a client gone) abort the generation."""
        with self.lock:
            slot = self.pool.acquire(request.messages, request.tools)
            params = self._fit(slot.backend, request)
            _check_grammar(slot.backend, request.tools, params)
            on_start()
            stream = ContentStream(request.tools, request.parse_tools)

            def on_text(piece: str) -> None:
                if delta := stream.feed(piece):
                    on_content(delta)

            try:
                done = slot.backend.complete(request.messages, request.tools, params, on_text)
            except BaseException:
                self.pool.forget(slot)
                raise
            last, message = stream.finish()
            self.pool.record(slot, request.messages, request.tools, normalize_messages([message])[0])
            return Generated(done, message, last)

    def _fit(self, backend: Backend, request: ChatRequest):
        """Sampling params whose token limit fits the window (a reply cut there ends with "length");
        a prompt that leaves no room at all is the client's error."""
        window = backend.context_window
        prompt = backend.count_tokens(request.messages, request.tools)
        room = window - prompt
        if room < 1:
            raise bad_request(
                f"This model's maximum context length is {window} tokens; the messages take {prompt}. "
                "Shorten the messages.",
                "messages",
                "context_length_exceeded",
            )
        return replace(request.params, max_new_tokens=min(request.params.max_new_tokens, room))

    def close(self) -> None:
        """Free the sessions, unless a generation still runs (at shutdown: the process is exiting anyway)."""
        if self.lock.acquire(blocking=False):
            try:
                self.pool.close()
            finally:
                self.lock.release()


def _check_grammar(backend: Backend, tools, params) -> None:
    """A tool or response schema that constrained decoding cannot follow is the client's error, said
    before any reply starts (the compiled grammar is cached for the generation itself)."""
    grammar = getattr(backend, "grammar", None)  # only in-process backends constrain decoding
    if grammar is None:
        return
    try:
        grammar(tools, params)
    except GrammarError as exc:
        raise bad_request(f"{str(exc)[:1].upper()}{str(exc)[1:]}.", "response_format" if params.response_format else "tools")
