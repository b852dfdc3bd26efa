"""The OpenAI-compatible HTTP front: `/v1/models` and `/v1/chat/completions`.

Standard library only: a thread per connection (ThreadingHTTPServer) for I/O,
the engine's lock for the model. Every refusal, including garbage the HTTP
parser itself rejects, is answered in the OpenAI error shape and the server
keeps serving. Streams use server-sent events over chunked transfer encoding.
"""
from __future__ import annotations

import hmac
import json
import logging
import socket
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent.server import responses
from agent.server.chat_request import parse_chat_request
from agent.server.engine import Engine
from agent.server.errors import ApiError

log = logging.getLogger("loopcoder.serve")
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DRAIN_BYTES = 64 * 1024 * 1024
SOCKET_TIMEOUT = 120.0  # seconds a client may stall mid-request before its connection is closed


class ClientGone(Exception):
    """The client closed the connection while its reply streamed."""


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True  # a stalled client must not keep the process from exiting

    def __init__(
        self,
        address: tuple[str, int],
        model_names: list[str],
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        api_key: str | None = None,
    ):
        self.engine: Engine  # set by make_server once the port is bound
        self.model_names = model_names
        self.max_body_bytes = max_body_bytes
        self.api_key = api_key
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.1"  # so a garbage request line still gets a status line back
    timeout = SOCKET_TIMEOUT
    server: ChatServer

    # --- routing --------------------------------------------------------------

    def do_GET(self) -> None:
        self._serve(self._get)

    def do_POST(self) -> None:
        self._serve(self._post)

    def _get(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = responses.models_body(self.server.model_names, self.server.engine.context_window)
        if path == "/v1/models":
            self._json(200, body)
            return
        for entry in body["data"]:
            if path == f"/v1/models/{entry['id']}":
                self._json(200, entry)
                return
        if path in ("/health", "/v1/health"):
            self._json(200, {"status": "ok"})
            return
        raise ApiError(404, f"No route GET {path}; try GET /v1/models.", code="not_found")

    def _post(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            raise ApiError(404, f"No route POST {path}; this server answers POST /v1/chat/completions.", code="not_found")
        request = parse_chat_request(self._body(), self.server.model_names)
        if request.stream:
            self._stream(request)
            return
        out = self.server.engine.generate(request)
        cid = responses.new_id("chatcmpl-")
        self._json(200, responses.completion_body(cid, self._model(), out.done, out.message))
        self._note(out.done)

    # --- one exchange ---------------------------------------------------------

    def _serve(self, route) -> None:
        self._started = time.monotonic()
        self._status, self._detail = 0, ""
        self._sent_headers = False
        try:
            self._check_key()
            route()
        except ApiError as exc:
            self._error(exc)
        except ClientGone:
            self.close_connection = True
            self._status, self._detail = 499, "client closed the connection mid-stream"
        except (ConnectionError, TimeoutError) as exc:
            self.close_connection = True
            self._status, self._detail = 499, f"connection lost ({type(exc).__name__})"
        except Exception as exc:  # a bug or a model failure: say so, keep serving
            log.error("internal error on %s %s:\n%s", self.command, self.path, traceback.format_exc())
            self._error(ApiError(500, f"Internal server error ({type(exc).__name__}: {exc}); see the server log.", type="server_error"))
        self._log()

    def _check_key(self) -> None:
        key = self.server.api_key
        if key is None:
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(401, "Missing or wrong API key; send 'Authorization: Bearer <key>' with the key the server was started with.",
                           code="invalid_api_key")

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or self.headers.get("Content-Length") is None:
            raise ApiError(411, "Send the request body with a Content-Length header (chunked bodies are not accepted).")
        try:
            length = int(self.headers["Content-Length"])
            if length < 0:
                raise ValueError
        except ValueError:
            raise ApiError(400, "The Content-Length header is not a non-negative integer.") from None
        limit = self.server.max_body_bytes
        if length > limit:
            self._discard(length)
            raise ApiError(413, f"The request body is {length} bytes; this server accepts at most {limit} (--max-body-bytes).",
                           code="request_too_large")
        body = self.rfile.read(length)
        if len(body) < length:
            raise ApiError(400, f"The request body ended after {len(body)} of {length} bytes.")
        return body

    def _discard(self, length: int) -> None:
        """Read and drop an oversized body (up to DRAIN_BYTES), so the client, still sending, reads
        our 413 instead of a reset connection."""
        left = min(length, DRAIN_BYTES)
        try:
            while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
                left -= len(chunk)
        except OSError:
            pass

    def _stream(self, request) -> None:
        cid, model = responses.new_id("chatcmpl-"), self._model()

        def start() -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._sent_headers = True
            self._status = 200
            self._event(responses.chunk(cid, model, {"role": "assistant", "content": ""}))

        def content(text: str) -> None:
            self._event(responses.chunk(cid, model, {"content": text}))

        out = self.server.engine.generate(request, start, content)
        if out.last_content:
            content(out.last_content)
        for i, call in enumerate(out.message.get("tool_calls") or []):
            self._event(responses.chunk(cid, model, {"tool_calls": [{"index": i, **call}]}))
        self._event(responses.chunk(cid, model, {}, responses.finish_reason(out.done, out.message)))
        if request.include_usage:
            self._event(responses.chunk(cid, model, None, usage_=responses.usage(out.done)))
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")
        self._note(out.done)

    # --- writing --------------------------------------------------------------

    def _event(self, body: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError as exc:
            raise ClientGone() from exc

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self._status = status

    def _error(self, exc: ApiError) -> None:
        """Answer a refusal and close: the body may be unread, so the connection is not reusable."""
        self._status, self._detail = exc.status, exc.message
        self.close_connection = True
        try:
            if self._sent_headers:  # mid-stream the status line is gone: send the error as an event
                self._event(exc.body())
                self._write_chunk(b"")
            else:
                self._json(exc.status, exc.body())
        except (OSError, ClientGone):
            pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Refusals from the HTTP parser itself (bad request line, huge headers, unknown method)."""
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"Method {self.command!r} is not allowed; use GET or POST"
        self._started, self._sent_headers = time.monotonic(), False
        text = (message or HTTPStatus(code).phrase)[:200]
        self._error(ApiError(int(code), f"{text}. This is an OpenAI-compatible API: POST JSON to /v1/chat/completions."))
        self._log()

    # --- logging --------------------------------------------------------------

    def _model(self) -> str:
        return self.server.model_names[0]

    def _note(self, done) -> None:
        self._detail = (f"prompt={done.prompt_tokens} prefilled={done.prefilled_tokens} reused={done.reused_tokens} "
                        f"completion={done.completion_tokens} finish={done.finish_reason}")

    def _log(self) -> None:
        """The one line per request."""
        seconds = time.monotonic() - self._started
        request = "".join(c if c.isprintable() else "?" for c in (getattr(self, "requestline", "") or "-")[:200])
        log.info('%s "%s" %d %.2fs %s', self.client_address[0], request, self._status, seconds, self._detail)

    def version_string(self) -> str:
        return "loopcoder"

    def log_request(self, code="-", size="-") -> None:
        pass  # replaced by _log

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.client_address[0], format % args)
