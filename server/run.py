"""`loopcoder serve` end to end: load, bind, warn, serve until Ctrl-C or SIGTERM, shut down."""
from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Callable

from loopcoder.runtime.backends import IN_PROCESS, create_backend
from loopcoder.runtime.backends.base import Backend
from loopcoder.runtime.backends.hosts import is_loopback
from loopcoder.server import Limits, ServeError, make_server

log = logging.getLogger("loopcoder.serve")


def shared_weights_factory(load: Callable[[], Backend]):
    """The loaded backend first, then conversations spawned on its weights (no second copy of the model)."""
    made: list[Backend] = []

    def make() -> Backend:
        made.append(made[0].spawn() if made else load())
        return made[-1]

    return make


def serve(
    model_path: Path,
    backend: str = "plt",
    host: str = "127.0.0.1",
    port: int = 8000,
    model_name: str | None = None,
    sessions: int = 4,
    limits: Limits | None = None,
    api_key: str | None = None,
    backend_options: dict | None = None,
) -> None:
    """Blocks until Ctrl-C or SIGTERM; `backend_options` (device, dtype, ...) go to `create_backend`."""
    from loopcoder.runtime.backends.base import BackendError

    if backend not in IN_PROCESS:
        raise ServeError(f"--backend must be {' or '.join(IN_PROCESS)}, not {backend!r}.")
    limits = limits or Limits()
    for flag, value in (("--sessions", sessions), ("--max-body-bytes", limits.max_body_bytes),
                        ("--read-timeout", limits.read_timeout), ("--max-queue", limits.max_queue)):
        if value <= 0:
            raise ServeError(f"{flag} must be positive, not {value}.")
    if not is_loopback(host):
        log.warning(
            "WARNING: listening on %s, not loopback: anyone who can reach port %d can run the model and "
            "read what it is sent%s. Use --host 127.0.0.1 unless you mean it.",
            host, port, "" if api_key else ", with no API key (set --api-key)",
        )

    def load() -> Backend:
        log.info("loading %s (%s backend)...", model_path, backend)
        return create_backend(backend, model_path=model_path, **(backend_options or {}))

    try:  # binds first, so a busy port fails before the model loads
        server = make_server(shared_weights_factory(load), model_name or Path(model_path).name, host, port,
                             sessions, limits, api_key)
    except BackendError as exc:
        raise ServeError(str(exc)) from None
    log.info("serving %r at %s (context window %d tokens, %d sessions, at most %d requests queued); Ctrl-C stops",
             server.model_names[0], server.url, server.engine.context_window, server.engine.pool.size, limits.max_queue)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # uvicorn stops on it, then raises it again: exit 0
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        log.info("shutting down")
        signal.signal(signal.SIGTERM, previous)
        server.close()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def configure_logging() -> None:
    """Our one line per request; uvicorn speaks up only for warnings."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
