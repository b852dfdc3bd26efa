"""State a tool keeps per sandbox (edit history, timeout streak), dropped when the sandbox goes away."""
from __future__ import annotations

import weakref
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerSandbox(Generic[T]):
    """One value per sandbox object; one tool instance may serve several sandboxes (batch runs)."""

    def __init__(self, factory: Callable[[], T]):
        self._factory = factory
        self._values: dict[int, tuple[object, T]] = {}

    def get(self, sandbox: object) -> T:
        key = id(sandbox)
        if key not in self._values:
            try:
                weakref.finalize(sandbox, self._values.pop, key, None)
                owner: object = None
            except TypeError:  # not weak-referenceable: hold it so its id cannot be reused
                owner = sandbox
            self._values[key] = (owner, self._factory())
        return self._values[key][1]
