"""DockerSandbox on the local base image: commands, escapes, copies, diffs and cleanup.

These need a Docker engine; scripts/sandbox-deps.sh (run by .ci/run through
scripts/test.sh) starts one and builds the image, so in CI they run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from tests.conftest import git
from loopcoder.workspace.docker_sandbox import DockerSandbox, remove_leftovers, swebench_image
from loopcoder.workspace.patching import apply_patch
from loopcoder.workspace.repo import WorkingCopy
from loopcoder.workspace.sandbox import Sandbox, SandboxError

pytestmark = pytest.mark.docker


def containers(client, label: dict[str, str]) -> list:
    key, value = next(iter(label.items()))
    return client.containers.list(all=True, filters={"label": f"{key}={value}"})


@pytest.fixture(scope="module")
def box(docker_client, base_image, tmp_path_factory):
    """One container for the command and file checks (a container start is the slow part)."""
    work = tmp_path_factory.mktemp("docker-work")
    (work / "hello.py").write_text("print('hi')\n")
    with DockerSandbox(base_image, copy_from=work, client=docker_client) as sandbox:
        yield sandbox


def test_is_a_sandbox(box):
    assert isinstance(box, Sandbox) and box.workdir == "/testbed"


def test_exit_code_order_and_env(box):
    r = box.run('echo out; echo err >&2; echo "$PAGER $TERM $FOO"; pwd; cat; exit 3', env={"FOO": "bar"}, timeout=20)
    assert (r.exit_code, r.timed_out, r.truncated) == (3, False, False)
    assert r.output == "out\nerr\ncat dumb bar\n/testbed\n"


def test_nul_bytes_are_refused(box):
    with pytest.raises(SandboxError, match="NUL byte"):
        box.run("echo a\0b", timeout=10)


def test_timeout_keeps_partial_output(box):
    r = box.run("echo before; sleep 1000; echo after", timeout=1.5)
    assert r.timed_out and r.exit_code == -1 and r.output == "before\n"


def test_background_process_returns_promptly_and_is_gone(box):
    r = box.run("exec -a loopcoder-orphan sleep 1000 & echo started", timeout=20)
    assert r.output == "started\n" and not r.timed_out
    r = box.run("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", timeout=20)
    assert "loopcoder-orphan" not in r.output


def test_escaped_process_does_not_hang_the_read(box):
    r = box.run("setsid sleep 1000 & echo started", timeout=20)
    assert r.output == "started\n" and r.exit_code == 0 and not r.timed_out


def test_flood_is_capped_and_binary_is_replaced(box):
    r = box.run("yes | head -c 200M; printf 'tail\\xff'", timeout=120)
    assert r.exit_code == 0 and r.truncated and len(r.output) < 2 * box.output_limit
    assert r.output.startswith("y\ny\n") and r.output.endswith("tail\ufffd")


def test_no_network(box):
    r = box.run("ls /sys/class/net", timeout=20)
    assert r.output.split() == ["lo"]


def test_files_roundtrip_and_listing(box):
    box.write_file("pkg/mod.py", b"\x00\xffdata")
    box.write_file("/testbed/pkg/.hidden", b"")
    assert box.read_file("/testbed/pkg/mod.py") == b"\x00\xffdata"
    assert box.run("cat pkg/mod.py | wc -c", timeout=20).output == "6\n"
    assert box.exists("pkg") and box.is_dir("pkg") and not box.exists("nope")
    assert box.list_dir(".") == ["hello.py", "pkg", "pkg/mod.py"]
    box.run("chmod +x hello.py", timeout=20)
    box.write_file("hello.py", b"print('hello')\n")
    assert box.run("test -x hello.py && cat hello.py", timeout=20).output == "print('hello')\n"
    with pytest.raises(SandboxError, match="does not exist"):
        box.read_file("missing.py")
    with pytest.raises(SandboxError, match="is a directory"):
        box.read_file("pkg")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "pkg/../../x", "/testbed2/x"])
def test_escapes_are_refused(box, path):
    with pytest.raises(SandboxError):
        box.read_file(path)
    with pytest.raises(SandboxError):
        box.write_file(path, b"pwned")


def test_symlink_to_etc_is_refused(box):
    box.run("ln -sfn /etc etc_link", timeout=20)
    with pytest.raises(SandboxError, match="symbolic link"):
        box.read_file("etc_link/passwd")
    with pytest.raises(SandboxError, match="symbolic link"):
        box.write_file("etc_link/loopcoder", b"x")
    box.run("rm etc_link", timeout=20)


def test_working_copy_in_container_diff_and_patch(docker_client, base_image, git_repo, tmp_path):
    with WorkingCopy.create(git_repo, root=tmp_path) as wc, \
            DockerSandbox(base_image, copy_from=wc.path, base_commit=wc.base_commit, client=docker_client) as sb:
        # the shared clone's borrowed objects came along: history works inside
        assert sb.run("git log --oneline | wc -l", timeout=30).output == "2\n"
        sb.write_file("hello.py", b"print('v3')\n")
        sb.write_file("new/file.txt", b"new\n")
        sb.run("mkdir -p __pycache__ && echo x > __pycache__/a.pyc && printf '\\x00\\x01' > blob.bin", timeout=30)
        patch = sb.diff()
        assert "b/hello.py" in patch and "b/new/file.txt" in patch and "GIT binary patch" in patch
        assert "__pycache__" not in patch and patch.endswith("\n")
        assert wc.apply_patch(patch).applied
        assert wc.diff() == patch  # the same bytes computed on the host and in the container
        sb.run("git checkout -q -- . && git clean -fdq", timeout=30)
        result = apply_patch(sb, patch)
        assert result.applied and result.method == "git apply"
        assert sb.read_file("hello.py") == b"print('v3')\n"


def test_image_repo_mode_and_bind_mount(docker_client, base_image, git_repo, tmp_path):
    with DockerSandbox(base_image, copy_from=git_repo, client=docker_client) as sb:
        image = sb.container.commit(repository="loopcoder-test/repo-image", tag=uuid.uuid4().hex)  # this run's
    try:
        with DockerSandbox(image.id, client=docker_client) as sb:  # the SWE-bench way: /testbed is in the image
            assert sb.base_commit == git(git_repo, "rev-parse", "HEAD").strip()
            assert sb.read_file("hello.py") == b"print('v2')\n" and sb.diff() == ""
    finally:
        docker_client.images.remove(image.id, force=True)
    with DockerSandbox(base_image, copy_from=git_repo, mount=True, client=docker_client) as sb:
        sb.run("echo mounted > from_container.txt", timeout=30)
        assert (git_repo / "from_container.txt").read_text() == "mounted\n"


def test_copy_out_and_a_dead_container(docker_client, base_image, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    with DockerSandbox(base_image, copy_from=src, client=docker_client) as sb:
        sb.write_file("sub/b.bin", b"\x00\x01")
        sb.copy_out(tmp_path / "out")
        assert (tmp_path / "out" / "a.txt").read_text() == "a\n"
        assert (tmp_path / "out" / "sub" / "b.bin").read_bytes() == b"\x00\x01"
        sb.container.kill()
        with pytest.raises(SandboxError, match="Docker engine failed"):
            sb.run("echo hi", timeout=10)
        with pytest.raises(SandboxError, match="Docker engine failed"):
            sb.read_file("a.txt")
    with pytest.raises(SandboxError, match="closed"):
        sb.run("echo hi", timeout=10)


def test_container_removed_on_close_and_on_errors(docker_client, base_image, docker_label, tmp_path):
    with DockerSandbox(base_image, copy_from=tmp_path, labels=docker_label, client=docker_client):
        assert len(containers(docker_client, docker_label)) == 1
    assert containers(docker_client, docker_label) == []
    with pytest.raises(RuntimeError):
        with DockerSandbox(base_image, copy_from=tmp_path, labels=docker_label, client=docker_client):
            raise RuntimeError("boom")
    assert containers(docker_client, docker_label) == []
    with pytest.raises(SandboxError, match="has no /nowhere"):  # fails half-way through construction
        DockerSandbox(base_image, workdir="/nowhere", labels=docker_label, client=docker_client)
    assert containers(docker_client, docker_label) == []


def test_container_removed_when_the_process_is_terminated(docker_client, base_image, docker_label, tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        from loopcoder.workspace.docker_sandbox import DockerSandbox
        sb = DockerSandbox({base_image!r}, copy_from={str(tmp_path)!r}, labels={docker_label!r})
        print("ready", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert len(containers(docker_client, docker_label)) == 1
        proc.terminate()
        assert proc.wait(60) == 128 + 15
    finally:
        proc.kill()
        proc.stdout.close()
    assert containers(docker_client, docker_label) == []


def test_leftovers_are_found_by_label(docker_client, base_image, docker_label):
    docker_client.containers.create(base_image, command=["true"], labels={"loopcoder": "1", **docker_label})
    assert remove_leftovers(docker_client, docker_label) == 1
    assert containers(docker_client, docker_label) == []


def test_swebench_image_names():
    assert swebench_image("django__django-11099") == "swebench/sweb.eval.x86_64.django_1776_django-11099"
    assert swebench_image("astropy__astropy-12907") == "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907"


def test_opening_survives_a_container_removed_while_listing(docker_client, base_image, docker_label, tmp_path):
    """Another run's sandbox may close between the engine listing its container and the SDK inspecting it.
    The removal is made by the real engine at exactly that moment: opening a sandbox goes on."""
    import socket

    victim = docker_client.containers.create(base_image, command=["true"], labels={
        "loopcoder": "1", "loopcoder.host": socket.gethostname(), "loopcoder.pid": str(os.getpid()), **docker_label})
    inspect = docker_client.api.inspect_container

    def removed_first(resource_id, *args, **kwargs):
        if resource_id == victim.id:
            docker_client.api.remove_container(victim.id, force=True)  # the other run's close
        return inspect(resource_id, *args, **kwargs)

    docker_client.api.inspect_container = removed_first
    try:
        with DockerSandbox(base_image, copy_from=tmp_path, client=docker_client) as sb:
            assert sb.run("echo up", timeout=30).output.strip() == "up"
        assert remove_leftovers(docker_client, docker_label) == 0
    finally:
        docker_client.api.inspect_container = inspect
    assert containers(docker_client, docker_label) == []
