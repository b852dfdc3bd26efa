"""What the user sees: the live view of a run, and a recorded run step by step.

The live view streams the model's prose as it is generated and hides the raw
`<tool_call>` JSON, which it shows instead as one readable line per call
followed by the head of the observation.
"""
from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from agent.loop import Listener, RunResult, Status
from agent.toolcalls import CLOSE, OPEN, ToolCall
from tools.base import Observation

OBSERVATION_LINES = 8
STATUS_STYLE = {Status.SUBMITTED: "green", Status.REPLIED: "green", Status.INTERRUPTED: "yellow",
                Status.ERROR: "red"}


class CallHider:
    """Streamed text minus `<tool_call>...</tool_call>` blocks, even when tags arrive split across pieces."""

    def __init__(self):
        self.buf = ""
        self.inside = False

    def feed(self, piece: str) -> str:
        self.buf += piece
        out = []
        while True:
            tag = CLOSE if self.inside else OPEN
            i = self.buf.find(tag)
            if i >= 0:
                if not self.inside:
                    out.append(self.buf[:i])
                self.buf = self.buf[i + len(tag):]
                self.inside = not self.inside
                continue
            keep = _partial_tag(self.buf, tag)
            if not self.inside:
                out.append(self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return "".join(out)

    def flush(self) -> str:
        rest = "" if self.inside else self.buf
        self.buf, self.inside = "", False
        return rest


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of `text` that could be the start of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


def call_summary(name: str, arguments: dict, width: int = 160) -> str:
    """One line a person can read: the command for bash, command + path for the editor, else the values."""
    if name == "bash" and isinstance(arguments.get("command"), str):
        text = arguments["command"]
    elif isinstance(arguments.get("command"), str) and isinstance(arguments.get("path"), str):
        text = f"{arguments['command']} {arguments['path']}"
    elif all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v))
             for v in arguments.values()):
        text = " ".join(v if isinstance(v, str) else " ".join(v) for v in arguments.values())
    else:
        text = json.dumps(arguments, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def observation_head(text: str, lines: int = OBSERVATION_LINES) -> str:
    parts = text.rstrip("\n").splitlines()
    if len(parts) <= lines:
        return "\n".join(parts)
    return "\n".join(parts[:lines]) + f"\n... ({len(parts) - lines} more lines)"


class LiveView(Listener):
    """Prints a run as it happens."""

    def __init__(self, console: Console):
        self.console = console
        self.hider = CallHider()
        self.at_line_start = True

    def _write(self, text: str) -> None:
        if text:
            self.console.out(text, end="", highlight=False)
            self.at_line_start = text.endswith("\n")

    def end_text(self) -> None:
        self._write(self.hider.flush())
        if not self.at_line_start:
            self.console.out("")
            self.at_line_start = True

    def on_step(self, index: int) -> None:
        self.end_text()
        self.console.rule(f"[dim]step {index + 1}[/]", align="left", style="dim")

    def on_text(self, piece: str) -> None:
        self._write(self.hider.feed(piece))

    def on_call(self, call: ToolCall) -> None:
        self.end_text()
        self.console.print(f"[bold cyan]> {escape(call.name)}[/] {escape(call_summary(call.name, call.arguments))}")

    def on_observation(self, call: ToolCall, observation: Observation) -> None:
        style = "red" if observation.is_error else "dim"
        head = observation_head(observation.text)
        if head:
            self.console.print(f"[{style}]{escape(head)}[/]")

    def on_notice(self, text: str) -> None:
        self.end_text()
        self.console.print(f"[yellow]! {escape(observation_head(text, 3))}[/]")

    def show_result(self, result: RunResult, trajectory_path: str | None) -> None:
        self.end_text()
        show_patch(self.console, result.patch)
        style = STATUS_STYLE.get(result.status, "magenta")
        self.console.print(f"[bold {style}]{result.status}[/]: {escape(result.reason)} ({result.steps} steps)")
        if trajectory_path:
            self.console.print(f"[dim]trajectory: {escape(trajectory_path)}[/]")


def show_patch(console: Console, patch: str) -> None:
    if patch:
        console.rule("[bold]diff[/]", align="left")
        console.print(Syntax(patch, "diff", theme="ansi_dark", word_wrap=True))
    else:
        console.print("[dim]no changes[/]")


def show_trajectory(console: Console, data: dict, full: bool = False) -> None:
    """A recorded run step by step: model text, calls, observations (heads unless full), status, patch."""
    header = Table.grid(padding=(0, 2))
    task, repo, exit_ = data.get("task") or {}, data.get("repo") or {}, data.get("exit") or {}
    totals = data.get("totals") or {}
    rows = [
        ("task", (task.get("text") or "").strip().splitlines()[0][:200] if task.get("text") else task.get("kind", "")),
        ("repo", f"{repo.get('path')} @ {str(repo.get('base_commit'))[:12]}"),
        ("backend", str((data.get("backend") or {}).get("name"))),
        ("status", f"{exit_.get('status') or 'running'}: {exit_.get('reason') or ''}"),
        ("totals", f"{totals.get('steps', 0)} steps, {totals.get('prompt_tokens', 0)} prompt / "
                   f"{totals.get('completion_tokens', 0)} generated tokens, {totals.get('seconds', 0):.1f} s"),
    ]
    for key, value in rows:
        header.add_row(f"[bold]{key}[/]", escape(value))
    console.print(header)
    inputs = {item["step"]: item["text"] for item in data.get("inputs", [])[1:]}
    limit = None if full else OBSERVATION_LINES
    for step in data.get("steps", []):
        index = step.get("index", 0)
        if index in inputs:
            console.print(f"[bold green]user>[/] {escape(inputs[index])}")
        console.rule(f"step {index + 1}", align="left", style="dim")
        if step.get("content"):
            console.print(escape(step["content"]))
        for obs in step.get("observations", []):
            console.print(f"[bold cyan]> {escape(obs['name'])}[/] {escape(call_summary(obs['name'], obs['arguments']))}")
            text = obs["text"] if limit is None else observation_head(obs["text"], limit)
            console.print(f"[{'red' if obs.get('is_error') else 'dim'}]{escape(text)}[/]")
        for notice in step.get("notices", []):
            console.print(f"[yellow]! {escape(notice if full else observation_head(notice, 3))}[/]")
    console.rule(align="left", style="dim")
    if exit_.get("traceback") and full:
        console.print(f"[red]{escape(exit_['traceback'])}[/]")
    if data.get("patch") is not None:
        show_patch(console, data["patch"])
