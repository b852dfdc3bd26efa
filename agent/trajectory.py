"""The trajectory: one JSON file per run, with a journal appended to while the run goes.

Each step is appended to a journal next to the file (PATH with the suffix
.jsonl: the record so far on its first line, then one line per user input and
per step, with only the messages that changed), so a step costs what it adds,
not the whole conversation. When the run ends (finish, also on Ctrl-C and on
errors) the whole record is written to PATH atomically (tmp + os.replace) and
the journal removed. A kill at any moment leaves the journal, and `load` reads
it, given either path: what happened up to that point can always be inspected
and replayed. Schema of the record (format "loopcoder-trajectory", version 1):

    config      effective configuration (Config.to_dict())
    versions    loopcoder, python, torch, transformers, git commit of loopcoder
    task        {"kind", "text", ...template fields}
    repo        {"path", "base_commit", "in_place", "workdir"}
    backend     {"name", "context_window"}
    tools       tool schemas as shown to the model
    inputs      [{"step": k, "text": ...}]: user turns and the step before which each came
    messages    the conversation as last sent to the model (elisions applied)
    steps       [{"index", "raw_output", "content", "calls", "parse_errors",
                  "observations", "finish_reason", "tokens", "timings"}]
    totals      {"steps", "prompt_tokens", "completion_tokens", "prefilled_tokens",
                 "reused_tokens", "seconds"}
    exit        {"status", "reason", "tests", "malformed", "traceback"?}   status null while the run is going;
                tests: the last test counts the agent saw ({"passed", "failed", "errors",
                "skipped", "timed_out", "scope": "" for the whole suite, else the
                paths or command}, null when it ran none); malformed: turns with a
                malformed call
    patch       final diff against the base commit ("" when nothing changed)
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

FORMAT = "loopcoder-trajectory"
VERSION = 1


class TrajectoryError(ValueError):
    """A file that is not a readable trajectory."""


def versions() -> dict:
    """Versions that decide what a run does; torch/transformers only if already imported."""
    import sys

    out = {"loopcoder": _dist_version("loopcoder"), "python": platform.python_version()}
    for name in ("torch", "transformers"):
        module = sys.modules.get(name)
        out[name] = getattr(module, "__version__", None) if module else _dist_version(name)
    out["loopcoder_git_commit"] = _git_commit(Path(__file__).resolve().parent.parent)
    return out


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def journal_path(path: str | Path) -> Path:
    """Where the journal of the trajectory at `path` is appended to while its run goes."""
    return Path(path).with_suffix(".jsonl")


class Trajectory:
    """The record of one run: add_input / add_step append to the journal, finish writes the whole file."""

    def __init__(self, path: str | Path | None, config: dict, task: dict, repo: dict, backend: dict, tools: list[dict]):
        self.path = Path(path) if path else None
        self.started = time.time()
        self._written: list[dict] | None = None  # the messages as the journal holds them; None: no journal open
        self.data = {
            "format": FORMAT,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
            "versions": versions(),
            "task": task,
            "repo": repo,
            "backend": backend,
            "tools": tools,
            "inputs": [],
            "messages": [],
            "steps": [],
            "totals": {"steps": 0, "prompt_tokens": 0, "completion_tokens": 0, "prefilled_tokens": 0,
                       "reused_tokens": 0, "seconds": 0.0},
            "exit": {"status": None, "reason": None},
            "patch": None,
        }

    @property
    def steps(self) -> list[dict]:
        return self.data["steps"]

    def add_input(self, text: str) -> None:
        item = {"step": len(self.steps), "text": text}
        self.data["inputs"].append(item)
        self._append({"event": "input", **item})

    def add_step(self, step: dict, messages: list[dict]) -> None:
        self.steps.append(step)
        totals = self.data["totals"]
        totals["steps"] = len(self.steps)
        for key in ("prompt_tokens", "completion_tokens", "prefilled_tokens", "reused_tokens"):
            totals[key] += step["tokens"].get(key.removesuffix("_tokens"), 0)
        totals["seconds"] = round(time.time() - self.started, 3)
        self.data["messages"] = messages
        self._append({"event": "step", "step": step, "totals": totals, "messages": self._changes(messages)})

    def finish(self, status: str, reason: str, patch: str | None, messages: list[dict],
               error_traceback: str | None = None, tests: dict | None = None, malformed: int = 0,
               edited_tests: list[str] | None = None) -> None:
        self.data["exit"] = {"status": status, "reason": reason, "tests": tests, "malformed": malformed,
                             "edited_tests": edited_tests or []}
        if error_traceback:
            self.data["exit"]["traceback"] = error_traceback
        self.data["patch"] = patch
        self.data["messages"] = messages
        self.data["totals"]["seconds"] = round(time.time() - self.started, 3)
        if self.path is not None:
            write_json_atomic(self.path, self.data)
            journal_path(self.path).unlink(missing_ok=True)
        self._written = None  # a chat's next turn starts a new journal

    def _append(self, event: dict) -> None:
        """One line on the journal; the first line of a new journal is the whole record instead."""
        if self.path is None:
            return
        if self._written is None:
            line, mode = {"event": "start", "data": self.data}, "w"
        else:
            line, mode = event, "a"
        self._written = [dict(m) for m in self.data["messages"]] if self._written is None else self._written
        journal = journal_path(self.path)
        journal.parent.mkdir(parents=True, exist_ok=True)
        with open(journal, mode, encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")

    def _changes(self, messages: list[dict]) -> dict:
        """The messages against what the journal holds: kept count, replaced ones (elisions), added ones."""
        old = self._written
        if old is None:
            return {}  # the start line holds them all
        keep = min(len(old), len(messages))
        changed = {i: messages[i] for i in range(keep) if messages[i] != old[i]}
        for i, message in changed.items():
            old[i] = dict(message)
        del old[keep:]
        old += [dict(m) for m in messages[keep:]]
        return {"keep": keep, "set": {str(i): m for i, m in changed.items()}, "add": messages[keep:]}


def write_json_atomic(path: Path, data: dict) -> None:
    """Write to a temporary file in the same directory, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | Path) -> dict:
    """A trajectory dict, or TrajectoryError saying why not: a run's journal when it has one (it did not
    finish, or is still going), else its file."""
    journal = Path(path) if Path(path).suffix == ".jsonl" else journal_path(path)
    data = _from_journal(journal) if journal.is_file() else None
    if data is not None:
        return data
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrajectoryError(f"cannot read trajectory {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TrajectoryError(f"{path} is not a LoopCoder trajectory (no \"format\": \"{FORMAT}\")")
    return data


def _from_journal(path: Path) -> dict | None:
    """The record a journal holds, None when the file is not a trajectory journal. A last line cut
    short by a kill is dropped: the lines before it stand."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        start = json.loads(lines[0]) if lines else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    data = start.get("data") if isinstance(start, dict) and start.get("event") == "start" else None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    for line in lines[1:]:
        try:
            _apply(data, json.loads(line))
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, IndexError):
            break
    return data


def _apply(data: dict, event: dict) -> None:
    if event.get("event") == "input":
        data["inputs"].append({"step": event["step"], "text": event["text"]})
    elif event.get("event") == "step":
        changes, messages = event["messages"], list(data["messages"])
        del messages[changes["keep"]:]
        for i, message in changes["set"].items():
            messages[int(i)] = message
        data["messages"] = messages + changes["add"]
        data["steps"].append(event["step"])
        data["totals"] = event["totals"]
