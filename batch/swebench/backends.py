"""One backend per task, from one loaded model: what batch runs and refactors hand each task.

- plt / hf: the weights are loaded once; each task gets `spawn()` (its own
  conversation cache, so prefix reuse still works) and generation is
  serialised by one lock, since one model cannot run two forwards at once.
- openai: one client for all tasks, no lock (the server batches requests).
- replay: a fresh backend per task from `--script`: a file used for every
  task, or a directory of `<key>.json` / `<key>.jsonl` / `<key>.traj.json`.
"""
from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path

from loopcoder.agent.config import Config
from loopcoder.agent.session import make_backend
from loopcoder.runtime.backends.base import Backend
from loopcoder.runtime.backends.replay import ReplayBackend, ReplayScriptError

SCRIPT_SUFFIXES = (".json", ".jsonl", ".traj.json")


class _TaskView:
    """A task's handle on a backend: calls take `lock` when given; close() only closes what the task owns."""

    def __init__(self, backend, lock: threading.Lock | None, owned: bool):
        self._backend, self._lock, self._owned = backend, lock or nullcontext(), owned
        self.name, self.context_window = backend.name, backend.context_window

    def complete(self, messages, tools=None, params=None, on_text=None):
        with self._lock:
            return self._backend.complete(messages, tools, params, on_text)

    def count_tokens(self, messages, tools=None) -> int:
        return self._backend.count_tokens(messages, tools)

    def close(self) -> None:
        if self._owned:
            self._backend.close()  # a spawned conversation's cache, never the shared weights


def check_backend(config: Config) -> None:
    """What can be told before loading anything (a batch on Ray loads on the workers)."""
    if config.backend.name == "replay" and not config.backend.script:
        raise ReplayScriptError("the replay backend needs --script: a file for every task, or a directory "
                                "of <instance_id>.json scripts")


def model_name(config: Config) -> str:
    """model_name_or_path for predictions: the model, or replay-<script name>, or the backend's name."""
    b = config.backend
    return b.model or (f"replay-{Path(b.script).name}" if b.name == "replay" else b.name)


class BackendProvider:
    def __init__(self, config: Config):
        self.config = config
        check_backend(config)
        self._shared = None if config.backend.name == "replay" else make_backend(config)  # may load a model: once
        self._lock = threading.Lock()
        self.model_name = model_name(config)

    def for_task(self, key: str) -> Backend:
        """The backend for one task; close() it when the task ends."""
        if self._shared is None:
            return ReplayBackend(self._script(key), context_window=self.config.context.window or 32768)
        if hasattr(self._shared, "spawn"):
            return _TaskView(self._shared.spawn(), self._lock, owned=True)
        return _TaskView(self._shared, None, owned=False)

    def _script(self, key: str) -> Path:
        script = Path(self.config.backend.script).expanduser()
        if not script.is_dir():
            return script
        for suffix in SCRIPT_SUFFIXES:
            if (script / f"{key}{suffix}").is_file():
                return script / f"{key}{suffix}"
        raise ReplayScriptError(f"no replay script for {key} in {script} (looked for {key}.json, .jsonl, .traj.json)")

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()

