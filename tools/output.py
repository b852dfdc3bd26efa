"""Making command output fit the model's context: one head + tail truncation, one cleaner.

Every tool that can produce long text goes through `truncate` (or `elide` when
the head and tail were cut elsewhere, e.g. inside the sandbox), so the model
always sees the same kind of note saying what was cut and how to see it.
"""
from __future__ import annotations

import re

OUTPUT_LIMIT = 10_000  # characters of shell / test / search output shown to the model
_LINE_SNAP = 0.2  # move a cut to a line boundary when one is this close (fraction of the half)

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def printable(text: str) -> str:
    """Drop terminal colour/cursor escapes and replace other control bytes, so binary output is safe to show."""
    return _CONTROL.sub("\ufffd", _ANSI.sub("", text))


def replace_unprintable(text: str) -> str:
    """Every character a terminal would not print as itself (escapes, newlines, tabs) as `?`: for one line
    of someone else's text inside ours (a log line, a test command in an outcome)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def elide(head: str, tail: str, cut: str, hint: str = "") -> str:
    """Join a kept head and tail around one note saying what was cut (`cut`) and how to see it (`hint`)."""
    note = f"[... {cut} cut from the middle ...]" if not hint else f"[... {cut} cut from the middle; {hint} ...]"
    return f"{head}\n{note}\n{tail}"


def at_lines(head: str, tail: str) -> tuple[str, str]:
    """Move the cuts after `head` and before `tail` to line boundaries when one is near."""
    newline = head.rfind("\n")
    if newline >= len(head) * (1 - _LINE_SNAP):
        head = head[:newline]
    newline = tail.find("\n")
    if 0 <= newline <= len(tail) * _LINE_SNAP:
        tail = tail[newline + 1 :]
    return head, tail


def truncate(text: str, limit: int = OUTPUT_LIMIT, hint: str = "") -> str:
    """Keep about `limit` characters: the head and the tail, cut at line boundaries when one is near."""
    if len(text) <= limit:
        return text
    half = max(limit // 2, 1)
    head, tail = at_lines(text[:half], text[len(text) - half :])
    middle = text[len(head) : len(text) - len(tail)]
    lines = middle.count("\n")
    cut = f"{len(middle):,} characters" + (f" ({lines:,} lines)" if lines > 1 else "")
    return elide(head, tail, cut, hint)
