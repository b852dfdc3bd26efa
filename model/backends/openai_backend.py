"""The `openai` backend: any OpenAI-compatible server (vLLM, `loopcoder serve`, hosted APIs).

Plain urllib, so running it needs nothing beyond the standard library.
Transient failures (429, 5xx, timeouts, refused connections) are retried
with exponential backoff, honouring Retry-After; a stream that already
produced text is not retried, since the text went out. Calls the server
parsed into `tool_calls` come back both in `Completion.tool_calls` (OpenAI
shape) and rendered into `Completion.text` as Hermes `<tool_call>` blocks, so
the agent reads every backend's output with the same parser.
"""
from __future__ import annotations

import email.utils
import ipaddress
import json
import math
import os
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import Callable

from model.backends.base import BackendError, Completion, GenerationParams, Message, ToolSchema

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_CONTEXT_WINDOW = 32768  # when the server does not report max_model_len
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is capped rather than hanging the run
FINISH = {"stop": "stop", "tool_calls": "stop", "function_call": "stop", "length": "length", "content_filter": "stop"}
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx


class OpenAIBackendError(BackendError):
    """A server problem worded for the user: what went wrong and what to do."""


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        context_window: int | None = None,
        timeout: float = 600.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
    ):
        """Unset options come from OPENAI_BASE_URL, OPENAI_API_KEY and LOOPCODER_OPENAI_MODEL;
        an unset model or window is asked of the server's /models."""
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        self._model = model or os.environ.get("LOOPCODER_OPENAI_MODEL") or None
        self._context_window = context_window
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.sleep: Callable[[float], None] = time.sleep
        self._tokens_per_char = 0.25  # refined from the server's usage after each call
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        handlers = [urllib.request.ProxyHandler({})] if is_loopback(host) else []  # never send loopback through a proxy
        self._opener = urllib.request.build_opener(*handlers)

    # --- what the server serves ---------------------------------------------------

    @property
    def model(self) -> str:
        if self._model is None:
            self._model = self._served()[0]["id"]
        return self._model

    @property
    def context_window(self) -> int:
        if self._context_window is None:
            entry = next((m for m in self._served() if m.get("id") == self.model), {})
            window = entry.get("max_model_len") or entry.get("context_window") or entry.get("context_length")
            self._context_window = int(window) if isinstance(window, (int, float)) and window > 0 else DEFAULT_CONTEXT_WINDOW
        return self._context_window

    def _served(self) -> list[dict]:
        data = self._with_retries(lambda: self._read_json(self._open("GET", "/models", None)))
        models = data.get("data") if isinstance(data, dict) else None
        if not isinstance(models, list) or not models or not all(isinstance(m, dict) and "id" in m for m in models):
            raise OpenAIBackendError(
                f"The server at {self.base_url} lists no models at /models. Name one with the backend's model option "
                "or LOOPCODER_OPENAI_MODEL."
            )
        return models

    # --- Backend protocol ---------------------------------------------------------

    def complete(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        params: GenerationParams | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        params = params or GenerationParams()
        payload = {
            "model": self.model,
            "messages": wire_messages(messages),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "stream": on_text is not None,
        }
        if tools:
            payload["tools"] = tools
        if params.top_k > 0:
            payload["top_k"] = params.top_k  # a vLLM extension; hosted APIs may refuse it
        if params.seed is not None:
            payload["seed"] = params.seed
        if params.stop:
            payload["stop"] = params.stop
        if on_text is not None:
            payload["stream_options"] = {"include_usage": True}
        try:
            reply = self._with_retries(lambda: self._chat(payload, on_text))
        except _ContextFull:
            return Completion(text="", finish_reason="context", prompt_tokens=self.count_tokens(messages, tools))
        return self._completion(reply, messages, tools)

    def count_tokens(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> int:
        """Characters times the tokens-per-character the server last reported (4 chars a token before that)."""
        return math.ceil(_chars(messages, tools) * self._tokens_per_char)

    def close(self) -> None:
        pass

    # --- one request, with retries ------------------------------------------------

    def _with_retries(self, attempt_once):
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return attempt_once()
            except _Retryable as exc:
                last = exc.reason
                if attempt == self.max_retries:
                    break
                delay = min(self.max_backoff, self.backoff * 2**attempt) * random.uniform(0.75, 1.0)
                if exc.retry_after is not None:
                    delay = min(max(exc.retry_after, 0.0), MAX_RETRY_AFTER)
                self.sleep(delay)
        raise OpenAIBackendError(
            f"The OpenAI-compatible server at {self.base_url} failed {self.max_retries + 1} times; last: {last}. "
            "Check that it is running and reachable (for example `loopcoder serve --model DIR`, or set OPENAI_BASE_URL)."
        )

    def _open(self, method: str, path: str, payload: dict | None):
        data = None if payload is None else json.dumps(payload, ensure_ascii=False).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "text/event-stream" if payload and payload.get("stream") else "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("Authorization", f"Bearer {self.api_key}")
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Retryable(f"cannot connect ({reason})") from None

    def _http_error(self, exc: urllib.error.HTTPError) -> Exception:
        status = exc.code
        try:
            body = exc.read(65536).decode("utf-8", "replace")
        except (OSError, HTTPException):
            body = ""
        finally:
            exc.close()
        error = _error_of(body)
        message = error.get("message") or body.strip()[:300] or exc.reason
        code = error.get("code")
        if status in RETRYABLE_STATUS or status >= 500:
            return _Retryable(f"HTTP {status}: {message}", _retry_after(exc.headers.get("Retry-After")))
        if code == "context_length_exceeded" or "context length" in str(message).lower():
            return _ContextFull(str(message))
        if status in (401, 403):
            return OpenAIBackendError(
                f"The server at {self.base_url} rejected the API key (HTTP {status}: {message}). "
                "Set OPENAI_API_KEY (or the backend's api_key option) to a key it accepts."
            )
        if status == 404:
            return OpenAIBackendError(
                f"The server at {self.base_url} answered 404 ({message}). Check the model name (LOOPCODER_OPENAI_MODEL "
                "or the backend's model option; GET /models lists them) and that OPENAI_BASE_URL ends in /v1."
            )
        return OpenAIBackendError(f"The server at {self.base_url} refused the request (HTTP {status}): {message}")

    def _read_json(self, response) -> dict:
        with response:
            try:
                raw = response.read()
            except (OSError, HTTPException) as exc:
                raise _Retryable(f"the connection broke while reading the reply ({exc})") from None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise OpenAIBackendError(
                f"The server at {self.base_url} sent a reply that is not a JSON object ({raw[:120]!r}); is "
                "OPENAI_BASE_URL an OpenAI-compatible API (usually ending in /v1)?"
            )
        return data

    def _chat(self, payload: dict, on_text: Callable[[str], None] | None) -> dict:
        """The reply as one chat.completion-like dict, streamed pieces sent to on_text on the way."""
        started = time.monotonic()
        response = self._open("POST", "/chat/completions", payload)
        if on_text is None:
            reply = self._read_json(response)
            reply["_seconds"] = (0.0, time.monotonic() - started)
            return reply
        return _read_stream(response, on_text, started, self.base_url)

    def _completion(self, reply: dict, messages: list[Message], tools: list[ToolSchema] | None) -> Completion:
        if isinstance(reply.get("error"), dict):
            raise OpenAIBackendError(f"The server at {self.base_url} reported an error: {reply['error'].get('message')}")
        choices = reply.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content = message.get("content") if isinstance(message.get("content"), str) else ""
        calls = _openai_calls(message.get("tool_calls"))
        text = "\n".join([content] * bool(content) + [hermes_call(c) for c in calls])
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        prompt = _int(usage.get("prompt_tokens"))
        if prompt:
            self._tokens_per_char = prompt / max(1, _chars(messages, tools))
        else:
            prompt = self.count_tokens(messages, tools)
        details = usage.get("prompt_tokens_details") if isinstance(usage.get("prompt_tokens_details"), dict) else {}
        reused = min(prompt, _int(details.get("cached_tokens")))
        prefill_s, decode_s = reply.get("_seconds", (0.0, 0.0))
        return Completion(
            text=text,
            finish_reason=FINISH.get(choice.get("finish_reason"), "stop"),
            prompt_tokens=prompt,
            completion_tokens=_int(usage.get("completion_tokens")) or math.ceil(len(text) / 4),
            prefilled_tokens=prompt - reused,
            reused_tokens=reused,
            prefill_seconds=prefill_s,
            decode_seconds=decode_s,
            tool_calls=calls or None,
        )


class _ContextFull(Exception):
    """The server said the prompt does not fit: the run should end on its context limit, not crash."""


def _read_stream(response, on_text: Callable[[str], None], started: float, base_url: str) -> dict:
    """Fold server-sent chat.completion.chunk events into one reply dict."""
    content: list[str] = []
    calls: dict[int, dict] = {}
    finish, usage, first = None, None, None
    with response:
        try:
            for line in response:
                line = line.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                try:
                    event = json.loads(data)
                except ValueError:
                    continue  # a keep-alive or a proxy's noise; the reply is judged when it ends
                if not isinstance(event, dict):
                    continue
                if isinstance(event.get("error"), dict):
                    raise OpenAIBackendError(f"The server at {base_url} failed mid-reply: {event['error'].get('message')}")
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    if not isinstance(choice, dict):
                        continue
                    finish = choice.get("finish_reason") or finish
                    delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                    if isinstance(delta.get("content"), str) and delta["content"]:
                        first = first or time.monotonic()
                        content.append(delta["content"])
                        on_text(delta["content"])
                    for piece in delta.get("tool_calls") or []:
                        _merge_call_delta(calls, piece)
        except (OSError, HTTPException) as exc:
            if content:
                raise OpenAIBackendError(
                    f"The stream from {base_url} broke after {len(''.join(content))} characters ({exc}); "
                    "the partial reply was already shown, so it is not retried."
                ) from None
            raise _Retryable(f"the stream broke before any text ({exc})") from None
    now = time.monotonic()
    first = first or now
    message = {"content": "".join(content), "tool_calls": [calls[i] for i in sorted(calls)]}
    return {"choices": [{"message": message, "finish_reason": finish}], "usage": usage, "_seconds": (first - started, now - first)}


def _merge_call_delta(calls: dict[int, dict], piece) -> None:
    """Streamed tool calls arrive in fragments keyed by index: id and name once, arguments in parts."""
    if not isinstance(piece, dict):
        return
    index = piece.get("index") if isinstance(piece.get("index"), int) else len(calls)
    call = calls.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
    if isinstance(piece.get("id"), str):
        call["id"] = piece["id"]
    fn = piece.get("function") if isinstance(piece.get("function"), dict) else {}
    if isinstance(fn.get("name"), str):
        call["function"]["name"] += fn["name"]
    if isinstance(fn.get("arguments"), str):
        call["function"]["arguments"] += fn["arguments"]


def _openai_calls(value) -> list[dict]:
    """Server tool calls, kept in the OpenAI shape (arguments a JSON string), malformed ones dropped."""
    calls = []
    for call in value if isinstance(value, list) else []:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]:
            arguments = fn.get("arguments")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
            call_id = call.get("id") if isinstance(call.get("id"), str) else ""
            calls.append({"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": arguments}})
    return calls


def hermes_call(call: dict) -> str:
    """An OpenAI tool call as the Hermes block the model writes (agent/toolcalls.py renders the same).

    Arguments that are not a JSON object stay a string, so the agent's parser reports them."""
    fn = call["function"]
    try:
        arguments = json.loads(fn["arguments"]) if fn["arguments"].strip() else {}
    except (ValueError, RecursionError):
        arguments = fn["arguments"]
    name = json.dumps(fn["name"], ensure_ascii=False)
    return f'<tool_call>\n{{"name": {name}, "arguments": {json.dumps(arguments, ensure_ascii=False)}}}\n</tool_call>'


def wire_messages(messages: list[Message]) -> list[dict]:
    """Our messages as the OpenAI API wants them: only its keys, arguments as JSON strings, every
    tool call with an id and every tool result answering one.

    The agent keeps calls as Hermes text in the assistant content, so its tool
    results answer no announced call; those become the user turn of
    `<tool_response>` blocks that the chat template would have written for them.
    """
    out: list[dict] = []
    pending: list[str] = []  # ids of the last assistant turn's calls not yet answered
    merged = False  # the last message sent is a user turn of tool responses
    for i, msg in enumerate(messages):
        role, content = msg.get("role"), msg.get("content")
        if role == "tool":
            call_id = msg.get("tool_call_id") or (pending[0] if pending else None)
            if call_id in pending:
                pending.remove(call_id)
                out.append({"role": "tool", "tool_call_id": call_id, "content": content or ""})
                merged = False
                continue
            block = f"<tool_response>\n{content or ''}\n</tool_response>"
            if merged:
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
                merged = True
            continue
        merged = False
        wire = {"role": role, "content": content}
        if msg.get("tool_calls"):
            wire["tool_calls"] = [_wire_call(call, f"call_{i}_{j}") for j, call in enumerate(msg["tool_calls"])]
        pending = [c["id"] for c in wire.get("tool_calls", [])]
        if msg.get("name"):
            wire["name"] = msg["name"]
        out.append(wire)
    return out


def _wire_call(call: dict, default_id: str) -> dict:
    fn = call.get("function", call)
    arguments = fn.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return {"id": call.get("id") or default_id, "type": "function", "function": {"name": fn.get("name"), "arguments": arguments}}


def _chars(messages: list[Message], tools: list[ToolSchema] | None) -> int:
    return sum(len(str(m.get("content") or "")) + len(json.dumps(m.get("tool_calls") or "")) for m in messages) + len(
        json.dumps(tools) if tools else ""
    )


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _error_of(body: str) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return error
    return {"message": error} if isinstance(error, str) else {}


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
