"""Scripted assistant turns: tests, demos and `loopcoder replay` without a model.

The script is a list of raw assistant outputs, read from a JSON list of
strings, a JSONL file (one JSON string, or an object with "raw_output" or
"text", per line) or a trajectory file (its steps' "raw_output"). Each call to
`complete` returns the next one, streamed through `on_text` in small pieces
like a real model.

When the script runs out the backend answers with a `submit` call, so an agent
run ends the normal way (status "submitted", with the diff of whatever the
script did) instead of failing on empty turns; `exhausted` tells whether that
happened.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from loopcoder.runtime.backends.base import Completion, GenerationParams, Message, ToolSchema
from loopcoder.runtime.toolcalls import render_tool_call

SUBMIT_CALL = render_tool_call("submit", {})
_PIECES = re.compile(r"\s*\S+|\s+")


class ReplayScriptError(ValueError):
    """A script file that cannot be read as a list of outputs."""


def load_script(path: str | Path) -> list[str]:
    """Raw outputs from a JSON list, a JSONL file, a trajectory file or its journal (a run that did not finish)."""
    path = Path(path)
    if not path.exists() and path.with_suffix(".jsonl").is_file():
        path = path.with_suffix(".jsonl")  # the trajectory of a killed run is its journal
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReplayScriptError(f"cannot read replay script {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = _jsonl(path, text)
    if isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("event") == "start":
        data = {"steps": [*(data[0].get("data") or {}).get("steps", []),
                          *(item.get("step") for item in data[1:] if isinstance(item, dict) and item.get("event") == "step")]}
    if isinstance(data, dict) and isinstance(data.get("steps"), list):
        data = [step.get("raw_output") if isinstance(step, dict) else None for step in data["steps"]]
    if not isinstance(data, list):
        raise ReplayScriptError(f"{path}: expected a JSON list of strings, JSONL or a trajectory file")
    outputs = [_output(item) for item in data]
    if any(o is None for o in outputs):
        bad = next(i for i, o in enumerate(outputs) if o is None)
        raise ReplayScriptError(f"{path}: entry {bad} is not a string (or an object with a \"raw_output\"/\"text\" string)")
    return outputs


def _jsonl(path: Path, text: str) -> list:
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ReplayScriptError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
    return items


def _output(item) -> str | None:
    if isinstance(item, dict):
        item = item.get("raw_output", item.get("text"))
    return item if isinstance(item, str) else None


def approx_tokens(text: str) -> int:
    """About four characters per token: close enough for budgets without a tokenizer."""
    return (len(text) + 3) // 4


class ReplayBackend:
    """Returns scripted outputs in order; see the module docstring for the end of the script."""

    name = "replay"

    def __init__(self, script: list[str] | str | Path, context_window: int = 32768, tokenizer=None):
        self.outputs = list(script) if isinstance(script, list) else load_script(script)
        self.context_window = context_window
        self.tokenizer = tokenizer  # optional HF tokenizer with a chat template, for exact counts
        self.calls = 0

    @property
    def exhausted(self) -> bool:
        return self.calls > len(self.outputs)

    def complete(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        params: GenerationParams | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        text = self.outputs[self.calls] if self.calls < len(self.outputs) else SUBMIT_CALL
        self.calls += 1
        if on_text is not None:
            for piece in _PIECES.findall(text):
                on_text(piece)
        prompt = self.count_tokens(messages, tools)
        return Completion(text=text, finish_reason="stop", prompt_tokens=prompt,
                          completion_tokens=approx_tokens(text), prefilled_tokens=prompt)

    def count_tokens(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> int:
        if self.tokenizer is not None:
            return len(self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=True))
        text = "".join(str(m.get("content") or "") for m in messages)
        return approx_tokens(text + (json.dumps(tools) if tools else "")) + 4 * len(messages)

    def close(self) -> None:
        pass
