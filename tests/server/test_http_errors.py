"""Malformed and hostile requests: each gets a 4xx in the OpenAI error shape, and the server keeps serving."""
from __future__ import annotations

import http.client
import json
import socket

import pytest

from loopcoder.server import Limits
from tests.server.conftest import ScriptedBackend

OK_BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def post(port: int, body, path: str = "/v1/chat/completions", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, json.loads(payload)


def raw(port: int, data: bytes, reset_ok: bool = False) -> bytes | None:
    """What the server sends back to `data`; None when it reset the connection (only with reset_ok)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            if not reset_ok:
                raise
            return None
    return b"".join(chunks)


def assert_error(status: int, body: dict, want_status: int, code: str | None = None, param: str | None = None):
    assert status == want_status, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param


@pytest.fixture
def server(serve):
    return serve(lambda: ScriptedBackend(["hello there"], context_window=400), limits=Limits(max_body_bytes=20_000))


def with_(**changes):
    return {**OK_BODY, **changes}


BAD_REQUESTS = [
    # (body, status, code, param)
    (b"{not json", 400, None, None),
    (b"\xff\xfe\x00garbage", 400, None, None),
    (b"[" * 100_00 + b"]" * 100_00, 400, None, None),  # nested too deeply, within the size limit
    (b'"just a string"', 400, None, None),
    ({"messages": OK_BODY["messages"]}, 400, None, "model"),
    (with_(model="gpt-4o"), 404, "model_not_found", "model"),
    (with_(model=["tiny"]), 400, None, "model"),
    ({"model": "tiny"}, 400, None, "messages"),
    (with_(messages=[]), 400, None, "messages"),
    (with_(messages="hi"), 400, None, "messages"),
    (with_(messages=[{"role": "wizard", "content": "hi"}]), 400, None, "messages[0].role"),
    (with_(messages=[{"role": "user"}]), 400, None, "messages[0].content"),
    (with_(messages=[{"role": "user", "content": 42}]), 400, None, "messages[0].content"),
    (with_(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), 400, None, "messages[0].content[0].type"),
    (with_(messages=["hi"]), 400, None, "messages[0]"),
    (with_(max_tokens=-5), 400, None, "max_tokens"),
    (with_(max_tokens=0), 400, None, "max_tokens"),
    (with_(max_tokens="10"), 400, None, "max_tokens"),
    (with_(max_completion_tokens=True), 400, None, "max_completion_tokens"),
    (with_(temperature="hot"), 400, None, "temperature"),
    (with_(temperature=7), 400, None, "temperature"),
    (with_(top_p=0), 400, None, "top_p"),
    (with_(stream="yes"), 400, None, "stream"),
    (with_(stop=[1, 2]), 400, None, "stop[0]"),
    (with_(stop=["s"] * 17), 400, None, "stop"),
    (with_(seed=10**30), 400, None, "seed"),
    (with_(top_k=-1), 400, None, "top_k"),
    (with_(temperature=float("inf")), 400, None, "temperature"),
    (with_(seed=1.5), 400, None, "seed"),
    (with_(n=3), 400, None, "n"),
    (with_(tools={"name": "x"}), 400, None, "tools"),
    (with_(tools=[{"type": "function", "function": {"name": ""}}]), 400, None, "tools[0].function.name"),
    (with_(tools=[{"type": "function", "function": {"name": "a"}}], tool_choice={"type": "function", "function": {"name": "rm_rf"}}),
     400, None, "tool_choice"),
    (with_(tool_choice="required"), 400, None, "tool_choice"),
    (with_(messages=[{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_nope", "content": "x"}]),
     400, None, "messages[1].tool_call_id"),
    (with_(messages=[{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "a", "arguments": "[1]"}}]}]),
     400, None, "messages[0].tool_calls[0].function.arguments"),
    (with_(messages=[{"role": "user", "content": "x" * 500}]), 400, "context_length_exceeded", "messages"),
]


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    for body, status, code, param in BAD_REQUESTS:
        got_status, got = post(server.port, body)
        assert_error(got_status, got, status, code, param)
    status, body = post(server.port, OK_BODY)
    assert status == 200 and body["choices"][0]["message"]["content"] == "hello there"
    status, body = post(server.port, with_(max_tokens=100_000))  # more than fits: cut at the window
    assert status == 200 and server.backends[0].calls[-1].max_new_tokens == 400 - body["usage"]["prompt_tokens"]


def test_transport_level_abuse(server):
    status, body = post(server.port, b"{" + b" " * 3_000_000 + b"}")  # read and dropped: the client gets the 413
    assert_error(status, body, 413, "request_too_large")
    status, body = post(server.port, OK_BODY, path="/v1/completions")
    assert_error(status, body, 404)

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("DELETE", "/v1/models")
    resp = conn.getresponse()
    assert_error(resp.status, json.loads(resp.read()), 405)
    conn.close()

    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),  # a TLS hello
        b"GARBAGE\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\n\r\n",  # no Host
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\"",  # body cut short
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        # A request line over h11's limit is answered (431/400) before all of it is read; closing with input
        # unread makes the kernel send a reset, which may reach the client before it reads the answer.
        reply = raw(server.port, garbage, reset_ok=len(garbage) > 65_536)
        if reply is None:
            continue
        status_line = reply.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 4"), (garbage[:40], reply[:200])
        assert b'"error"' in reply

    reply = raw(server.port, b"")  # connect and hang up at once
    assert reply == b""
    status, body = post(server.port, OK_BODY)
    assert status == 200


def test_api_key_is_required_when_set(serve):
    served = serve(lambda: ScriptedBackend(["ok"]), api_key="s3cret")
    status, body = post(served.port, OK_BODY)
    assert_error(status, body, 401, "invalid_api_key")
    status, body = post(served.port, OK_BODY, headers={"Authorization": "Bearer s3cret"})
    assert status == 200


def test_models_lists_the_served_name_and_window(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/v1/models")
    body = json.loads(conn.getresponse().read())
    assert [m["id"] for m in body["data"]] == ["tiny"]
    assert body["data"][0]["max_model_len"] == 400
    conn.request("GET", "/v1/models/nope")
    resp = conn.getresponse()
    assert_error(resp.status, json.loads(resp.read()), 404)
    conn.close()


def test_client_hanging_up_mid_stream(serve):
    backend = ScriptedBackend(["word " * 20_000], seconds_per_piece=0.001)  # ~35 s if it ran to the end
    served = serve(lambda: backend)
    body = json.dumps({**OK_BODY, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    status, reply = post(served.port, {**OK_BODY, "max_tokens": 10})
    assert status == 200 and reply["choices"][0]["message"]["content"] == "word word "
    assert backend.finished == 1  # the follow-up; the stream stopped when its client left
