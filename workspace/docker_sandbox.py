"""DockerSandbox: one container per working copy, through the docker SDK.

Two ways to get the code in: use the repository the image already holds at
`workdir` (SWE-bench images have /testbed at the base commit), or copy a host
working copy in (`copy_from`, through put_archive) or bind-mount it
(`mount=True`). Every container is labelled `loopcoder=1` and removed on
close, on errors, at interpreter exit and on SIGTERM; `remove_leftovers()`
finds the ones a killed process left behind. No network unless asked.

Each command runs under coreutils `timeout` inside the container, in its own
process group; when it ends, every process in the container but the init and
its `sleep infinity` is killed, so a timeout, a background or a `setsid`
process never outlives it. stderr is merged into stdout in the container so
the order of the output is kept, and a per-call marker ends the read even if
an escaped process holds the stream open. The engine enforces the resource
limits (workspace.limits); the marker line also carries how many processes
the memory limit killed, so the model is told. Commands see only the image's
environment, the fixed variables and what the caller passes: never the host's.
Containers carry the labels loopcoder.pid and loopcoder.host: opening a
sandbox removes those whose owner process is dead (`loopcoder clean` too).
"""
from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import secrets
import select
import shlex
import signal
import socket
import tarfile
import tempfile
import threading
import time
import weakref
from pathlib import Path

from loopcoder.workspace.capture import OutputCap
from loopcoder.workspace.limits import Limits, limit_note, owner_alive
from loopcoder.workspace.local import ALLOWED_ENV, FIXED_ENV
from loopcoder.workspace.patching import diff_command, finish_patch
from loopcoder.workspace.paths import check_command, outside_message, relative_inside
from loopcoder.workspace.sandbox import CommandResult, SandboxError

BASE_IMAGE = "loopcoder/base:bookworm"  # built by scripts/sandbox-deps.sh, no registry needed
LABEL = {"loopcoder": "1"}
_GRACE = 15.0  # the in-container timeout acts first; this only guards against a stuck engine

# $0 = timeout seconds, $1 = command, $2 = marker, $3 = the pids to spare (init and its sleep).
# The command gets its own process group (timeout's); after it ends every other process in the
# container is killed (setsid ones too). The trailer: marker, exit status, then the processes the memory
# limit killed and the forks the process limit refused during the command.
_OOM = ("$(sed -n 's/^oom_kill //p' /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control "
        "2>/dev/null | head -n1)")
_FORKS = "$(sed -n 's/^max //p' /sys/fs/cgroup/pids.events /sys/fs/cgroup/pids/pids.events 2>/dev/null | head -n1)"
_WRAPPER = (
    f'exec 2>&1; o={_OOM}; f={_FORKS}; timeout -s TERM -k 2 "$0" bash -c "$1" </dev/null & p=$!; wait $p; rc=$?; '
    'kill -KILL -- -$p 2>/dev/null; '
    'for d in /proc/[0-9]*; do q=${d#/proc/}; case " $3 $$ " in *" $q "*) ;; *) kill -KILL $q 2>/dev/null;; esac; done; '
    f'n={_OOM}; g={_FORKS}; printf "\\n%s%d %d %d\\n" "$2" $rc $(( ${{n:-0}} - ${{o:-0}} )) $(( ${{g:-0}} - ${{f:-0}} ))'
)


def swebench_image(instance_id: str) -> str:
    """The official SWE-bench evaluation image of an instance (a plain image name)."""
    return "swebench/sweb.eval.x86_64." + instance_id.replace("__", "_1776_").lower()


def docker_client(timeout: int = 120):
    """A client for the local engine, or a SandboxError saying how to start one."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except Exception as e:  # the SDK raises several unrelated types when no engine answers
        raise SandboxError(f"No Docker engine answers ({e}). Start one with: sudo bash scripts/sandbox-deps.sh") from None


def remove_leftovers(client=None, labels: dict[str, str] | None = None) -> int:
    """Remove the containers labelled loopcoder=1 (and `labels`) that killed runs left; returns how many."""
    client = client or docker_client()
    from docker.errors import NotFound

    wanted = [f"{k}={v}" for k, v in {**LABEL, **(labels or {})}.items()]
    removed = 0
    for container in _listed(client, wanted):
        with contextlib.suppress(NotFound):  # removed meanwhile by its owner
            container.remove(force=True)
            removed += 1
    return removed


def _listed(client, labels: list[str]) -> list:
    """The containers with all of `labels`. Another run may remove one of them between the engine's list
    and the SDK's inspect of each (its sandbox closing): that one is left out, not an error."""
    return client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)


def _owner_labels() -> dict[str, str]:
    return {"loopcoder.pid": str(os.getpid()), "loopcoder.host": socket.gethostname()}


def reap_containers(client=None) -> list[str]:
    """Remove this host's loopcoder containers whose owner process is dead; returns their names."""
    client = client or docker_client()
    host = _owner_labels()["loopcoder.host"]
    removed = []
    for container in _listed(client, [*(f"{k}={v}" for k, v in LABEL.items()), f"loopcoder.host={host}"]):
        pid = container.labels.get("loopcoder.pid", "")
        if pid.isdigit() and not owner_alive(int(pid)):
            with contextlib.suppress(Exception):  # gone already, or being removed by its owner's exit
                container.remove(force=True)
                removed.append(container.name)
    return removed


class DockerSandbox:
    """A container from `image` with the working copy at `workdir`."""

    def __init__(self, image: str = BASE_IMAGE, *, workdir: str = "/testbed", copy_from: str | os.PathLike | None = None,
                 mount: bool = False, base_commit: str | None = None, network: bool = False,
                 output_limit: int = 1 << 20, labels: dict[str, str] | None = None,
                 limits: Limits | None = Limits(), env: dict[str, str] | None = None,
                 passthrough_env: list[str] | tuple[str, ...] = (), command_timeout: float | None = None,
                 protect_git: bool = False, client=None):
        """env: variables every command gets; passthrough_env: names of host variables it may see;
        protect_git: a mounted copy's .git read-only (in-place runs)."""
        if mount and copy_from is None:
            raise SandboxError("mount=True needs copy_from: the host directory to bind-mount.")
        self.workdir = workdir.rstrip("/") or "/"
        self.output_limit = output_limit
        self.command_timeout = command_timeout
        self.limits = limits or Limits(None, None, None, None)
        self._env = {name: os.environ[name] for name in (*ALLOWED_ENV, *passthrough_env) if name in os.environ}
        self._env.update(FIXED_ENV, **(env or {}))
        self.client = client or docker_client()
        reap_containers(self.client)
        _ensure_image(self.client, image)
        volumes = {}
        if mount:
            host = str(Path(copy_from).resolve())
            volumes[host] = {"bind": self.workdir, "mode": "rw"}
            if protect_git and os.path.isdir(f"{host}/.git"):
                volumes[f"{host}/.git"] = {"bind": f"{self.workdir}/.git", "mode": "ro"}
            for objects in _alternates(Path(host)):  # objects a shared clone borrows, at the same path
                volumes[objects] = {"bind": objects, "mode": "ro"}
        self.container = self.client.containers.create(
            image, entrypoint=["sleep", "infinity"], command=[], init=True, detach=True,
            labels={**LABEL, **_owner_labels(), **(labels or {})}, network_mode=None if network else "none",
            volumes=volumes or None, working_dir="/", **_engine_limits(self.limits),
        )
        _track(self)
        try:
            self.container.start()
            if copy_from is not None and not mount:
                self.copy_in(copy_from)
            setup = self._exec_plain(["bash", "-c", f"test -d {_q(self.workdir)} && git config --global --add "
                                      "safe.directory '*' 2>/dev/null; test -d " + _q(self.workdir)])
            if setup[0] != 0:
                raise SandboxError(f"The image {image} has no {self.workdir}; give copy_from or another workdir.")
            self._spare = self._exec_plain(["bash", "-c", 'for d in /proc/[0-9]*; do q=${d#/proc/}; '
                                            '[ "$q" = $$ ] || printf "%s " "$q"; done'])[1].decode().strip()
            self.base_commit = base_commit or self._head()
            self._real_workdir = self._exec_plain(["realpath", "-m", "--", self.workdir])[1].decode().strip()
        except BaseException:
            self.close()
            raise

    # -- commands ---------------------------------------------------------------

    def run(self, command: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> CommandResult:
        check_command(command, env)
        start = time.monotonic()
        marker = f"__LOOPCODER_EXIT_{secrets.token_hex(8)}__"
        api = self.client.api
        environment = {**self._env, **(env or {})}
        with engine_errors():
            exec_id = api.exec_create(
                self._id(), ["bash", "-c", _WRAPPER, f"{max(timeout, 0.01):.3f}", command, marker, self._spare],
                stdin=False, tty=False, workdir=self.workdir, environment=[f"{k}={v}" for k, v in environment.items()],
            )["Id"]
            sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)
        cap, code, oom, forks, stuck = OutputCap(self.output_limit), None, 0, 0, False
        frames, window = bytearray(), b""
        end_re = re.compile(re.escape(marker.encode()) + rb"(\d+) (\d+) (\d+)\n")
        deadline = start + timeout + _GRACE
        try:
            while code is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stuck = True
                    break
                if not select.select([raw], [], [], min(remaining, 1.0))[0]:
                    continue
                chunk = raw.recv(1 << 20)
                if not chunk:
                    break
                frames += chunk
                for payload in _pop_frames(frames):
                    cap.add(payload)
                    recent = window + payload
                    found = end_re.search(recent)
                    if found:
                        code, oom, forks = (int(n) for n in found.groups())
                        break
                    window = recent[-(len(marker) + 16):]
        finally:
            sock.close()
        if code is None and not stuck:  # the stream ended without our marker: bash itself failed to start
            with engine_errors():
                code = api.exec_inspect(exec_id).get("ExitCode")
        output = cap.text()
        cut = output.rfind("\n" + marker)
        if cut >= 0:
            output = output[:cut]
        duration = time.monotonic() - start
        timed_out = stuck or (code == 124 and duration >= timeout)
        killed = limit_note(self.limits, code or 0, oom, forks)
        return CommandResult(exit_code=-1 if timed_out or code is None else code, output=output, timed_out=timed_out,
                             truncated=cap.truncated, duration=duration, killed=killed)

    def _exec_plain(self, argv: list[str]) -> tuple[int, bytes]:
        """Our own short commands: full stdout, no cap."""
        self._id()
        with engine_errors():
            r = self.container.exec_run(argv, workdir="/", demux=True)
        return r.exit_code, (r.output[0] or b"") if r.output else b""

    def _head(self) -> str | None:
        code, out = self._exec_plain(["git", "-C", self.workdir, "rev-parse", "HEAD"])
        return out.decode().strip() if code == 0 else None

    def _id(self) -> str:
        if self.container is None:
            raise SandboxError("The sandbox is closed.")
        return self.container.id

    # -- files ------------------------------------------------------------------

    def resolve(self, path: str) -> str:
        rel = relative_inside(path, self.workdir)
        self._inspect(path, rel)
        return rel

    def _inspect(self, path: str, rel: str) -> tuple[str, str, int]:
        """(real path, kind, mode) of workdir/rel inside the container; SandboxError if it resolves outside."""
        script = ('t=$(realpath -m -- "$1"); printf "%s\\0" "$t"; '
                  'if [ -d "$t" ]; then printf "dir\\0"; elif [ -e "$t" ]; then printf "file\\0"; else printf "none\\0"; fi; '
                  'stat -c %a -- "$t" 2>/dev/null || echo 644')
        code, out = self._exec_plain(["bash", "-c", script, "inspect", f"{self.workdir}/{rel}"])
        fields = out.decode("utf-8", "surrogateescape").split("\0")
        if code != 0 or len(fields) != 3:
            raise SandboxError(f"Cannot inspect {path} in the container (exit {code}).")
        real, kind, mode = fields
        root = self._real_workdir
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise SandboxError(outside_message(path, real, self.workdir))
        return real, kind, int(mode.strip() or "644", 8)

    def read_file(self, path: str) -> bytes:
        real, kind, _ = self._inspect(path, relative_inside(path, self.workdir))
        if kind == "none":
            raise SandboxError(f"The path {path} does not exist. Please provide a valid path.")
        if kind == "dir":
            raise SandboxError(f"The path {path} is a directory, not a file.")
        with engine_errors():
            stream, _ = self.container.get_archive(real)
            data = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            return tar.extractfile(member).read()

    def write_file(self, path: str, data: bytes) -> None:
        real, kind, mode = self._inspect(path, relative_inside(path, self.workdir))
        if kind == "dir":
            raise SandboxError(f"The path {path} is a directory, not a file.")
        parent, name = real.rsplit("/", 1)
        code, out = self._exec_plain(["mkdir", "-p", "--", parent or "/"])
        if code != 0:
            raise SandboxError(f"Cannot write {path}: {out.decode(errors='replace').strip()}")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode if kind == "file" else 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        with engine_errors():
            self.container.put_archive(parent or "/", buf.getvalue())

    def exists(self, path: str) -> bool:
        return self._inspect(path, relative_inside(path, self.workdir))[1] != "none"

    def is_dir(self, path: str) -> bool:
        return self._inspect(path, relative_inside(path, self.workdir))[1] == "dir"

    def list_dir(self, path: str = ".", depth: int = 2) -> list[str]:
        real, kind, _ = self._inspect(path, relative_inside(path, self.workdir))
        if kind != "dir":
            raise SandboxError(f"The path {path} is not a directory.")
        code, out = self._exec_plain(["find", real, "-mindepth", "1", "-maxdepth", str(int(depth)),
                                      "-name", ".*", "-prune", "-o", "-print0"])
        root = self._real_workdir.rstrip("/") + "/"
        found = [p[len(root):] for p in out.decode("utf-8", "surrogateescape").split("\0") if p.startswith(root)]
        return sorted(found, key=lambda p: p.split("/"))

    # -- copies and patches -------------------------------------------------------

    def copy_in(self, host_dir: str | os.PathLike) -> None:
        """Replace workdir with a copy of host_dir (a shared clone's borrowed git objects included)."""
        host = Path(host_dir).resolve()
        if not host.is_dir():
            raise SandboxError(f"{host_dir} is not a directory.")
        self._exec_plain(["bash", "-c", f"rm -rf {_q(self.workdir)} && mkdir -p {_q(self.workdir)}"])
        with tempfile.TemporaryFile() as spool:
            with tarfile.open(fileobj=spool, mode="w") as tar:
                tar.add(host, arcname=".", filter=_as_root)
                for objects in _alternates(host):  # the alternates file itself is left out by _as_root
                    tar.add(objects, arcname=".git/objects", filter=_as_root)
            spool.seek(0)
            with engine_errors():
                self.container.put_archive(self.workdir, spool)

    def copy_out(self, host_dir: str | os.PathLike) -> None:
        """Extract the container's workdir into host_dir (created if missing)."""
        dest = Path(host_dir)
        dest.mkdir(parents=True, exist_ok=True)
        with engine_errors(), tempfile.TemporaryFile() as spool:
            stream, _ = self.container.get_archive(self.workdir + "/.")
            for chunk in stream:
                spool.write(chunk)
            spool.seek(0)
            with tarfile.open(fileobj=spool) as tar:
                tar.extractall(dest, filter="tar")

    def diff(self, base_commit: str | None = None) -> str:
        """The patch against base_commit (default: the sandbox's), computed inside the container (see workspace.patching)."""
        base_commit = base_commit or self.base_commit
        if not base_commit:
            raise SandboxError(f"{self.workdir} is not a git repository with a commit; there is nothing to diff against.")
        self._id()
        with engine_errors():
            r = self.container.exec_run(diff_command(base_commit), workdir=self.workdir, demux=True,
                                        environment=FIXED_ENV)
        out, err = r.output if r.output else (b"", b"")
        if r.exit_code != 0:
            raise SandboxError(f"git diff failed in the container: {(err or b'').decode(errors='replace').strip()}")
        return finish_patch(out or b"")

    def close(self) -> None:
        container, self.container = getattr(self, "container", None), None
        _live.discard(self)
        if container is not None:
            try:
                container.remove(force=True)
            except Exception:  # already gone, or the engine went away: nothing left to do here
                pass

    def __enter__(self) -> "DockerSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def engine_errors():
    """Engine failures (container gone, engine stopped) as SandboxError, which tools turn into observations."""
    import docker
    import requests

    try:
        yield
    except (docker.errors.APIError, requests.exceptions.RequestException) as e:
        raise SandboxError(f"The Docker engine failed: {e}") from None


def _pop_frames(buf: bytearray):
    """Payloads of the complete frames of Docker's multiplexed stream (8-byte header: stream, 0, 0, 0, size)."""
    while len(buf) >= 8:
        size = int.from_bytes(buf[4:8], "big")
        if len(buf) < 8 + size:
            return
        payload = bytes(buf[8:8 + size])
        del buf[:8 + size]
        yield payload


def _engine_limits(limits: Limits) -> dict:
    """The container's limits as docker SDK arguments (memory without swap, processes, CPUs, file size)."""
    import docker

    out: dict = {}
    if limits.memory:
        out.update(mem_limit=limits.memory, memswap_limit=limits.memory)
    if limits.pids:
        out["pids_limit"] = limits.pids
    if limits.cpus:
        out["nano_cpus"] = int(limits.cpus * 1e9)
    if limits.file_size:
        out["ulimits"] = [docker.types.Ulimit(name="fsize", soft=limits.file_size, hard=limits.file_size)]
    return out


def _ensure_image(client, image: str) -> None:
    import docker

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    hint = "build it with: sudo bash scripts/sandbox-deps.sh" if image == BASE_IMAGE else f"pull it with: docker pull {image}"
    try:
        client.images.pull(image)
    except Exception as e:
        raise SandboxError(f"The image {image} is not here and could not be pulled ({e}); {hint}") from None


def _alternates(root: Path) -> list[str]:
    from loopcoder.workspace.local import _git_object_dirs

    return [p for p in _git_object_dirs(root) if os.path.isdir(p)]


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files owned by root in the container (git refuses repositories owned by someone else)."""
    if info.name in ("./.git/objects/info/alternates", ".git/objects/info/alternates"):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _q(path: str) -> str:
    return shlex.quote(path)


# -- cleanup of containers this process made ----------------------------------------

_live: "weakref.WeakSet[DockerSandbox]" = weakref.WeakSet()


def _close_all() -> None:
    for sandbox in list(_live):
        sandbox.close()


def _on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds `with` blocks, then atexit runs


def _track(sandbox: DockerSandbox) -> None:
    """Remember a live container; the first one installs the exit and SIGTERM cleanup."""
    if not _live and not getattr(_track, "installed", False):
        _track.installed = True
        atexit.register(_close_all)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    _live.add(sandbox)
