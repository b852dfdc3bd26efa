"""The one thread that runs model work, fed in arrival order from the event loop.

Model work must stay off the event loop (a generation takes seconds) and runs
one at a time anyway (the engine's lock), so a single daemon thread with a
FIFO queue is the whole scheduler. Daemon: a generation still running at
shutdown must not keep the process alive.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

T = TypeVar("T")


class ModelWorker:
    def __init__(self):
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[[], object]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="loopcoder-model", daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[], T]) -> T:
        """fn() on the model thread, after the jobs queued before it. Cancelled while still queued,
        it never runs."""
        future: Future = Future()
        self._jobs.put((future, fn))
        return await asyncio.wrap_future(future)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the awaiting request, which answers for it
                future.set_exception(exc)

    def close(self) -> None:
        self._jobs.put(None)
