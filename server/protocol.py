"""uvicorn's h11 protocol with two changes for hostile clients.

1. What the HTTP parser itself refuses (a TLS hello, a garbage request line,
   a bad Content-Length, headers over the size limit) is answered in the OpenAI
   error shape, not as plain text.
2. A client that half-closes its side: mid-body, it is told its body ended
   short (a 400) at once; after a whole request, the connection stays open
   for the reply and closes after it. (uvicorn closes on end of input, so such
   a client would get no answer at all.)
"""
from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from loopcoder.server.errors import ApiError

HINT = "This is an OpenAI-compatible API: POST JSON to /v1/chat/completions."


class OpenAIH11Protocol(H11Protocol):
    _peer_done = False

    def send_400_response(self, msg: str) -> None:
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            cut_short = self.conn.their_state is h11.SEND_BODY
            error = "The request body ended before its Content-Length" if cut_short else "The request is not valid HTTP/1.1"
            body = json.dumps(ApiError(400, f"{error}. {HINT}").body()).encode()
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (len(body), body))
        self.transport.close()

    def eof_received(self) -> bool | None:
        if self.conn.their_state is h11.SEND_BODY:
            if self.cycle is None or not self.cycle.response_started:  # else: answered already (a 401, a 413)
                self.send_400_response("client ended its request body early")
            return None
        if self.conn.their_state is h11.DONE and not (self.cycle is None or self.cycle.response_complete):
            self._peer_done = True
            return True  # keep the transport open to write the reply
        return None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._peer_done and not self.transport.is_closing():
            self.transport.close()
