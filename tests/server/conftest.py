"""A server on loopback (port 0, a thread) around real backends: a scripted one here, the PLT later."""
from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from loopcoder.runtime.backends.base import Completion, GenerationParams
from loopcoder.server import make_server


class ScriptedBackend:
    """Replies from a script, with a real prefix cache over the rendered prompt's characters.

    Characters stand in for tokens: the prompt is rendered ChatML-style, and
    the part shared with the previous prompt plus reply is counted as reused,
    exactly the accounting a KV-cache session reports.
    """

    name = "scripted"
    max_token_chars = 1  # a character stands for a token

    def __init__(self, replies: list[str], context_window: int = 4000, seconds_per_piece: float = 0.0):
        self.replies = replies
        self.context_window = context_window
        self.seconds_per_piece = seconds_per_piece
        self.finished = 0  # generations that ran to their end (not cut short by a client gone)
        self.cached = ""  # what a KV cache would hold: the last prompt and its reply
        self.calls: list[GenerationParams] = []
        self.closed = False

    @staticmethod
    def render(messages, tools) -> str:
        head = f"<tools>{tools}</tools>" if tools else ""
        turns = "".join(f"<|{m['role']}|>{m.get('content') or ''}{m.get('tool_calls') or ''}\n" for m in messages)
        return head + turns + "<|assistant|>"

    def complete(self, messages, tools=None, params=None, on_text: Callable[[str], None] | None = None) -> Completion:
        params = params or GenerationParams()
        self.calls.append(params)
        prompt = self.render(messages, tools)
        reused = 0
        while reused < min(len(prompt), len(self.cached)) and prompt[reused] == self.cached[reused]:
            reused += 1
        text = self.replies[(len(self.calls) - 1) % len(self.replies)]
        finish = "stop"
        if len(text) > params.max_new_tokens:
            text, finish = text[: params.max_new_tokens], "length"
        for i in range(0, len(text), 3):
            time.sleep(self.seconds_per_piece)
            if on_text is not None:
                on_text(text[i : i + 3])
        self.cached = prompt + text
        self.finished += 1
        return Completion(text, finish, prompt_tokens=len(prompt), completion_tokens=len(text),
                          prefilled_tokens=len(prompt) - reused, reused_tokens=reused)

    def count_tokens(self, messages, tools=None) -> int:
        return len(self.render(messages, tools))

    def close(self) -> None:
        self.closed = True


class Served:
    """A running server (uvicorn in a thread) and the backends its factory made."""

    def __init__(self, factory, **options):
        self.backends: list = []

        def make():
            backend = factory()
            self.backends.append(backend)
            return backend

        self.server = make_server(make, "tiny", port=0, **options)
        self.url = self.server.url
        self.port = self.server.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.close()


@pytest.fixture
def serve():
    """serve(factory, **make_server options) -> Served; stopped after the test."""
    started: list[Served] = []

    def start(factory, **options) -> Served:
        served = Served(factory, **options)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny PLT with the test tokenizer and its ChatML + tools template."""
    from loopcoder.model.presets import init_random_checkpoint
    from nano.tiny_tokenizer import save_test_tokenizer

    root = tmp_path_factory.mktemp("serve-model")
    tokenizer = save_test_tokenizer(root / "tokenizer")
    init_random_checkpoint(root / "tiny-plt", "tiny", tokenizer=tokenizer)
    return root / "tiny-plt"


@pytest.fixture
def plt_server(serve, tiny_checkpoint):
    """`loopcoder serve`'s server in a thread around the tiny PLT, two kept conversations."""
    from loopcoder.runtime.backends import create_backend
    from loopcoder.server.run import shared_weights_factory

    factory = shared_weights_factory(lambda: create_backend("plt", model_path=tiny_checkpoint, device="cpu"))
    return serve(factory, sessions=2)
