"""Ctrl-C handling: the first one stops the run, later ones must not stop the clean-up.

While `deferred_interrupts()` is active, SIGINT and SIGTERM are noted instead
of raising, so writing the trajectory and removing containers and worktrees
always completes. Inside `terminate_as_interrupt()`, SIGTERM raises
KeyboardInterrupt like Ctrl-C, so `kill PID` also ends a run cleanly.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def deferred_interrupts(message: str = "cleaning up, please wait..."):
    """Hold off SIGINT/SIGTERM for the duration (main thread only; elsewhere a no-op)."""
    if not _is_main_thread():
        yield
        return
    told = False

    def hold(signum, frame):
        nonlocal told
        if not told:
            told = True
            print(f"\n{message}", file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def terminate_as_interrupt():
    """Make SIGTERM raise KeyboardInterrupt for the duration, so `kill` takes the same clean exit as Ctrl-C."""
    if not _is_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
