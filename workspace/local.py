"""LocalSandbox: commands on this machine, inside bubblewrap.

What a command sees (see README, "Security model"): the system directories
(/usr, /bin, /sbin, /lib*, /etc without the files other users may not read,
such as /etc/shadow) read-only; the Python environment in use, the
directories on PATH and the caller's `ro_binds` read-only; the working copy
read-write; a private /tmp (kept for the sandbox's life, so a script written
there by one command runs in the next) with HOME in it; a fresh /proc and a
minimal /dev. Nothing else: no /root, /home, /run (sockets), /var, no
~/.cache/loopcoder. It runs in new user, PID, IPC, UTS, cgroup and network
namespaces with every capability dropped and no new privileges, also when
LoopCoder runs as root; when the command ends, everything it started ends
too. The environment is an allow-list: secrets in the host's never enter.

Without bubblewrap the sandbox refuses to start; `isolate=False` (the
`--sandbox none` of the CLI) runs commands as plain processes, which isolates
nothing.
"""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import weakref
from functools import lru_cache
from pathlib import Path

from loopcoder.workspace.leftovers import SANDBOX_PREFIX, owner_suffix, reap_sandbox_state
from loopcoder.workspace.limits import Cgroup, Limits, limit_note
from loopcoder.workspace.patching import diff_shell, finish_patch
from loopcoder.workspace.paths import check_command, outside_message, relative_inside
from loopcoder.workspace.process import run_process
from loopcoder.workspace.sandbox import CommandResult, SandboxError
from loopcoder.workspace.seccomp import write_program

# What every command sees, whatever the caller's environment says.
FIXED_ENV = {
    "PAGER": "cat", "GIT_PAGER": "cat", "MANPAGER": "cat", "TERM": "dumb", "NO_COLOR": "1",
    "GIT_TERMINAL_PROMPT": "0", "PIP_NO_INPUT": "1", "DEBIAN_FRONTEND": "noninteractive",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# Host variables a command gets when set (plus PATH, and what the caller lists in `passthrough_env`):
# the locale, and pytest's switch for plugin autoload (the nano recordings set it for speed).
ALLOWED_ENV = ("LANG", "LC_ALL", "TZ", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc")
HIDDEN_ROOTS = ("/proc", "/sys", "/dev", "/run", "/var/run")  # never bound, even when on PATH
DIFF_LIMIT = 256 << 20  # a patch bigger than this is refused, never cut
_NS = ["--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--unshare-pid", "--unshare-ipc",
       "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session"]

INSTALL_HINT = ("bubblewrap (bwrap) is not usable here, and the local sandbox does not run without it: install it "
                "(apt-get install bubblewrap, or scripts/sandbox-deps.sh), use --sandbox docker, or pass "
                "--sandbox none to run the model's commands on this machine with no isolation at all")


@lru_cache(maxsize=1)
def bwrap_works() -> bool:
    """True when bubblewrap is installed and can create the namespaces we use (it cannot in some containers)."""
    exe = shutil.which("bwrap")
    if not exe:
        return False
    probe = [exe, *_NS, "--unshare-net", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "true"]
    try:
        return subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalSandbox:
    """Runs commands in a host directory, `root` (its real path). Commands and the model see it at
    `workdir`: `shown_as` when given and bubblewrap can mount it there, else `root`.

    ro_binds: extra host paths visible read-only at the same path; env: variables every command gets;
    path_prepend: directories put first on PATH (and made visible); passthrough_env: names of host
    variables a command may see; protect_git: the working copy's .git read-only (in-place runs).
    """

    def __init__(self, path: str | os.PathLike, *, isolate: bool = True, network: bool = False,
                 output_limit: int = 1 << 20, ro_binds: list[str] | None = None, env: dict[str, str] | None = None,
                 path_prepend: list[str] | None = None, passthrough_env: list[str] | tuple[str, ...] = (),
                 limits: Limits | None = Limits(), command_timeout: float | None = None, protect_git: bool = False,
                 shown_as: str | None = None):
        root = Path(path).resolve()
        if not root.is_dir():
            raise SandboxError(f"The working copy {path} is not a directory.")
        if isolate and not bwrap_works():
            raise SandboxError(INSTALL_HINT + ".")
        self.root = self.workdir = str(root)
        self.network = network
        self.output_limit = output_limit
        self.isolated = isolate
        self.command_timeout = command_timeout
        self.limits = limits or Limits(None, None, None, None)
        reap_sandbox_state()
        self._state = tempfile.mkdtemp(prefix=SANDBOX_PREFIX, suffix=owner_suffix())
        self._tmp = os.path.join(self._state, "tmp")
        os.makedirs(os.path.join(self._tmp, "home"))
        self._cgroup = Cgroup.create(self.limits) if limits else None
        self._cleanup = weakref.finalize(self, _remove_state, self._state, self._cgroup)  # also if never closed
        self._env = dict(env or {})
        self._passthrough = [*ALLOWED_ENV, *passthrough_env]
        prepend = [p for p in path_prepend or [] if os.path.isabs(p)]
        self._path = os.pathsep.join(dict.fromkeys(prepend + _python_bin() + _host_path()))
        visible = [*(ro_binds or []), *prepend, *_python_env(), *_host_path(), *_git_object_dirs(root)]
        if isolate:
            self.workdir = _mount_point(shown_as, visible) or self.root
        self._bwrap = _bwrap_args(self.root, self.workdir, self._tmp, visible, network, protect_git) if isolate else []
        self._seccomp = os.path.join(self._state, "seccomp.bpf")
        self.seccomp = isolate and write_program(self._seccomp)  # whether commands run under the filter

    # -- commands ---------------------------------------------------------------

    def run(self, command: str, timeout: float = 120.0, env: dict[str, str] | None = None,
            limit: int | None = None) -> CommandResult:
        if self._state is None:
            raise SandboxError("The sandbox is closed.")
        check_command(command, env)
        with contextlib.ExitStack() as stack:
            argv, fds = self._bwrap + ["bash", "-c", command], ()
            if self.seccomp:  # bwrap reads the program from a descriptor: a fresh one for each command
                program = stack.enter_context(open(self._seccomp, "rb"))
                fds = (program.fileno(),)
                argv = [argv[0], "--seccomp", str(fds[0]), *argv[1:]]
            before = self._cgroup.counters() if self._cgroup else (0, 0)
            result = run_process(argv, self.root, self._environment(env), timeout, limit or self.output_limit,
                                 self._enter_limits, fds)
        if self._cgroup:
            self._cgroup.kill_all()
        counts = (now - then for now, then in zip(self._cgroup.counters(), before)) if self._cgroup else (0, 0)
        result.killed = limit_note(self.limits, result.exit_code, *counts)
        return result

    def _environment(self, extra: dict[str, str] | None) -> dict[str, str]:
        """The allow-list: nothing from the host's environment but PATH and the names allowed."""
        home, tmp = ("/tmp/home", "/tmp") if self.isolated else (os.path.join(self._tmp, "home"), self._tmp)
        env = {name: os.environ[name] for name in self._passthrough if name in os.environ}
        env.update(FIXED_ENV, PATH=self._path, HOME=home, TMPDIR=tmp)
        env.setdefault("LANG", "C.UTF-8")
        env.update(self._env)
        env.update(extra or {})
        return env

    def _enter_limits(self) -> None:
        """In the child before exec: join the cgroup, or fall back to rlimits; the file size cap always."""
        import resource

        if self._cgroup:
            self._cgroup.join()
        for which, value in self.limits.rlimits(memory_too=self._cgroup is None):
            resource.setrlimit(which, (value, value))

    def diff(self, base_commit: str, timeout: float = 300.0) -> str:
        """The working copy's patch against base_commit, computed by git inside the sandbox.

        Git run on the host would obey the copy's .git/config (core.fsmonitor,
        filter drivers, core.worktree...), which commands can write.
        """
        err = '"${TMPDIR:-/tmp}/.loopcoder-diff-err"'
        r = self.run(f"{diff_shell(base_commit)} 2>{err} || {{ rc=$?; echo; tail -c 500 {err}; exit $rc; }}",
                     timeout, limit=DIFF_LIMIT)
        if r.exit_code != 0 or r.truncated:
            why = "it is too big" if r.truncated else r.output.strip()[-500:] or f"exit {r.exit_code}"
            raise SandboxError(f"Could not compute the diff of the working copy: {why}")
        return finish_patch(r.output.encode())

    # -- files ------------------------------------------------------------------

    def resolve(self, path: str) -> str:
        """`path` as the model gives it (relative, or absolute under `workdir`) -> relative to the root, once
        its real location on the host is inside the root (no symbolic link leads out)."""
        rel = relative_inside(path, self.workdir)
        target = os.path.realpath(os.path.join(self.root, rel))
        if target != self.root and not target.startswith(self.root + os.sep):
            raise SandboxError(outside_message(path, target, self.workdir))
        return rel

    def _host(self, path: str) -> str:
        return os.path.join(self.root, self.resolve(path))

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
        base = os.path.join(self.root, rel)
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
                found.append(os.path.relpath(entry.path, self.root))
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


def _remove_state(state: str, cgroup: Cgroup | None) -> None:
    shutil.rmtree(state, ignore_errors=True)
    if cgroup:
        cgroup.remove()


def _python_bin() -> list[str]:
    """The running virtual environment's bin directory, first on PATH: the Python environment in use."""
    return [os.path.join(sys.prefix, "bin")] if sys.prefix != sys.base_prefix else []


def _python_env() -> list[str]:
    return list(dict.fromkeys([sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]))


def _host_path() -> list[str]:
    """The host's PATH entries that can be shown: absolute, existing, outside the hidden roots."""
    entries = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        real = os.path.realpath(entry) if os.path.isabs(entry) else ""
        if real and os.path.isdir(real) and not _under(real, HIDDEN_ROOTS):
            entries.append(entry)
    return entries


def _under(path: str, roots) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


@lru_cache(maxsize=1)
def _etc_secrets() -> tuple[tuple[str, bool], ...]:
    """(path, is_dir) of what in /etc other users may not read (/etc/shadow, ssh host keys, ssl/private...)."""
    found = []
    for top, dirs, files in os.walk("/etc"):
        for name in list(dirs):
            path = os.path.join(top, name)
            st = os.lstat(path)
            if not os.path.islink(path) and (st.st_mode & 0o005) != 0o005:
                found.append((path, True))
                dirs.remove(name)
        for name in files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            if not os.path.islink(path) and not st.st_mode & 0o004:
                found.append((path, False))
    return tuple(found)


def _mount_point(shown_as: str | None, visible: list[str]) -> str | None:
    """`shown_as` if bubblewrap can mount the working copy there: an absolute path that is neither inside
    nor above anything else the sandbox mounts (system directories, /tmp, /proc, /dev, the visible
    paths), so nothing hides the copy or part of it. None otherwise (the copy stays at its own path)."""
    if not shown_as or not os.path.isabs(shown_as) or os.path.normpath(shown_as) != shown_as or shown_as == "/":
        return None
    taken = ["/" + name for name in SYSTEM_DIRS] + ["/tmp", "/var/tmp", *HIDDEN_ROOTS]
    taken += [p for v in visible for p in {os.path.abspath(v), os.path.realpath(v)}]
    if _under(shown_as, taken) or any(_under(path, [shown_as]) for path in taken):
        return None
    return shown_as


def _bwrap_args(root: str, workdir: str, tmp: str, visible: list[str], network: bool, protect_git: bool) -> list[str]:
    """bwrap's arguments: namespaces, then mounts parents-first (the working copy `root` at `workdir`),
    then the aliases of symlinked paths."""
    args = ["bwrap", *_NS] + ([] if network else ["--unshare-net"])
    mounts: list[tuple[str, str, str]] = []  # (option, source, destination)
    shown = []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            mounts.append(("--ro-bind", path, path))
            shown.append(path)
    for path, is_dir in _etc_secrets():
        mounts.append(("--tmpfs", "", path) if is_dir else ("--ro-bind", "/dev/null", path))
    mounts += [("--proc", "", "/proc"), ("--dev", "", "/dev"), ("--bind", tmp, "/tmp"), ("--dir", "", "/var/tmp")]
    shown.append(workdir)
    aliases: dict[str, str] = {}  # spelled -> real
    for path in visible:
        if os.path.basename(path.rstrip("/")) == "bin" and os.path.isfile(os.path.join(path, "..", "pyvenv.cfg")):
            path = os.path.dirname(path.rstrip("/"))  # a virtual environment's bin: the environment, whole
        real = os.path.realpath(path)
        if not os.path.exists(real) or _under(real, HIDDEN_ROOTS):
            continue
        if not _under(real, shown):
            mounts.append(("--ro-bind", real, real))
            shown.append(real)
        spelled = os.path.abspath(path)
        if spelled != real and not _under(spelled, shown + ["/" + name for name in SYSTEM_DIRS]):
            aliases[spelled] = real
    mounts.append(("--bind", root, workdir))
    if protect_git and os.path.isdir(os.path.join(root, ".git")):
        mounts.append(("--ro-bind", os.path.join(root, ".git"), os.path.join(workdir, ".git")))
    mounts.sort(key=lambda m: m[2].rstrip("/").count("/"))  # stable: a parent before what is mounted in it
    for option, source, dest in mounts:
        args += [option, source, dest] if source else [option, dest]
    for spelled, real in sorted(aliases.items()):  # a path under another alias is reached through it
        if any(spelled.startswith(other + "/") for other in aliases):
            continue
        if _under(spelled, ["/tmp"]):
            # /tmp is the host directory `tmp`, kept across commands: bwrap's --symlink would find the
            # link of the previous command there and fail ("File exists"), so it is made once, here
            link = os.path.join(tmp, os.path.relpath(spelled, "/tmp"))
            os.makedirs(os.path.dirname(link), exist_ok=True)
            os.symlink(real, link)
        else:
            args += ["--symlink", real, spelled]
    return args + ["--chdir", workdir, "--"]


def _git_object_dirs(root: Path) -> list[str]:
    """Object directories a shared clone borrows (objects/info/alternates), which commands must still read."""
    alternates = root / ".git" / "objects" / "info" / "alternates"
    try:
        lines = alternates.read_text().splitlines()
    except OSError:
        return []
    base = alternates.parent.parent
    return [os.path.normpath(os.path.join(base, line.strip())) for line in lines if line.strip() and not line.startswith("#")]
