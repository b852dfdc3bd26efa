"""LocalSandbox against the escapes and floods model output produces."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from loopcoder.workspace.local import LocalSandbox, bwrap_works
from loopcoder.workspace.sandbox import Sandbox, SandboxError

needs_bwrap = pytest.mark.skipif(not bwrap_works(), reason="bubblewrap is not usable here (scripts/sandbox-deps.sh installs it)")


@pytest.fixture(params=["bwrap", "plain"])
def sandbox(request, tmp_path):
    if request.param == "bwrap" and not bwrap_works():
        pytest.skip("bubblewrap is not usable here (scripts/sandbox-deps.sh installs it)")
    work = tmp_path / "work"
    work.mkdir()
    with LocalSandbox(work, isolate=request.param == "bwrap") as sb:
        yield sb


def test_is_a_sandbox(local_sandbox):
    assert isinstance(local_sandbox, Sandbox)


def test_exit_code_and_interleaved_output(sandbox):
    r = sandbox.run("echo out; echo err >&2; exit 3", timeout=10)
    assert (r.exit_code, r.timed_out, r.truncated) == (3, False, False)
    assert r.output == "out\nerr\n"


def test_environment_stdin_and_cwd(sandbox):
    r = sandbox.run('echo "$PAGER $GIT_PAGER $TERM $FOO"; test -n "$HOME" && echo home; pwd; cat; echo done', env={"FOO": "bar"}, timeout=10)
    assert r.output.splitlines() == ["cat cat dumb bar", "home", sandbox.workdir, "done"]


def test_nul_bytes_are_refused(sandbox):
    with pytest.raises(SandboxError, match="NUL byte"):
        sandbox.run("echo a\0b", timeout=10)
    with pytest.raises(SandboxError, match="NUL byte"):
        sandbox.run("echo \ud800", timeout=10)
    with pytest.raises(SandboxError, match="environment variable"):
        sandbox.run("true", env={"A=B": "x"}, timeout=10)


def test_timeout_kills_and_keeps_partial_output(sandbox):
    r = sandbox.run("echo before; sleep 1000; echo after", timeout=1.5)
    assert r.timed_out and r.exit_code == -1
    assert "before" in r.output and "after" not in r.output


def test_background_process_does_not_block_and_is_gone(sandbox):
    name = f"loopcoder-orphan-{os.getpid()}"  # a unique command line to look for
    r = sandbox.run(f"bash -c 'exec -a {name} sleep 1000' & echo started", timeout=30)
    assert r.output == "started\n" and not r.timed_out
    assert name not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_flood_of_output_is_capped(local_sandbox):
    sandbox = local_sandbox
    r = sandbox.run("yes | head -c 2G; echo tail-marker", timeout=240)
    assert r.exit_code == 0 and not r.timed_out and r.truncated
    assert len(r.output) < 2 * sandbox.output_limit
    assert r.output.startswith("y\ny\n") and r.output.endswith("tail-marker\n")
    assert "bytes of output omitted" in r.output


def test_binary_output_is_decoded_with_replacement(sandbox):
    r = sandbox.run(r"printf 'ok\xff\xfe\x00end'", timeout=10)
    assert r.output == "ok\ufffd\ufffd\x00end"


@needs_bwrap
def test_shell_cannot_write_outside_under_bwrap(local_sandbox, tmp_path):
    outside = tmp_path / "outside.txt"
    r = local_sandbox.run(f"echo pwned > {outside}; touch /etc/loopcoder-pwned; echo inside > ok.txt", timeout=10)
    assert not outside.exists() and not os.path.exists("/etc/loopcoder-pwned")
    assert "Read-only file system" in r.output
    assert (tmp_path / "work" / "ok.txt").read_text() == "inside\n"


@needs_bwrap
def test_private_tmp_persists_between_commands_and_no_network(local_sandbox):
    local_sandbox.run("echo 'print(41 + 1)' > /tmp/script.py", timeout=10)
    assert local_sandbox.run("python3 /tmp/script.py", timeout=10).output == "42\n"
    assert not os.path.exists("/tmp/script.py")
    r = local_sandbox.run("python3 -c 'import socket; print([n for _, n in socket.if_nameindex()])'", timeout=10)
    assert r.output == "['lo']\n"


def test_files_roundtrip_and_listing(local_sandbox):
    local_sandbox.write_file("pkg/mod.py", b"x = 1\n")
    local_sandbox.write_file(f"{local_sandbox.workdir}/pkg/.hidden/y", b"")
    assert local_sandbox.read_file("pkg/mod.py") == b"x = 1\n"
    assert local_sandbox.exists("pkg") and local_sandbox.is_dir("pkg") and not local_sandbox.is_dir("pkg/mod.py")
    assert local_sandbox.list_dir(".") == ["pkg", "pkg/mod.py"]
    assert local_sandbox.run("cat pkg/mod.py", timeout=10).output == "x = 1\n"
    with pytest.raises(SandboxError, match="does not exist"):
        local_sandbox.read_file("missing.py")
    with pytest.raises(SandboxError, match="is a directory"):
        local_sandbox.read_file("pkg")


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt", "/etc/passwd", "/tmp/x", "..", "", "a\0b", "\ud800"])
def test_resolve_refuses_escapes(local_sandbox, path):
    with pytest.raises(SandboxError):
        local_sandbox.resolve(path)
    with pytest.raises(SandboxError):
        local_sandbox.write_file(path, b"pwned")


def test_resolve_accepts_inside_paths(local_sandbox):
    assert local_sandbox.resolve("a/../b.py") == "b.py"
    assert local_sandbox.resolve(local_sandbox.workdir + "/src/x.py") == "src/x.py"
    assert local_sandbox.resolve(local_sandbox.workdir) == "."


def test_symlink_pointing_outside_is_refused(local_sandbox):
    os.symlink("/etc", os.path.join(local_sandbox.workdir, "etc_link"))
    os.symlink("/etc/hostname", os.path.join(local_sandbox.workdir, "host_link"))
    for path in ["etc_link/passwd", "host_link", "etc_link"]:
        with pytest.raises(SandboxError, match="symbolic link"):
            local_sandbox.read_file(path)
    with pytest.raises(SandboxError, match="symbolic link"):
        local_sandbox.write_file("etc_link/loopcoder-pwned", b"x")
    os.symlink("pkg", os.path.join(local_sandbox.workdir, "inner_link"))
    assert local_sandbox.resolve("inner_link/a.py") == "inner_link/a.py"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="./ab\\\0~", max_size=24))
def test_resolve_never_leaves_the_copy(tmp_path_factory, path):
    work = tmp_path_factory.getbasetemp() / "prop-work"
    work.mkdir(exist_ok=True)
    sandbox = LocalSandbox(work, isolate=False)
    try:
        rel = sandbox.resolve(path)
    except SandboxError:
        return
    finally:
        sandbox.close()
    full = os.path.normpath(os.path.join(str(work.resolve()), rel))
    assert full == str(work.resolve()) or full.startswith(str(work.resolve()) + os.sep)


def test_a_fifo_is_refused_not_read(local_sandbox):
    """A pipe made by the model must not block a later read (the editor's view)."""
    import pytest

    from loopcoder.workspace.sandbox import SandboxError

    assert local_sandbox.run("mkfifo pipe", timeout=10).exit_code == 0
    with pytest.raises(SandboxError, match="not a regular file"):
        local_sandbox.read_file("pipe")


def test_tools_on_path_under_tmp_stay_visible(tmp_path, monkeypatch):
    """The private /tmp must not hide the host's tools that live under /tmp (a CI checkout's venv)."""
    import tempfile

    from loopcoder.workspace.local import LocalSandbox

    tools = Path(tempfile.mkdtemp(prefix="loopcoder-tools-", dir="/tmp"))
    try:
        (tools / "hello-tool").write_text("#!/bin/sh\necho tool ran\n")
        (tools / "hello-tool").chmod(0o755)
        monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
        work = tmp_path / "work"
        work.mkdir()
        with LocalSandbox(work) as sandbox:
            result = sandbox.run("hello-tool", timeout=10)
        assert result.exit_code == 0 and "tool ran" in result.output
    finally:
        shutil.rmtree(tools)


@needs_bwrap
def test_a_virtualenv_spelled_through_a_symlinked_tmp_runs_inside(tmp_path):
    """A checkout under a symlinked /tmp: PATH and shebangs name the /tmp spelling, which the private /tmp hides."""
    import secrets
    import sys

    real = Path.home() / ".cache" / f"loopcoder-test-{secrets.token_hex(6)}"
    real.mkdir(parents=True)
    try:
        spelled = tmp_path / "checkout"
        spelled.symlink_to(real)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(spelled / "venv")], check=True)
        tool = spelled / "venv" / "bin" / "hello"
        tool.write_text(f"#!{spelled}/venv/bin/python\nimport sys\nprint('hello from', sys.prefix)\n")
        tool.chmod(0o755)
        work = tmp_path / "work"
        work.mkdir()
        with LocalSandbox(work, path_prepend=[str(spelled / "venv" / "bin")]) as sb:
            first = sb.run("hello", timeout=60)
            r = sb.run("hello", timeout=60)  # the private /tmp keeps the link the first command saw
        assert first.exit_code == 0 and r.exit_code == 0, (first.output, r.output)
        assert r.output.startswith("hello from ") and r.output.strip().endswith("/venv")
    finally:
        shutil.rmtree(real, ignore_errors=True)


@needs_bwrap
def test_a_working_copy_whose_path_has_spaces(git_repo, tmp_path):
    from loopcoder.workspace.repo import WorkingCopy

    with WorkingCopy.create(git_repo, root=tmp_path / "my copies") as copy, LocalSandbox(copy.path) as sb:
        r = sb.run("pwd && echo new > 'a file.txt' && python -c 'print(1)'", timeout=60)
        assert r.exit_code == 0 and r.output.splitlines() == [str(copy.path), "1"]
        assert "+new" in sb.diff(copy.base_commit) and " b/a file.txt" in sb.diff(copy.base_commit)


@needs_bwrap
def test_the_copy_is_shown_at_a_stable_path_and_host_files_stay_the_truth(tmp_path):
    """bubblewrap mounts the copy at `shown_as`: commands and file tools use that path, the bytes land in
    the host directory, and a link that leaves the copy is refused by where it really points on the host."""
    work = tmp_path / "work-k3j9.pid1"
    work.mkdir()
    (work / "a.py").write_text("x = 1\n")
    shown = "/home/dev/.cache/loopcoder/worktrees/proj-0123456789-abcdef01"
    with LocalSandbox(work, shown_as=shown) as sb:
        assert (sb.workdir, sb.root) == (shown, str(work))
        r = sb.run("pwd; cat a.py; echo 'y = 2' > b.py; ls " + str(work) + " 2>&1 | head -1", timeout=10)
        assert r.output.splitlines()[:2] == [shown, "x = 1"]
        assert "No such file" in r.output  # the host's own path is not there
        assert (work / "b.py").read_text() == "y = 2\n"
        sb.write_file(f"{shown}/c.py", b"z = 3\n")
        assert (work / "c.py").read_bytes() == b"z = 3\n" and sb.read_file("b.py") == b"y = 2\n"
        assert sb.list_dir(shown) == ["a.py", "b.py", "c.py"]
        os.symlink("/etc/hostname", work / "out")
        os.symlink(f"{shown}/a.py", work / "inner_absolute")  # fine in the sandbox; on the host it points nowhere
        for link in ("out", "inner_absolute"):
            with pytest.raises(SandboxError, match="outside the repository"):
                sb.read_file(link)
        with pytest.raises(SandboxError, match="outside the repository"):
            sb.resolve(str(work / "a.py"))  # the host path is not a path the model can use


@needs_bwrap
@pytest.mark.parametrize("shown_as", ["/usr/local/loopcoder-copy", "/tmp/copy", "relative/path", "/", "/a/../b"])
def test_a_mount_point_that_would_clash_or_is_not_a_clean_absolute_path_keeps_the_host_path(tmp_path, shown_as):
    work = tmp_path / "work"
    work.mkdir()
    with LocalSandbox(work, shown_as=shown_as) as sb:
        assert sb.workdir == str(work.resolve())
        assert sb.run("pwd", timeout=10).output.strip() == sb.workdir


@needs_bwrap
def test_a_mount_point_above_a_visible_path_keeps_the_host_path(tmp_path):
    """Mounted at .../tools the copy would hide a directory the sandbox shows (outside /tmp, which clashes
    anyway); and one under it is not shown at all."""
    work = tmp_path / "work"
    work.mkdir()
    tools = Path.home() / ".cache" / f"loopcoder-test-{os.getpid()}-{tmp_path.name}" / "tools"
    (tools / "bin").mkdir(parents=True)
    try:
        for shown_as in (str(tools), str(tools / "bin" / "copy")):
            with LocalSandbox(work, shown_as=shown_as, ro_binds=[str(tools / "bin")]) as sb:
                assert sb.workdir == str(work.resolve())
        with LocalSandbox(work, shown_as=str(tools.parent / "elsewhere"), ro_binds=[str(tools / "bin")]) as sb:
            assert sb.workdir == str(tools.parent / "elsewhere")  # a sibling is fine
            assert sb.run(f"test -d {tools / 'bin'} && pwd", timeout=10).output.strip() == sb.workdir
    finally:
        shutil.rmtree(tools.parent)


SYSCALL_PROBE = """
import ctypes, errno, json, platform, sys
numbers = {"x86_64": {"io_uring_setup": 425, "bpf": 321, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
                      "userfaultfd": 323, "getppid": 110},
           "aarch64": {"io_uring_setup": 425, "bpf": 280, "keyctl": 219, "unshare": 97, "perf_event_open": 241,
                       "userfaultfd": 282, "getppid": 173}}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
seen = {}
for name, number in numbers.items():
    ctypes.set_errno(0)
    result = libc.syscall(number, 0, 0, 0, 0, 0)
    seen[name] = "EPERM" if result == -1 and ctypes.get_errno() == errno.EPERM else f"{result}/{ctypes.get_errno()}"
open(sys.argv[1], "w").write(json.dumps(seen))
"""


@needs_bwrap
def test_the_seccomp_filter_refuses_the_kernels_attack_surface(tmp_path):
    """Each call's result, written by the process that made it into a file read on the host: with the filter
    every listed call is refused with EPERM (getppid, not listed, works); without it the same calls reach
    the kernel (it answers EFAULT or EINVAL to their empty arguments)."""
    from loopcoder.workspace import seccomp

    if not seccomp.available():
        pytest.skip("libseccomp is not installed here (scripts/sandbox-deps.sh installs it)")
    work = tmp_path / "work"
    work.mkdir()
    (work / "probe.py").write_text(SYSCALL_PROBE)
    seen = {}
    for filtered in (True, False):
        with LocalSandbox(work) as sb:
            assert sb.seccomp is True
            sb.seccomp = filtered
            done = sb.run(f"python3 probe.py seen-{filtered}.json", timeout=30)
            assert done.exit_code == 0, done.output
        seen[filtered] = json.loads((work / f"seen-{filtered}.json").read_text())
    refused = {name for name, result in seen[True].items() if result == "EPERM"}
    assert refused == set(seen[True]) - {"getppid"}, seen[True]
    unfiltered = {name for name, result in seen[False].items() if result == "EPERM"}  # userfaultfd may be off anyway
    assert not unfiltered & {"io_uring_setup", "bpf", "keyctl", "unshare", "getppid"}, seen[False]


I386_GETPID = """
import ctypes, mmap
code = bytes([0xb8, 0x14, 0, 0, 0, 0xcd, 0x80, 0xc3])  # mov eax, 20 (getpid in the i386 table); int 0x80; ret
buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
buf.write(code)
pid = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(buf)))()
open("i386.txt", "w").write(str(pid))
"""


@needs_bwrap
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the 32-bit ABI of x86-64")
def test_the_32_bit_system_call_table_cannot_bypass_the_filter(tmp_path):
    """A call through int 0x80 (other numbers, same kernel) kills the process under the filter; without it,
    it works and leaves its result on the host."""
    from loopcoder.workspace import seccomp

    if not seccomp.available():
        pytest.skip("libseccomp is not installed here (scripts/sandbox-deps.sh installs it)")
    work = tmp_path / "work"
    work.mkdir()
    (work / "i386.py").write_text(I386_GETPID)
    with LocalSandbox(work) as sb:
        assert sb.run("python3 i386.py", timeout=30).exit_code == 128 + 31  # SIGSYS
        assert not (work / "i386.txt").exists()
        sb.seccomp = False
        assert sb.run("python3 i386.py", timeout=30).exit_code == 0 and (work / "i386.txt").read_text().isdigit()
