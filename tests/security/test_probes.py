"""Issue #16's probes, as an attacker would run them: every one on both sandboxes, evidence on the host only.

One scripted run per sandbox carries most probes (each is a tool call; the run is what costs); the ones
that need their own run (killing LoopCoder, no bubblewrap) have their own test.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.agent.conftest import FIX, call
from tests.security.conftest import ROOT, Host, snapshot_bytes

DOCKER_SOCKET_CREATE = (
    "import json, socket, sys\n"
    "for path in ('/var/run/docker.sock', '/run/docker.sock'):\n"
    "    try:\n"
    "        s = socket.socket(socket.AF_UNIX); s.connect(path)\n"
    "    except OSError as e:\n"
    "        print(path, e); continue\n"
    "    body = json.dumps({'Image': 'loopcoder/base:bookworm', 'Cmd': ['true'], 'Labels': {'probe': sys.argv[1]}})\n"
    "    s.sendall(f'POST /containers/create HTTP/1.0\\r\\nContent-Type: application/json\\r\\n'\n"
    "              f'Content-Length: {len(body)}\\r\\n\\r\\n{body}'.encode()); print(s.recv(300))\n"
)


def git_payloads(host: Host) -> str:
    """Config, attributes and hooks in the copy that run a command when git runs with them."""
    def touch(name: str) -> str:
        return f"touch {shlex.quote(str(host.marker(name)))}"

    hook = "#!/bin/sh\n" + touch("hook") + "\n"
    hooks = " ".join(f".git/hooks/{h}" for h in ("post-checkout", "pre-commit", "post-commit", "reference-transaction",
                                                 "post-index-change", "pre-auto-gc", "post-merge", "pre-push"))
    return "\n".join([
        f"git config core.fsmonitor {shlex.quote(touch('fsmonitor'))}",
        f"git config filter.evil.clean {shlex.quote(touch('filter-clean') + '; cat')}",
        f"git config filter.evil.smudge {shlex.quote(touch('filter-smudge') + '; cat')}",
        "git config filter.evil.required true",
        "printf '* filter=evil diff=evil\\n' > .gitattributes",
        f"git config diff.evil.textconv {shlex.quote(touch('textconv') + '; cat')}",
        f"git config diff.external {shlex.quote(touch('ext-diff'))}",
        f"printf '[core]\\n\\tfsmonitor = {touch('include')}\\n' > evil.config && git config include.path ../evil.config",
        f"for h in {hooks}; do printf %s {shlex.quote(hook)} > $h; chmod +x $h; done",
        f"git config core.hooksPath .git/hooks && git config core.pager {shlex.quote(touch('pager'))}",
        "git config core.sshCommand " + shlex.quote(touch("ssh")),
        "echo payloads planted",
    ])


@pytest.fixture
def loopback_listener():
    """A TCP server on the host's loopback that records every connection (no network, even to the host)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    hits: list[tuple] = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, addr = server.accept()
                hits.append(addr)
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join()
    server.close()


def test_escapes_reads_and_leftovers_from_one_run(sandbox_kind, user_repo, host, loopback_listener, docker_label_free):
    port, hits = loopback_listener
    secret_file = host.marker("other-run-trajectory.json")  # stands for ~/.ssh, ~/.npmrc, other runs' trajectories
    secret_file.write_text("trajectory-secret-" + host.secrets["HF_TOKEN"][::-1])
    probe_label = docker_label_free
    before = snapshot_bytes(user_repo)
    calls = [
        call("bash", command=git_payloads(host)),
        # secrets: the environment and host files, written into the copy so they would end up in the patch
        call("bash", command=f"env > leak-env.txt; cat /etc/shadow {shlex.quote(str(secret_file))} ~/.npmrc "
                             f"~/.ssh/* > leak-files.txt 2>&1; ls -la /root /home /run /var/run >> leak-files.txt 2>&1; "
                             "echo read"),
        # the engine's socket: root on the host, and a way round --network none
        call("bash", command=f"python3 -c {shlex.quote(DOCKER_SOCKET_CREATE)} {probe_label} > socket.txt 2>&1; echo tried"),
        # capabilities: remount the root read-write and write into the user's repository by absolute path
        call("bash", command=f"mount -o remount,bind,rw / ; mount -o remount,rw /usr; unshare -Ur true; "
                             f"echo pwned >> {shlex.quote(str(user_repo / 'calc.py'))}; "
                             f"touch {shlex.quote(str(host.marker('absolute-write')))}; touch {host.system_marker}; "
                             "echo tried"),
        # the editor's path checks: out of the copy by .., by absolute path, through a symlink
        call("str_replace_editor", command="create", path="../escape.txt", file_text="x\n"),
        call("str_replace_editor", command="create", path=str(host.marker("editor-absolute")), file_text="x\n"),
        call("bash", command=f"ln -s {shlex.quote(str(host.evidence))} out && echo linked"),
        call("str_replace_editor", command="create", path="out/editor-symlink", file_text="x\n"),
        # no network, not even the host's loopback
        call("bash", command=f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\"; "
                             "echo tried"),
        # resource limits: memory and processes (files prove the command got past the limit)
        call("bash", command="python3 -c \"b = b'x' * (1 << 30); open('allocated-1g', 'w')\"; echo tried"),
        call("bash", command="python3 -c \"import subprocess; ps = [subprocess.Popen(['sleep', '30']) "
                             "for _ in range(300)]; open('spawned-300', 'w')\"; echo tried"),
        # sandbox.command_timeout caps the default and the model's own timeout
        call("bash", command="sleep 30; echo late > timeout-default.txt"),
        call("bash", command="sleep 30; echo late > timeout-asked.txt", timeout=600),
        # a setsid daemon and a plain background job must not outlive their command
        call("bash", command="(setsid sh -c 'while :; do date >> beat-setsid; sleep 0.2; done' &) ; "
                             "(sh -c 'while :; do date >> beat-bg; sleep 0.2; done' &); echo started"),
        call("bash", command="sleep 1; rm -f beat-setsid beat-bg; sleep 1; echo cleared"),
        call("bash", command="sleep 1; echo waited"),
        # an output flood stays capped and the run goes on
        call("bash", command="yes | head -c 200000000; echo flood-done"),
        call("str_replace_editor", **FIX),
    ]
    done, traj, patch = host.run_script(user_repo, sandbox_kind, calls, "sandbox.command_timeout=3",
                                        "sandbox.memory=512m", "sandbox.pids=128")
    assert done.returncode == 0, done.stdout + done.stderr
    patch_text = patch.read_text()
    trajectory = traj.read_text()

    # no host process ran anything the copy planted; nothing written outside the copy
    assert host.markers() == ["other-run-trajectory.json"]
    assert not (user_repo.parent / "escape.txt").exists() and not host.system_marker.exists()
    assert hits == []
    # the user's repository holds exactly the agent's patch, applied (its .git untouched by the model)
    after = snapshot_bytes(user_repo)
    assert after["calc.py"] == before["calc.py"].replace(b"return a - b", b"return a + b")
    assert after[".git/config"] == before[".git/config"]
    assert not any(name.startswith(".git/hooks/") and not name.endswith(".sample") for name in after)
    # secrets: never in the sandbox, so never in the patch, the repository or the trajectory
    everything = patch_text + trajectory + "".join(b.decode(errors="replace") for b in after.values())
    shadow_root = Path("/etc/shadow").read_text().splitlines()[0]
    for value in [*host.secrets.values(), shadow_root, secret_file.read_text()]:
        assert value not in everything
    # the docker engine was not reachable
    listed = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=probe={probe_label}"],
                            capture_output=True, text=True)
    assert listed.returncode != 0 or listed.stdout.strip() == ""
    # limits hit were observations, and the commands did not get past them; the run went on to the fix
    for name in ("allocated-1g", "spawned-300", "timeout-default.txt", "timeout-asked.txt", "beat-setsid", "beat-bg"):
        assert name not in patch_text, name
    assert "killed: memory limit 512 MiB" in trajectory and "process limit 128" in trajectory
    # nothing left behind: working copy, sandbox temp dirs, containers
    assert [*host.copies.iterdir(), *host.sandbox_dirs()] == []


@pytest.fixture
def docker_label_free() -> str:
    import uuid

    return uuid.uuid4().hex


def _wait_for(predicate, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the run to start its command")


def _containers(pid: int) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=loopcoder.pid={pid}"], capture_output=True,
                         text=True)
    return out.stdout.split()


def test_kill_9_leaves_what_the_next_sandbox_or_clean_removes(sandbox_kind, user_repo, host):
    script = host.tmp / "slow.json"
    script.write_text(json.dumps([call("bash", command="touch started; sleep 100", timeout=200), call("submit")]))
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", "probe", "--repo", str(user_repo),
                             "--backend", "replay", "--script", str(script), "--sandbox", sandbox_kind,
                             "--set", "sandbox.command_timeout=200"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=host.env(), cwd=host.tmp)
    try:
        _wait_for(lambda: host.copies.is_dir() and any((c / "started").exists() for c in host.copies.iterdir()))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [*host.copies.iterdir(), *host.sandbox_dirs()]
    assert left and all(str(p).endswith(f".pid{proc.pid}") for p in left)
    if sandbox_kind == "docker":
        assert _containers(proc.pid)
    cleaned = host.loopcoder("clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert [*host.copies.iterdir(), *host.sandbox_dirs()] == []
    assert _containers(proc.pid) == []
    for path in left:
        assert f"removed {path}" in cleaned.stdout
    assert "leftover" in cleaned.stdout


def test_without_bubblewrap_the_local_sandbox_refuses_unless_asked_for_none(user_repo, host, tmp_path):
    bin_dir = tmp_path / "bin-without-bwrap"
    bin_dir.mkdir()
    for tool in Path("/usr/bin").iterdir():  # everything a command needs, but bubblewrap
        if tool.name != "bwrap":
            os.symlink(tool, bin_dir / tool.name)
    env = {**host.env(), "PATH": str(bin_dir)}
    script = host.tmp / "touch.json"
    script.write_text(json.dumps([call("bash", command="touch ran-unsandboxed"), call("submit")]))
    args = ["run", "probe", "--repo", str(user_repo), "--backend", "replay", "--script", str(script), "-o",
            str(host.tmp / "out.patch")]
    refused = host.loopcoder(*args, env=env)
    assert refused.returncode == 2 and "--sandbox none" in refused.stderr and "Traceback" not in refused.stderr
    assert not (host.tmp / "out.patch").exists()
    plain = host.loopcoder(*args, "--sandbox", "none", env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "ran-unsandboxed" in (host.tmp / "out.patch").read_text()
