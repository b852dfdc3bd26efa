"""What a stream must hold back: the end of the text that may be the start of a marker.

Stop strings (runtime.sampling), tool-call tags hidden from the terminal
(agent.view) and tool-call markers kept out of streamed content (server.reply)
all hold back the same way: nothing is sent that a later piece could turn into
a marker.
"""
from __future__ import annotations

from typing import Iterable


def held_back(text: str, markers: Iterable[str]) -> int:
    """Length of the longest end of `text` that is a proper prefix of one of `markers` (0 when none)."""
    best = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:n]):
                best = n
                break
    return best
