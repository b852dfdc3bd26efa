"""Resource limits for sandboxed commands: memory, processes, CPUs, file size.

A runaway command (an allocation loop, a fork bomb, a file filling the disk)
must end as an observation the model can read, never take the host down.
Docker applies the limits through the engine; the local sandbox through a
cgroup of its own when this machine lets us make one (v2, or the v1 memory,
pids and cpu hierarchies), and otherwise through rlimits, which cap memory
per process (address space) and cannot cap processes for root.
"""
from __future__ import annotations

import errno
import os
import re
import resource
import secrets
import signal
import time
from dataclasses import dataclass

from loopcoder.workspace.sandbox import SandboxError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
CGROUP_ROOT = "/sys/fs/cgroup"
PREFIX = "loopcoder-"  # cgroups are named loopcoder-<owner pid>-<random>


def parse_size(text: str | int, key: str = "size") -> int:
    """'4g', '512m', '1.5G', '4GiB' or a byte count -> bytes; SandboxError naming `key` otherwise."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text > 0:
            return text
    else:
        found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", str(text).lower())
        size = int(float(found[1]) * _UNITS[found[2]]) if found else 0
        if size > 0:
            return size
    raise SandboxError(f"{key} must be a positive size such as 4g, 512m or 1073741824; got {text!r}")


def describe_size(n: int) -> str:
    """1 GiB units when whole, else MiB: '4 GiB', '512 MiB'."""
    if n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    return f"{n / (1 << 20):g} MiB"


@dataclass(frozen=True)
class Limits:
    memory: int | None = 4 << 30  # bytes, for everything a command runs together
    pids: int | None = 1024  # processes and threads
    cpus: float | None = None  # CPU time as a number of cores
    file_size: int | None = 8 << 30  # the largest file a command may write

    @classmethod
    def from_settings(cls, memory: str | int | None, pids: int | None, cpus: float | None,
                      file_size: str | int | None) -> "Limits":
        """From config values (sizes as '4g'); None means no limit."""
        return cls(parse_size(memory, "sandbox.memory") if memory is not None else None, pids, cpus,
                   parse_size(file_size, "sandbox.file_size") if file_size is not None else None)

    def rlimits(self, memory_too: bool) -> list[tuple[int, int]]:
        """(resource, value) pairs to set in the command's process; memory as address space when asked."""
        pairs = []
        if self.file_size:
            pairs.append((resource.RLIMIT_FSIZE, self.file_size))
        if memory_too and self.memory:
            pairs.append((resource.RLIMIT_AS, self.memory))
        if memory_too and self.pids:
            pairs.append((resource.RLIMIT_NPROC, self.pids))
        return pairs


def limit_note(limits: Limits, exit_code: int, oom_kills: int, refused_forks: int) -> str | None:
    """What the model reads when a limit stopped a command (counter deltas over the command)."""
    if oom_kills and limits.memory:
        return f"killed: memory limit {describe_size(limits.memory)} (sandbox.memory)"
    if refused_forks and limits.pids:
        return f"process limit {limits.pids} reached: new processes were refused (sandbox.pids)"
    if exit_code == 128 + signal.SIGXFSZ and limits.file_size:
        return f"killed: file size limit {describe_size(limits.file_size)} (sandbox.file_size)"
    return None


def owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _own_paths() -> dict[str, str]:
    """{controller or '' for v2: our cgroup path} from /proc/self/cgroup."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


class Cgroup:
    """One cgroup per sandbox: every command joins it; the counters tell which limit killed a command.

    `dirs` maps a role (memory, pids, cpu) to the directory that holds its files;
    on v2 the three are one directory.
    """

    def __init__(self, dirs: dict[str, str], v2: bool):
        self.dirs, self.v2 = dirs, v2

    @classmethod
    def create(cls, limits: Limits) -> "Cgroup | None":
        """A configured cgroup under our own, or None when this machine does not let us make one."""
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            own = _own_paths()
            if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):  # pure v2
                parent = CGROUP_ROOT + own.get("", "/").rstrip("/")
                with open(f"{parent}/cgroup.subtree_control") as f:
                    enabled = f.read().split()
                if not {"memory", "pids"} <= set(enabled):
                    return None  # we may not enable controllers where our own process lives
                path = f"{parent}/{name}"
                os.mkdir(path)
                group = cls({"memory": path, "pids": path, "cpu": path}, v2=True)
            else:
                dirs = {}
                for role in ("memory", "pids", "cpu"):
                    base = f"{CGROUP_ROOT}/{role}"
                    if role in own and os.path.isdir(base):
                        dirs[role] = f"{base}{own[role].rstrip('/')}/{name}"
                if "memory" not in dirs or "pids" not in dirs:
                    return None
                group = cls({}, v2=False)
                for role, path in dirs.items():
                    os.mkdir(path)
                    group.dirs[role] = path
        except OSError:
            return None
        try:
            group._configure(limits)
        except OSError:
            group.remove()
            return None
        return group

    def _configure(self, limits: Limits) -> None:
        if self.v2:
            self._write("memory", "memory.max", limits.memory or "max")
            self._write("memory", "memory.swap.max", 0 if limits.memory else "max", optional=True)
            self._write("pids", "pids.max", limits.pids or "max")
            if limits.cpus:
                self._write("cpu", "cpu.max", f"{int(limits.cpus * 100000)} 100000", optional=True)
            return
        self._write("memory", "memory.limit_in_bytes", limits.memory or -1)
        self._write("memory", "memory.memsw.limit_in_bytes", limits.memory or -1, optional=True)
        self._write("memory", "memory.swappiness", 0, optional=True)  # hit the limit, do not swap out to it
        self._write("pids", "pids.max", limits.pids or "max")
        if limits.cpus and "cpu" in self.dirs:
            self._write("cpu", "cpu.cfs_period_us", 100000, optional=True)
            self._write("cpu", "cpu.cfs_quota_us", int(limits.cpus * 100000), optional=True)

    def _write(self, role: str, name: str, value, optional: bool = False) -> None:
        try:
            with open(f"{self.dirs[role]}/{name}", "w") as f:
                f.write(str(value))
        except OSError:
            if not optional:
                raise

    def join(self) -> None:
        """Move the calling process in (called in the child between fork and exec)."""
        for path in dict.fromkeys(self.dirs.values()):
            fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)

    def kill_all(self) -> None:
        """SIGKILL whatever is left in the cgroup (a daemon that escaped the command's session)."""
        for path in dict.fromkeys(self.dirs.values()):
            _kill_members(path)

    def counters(self) -> tuple[int, int]:
        """(processes killed for memory, forks refused for the process limit) so far."""
        memory = "memory.events" if self.v2 else "memory.oom_control"
        return (_field(f"{self.dirs['memory']}/{memory}", "oom_kill"),
                _field(f"{self.dirs['pids']}/pids.events", "max"))

    def remove(self) -> None:
        for path in dict.fromkeys(self.dirs.values()):
            remove_cgroup(path)


def _field(path: str, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def remove_cgroup(path: str) -> bool:
    """rmdir a cgroup whose processes are gone (they may take a moment to exit after SIGKILL)."""
    for _ in range(50):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno != errno.EBUSY:
                return False
            _kill_members(path)
            time.sleep(0.02)
    return False


def _kill_members(path: str) -> None:
    try:
        with open(f"{path}/cgroup.procs") as f:
            pids = [int(line) for line in f if line.strip()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def leftover_cgroups() -> list[str]:
    """Our cgroups (under this process's own, in every hierarchy) whose owner process is dead."""
    found = []
    try:
        own = _own_paths()
    except OSError:
        return found
    bases = [CGROUP_ROOT + own.get("", "/").rstrip("/")] if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers") else [
        f"{CGROUP_ROOT}/{role}{own[role].rstrip('/')}" for role in ("memory", "pids", "cpu") if role in own]
    for base in bases:
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            found_pid = re.fullmatch(re.escape(PREFIX) + r"(\d+)-[0-9a-f]+", name)
            if found_pid and not owner_alive(int(found_pid[1])):
                found.append(f"{base}/{name}")
    return found
