"""The OpenAI-compatible HTTP front: `/v1/models` and `/v1/chat/completions` on FastAPI.

The event loop only moves bytes: the body is read with a byte limit and a
deadline, parsed and size-checked on a pool thread, and model work queues for
the one model thread (`ModelWorker`). A bound on requests in the server
(reading, parsing, queued or generating) turns a flood away with a 429 before
its body is read. Every refusal is an OpenAI-shaped error, and each request
is one log line.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from loopcoder.server import responses
from loopcoder.server.chat_request import ChatRequest, parse_chat_request
from loopcoder.server.engine import Engine, Generated
from loopcoder.server.errors import ApiError
from loopcoder.server.worker import ModelWorker

log = logging.getLogger("loopcoder.serve")
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


@dataclass
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    read_timeout: float = 30.0  # seconds for a whole request body to arrive
    max_queue: int = 16  # chat requests in the server at once: read, parsed, queued or generating


class ClientGone(Exception):
    """The client closed the connection before its reply was done."""


def create_app(engine: Engine, worker: ModelWorker, model_names: list[str], limits: Limits,
               api_key: str | None = None) -> "Guard":
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(Exception, _internal_error)

    def models_body() -> dict:
        return responses.models_body(model_names, engine.context_window)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return models_body()

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str) -> dict:
        for entry in models_body()["data"]:
            if entry["id"] == name:
                return entry
        raise ApiError(404, f"The model '{name[:80]}' does not exist on this server; GET /v1/models lists it.",
                       code="model_not_found")

    @app.get("/health")
    @app.get("/v1/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _read_body(request, limits)
        chat = await anyio.to_thread.run_sync(_parse, engine, body, model_names)
        if chat.stream:
            return await _stream(request, engine, worker, chat, model_names[0])
        out = await worker.run(lambda: engine.generate(chat))
        request.state.detail = _note(out)
        return JSONResponse(responses.completion_body(responses.new_id("chatcmpl-"), model_names[0], out.done, out.message))

    return Guard(app, api_key, limits.max_queue)


def _parse(engine: Engine, body: bytes, model_names: list[str]) -> ChatRequest:
    chat = parse_chat_request(body, model_names)
    engine.check_size(chat)
    return chat


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, within the byte limit and the deadline; a declared Content-Length over the limit
    is refused before a byte is read."""
    limit = limits.max_body_bytes
    too_large = ApiError(413, f"The request body is over {limit} bytes, the most this server accepts (--max-body-bytes).",
                         code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        with anyio.fail_after(limits.read_timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {limits.read_timeout:g} s ({size} bytes came); "
                            "send it whole, with a correct Content-Length.", code="request_timeout") from None
    except ClientDisconnect:
        raise ClientGone() from None
    return b"".join(chunks)


async def _stream(request: Request, engine: Engine, worker: ModelWorker, chat: ChatRequest, model: str):
    """Server-sent events. The status line waits for the engine to accept the prompt, so a prompt
    that does not fit is still a plain 400; a client that hangs up stops the generation."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
    gone = threading.Event()

    def put(kind: str, value: object = None) -> None:
        loop.call_soon_threadsafe(events.put_nowait, (kind, value))

    def on_content(text: str) -> None:
        if gone.is_set():
            raise ClientGone()
        put("content", text)

    def work() -> None:
        try:
            put("done", engine.generate(chat, lambda: put("start"), on_content))
        except BaseException as exc:  # the request's own failure, answered on the event loop
            put("error", exc)

    job = asyncio.ensure_future(worker.run(work))
    kind, value = await events.get()
    if kind == "error":
        raise value  # type: ignore[misc]
    cid = responses.new_id("chatcmpl-")

    def event(body: dict) -> str:
        return "data: " + json.dumps(body, ensure_ascii=False) + "\n\n"

    async def sse() -> AsyncIterator[str]:
        request.state.detail = "client closed the connection mid-stream"
        try:
            yield event(responses.chunk(cid, model, {"role": "assistant", "content": ""}))
            while True:
                kind, value = await events.get()
                if kind == "content":
                    yield event(responses.chunk(cid, model, {"content": value}))
                elif kind == "error":
                    exc = value if isinstance(value, ApiError) else _log_internal(value)  # type: ignore[arg-type]
                    request.state.detail = f"failed mid-stream: {exc.message}"
                    yield event(exc.body())
                    return
                else:
                    for body in _closing_chunks(cid, model, chat, value):  # type: ignore[arg-type]
                        yield event(body)
                    yield "data: [DONE]\n\n"
                    request.state.detail = _note(value)  # type: ignore[arg-type]
                    return
        finally:
            gone.set()  # a generation still running stops at its next piece
            job.cancel()

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _closing_chunks(cid: str, model: str, chat: ChatRequest, out: Generated) -> list[dict]:
    chunks = [responses.chunk(cid, model, {"content": out.last_content})] if out.last_content else []
    for i, call in enumerate(out.message.get("tool_calls") or []):
        chunks.append(responses.chunk(cid, model, {"tool_calls": [{"index": i, **call}]}))
    chunks.append(responses.chunk(cid, model, {}, responses.finish_reason(out.done, out.message)))
    if chat.include_usage:
        chunks.append(responses.chunk(cid, model, None, usage_=responses.usage(out.done)))
    return chunks


def _note(out: Generated) -> str:
    done = out.done
    return (f"prompt={done.prompt_tokens} prefilled={done.prefilled_tokens} reused={done.reused_tokens} "
            f"completion={done.completion_tokens} finish={done.finish_reason}")


# --- errors ------------------------------------------------------------------


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    request.state.detail = exc.message
    return _error_response(exc)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) in the OpenAI shape."""
    if exc.status_code == 405:
        text = f"Method {request.method} is not allowed on {request.url.path}; use GET for /v1/models, POST for /v1/chat/completions"
    elif exc.status_code == 404:
        text = f"No route {request.method} {request.url.path}; this server answers GET /v1/models and POST /v1/chat/completions"
    else:
        text = str(exc.detail)
    return _error_response(ApiError(exc.status_code, text + ".", code="not_found" if exc.status_code == 404 else None))


async def _client_gone(request: Request, exc: ClientGone) -> Response:
    request.state.detail = "client closed the connection before its request was read"
    return Response(status_code=499)  # nobody reads it: uvicorn drops a reply to a closed connection


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(_log_internal(exc))


def _log_internal(exc: BaseException) -> ApiError:
    """A bug or a model failure: the traceback goes to the server log, the client gets one line."""
    log.error("internal error:\n%s", "".join(traceback.format_exception(exc)))
    return ApiError(500, f"Internal server error ({type(exc).__name__}: {exc}); see the server log.", type="server_error")


# --- the outermost layer ------------------------------------------------------


class Guard:
    """Before the app: the API key (checked before any of the body is read, so a huge body without
    the key gets its 401) and the bound on chat requests in the server. Around it: one log line per
    request, and the last word on anything the app raised."""

    def __init__(self, app: FastAPI, api_key: str | None, max_queue: int):
        self.app = app
        self.api_key = api_key
        self.max_queue = max_queue
        self.in_server = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.monotonic(), [0]
        state = scope.setdefault("state", {})

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._admit(scope, receive, sending)
        except (ClientGone, ClientDisconnect):
            state.setdefault("detail", "client closed the connection")
        except Exception:  # already answered and logged by the app's handler, or nothing more to say
            pass
        finally:
            self._log(scope, status[0] or 499, time.monotonic() - started, state.get("detail", ""))

    async def _admit(self, scope, receive, send) -> None:
        refusal = self._refusal(scope)
        if refusal is not None:
            scope["state"]["detail"] = refusal.message
            await _error_response(refusal)(scope, receive, send)
            return
        counted = scope["method"] == "POST"
        self.in_server += counted
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_server -= counted

    def _refusal(self, scope) -> ApiError | None:
        if self.api_key is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                return ApiError(401, "Missing or wrong API key; send 'Authorization: Bearer <key>' with the key the "
                                     "server was started with.", code="invalid_api_key")
        if scope["method"] == "POST" and self.in_server >= self.max_queue:
            return ApiError(429, f"The server is busy: {self.in_server} requests are already queued or running "
                                 "(--max-queue); retry shortly.", type="rate_limit_error", code="server_busy")
        return None

    @staticmethod
    def _log(scope, status: int, seconds: float, detail: str) -> None:
        query = scope.get("query_string", b"")
        target = scope.get("path", "") + ("?" + query.decode("latin-1") if query else "")
        line = f'{scope["method"]} {target[:200]} HTTP/{scope.get("http_version", "1.1")}'
        line = "".join(c if c.isprintable() else "?" for c in line)
        client = (scope.get("client") or ("-",))[0]
        log.info('%s "%s" %d %.2fs %s', client, line, status, seconds, detail)
