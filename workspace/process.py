"""Run one host process with a timeout, capped output and no leftovers.

The process gets its own session, so a timeout or the end of the command can
kill the whole group, background children included. The read loop never waits
for EOF after the main process has exited: an orphan such as `sleep 1000 &`
may hold the pipe open forever.
"""
from __future__ import annotations

import fcntl
import os
import selectors
import signal
import subprocess
import time

from loopcoder.workspace.capture import OutputCap
from loopcoder.workspace.sandbox import CommandResult

_CHUNK = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def run_process(argv: list[str], cwd: str, env: dict[str, str], timeout: float, limit: int,
                preexec=None, pass_fds: tuple[int, ...] = ()) -> CommandResult:
    """preexec: run in the child before exec (joining a cgroup, setting rlimits); pass_fds: descriptors the
    child inherits (bwrap's --seccomp program)."""
    start = time.monotonic()
    deadline = start + max(float(timeout), 0.0)
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=preexec, pass_fds=pass_fds,
    )
    cap = OutputCap(limit)
    fd = proc.stdout.fileno()
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _CHUNK)  # fewer wake-ups on floods of output
    except OSError:
        pass
    os.set_blocking(fd, False)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    timed_out = False
    try:
        while True:
            if proc.poll() is not None:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            if sel.select(min(remaining, 0.05)) and _read_into(fd, cap) is None:
                # EOF: every writer is gone; the process is about to exit.
                try:
                    proc.wait(max(deadline - time.monotonic(), 0))
                except subprocess.TimeoutExpired:
                    timed_out = True
                break
    finally:
        _kill_group(proc.pid)
        proc.wait()
        _drain(fd, sel, cap)
        sel.close()
        proc.stdout.close()
    code = -1 if timed_out else proc.returncode
    if code is not None and code < -1:  # killed by a signal: report it the way a shell does
        code = 128 - code
    return CommandResult(
        exit_code=code, output=cap.text(), timed_out=timed_out, truncated=cap.truncated,
        duration=time.monotonic() - start,
    )


def _read_into(fd: int, cap: OutputCap) -> int | None:
    """Bytes read (0 when none were ready), None at EOF."""
    try:
        chunk = os.read(fd, _CHUNK)
    except BlockingIOError:
        return 0
    if not chunk:
        return None
    cap.add(chunk)
    return len(chunk)


def _drain(fd: int, sel: selectors.BaseSelector, cap: OutputCap, grace: float = 0.5) -> None:
    """Read what is left after the group was killed; a writer that escaped the group cannot stall us."""
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not sel.select(0.02):
            return
        if _read_into(fd, cap) is None:
            return


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
