"""Ctrl-C handling: the first one stops the run, later ones must not stop the clean-up.

While `deferred_interrupts()` is active, SIGINT and SIGTERM are noted instead
of raising, so writing the trajectory and removing containers and worktrees
always completes. Commands run inside `interrupt_once()`: the first SIGINT or
SIGTERM raises KeyboardInterrupt (so `kill PID` ends a run as cleanly as
Ctrl-C), every later one waits for the clean-up to finish.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def signals_to(handler, after=None):
    """SIGINT and SIGTERM go to `handler` for the duration (main thread only; elsewhere a no-op). On exit
    each gets its previous handler back, or what `after(previous)` returns."""
    if not _is_main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, after(old) if after else old)


@contextlib.contextmanager
def deferred_interrupts(message: str = "cleaning up, please wait..."):
    """Hold off SIGINT/SIGTERM for the duration (main thread only; elsewhere a no-op)."""
    told = False

    def hold(signum, frame):
        nonlocal told
        if not told:
            told = True
            print(f"\n{message}", file=sys.stderr, flush=True)

    with signals_to(hold):
        yield


class _Once:
    """Raise KeyboardInterrupt at the first signal; hold the later ones (clean-up is under way)."""

    def __init__(self):
        self.fired = False

    def __call__(self, signum, frame):
        if self.fired:
            print("\nstill cleaning up, please wait...", file=sys.stderr, flush=True)
            return
        self.fired = True
        raise KeyboardInterrupt

    def rearm(self) -> None:
        """After a handled interrupt (a chat turn stopped by Ctrl-C), let the next one interrupt again."""
        self.fired = False


@contextlib.contextmanager
def interrupt_once():
    """For a command: Ctrl-C (or SIGTERM) interrupts once; later presses wait for the clean-up.

    After an interrupt, further signals are ignored until the process ends,
    so not even the interpreter's exit handlers (finalizers removing
    temporary state) can be cut short. Main thread only; elsewhere a no-op.
    """
    handler = _Once()
    # SIG_IGN, unlike a Python handler, lasts through interpreter exit
    with signals_to(handler, after=lambda old: signal.SIG_IGN if handler.fired else old):
        yield handler
