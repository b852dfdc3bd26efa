"""What a killed run leaves behind, found by the owner pid in its name, and removed.

Working copies, sandbox temp dirs and cgroups end in or carry `.pid<N>` /
`-<N>-` with the pid of the process that made them; containers carry the
label loopcoder.pid. Opening a sandbox or a working copy removes those of
dead owners; `loopcoder clean` does it on demand and says what it removed.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from loopcoder.workspace.limits import leftover_cgroups, owner_alive, remove_cgroup

_OWNED = re.compile(r".*\.pid(\d+)")
SANDBOX_PREFIX = "loopcoder-sandbox-"


def owner_suffix() -> str:
    """The suffix that marks a directory as this process's (for mkdtemp)."""
    return f".pid{os.getpid()}"


def dead_dirs(parent: str | os.PathLike, prefix: str = "") -> list[Path]:
    """Directories in `parent` named <prefix>...pid<N> whose process N is gone."""
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return []
    found = []
    for entry in entries:
        owner = _OWNED.fullmatch(entry.name)
        if owner and entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False) \
                and not owner_alive(int(owner[1])):
            found.append(Path(entry.path))
    return found


def reap_dirs(parent: str | os.PathLike, prefix: str = "") -> list[str]:
    """Remove dead owners' directories in `parent`; returns what was removed."""
    removed = []
    for path in dead_dirs(parent, prefix):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(str(path))
    return removed


def reap_sandbox_state() -> list[str]:
    """Dead owners' local sandbox temp dirs and cgroups."""
    removed = reap_dirs(tempfile.gettempdir(), SANDBOX_PREFIX)
    removed += [path for path in leftover_cgroups() if remove_cgroup(path)]
    return removed


def clean(worktrees: str | os.PathLike, docker: bool = True) -> tuple[list[str], str | None]:
    """Everything dead owners left: (what was removed, why containers were not looked at, or None)."""
    removed = reap_dirs(worktrees) + reap_sandbox_state()
    skipped = None
    if docker:
        from loopcoder.workspace.docker_sandbox import reap_containers
        from loopcoder.workspace.sandbox import SandboxError

        try:
            removed += [f"container {name}" for name in reap_containers()]
        except SandboxError as error:
            skipped = str(error)
    return removed, skipped
