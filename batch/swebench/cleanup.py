"""What a batch made is removed when SIGTERM or SIGINT ends it.

Worker threads may be in the middle of a 30-minute test run, so waiting for
them to unwind is no option: the handler removes every tracked directory
(clones, half-built environments), runs the exit hooks that remove sandbox
temp dirs and containers, and exits at once with 128 + the signal number.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from loopcoder.agent.interrupts import signals_to

_tracked: set[str] = set()
_lock = threading.Lock()
_stopping = threading.Event()


class Stopping(Exception):
    """Raised in a worker that tries to make something new after SIGTERM/SIGINT."""


def tracked_tempdir(prefix: str, parent: Path, suffix: str = "") -> Path:
    """A new directory removed by the signal handler too; none is made once a signal came."""
    with _lock:  # the handler takes it too: a directory is either tracked or not made
        if _stopping.is_set():
            raise Stopping("interrupted: not starting another instance")
        path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        _tracked.add(str(path))
        return path


def track(path: str | Path) -> None:
    with _lock:
        _tracked.add(str(path))


def untrack(path: str | Path) -> None:
    with _lock:
        _tracked.discard(str(path))


def remove_tracked() -> None:
    with _lock:
        _stopping.set()
        paths = list(_tracked)
        _tracked.clear()
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _on_signal(signum, frame) -> None:
    print(f"\n{signal.Signals(signum).name}: removing working copies and sandboxes, then exiting", file=sys.stderr,
          flush=True)
    signal.signal(signum, signal.SIG_IGN)  # a second one must not cut the clean-up short
    remove_tracked()
    atexit._run_exitfuncs()  # sandbox temp dirs (weakref finalizers) and containers
    remove_tracked()  # what workers finished making meanwhile
    os._exit(128 + signum)


@contextmanager
def removed_on_signal() -> Iterator[None]:
    """For the duration (main thread only), SIGTERM/SIGINT clean up and exit instead of unwinding threads."""
    with signals_to(_on_signal):
        yield
