"""Bounded output capture: keep the head and the tail of a stream, count the rest.

A command that prints gigabytes must neither fill memory nor slow the read
loop, so bytes past the cap are only counted.
"""
from __future__ import annotations


class OutputCap:
    """Collects bytes, keeping the first `head` and the last `tail` of them."""

    def __init__(self, limit: int = 1 << 20):
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk[-self.tail_limit:]
            if len(self.tail) > 2 * self.tail_limit:  # trim rarely: amortised O(1) per byte
                del self.tail[: -self.tail_limit]

    @property
    def truncated(self) -> bool:
        return self.total > self.head_limit + self.tail_limit

    def text(self) -> str:
        """Decoded with replacement; a note marks where bytes were dropped."""
        tail = bytes(self.tail[-self.tail_limit:]) if self.tail_limit else b""
        if not self.truncated:  # one piece: a character split between head and tail stays whole
            return (bytes(self.head) + tail).decode("utf-8", errors="replace")
        omitted = self.total - len(self.head) - len(tail)
        note = f"\n[... {omitted} bytes of output omitted ...]\n"
        return self.head.decode("utf-8", errors="replace") + note + tail.decode("utf-8", errors="replace")
