"""Reading and writing source files as text without changing what the edit did not touch.

Files are kept byte-exact: UTF-8 (or, failing that, Latin-1, which maps every
byte) is written back in the same encoding, tabs are not expanded, a missing
final newline stays missing, and a file with CRLF line endings is edited with
LF (what the model writes) and written back with CRLF.
"""
from __future__ import annotations

from dataclasses import dataclass

BINARY_SNIFF = 8192  # bytes looked at for a NUL, as git does


@dataclass
class TextFile:
    text: str  # with "\n" line endings
    encoding: str
    crlf: bool

    def encode(self, text: str) -> bytes:
        """`text` (LF endings) as bytes in this file's encoding and line endings; UnicodeEncodeError if it cannot be."""
        if self.crlf:
            text = text.replace("\r\n", "\n").replace("\n", "\r\n")
        return text.encode(self.encoding)

    def normalise(self, text: str) -> str:
        """Model-given text in the form `self.text` uses (LF endings even if the model copied CRLF)."""
        return text.replace("\r\n", "\n") if self.crlf else text


def is_binary(data: bytes) -> bool:
    return b"\0" in data[:BINARY_SNIFF]


def decode(data: bytes) -> TextFile:
    try:
        text, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    crlf = "\r\n" in text and text.count("\r\n") == text.count("\n")
    return TextFile(text.replace("\r\n", "\n") if crlf else text, encoding, crlf)


def split_lines(text: str) -> list[str]:
    """The lines `cat -n` would number: split on "\\n" only, no empty line after a final newline."""
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return lines


def numbered(lines: list[str], first: int = 1) -> str:
    """`cat -n` style: the line number right-aligned in 6 columns, a tab, the line as it is."""
    return "\n".join(f"{number:6}\t{line}" for number, line in enumerate(lines, first))
