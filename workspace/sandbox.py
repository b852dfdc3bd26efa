"""The sandbox protocol: run commands and touch files inside one working copy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class SandboxError(Exception):
    """A request the sandbox refuses (path outside the working copy, ...); the message is for the model."""


@dataclass
class CommandResult:
    exit_code: int  # -1 when killed by the timeout
    output: str  # stdout and stderr interleaved, decoded with replacement, capped
    timed_out: bool = False
    truncated: bool = False  # output went over the read cap and was cut
    duration: float = 0.0
    killed: str | None = None  # a resource limit that stopped the command, said for the model


@runtime_checkable
class Sandbox(Protocol):
    workdir: str  # the working copy's path as commands see it ("/testbed" in Docker)

    def run(self, command: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> CommandResult:
        """Run a shell command in workdir; never raises for the command's own failure."""
        ...

    def resolve(self, path: str) -> str:
        """Map a model-given path to a workdir-relative path; SandboxError if it leaves the copy."""
        ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def exists(self, path: str) -> bool: ...

    def is_dir(self, path: str) -> bool: ...

    def list_dir(self, path: str, depth: int = 2) -> list[str]:
        """Workdir-relative paths below path, hidden entries skipped."""
        ...

    def close(self) -> None: ...
