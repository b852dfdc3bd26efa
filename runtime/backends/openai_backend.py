"""The `openai` backend: any OpenAI-compatible server (vLLM, `loopcoder serve`, hosted APIs).

The official `openai` client does the HTTP, the streaming and the retries:
429, 408, 409, 5xx, timeouts and refused connections are retried
`max_retries` times with exponential backoff (0.5 s doubling, up to 8 s),
honouring Retry-After up to two minutes. A stream that breaks is not
retried, since its text already went out. Here the client's replies become
a `Completion` and its exceptions one line saying what to do. Calls the
server parsed into `tool_calls` come back both in `Completion.tool_calls`
(OpenAI shape) and rendered into `Completion.text` as Hermes `<tool_call>`
blocks, so the agent reads every backend's output with the same parser.
"""
from __future__ import annotations

import json
import math
import os
import time
import urllib.parse
from typing import Callable

import openai

from loopcoder.runtime.backends.base import BackendError, Completion, GenerationParams, Message, ToolSchema
from loopcoder.runtime.backends.hosts import is_loopback
from loopcoder.runtime.toolcalls import render_tool_call

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
DEFAULT_CONTEXT_WINDOW = 32768  # when the server does not report max_model_len
MAX_RETRY_AFTER = 120  # seconds: the client does not retry when a server asks for a longer wait
NO_KEY = "EMPTY"  # what vLLM's docs pass when the server checks no key; the client insists on one
FINISH = {"stop": "stop", "tool_calls": "stop", "function_call": "stop", "length": "length", "content_filter": "stop"}


class OpenAIBackendError(BackendError):
    """A server problem worded for the user: what went wrong and what to do."""


class _ContextFull(Exception):
    """The server said the prompt does not fit: the run should end on its context limit, not crash."""


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
    ):
        """Unset options come from OPENAI_BASE_URL, OPENAI_API_KEY and LOOPCODER_OPENAI_MODEL;
        an unset model or window is asked of the server's /models."""
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_retries = max_retries
        self._model = model or os.environ.get("LOOPCODER_OPENAI_MODEL") or None
        self._context_window = context_window
        self._tokens_per_char = 0.25  # refined from the server's usage after each call
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or NO_KEY,
            timeout=timeout,
            max_retries=max_retries,
            # never send loopback through a proxy from the environment
            http_client=openai.DefaultHttpxClient(trust_env=False) if is_loopback(host) else None,
        )

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
        data = self._call(lambda: self.client.get("/models", cast_to=object))
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
        request = {
            "model": self.model,
            "messages": wire_messages(messages),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if tools:
            request["tools"] = tools
        if params.top_k > 0:
            request["extra_body"] = {"top_k": params.top_k}  # a vLLM extension; hosted APIs may refuse it
        if params.seed is not None:
            request["seed"] = params.seed
        if params.stop:
            request["stop"] = params.stop
        try:
            reply = self._call(lambda: self._chat(request, on_text))
        except _ContextFull:
            return Completion(text="", finish_reason="context", prompt_tokens=self.count_tokens(messages, tools))
        return self._completion(reply, messages, tools)

    def count_tokens(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> int:
        """Characters times the tokens-per-character the server last reported (4 chars a token before that)."""
        return math.ceil(_chars(messages, tools) * self._tokens_per_char)

    def close(self) -> None:
        self.client.close()

    # --- one request: the client retries, failures become one line ---------------

    def _chat(self, request: dict, on_text: Callable[[str], None] | None) -> dict:
        """The reply as one chat.completion-like dict, streamed pieces sent to on_text on the way."""
        started = time.monotonic()
        if on_text is None:
            reply = self.client.chat.completions.create(**request)
            if not isinstance(reply, openai.BaseModel):  # the client hands back a body it could not read as JSON
                raise OpenAIBackendError(
                    f"The server at {self.base_url} sent a reply that is not an OpenAI API response "
                    f"({str(reply)[:120]!r}); is OPENAI_BASE_URL an OpenAI-compatible API (usually ending in /v1)?"
                )
            reply = reply.to_dict(warnings=False)
            reply["_seconds"] = (0.0, time.monotonic() - started)
            return reply
        stream = self.client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        return _fold_stream(stream, on_text, started, self.base_url)

    def _call(self, request_once):
        """Run one client request; its exceptions (after the client's own retries) as OpenAIBackendError."""
        try:
            return request_once()
        except openai.APIStatusError as exc:
            raise self._status_error(exc) from None
        except openai.APIConnectionError as exc:  # timeouts included; the client retried them
            what = "timed out" if isinstance(exc, openai.APITimeoutError) else f"cannot connect ({_cause(exc)})"
            raise self._gave_up(what) from None
        except openai.APIResponseValidationError as exc:
            raise OpenAIBackendError(
                f"The server at {self.base_url} sent a reply that is not an OpenAI API response ({exc.message}); "
                "is OPENAI_BASE_URL an OpenAI-compatible API (usually ending in /v1)?"
            ) from None
        except openai.APIError as exc:  # an error event inside a stream
            raise OpenAIBackendError(f"The server at {self.base_url} failed mid-reply: {exc.message}") from None

    def _gave_up(self, last: str) -> OpenAIBackendError:
        return OpenAIBackendError(
            f"The OpenAI-compatible server at {self.base_url} failed {self.max_retries + 1} times; last: {last}. "
            "Check that it is running and reachable (for example `loopcoder serve --model DIR`, or set OPENAI_BASE_URL)."
        )

    def _status_error(self, exc: openai.APIStatusError) -> Exception:
        status = exc.status_code
        error = exc.body if isinstance(exc.body, dict) else {}
        message = error.get("message") if isinstance(error.get("message"), str) else exc.response.text.strip()[:300]
        if status in (408, 409, 429) or status >= 500:
            wait = exc.response.headers.get("retry-after", "")
            if wait.replace(".", "", 1).isdigit() and float(wait) > MAX_RETRY_AFTER:
                return OpenAIBackendError(
                    f"The server at {self.base_url} answered HTTP {status} ({message}) and asked to retry after "
                    f"{wait} s, longer than the client waits ({MAX_RETRY_AFTER} s). Try again later."
                )
            return self._gave_up(f"HTTP {status}: {message}")
        if error.get("code") == "context_length_exceeded" or "context length" in str(message).lower():
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

    def _completion(self, reply: dict, messages: list[Message], tools: list[ToolSchema] | None) -> Completion:
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


def _fold_stream(stream, on_text: Callable[[str], None], started: float, base_url: str) -> dict:
    """Fold the client's chat.completion.chunk events into one reply dict."""
    content: list[str] = []
    calls: dict[int, dict] = {}
    finish, usage, first = None, None, None
    with stream:
        try:
            for chunk in stream:
                event = chunk.to_dict(warnings=False) if isinstance(chunk, openai.BaseModel) else {}
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
        except openai.APIConnectionError as exc:  # the client retries requests, not a stream that breaks
            raise OpenAIBackendError(
                f"The stream from {base_url} broke after {len(''.join(content))} characters ({_cause(exc)}); "
                "a streamed reply is not retried, since its text already went out."
            ) from None
        except ValueError as exc:  # an event whose data is not JSON
            raise OpenAIBackendError(
                f"The server at {base_url} sent a stream event that is not JSON ({exc}); is OPENAI_BASE_URL an "
                "OpenAI-compatible API (usually ending in /v1)?"
            ) from None
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
    """An OpenAI tool call as the Hermes block the model writes; arguments that are not JSON stay a string."""
    fn = call["function"]
    try:
        arguments = json.loads(fn["arguments"]) if fn["arguments"].strip() else {}
    except (ValueError, RecursionError):
        arguments = fn["arguments"]
    return render_tool_call(fn["name"], arguments)


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


def _cause(exc: BaseException) -> str:
    """The innermost reason of a client exception, e.g. 'Connection refused'."""
    for _ in range(8):  # chains are short; bounded all the same
        if (inner := exc.__cause__ or exc.__context__) is None:
            break
        exc = inner
    return str(exc) or type(exc).__name__
