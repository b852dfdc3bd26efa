"""What the user sees: the live view of a run, and a recorded run step by step.

The live view streams the model's prose as it is generated and hides the raw
`<tool_call>` JSON, which it shows instead as one readable line per call
followed by the head of the observation.
"""
from __future__ import annotations

import difflib
import json

from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table

from loopcoder.agent.loop import Listener, RunResult
from loopcoder.agent.outcome import Status, outcome_words, tally_from_dict
from loopcoder.runtime.holdback import held_back
from loopcoder.runtime.toolcalls import CLOSE, OPEN, ToolCall
from loopcoder.tools.base import Observation

OBSERVATION_LINES = 8
STATUS_STYLE = {Status.SUBMITTED: "green", Status.REPLIED: "green", Status.NO_CHANGE: "yellow",
                Status.INTERRUPTED: "yellow", Status.ERROR: "red"}


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
            keep = held_back(self.buf, (tag,))
            if not self.inside:
                out.append(self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return "".join(out)

    def flush(self) -> str:
        rest = "" if self.inside else self.buf
        self.buf, self.inside = "", False
        return rest


def relative(text: str, workdir: str | None) -> str:
    """`text` with the working copy's absolute path shown relative to the repository root."""
    root = (workdir or "").rstrip("/")
    if not root:
        return text
    return text.replace(root + "/", "").replace(root, ".")


def call_summary(name: str, arguments: dict, workdir: str | None = None) -> str:
    """The line after `> name`: a one-line bash command verbatim, the editor's command and path, else the values."""
    command = arguments.get("command")
    if name == "bash" and isinstance(command, str):
        return command if "\n" not in command else ""
    path = arguments.get("path")
    if name == "str_replace_editor" and isinstance(command, str) and isinstance(path, str):
        where = [command, relative(path, workdir)]
        if isinstance(arguments.get("view_range"), list):
            where.append(json.dumps(arguments["view_range"]))
        if command == "insert" and arguments.get("insert_line") is not None:
            where.append(f"after line {arguments['insert_line']}")
        return " ".join(where)
    values = {k: relative(v, workdir) if k == "path" and isinstance(v, str) else v for k, v in arguments.items()}
    if all(isinstance(v, str) or (isinstance(v, list) and all(isinstance(i, str) for i in v)) for v in values.values()):
        return " ".join(v if isinstance(v, str) else " ".join(v) for v in values.values())
    return json.dumps(values, ensure_ascii=False)


def call_body(name: str, arguments: dict) -> list[tuple[str, str]]:
    """What a call carries beyond its summary line, as (style, line): a multi-line command, or the edit as a diff."""
    command = arguments.get("command")
    if name == "bash":
        return [("", line) for line in command.split("\n")] if isinstance(command, str) and "\n" in command else []
    if name != "str_replace_editor":
        return []
    if command == "str_replace" and isinstance(arguments.get("old_str"), str):
        new = arguments.get("new_str") if isinstance(arguments.get("new_str"), str) else ""
        return edit_diff(arguments["old_str"], new)
    added = arguments.get("file_text") if command == "create" else arguments.get("new_str", arguments.get("insert_text"))
    return [("green", f"+{line}") for line in added.split("\n")] if isinstance(added, str) else []


def edit_diff(old: str, new: str) -> list[tuple[str, str]]:
    """old -> new as the changed lines of a unified diff (one line of context), styled; `...` between hunks.

    The hunk headers are left out: their line numbers would count from old_str, not from the file.
    """
    lines = list(difflib.unified_diff(old.split("\n"), new.split("\n"), lineterm="", n=1))[3:]
    styles = {"-": "red", "+": "green"}
    return [("dim", "...") if line.startswith("@@") else (styles.get(line[:1], ""), line) for line in lines]


def print_call(console: Console, name: str, arguments: dict, workdir: str | None, lines: int | None) -> None:
    """`> name summary`, then the command or the diff (its first `lines` lines, or all with None)."""
    console.print(f"[bold cyan]> {escape(name)}[/] {escape(call_summary(name, arguments, workdir))}", highlight=False,
                  soft_wrap=True)
    body = call_body(name, arguments)
    shown = body if lines is None or name == "bash" or len(body) <= lines else body[:lines]
    for style, line in shown:
        console.print(f"[{style}]{escape(line)}[/]" if style else escape(line), highlight=False, soft_wrap=True)
    if len(shown) < len(body):
        console.print(f"[dim]... ({len(body) - len(shown)} more lines)[/]")


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
        self.workdir: str | None = None

    def _write(self, text: str) -> None:
        if text:
            self.console.out(text, end="", highlight=False)
            self.at_line_start = text.endswith("\n")

    def end_text(self) -> None:
        self._write(self.hider.flush())
        if not self.at_line_start:
            self.console.out("")
            self.at_line_start = True

    def on_start(self, workdir: str) -> None:
        self.workdir = workdir

    def on_step(self, index: int) -> None:
        self.end_text()
        self.console.rule(f"[dim]step {index + 1}[/]", align="left", style="dim")

    def on_text(self, piece: str) -> None:
        self._write(self.hider.feed(piece))

    def on_call(self, call: ToolCall) -> None:
        self.end_text()
        print_call(self.console, call.name, call.arguments, self.workdir, OBSERVATION_LINES)

    def on_observation(self, call: ToolCall, observation: Observation) -> None:
        style = "red" if observation.is_error else "dim"
        head = observation_head(relative(observation.text, self.workdir))
        if head:
            self.console.print(f"[{style}]{escape(head)}[/]")

    def on_notice(self, text: str) -> None:
        self.end_text()
        self.console.print(f"[yellow]! {escape(observation_head(text, 3))}[/]")

    def show_outcome(self, result: RunResult) -> None:
        """The outcome line: status, reason, the last test result the agent saw, steps."""
        status, rest = result.summary().split(":", 1)
        style = STATUS_STYLE.get(result.status, "magenta")
        self.console.print(f"[bold {style}]{escape(status)}[/]:{escape(rest)}")

    def show_result(self, result: RunResult, trajectory_path: str | None) -> None:
        self.end_text()
        show_patch(self.console, result.patch)
        self.show_outcome(result)
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
        ("status", outcome_words(exit_.get("status") or "running", exit_.get("reason") or "",
                                 tally_from_dict(exit_.get("tests")), exit_.get("edited_tests") or [],
                                 tests_recorded="tests" in exit_)),
        ("totals", f"{totals.get('steps', 0)} steps, {totals.get('prompt_tokens', 0)} prompt / "
                   f"{totals.get('completion_tokens', 0)} generated tokens, {totals.get('seconds', 0):.1f} s"),
    ]
    for key, value in rows:
        header.add_row(f"[bold]{key}[/]", escape(value))
    console.print(header)
    inputs = {item["step"]: item["text"] for item in data.get("inputs", [])[1:]}
    limit = None if full else OBSERVATION_LINES
    workdir = repo.get("workdir")
    for step in data.get("steps", []):
        index = step.get("index", 0)
        if index in inputs:
            console.print(f"[bold green]user>[/] {escape(inputs[index])}")
        console.rule(f"step {index + 1}", align="left", style="dim")
        if step.get("content"):
            console.print(escape(step["content"]))
        for obs in step.get("observations", []):
            print_call(console, obs["name"], obs["arguments"], workdir, limit)
            text = relative(obs["text"], workdir)
            text = text if limit is None else observation_head(text, limit)
            console.print(f"[{'red' if obs.get('is_error') else 'dim'}]{escape(text)}[/]")
        for notice in step.get("notices", []):
            console.print(f"[yellow]! {escape(notice if full else observation_head(notice, 3))}[/]")
    console.rule(align="left", style="dim")
    if exit_.get("traceback") and full:
        console.print(f"[red]{escape(exit_['traceback'])}[/]")
    if data.get("patch") is not None:
        show_patch(console, data["patch"])
