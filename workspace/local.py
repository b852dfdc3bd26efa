"""LocalSandbox: commands on this machine, inside bubblewrap when it is installed.

Under bubblewrap the root filesystem is read-only, only the working copy and a
private /tmp (kept for the sandbox's life, so a script written there by one
command runs in the next) are writable, there is no network, and the command
gets its own PID namespace: when it ends, everything it started ends too.
Without bubblewrap commands run as plain processes in their own session,
after a one-time warning.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import weakref
from functools import lru_cache
from pathlib import Path

from workspace.paths import check_command, outside_message, relative_inside
from workspace.process import run_process
from workspace.sandbox import CommandResult, SandboxError

log = logging.getLogger(__name__)

# What every command sees, whatever the caller's environment says.
FIXED_ENV = {
    "PAGER": "cat", "GIT_PAGER": "cat", "MANPAGER": "cat", "TERM": "dumb", "NO_COLOR": "1",
    "GIT_TERMINAL_PROMPT": "0", "PIP_NO_INPUT": "1", "DEBIAN_FRONTEND": "noninteractive",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """True when bubblewrap is installed and can create namespaces here (it cannot in some containers)."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    probe = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
             "--unshare-pid", "--die-with-parent", "--new-session", "--", "true"]
    try:
        return subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_warned = False


def _warn_unsandboxed() -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "bubblewrap is not available: commands run as plain processes with full access to this "
            "machine. Install it (apt-get install bubblewrap, or scripts/sandbox-deps.sh) to isolate them."
        )


class LocalSandbox:
    """Runs commands in a host directory; `workdir` is that directory's real path."""

    def __init__(self, path: str | os.PathLike, *, isolate: bool | None = None, network: bool = False,
                 output_limit: int = 1 << 20, ro_binds: list[str] | None = None):
        """isolate: None = bubblewrap when usable (warning once when not), True = require it, False = plain."""
        root = Path(path).resolve()
        if not root.is_dir():
            raise SandboxError(f"The working copy {path} is not a directory.")
        self.workdir = str(root)
        self.network = network
        self.output_limit = output_limit
        self.isolated = bwrap_works() if isolate is None else isolate
        if self.isolated and not bwrap_works():
            raise SandboxError("bubblewrap (bwrap) is not usable here: install it with scripts/sandbox-deps.sh.")
        if isolate is None and not self.isolated:
            _warn_unsandboxed()
        self._state = tempfile.mkdtemp(prefix="loopcoder-sandbox-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._state, True)  # also if never closed
        self._tmp = os.path.join(self._state, "tmp")
        os.makedirs(os.path.join(self._tmp, "home"))
        binds = (ro_binds or []) + _git_object_dirs(root) + _host_tools_under_tmp()
        self._ro_binds = [p for p in dict.fromkeys(binds) if os.path.exists(p)]

    # -- commands ---------------------------------------------------------------

    def run(self, command: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> CommandResult:
        if self._state is None:
            raise SandboxError("The sandbox is closed.")
        check_command(command, env)
        full_env = dict(os.environ)
        full_env.update(FIXED_ENV)
        if self.isolated:
            full_env.update(HOME="/tmp/home", TMPDIR="/tmp")
        else:
            full_env.setdefault("HOME", os.path.join(self._tmp, "home"))
            full_env["TMPDIR"] = self._tmp
        full_env.update(env or {})
        argv = ["bash", "-c", command]
        if self.isolated:
            argv = self._bwrap_prefix() + argv
        return run_process(argv, self.workdir, full_env, timeout, self.output_limit)

    def _bwrap_prefix(self) -> list[str]:
        args = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                "--bind", self._tmp, "/tmp"]
        for path in self._ro_binds:  # host paths under /tmp that the private /tmp would hide
            args += ["--ro-bind", path, path]
        args += ["--bind", self.workdir, self.workdir, "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--die-with-parent", "--new-session", "--chdir", self.workdir]
        if not self.network:
            args.append("--unshare-net")
        return args + ["--"]

    # -- files ------------------------------------------------------------------

    def resolve(self, path: str) -> str:
        rel = relative_inside(path, self.workdir)
        target = os.path.realpath(os.path.join(self.workdir, rel))
        if target != self.workdir and not target.startswith(self.workdir + os.sep):
            raise SandboxError(outside_message(path, target, self.workdir))
        return rel

    def _host(self, path: str) -> str:
        return os.path.join(self.workdir, self.resolve(path))

    def read_file(self, path: str) -> bytes:
        host = self._host(path)
        if os.path.isdir(host):
            raise SandboxError(f"The path {path} is a directory, not a file.")
        if os.path.exists(host) and not os.path.isfile(host):
            # a FIFO or device would block or stream forever
            raise SandboxError(f"The path {path} is not a regular file (a pipe, socket or device); it cannot be read.")
        try:
            with open(host, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise SandboxError(f"The path {path} does not exist. Please provide a valid path.") from None
        except OSError as e:
            raise SandboxError(f"Cannot read {path}: {e.strerror}.") from None

    def write_file(self, path: str, data: bytes) -> None:
        host = self._host(path)
        if os.path.isdir(host):
            raise SandboxError(f"The path {path} is a directory, not a file.")
        try:
            os.makedirs(os.path.dirname(host), exist_ok=True)
            with open(host, "wb") as f:
                f.write(data)
        except OSError as e:
            raise SandboxError(f"Cannot write {path}: {e.strerror}.") from None

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._host(path))

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(self._host(path))

    def list_dir(self, path: str = ".", depth: int = 2) -> list[str]:
        rel = self.resolve(path)
        base = os.path.join(self.workdir, rel)
        if not os.path.isdir(base):
            raise SandboxError(f"The path {path} is not a directory.")
        found: list[str] = []

        def walk(directory: str, level: int) -> None:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                return
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                found.append(os.path.relpath(entry.path, self.workdir))
                if level < depth and entry.is_dir(follow_symlinks=False):
                    walk(entry.path, level + 1)

        walk(base, 1)
        return found

    def close(self) -> None:
        self._cleanup()
        self._state = None

    def __enter__(self) -> "LocalSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _host_tools_under_tmp() -> list[str]:
    """The running Python environment and PATH entries that live under /tmp.

    The sandbox's private /tmp hides them, yet commands expect the same
    interpreter and tools as the host (a checkout or venv under /tmp, as CI may use).
    """
    candidates = [sys.prefix, sys.base_prefix] + os.environ.get("PATH", "").split(os.pathsep)
    return [os.path.realpath(p) for p in candidates if p and os.path.realpath(p).startswith("/tmp/")]


def _git_object_dirs(root: Path) -> list[str]:
    """Object directories a shared clone borrows (objects/info/alternates), which commands must still read."""
    alternates = root / ".git" / "objects" / "info" / "alternates"
    try:
        lines = alternates.read_text().splitlines()
    except OSError:
        return []
    base = alternates.parent.parent
    return [os.path.normpath(os.path.join(base, line.strip())) for line in lines if line.strip() and not line.startswith("#")]
