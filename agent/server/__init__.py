"""`loopcoder serve`: the model behind an OpenAI-compatible HTTP API.

It sits on the agent side because replies are split into content and
`tool_calls` with the agent's tool-call parser.
"""
from __future__ import annotations

from typing import Callable

from agent.server.engine import Engine
from agent.server.httpd import DEFAULT_MAX_BODY_BYTES, ChatServer
from model.backends.hosts import is_loopback
from model.backends.base import Backend

__all__ = ["ChatServer", "Engine", "ServeError", "is_loopback", "make_server"]


class ServeError(RuntimeError):
    """A reason the server cannot start, worded for the user."""


def make_server(
    factory: Callable[[], Backend],
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    sessions: int = 4,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    api_key: str | None = None,
) -> ChatServer:
    """A bound server (call `serve_forever`); `factory` makes one backend per kept conversation.

    The port is bound before the first backend loads, so a busy port fails fast."""
    try:
        server = ChatServer((host, port), [model_name], max_body_bytes, api_key)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or stop what uses it.") from None
    try:
        server.engine = Engine(factory, sessions)
    except BaseException:
        server.server_close()
        raise
    return server
