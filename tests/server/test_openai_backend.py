"""The `openai` backend against real loopback servers: a flaky one, and `loopcoder serve`'s own."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.runtime.backends.openai_backend import OpenAIBackend, OpenAIBackendError
from loopcoder.runtime.toolcalls import parse_tool_calls
from tests.server.conftest import ScriptedBackend

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 8}},
}


class Flaky:
    """A loopback server that answers the first requests with the given failures, then REPLY.

    A failure is (status, headers) or (status, headers, body bytes sent as they are); status 0
    drops the connection without an answer."""

    def __init__(self, failures: list[tuple]):
        self.failures = list(failures)
        self.requests: list[dict] = []
        self.keys: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                outer.keys.append(self.headers.get("Authorization"))
                status, headers, *raw = outer.failures.pop(0) if outer.failures else (200, {})
                if status == 0:  # drop the connection without an answer
                    self.close_connection = True
                    return
                body = raw[0] if raw else json.dumps(
                    REPLY if status == 200 else {"error": {"message": "busy", "type": "x", "param": None, "code": None}}
                ).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers:  # a longer one given: the body breaks off
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky():
    made = []

    def make(failures):
        made.append(Flaky(failures))
        return made[-1]

    yield make
    for f in made:
        f.close()


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The client's waits between retries, recorded instead of waited."""
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    return waits


def backend_for(url: str, **options) -> OpenAIBackend:
    return OpenAIBackend(base_url=url, model="m", api_key="k", context_window=100, **options)


def test_retries_429_and_5xx_with_backoff_and_retry_after(flaky, slept):
    server = flaky([(429, {"Retry-After": "7"}), (500, {}), (503, {}), (0, {})])
    backend = backend_for(server.url)
    done = backend.complete([{"role": "user", "content": "hi"}], params=GenerationParams(max_new_tokens=5))
    assert done.text == "fine" and done.finish_reason == "stop"
    assert (done.prompt_tokens, done.reused_tokens, done.prefilled_tokens, done.completion_tokens) == (12, 8, 4, 1)
    assert len(server.requests) == 5
    assert slept[0] == 7.0  # Retry-After wins over the backoff
    assert 0.5 * 2 * 0.75 <= slept[1] <= 0.5 * 2 and 0.5 * 4 * 0.75 <= slept[2] <= 0.5 * 4  # doubling
    assert server.requests[0]["max_tokens"] == 5 and server.requests[0]["model"] == "m"


def test_settings_from_the_environment(flaky, monkeypatch):
    server = flaky([])
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("LOOPCODER_OPENAI_MODEL", "env-model")
    assert OpenAIBackend(context_window=100).complete([{"role": "user", "content": "hi"}]).text == "fine"
    assert server.requests[0]["model"] == "env-model" and server.keys == ["Bearer sk-env"]


def test_gives_up_after_max_retries_with_a_clear_message(flaky, slept):
    server = flaky([(500, {})] * 10)
    backend = backend_for(server.url, max_retries=2)
    with pytest.raises(OpenAIBackendError, match=r"failed 3 times; last: HTTP 500: busy"):
        backend.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 3 and len(slept) == 2


def test_client_errors_are_not_retried(flaky, slept):
    server = flaky([(400, {})])
    backend = backend_for(server.url)
    with pytest.raises(OpenAIBackendError, match=r"refused the request \(HTTP 400\): busy"):
        backend.complete([{"role": "user", "content": "hi"}])
    assert len(server.requests) == 1 and slept == []


def test_unreachable_server_says_what_to_do(slept):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = backend_for(f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(OpenAIBackendError) as err:
        backend.complete([{"role": "user", "content": "hi"}])
    assert "cannot connect" in str(err.value) and "loopcoder serve" in str(err.value) and len(slept) == 1


def test_replies_that_are_not_the_api_are_one_line_errors(flaky, slept):
    html = b"<html><body>Welcome to nginx!</body></html>"
    server = flaky([(200, {"Content-Type": "text/html"}, html), (200, {"Content-Type": "application/json"}, b"[1, 2]"),
                    (429, {"Retry-After": "3600"})])
    backend = backend_for(server.url)
    for _ in range(2):  # a web page, then JSON that is not an object: no crash, an empty reply or a clear error
        try:
            done = backend.complete([{"role": "user", "content": "hi"}])
        except OpenAIBackendError as exc:
            assert "\n" not in str(exc) and server.url in str(exc)
        else:
            assert done.text == "" and done.tool_calls is None
    with pytest.raises(OpenAIBackendError, match=r"HTTP 429 \(busy\) and asked to retry after 3600 s"):
        backend.complete([{"role": "user", "content": "hi"}])
    assert slept == []  # nothing was retried


def test_streams_that_fail_say_so_in_one_line(flaky, slept):
    text = 'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"par"}}]}\n\n'
    error = 'data: {"error":{"message":"the GPU fell over","type":"server_error"}}\n\n'
    stream = {"Content-Type": "text/event-stream"}
    server = flaky([(200, stream, (text + error).encode()), (200, {**stream, "Content-Length": "100000"}, text.encode()),
                    (200, stream, (text + "data: {not json\n\n").encode())])
    backend = backend_for(server.url)
    pieces: list[str] = []
    with pytest.raises(OpenAIBackendError, match="failed mid-reply: the GPU fell over"):
        backend.complete([{"role": "user", "content": "hi"}], on_text=pieces.append)
    with pytest.raises(OpenAIBackendError, match=r"stream .* broke after 3 characters .*not retried") as broke:
        backend.complete([{"role": "user", "content": "hi"}], on_text=pieces.append)
    with pytest.raises(OpenAIBackendError, match=r"stream event that is not JSON"):
        backend.complete([{"role": "user", "content": "hi"}], on_text=pieces.append)
    assert "\n" not in str(broke.value) and pieces == ["par"] * 3 and len(server.requests) == 3 and slept == []


def test_timeouts_are_retried_then_reported(slept):
    with socket.socket() as quiet:  # accepts connections, never answers
        quiet.bind(("127.0.0.1", 0))
        quiet.listen()
        backend = backend_for(f"http://127.0.0.1:{quiet.getsockname()[1]}/v1", timeout=0.2, max_retries=1)
        with pytest.raises(OpenAIBackendError, match=r"failed 2 times; last: timed out"):
            backend.complete([{"role": "user", "content": "hi"}])
    assert len(slept) == 1


def test_loopback_never_goes_through_a_proxy(flaky, monkeypatch):
    server = flaky([])
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert backend_for(server.url, max_retries=0).complete([{"role": "user", "content": "hi"}]).text == "fine"


def test_against_loopcoder_serve(serve):
    call = '<tool_call>\n{"name": "view", "arguments": {"path": "a.py"}}\n</tool_call>'
    served = serve(lambda: ScriptedBackend([f"Looking.\n{call}", "plain answer"], context_window=600), api_key="sk-test")
    tools = [{"type": "function", "function": {"name": "view", "parameters": {"type": "object"}}}]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "show a.py"}]

    wrong = OpenAIBackend(base_url=served.url, api_key="nope", max_retries=0)
    with pytest.raises(OpenAIBackendError, match="rejected the API key"):
        wrong.complete(messages)

    backend = OpenAIBackend(base_url=served.url, api_key="sk-test")
    assert backend.model == "tiny" and backend.context_window == 600  # asked of /v1/models
    pieces: list[str] = []
    first = backend.complete(messages, tools, GenerationParams(max_new_tokens=100), on_text=pieces.append)
    assert "".join(pieces) == "Looking."
    assert first.tool_calls and first.tool_calls[0]["function"]["name"] == "view" and first.tool_calls[0]["id"]
    parsed = parse_tool_calls(first.text)
    assert [(c.name, c.arguments) for c in parsed.calls] == [("view", {"path": "a.py"})] and parsed.content == "Looking."
    assert first.reused_tokens == 0 and first.prefilled_tokens == first.prompt_tokens > 0

    history = messages + [
        {"role": "assistant", "content": "Looking.", "tool_calls": first.tool_calls},
        {"role": "tool", "content": "1 print('hi')"},  # no tool_call_id: the backend points it at the call
    ]
    second = backend.complete(history, tools, GenerationParams(max_new_tokens=100))
    assert second.text == "plain answer" and second.tool_calls is None
    assert second.reused_tokens >= first.prompt_tokens and second.prefilled_tokens == second.prompt_tokens - second.reused_tokens
    assert backend.count_tokens(history, tools) == pytest.approx(second.prompt_tokens, rel=0.05)  # calibrated by usage

    huge = [{"role": "user", "content": "x" * 2000}]
    assert backend.complete(huge).finish_reason == "context"
    with pytest.raises(OpenAIBackendError, match="404"):
        OpenAIBackend(base_url=served.url, api_key="sk-test", model="other").complete(messages)
