"""The hostile requests of issue #19 on real loopback HTTP: each gets its 4xx in the OpenAI shape
at once, and none of them holds up a well-behaved client."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time

from loopcoder.server import Limits
from tests.server.conftest import ScriptedBackend
from tests.server.test_http_errors import OK_BODY, assert_error, post

SLOW = 5.0  # seconds: far above what a 4-token reply takes, far below what the old server took (9 s, 120 s)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """The status and JSON body of the reply to a request written by hand on `sock`."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, json.loads(response.read())


def timed_post(port: int, body: dict, headers: dict | None = None) -> tuple[float, int, dict]:
    start = time.monotonic()
    status, reply = post(port, body, headers=headers)
    return time.monotonic() - start, status, reply


def test_a_small_request_is_served_while_an_8_mb_prompt_is_rejected(plt_server):
    """The prompt's size is checked before it is tokenized, off the event loop and outside the model lock."""
    port = plt_server.port
    small = {**OK_BODY, "max_tokens": 4}
    timed_post(port, small)  # warm: the first generation builds the session
    huge = json.dumps({**OK_BODY, "messages": [{"role": "user", "content": "x" * 8_000_000}]}).encode()
    rejected: list = []
    uploaded = threading.Event()

    def send_huge() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(huge) + huge)
            uploaded.set()
            start = time.monotonic()
            reply = read_response(sock)
            rejected.append((time.monotonic() - start, reply))

    thread = threading.Thread(target=send_huge)
    thread.start()
    assert uploaded.wait(30)
    time.sleep(0.5)  # the old server was tokenizing it by now, holding the model lock for ~9 s
    seconds, status, reply = timed_post(port, small)
    thread.join(30)
    assert status == 200 and reply["usage"]["completion_tokens"] <= 4
    assert seconds < SLOW, f"a 4-token request took {seconds:.2f} s while an 8 MB prompt was being rejected"
    (rejection_seconds, (status, body)), = rejected
    assert_error(status, body, 400, "context_length_exceeded", "messages")
    assert rejection_seconds < SLOW
    print(f"4-token request: {seconds:.3f} s; 8 MB prompt rejected {rejection_seconds:.3f} s after its upload")


class BlockingBackend(ScriptedBackend):
    """Generation waits for `release`, so requests pile up in the server."""

    def __init__(self, release: threading.Event):
        super().__init__(["ok"])
        self.release = release
        self.started = threading.Semaphore(0)

    def complete(self, *args, **kwargs):
        self.started.release()
        self.release.wait(30)
        return super().complete(*args, **kwargs)


def test_requests_beyond_the_queue_get_429_and_the_queued_ones_are_served(serve):
    release = threading.Event()
    backend = BlockingBackend(release)
    served = serve(lambda: backend, limits=Limits(max_queue=3))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(post(served.port, OK_BODY))) for _ in range(3)]
    for t in threads:
        t.start()
    assert backend.started.acquire(timeout=10)  # one generating, two queued behind it
    deadline = time.monotonic() + 10
    while served.server.app.in_server < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    seconds, status, reply = timed_post(served.port, OK_BODY)
    assert_error(status, reply, 429, "server_busy")
    assert seconds < SLOW
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    conn.request("GET", "/v1/models")  # listing the model is never queued
    assert conn.getresponse().status == 200
    release.set()
    for t in threads:
        t.join(30)
    assert [status for status, _ in results] == [200, 200, 200]


def test_a_body_shorter_than_its_content_length_is_dropped_after_the_read_timeout(serve):
    served = serve(lambda: ScriptedBackend(["ok"]), limits=Limits(read_timeout=1.0))
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as stalled:
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"model\"")
        start = time.monotonic()
        seconds, status, _ = timed_post(served.port, OK_BODY)  # meanwhile, others are served
        assert status == 200 and seconds < SLOW
        status, body = read_response(stalled)
        waited = time.monotonic() - start
    assert_error(status, body, 408, "request_timeout")
    assert 0.5 < waited < SLOW


def test_a_50_mb_body_without_the_key_gets_401(serve):
    served = serve(lambda: ScriptedBackend(["ok"]), api_key="s3cret")
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"x" * 50_000_000 + b'"}]}'
    status, reply = post(served.port, body)
    assert_error(status, reply, 401, "invalid_api_key")
    status, reply = post(served.port, body, headers={"Authorization": "Bearer s3cret"})
    assert_error(status, reply, 413, "request_too_large")
    status, _ = post(served.port, OK_BODY, headers={"Authorization": "Bearer s3cret"})
    assert status == 200
