"""`loopcoder serve`: the model behind an OpenAI-compatible HTTP API (FastAPI on uvicorn).

Replies are split into content and `tool_calls` with the same tool-call
format the agent reads (runtime/toolcalls.py).
"""
from __future__ import annotations

import socket
from typing import Callable

import uvicorn

from loopcoder.runtime.backends.base import Backend
from loopcoder.runtime.backends.hosts import is_loopback
from loopcoder.server.app import DEFAULT_MAX_BODY_BYTES, Limits, create_app
from loopcoder.server.engine import Engine
from loopcoder.server.protocol import OpenAIH11Protocol
from loopcoder.server.worker import ModelWorker

__all__ = ["ChatServer", "DEFAULT_MAX_BODY_BYTES", "Engine", "Limits", "ServeError", "is_loopback", "make_server"]


class ServeError(RuntimeError):
    """A reason the server cannot start, worded for the user."""


class ChatServer:
    """A bound socket and the uvicorn server for it; `serve_forever` blocks until `shutdown`."""

    def __init__(self, sock: socket.socket, engine: Engine, worker: ModelWorker, model_names: list[str],
                 limits: Limits, api_key: str | None):
        self.socket = sock
        self.engine = engine
        self.worker = worker
        self.model_names = model_names
        self.app = create_app(engine, worker, model_names, limits, api_key)
        config = uvicorn.Config(self.app, http=OpenAIH11Protocol,
                                lifespan="off", log_config=None, access_log=False, timeout_keep_alive=5,
                                timeout_graceful_shutdown=2)
        self.uvicorn = uvicorn.Server(config)

    @property
    def port(self) -> int:
        return self.socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = self.socket.getsockname()[0]
        return f"http://[{host}]:{self.port}/v1" if ":" in host else f"http://{host}:{self.port}/v1"

    def serve_forever(self) -> None:
        """Serves in this thread; from the main thread, Ctrl-C and SIGTERM stop it (then re-raised)."""
        self.uvicorn.run(sockets=[self.socket])

    def shutdown(self) -> None:
        self.uvicorn.should_exit = True

    def close(self) -> None:
        self.socket.close()
        self.worker.close()
        self.engine.close()


def make_server(
    factory: Callable[[], Backend],
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    sessions: int = 4,
    limits: Limits | None = None,
    api_key: str | None = None,
) -> ChatServer:
    """A bound server (call `serve_forever`); `factory` makes one backend per kept conversation.

    The port is bound before the first backend loads, so a busy port fails fast."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or stop what uses it.") from None
    try:
        engine = Engine(factory, sessions)
    except BaseException:
        sock.close()
        raise
    return ChatServer(sock, engine, ModelWorker(), [model_name], limits or Limits(), api_key)
