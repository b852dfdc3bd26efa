"""One generation at a time: pick the session, check the context window, generate, remember.

Everything that touches a model goes through `Engine.generate`, which holds a
lock; the HTTP front calls it from its one model thread. `check_size` refuses
a prompt that cannot fit from its length in characters alone, so a huge prompt
is turned away in microseconds instead of being tokenized under that lock.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable

from loopcoder.runtime.backends.base import Backend, Completion
from loopcoder.runtime.constrained import GrammarError
from loopcoder.server.chat_request import ChatRequest, normalize_messages
from loopcoder.server.errors import ApiError, bad_request
from loopcoder.server.pool import SessionPool
from loopcoder.server.reply import ContentStream


@dataclass
class Generated:
    done: Completion
    message: dict  # the assistant message in the OpenAI shape
    last_content: str  # content that was still held back when generation ended


class Engine:
    def __init__(self, factory: Callable[[], Backend], sessions: int = 4):
        self.pool = SessionPool(factory, sessions)
        self.lock = threading.Lock()
        with self.lock:
            first = self.pool.acquire([], None).backend
        self.context_window = first.context_window
        # the most characters one token stands for; None: no bound known, every prompt is tokenized
        self.max_token_chars: int | None = getattr(first, "max_token_chars", None)

    def check_size(self, request: ChatRequest) -> None:
        """A 400 for messages whose text alone needs more tokens than the window holds: each token
        covers at most `max_token_chars` characters, and the template only adds to the text."""
        if not self.max_token_chars:
            return
        chars = sum(len(m["content"]) for m in request.messages)
        if chars > self.context_window * self.max_token_chars:
            raise _too_long(self.context_window, f"at least {-(-chars // self.max_token_chars)}")

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
            raise _too_long(window, str(prompt))
        return replace(request.params, max_new_tokens=min(request.params.max_new_tokens, room))

    def close(self) -> None:
        """Free the sessions, unless a generation still runs (at shutdown: the process is exiting anyway)."""
        if self.lock.acquire(blocking=False):
            try:
                self.pool.close()
            finally:
                self.lock.release()


def _too_long(window: int, tokens: str) -> ApiError:
    return bad_request(f"This model's maximum context length is {window} tokens; the messages take {tokens}. "
                       "Shorten the messages.", "messages", "context_length_exceeded")


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
