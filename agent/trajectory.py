"""The trajectory: one JSON file per run, rewritten atomically after every step.

A crash, a kill or a Ctrl-C at any moment leaves a complete, valid JSON file
(tmp + os.replace), so what happened up to that point can always be inspected
and replayed. Schema (format "loopcoder-trajectory", version 1):

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
                "skipped", "timed_out"}, null when it ran none); malformed: turns with a
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


class Trajectory:
    """The record of one run; `save()` after every change that matters."""

    def __init__(self, path: str | Path | None, config: dict, task: dict, repo: dict, backend: dict, tools: list[dict]):
        self.path = Path(path) if path else None
        self.started = time.time()
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
        self.data["inputs"].append({"step": len(self.steps), "text": text})

    def add_step(self, step: dict, messages: list[dict]) -> None:
        self.steps.append(step)
        totals = self.data["totals"]
        totals["steps"] = len(self.steps)
        for key in ("prompt_tokens", "completion_tokens", "prefilled_tokens", "reused_tokens"):
            totals[key] += step["tokens"].get(key.removesuffix("_tokens"), 0)
        self.data["messages"] = messages
        self.save()

    def finish(self, status: str, reason: str, patch: str | None, messages: list[dict],
               error_traceback: str | None = None, tests: dict | None = None, malformed: int = 0) -> None:
        self.data["exit"] = {"status": status, "reason": reason, "tests": tests, "malformed": malformed}
        if error_traceback:
            self.data["exit"]["traceback"] = error_traceback
        self.data["patch"] = patch
        self.data["messages"] = messages
        self.save()

    def save(self) -> None:
        self.data["totals"]["seconds"] = round(time.time() - self.started, 3)
        if self.path is not None:
            write_json_atomic(self.path, self.data)


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
    """A trajectory dict, or TrajectoryError saying why not."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrajectoryError(f"cannot read trajectory {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TrajectoryError(f"{path} is not a LoopCoder trajectory (no \"format\": \"{FORMAT}\")")
    return data

