"""Shared pytest fixtures."""
from __future__ import annotations

# --- sandboxes and docker (workspace) ----------------------------------------
import os
import subprocess
import uuid
from pathlib import Path

import pytest


def git(cwd: Path, *args: str) -> str:
    """Run git in `cwd` with a fixed identity and no user config; return stdout."""
    env = {
        **os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A real repository with two commits: hello.py (v1, then v2), a data dir, a binary file, a .gitignore."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "hello.py").write_text("print('v1')\n")
    (repo / "data").mkdir()
    (repo / "data" / "notes.txt").write_text("one\ntwo\nthree\n")
    (repo / "logo.bin").write_bytes(bytes(range(256)))
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "hello.py").write_text("print('v2')\n")
    git(repo, "commit", "-q", "-am", "second")
    return repo


@pytest.fixture
def local_sandbox(tmp_path: Path):
    """A LocalSandbox (bubblewrap when usable) on an empty directory."""
    from loopcoder.workspace.local import LocalSandbox

    work = tmp_path / "work"
    work.mkdir()
    with LocalSandbox(work) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def docker_client():
    """A Docker client, or a skip saying why no engine answers (scripts/sandbox-deps.sh starts one)."""
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as e:  # the SDK raises several unrelated types when no engine answers
        pytest.skip(f"no Docker engine answers ({e}); start one with: sudo bash scripts/sandbox-deps.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """The small local image scripts/sandbox-deps.sh builds (no registry needed)."""
    from loopcoder.workspace.docker_sandbox import BASE_IMAGE

    try:
        docker_client.images.get(BASE_IMAGE)
    except Exception:
        pytest.fail(f"image {BASE_IMAGE} is missing; build it with: sudo bash scripts/sandbox-deps.sh")
    return BASE_IMAGE


@pytest.fixture
def docker_label() -> dict[str, str]:
    """A label unique to one test, to find exactly the containers it made."""
    return {"loopcoder.test": uuid.uuid4().hex}
# --- end sandboxes and docker ------------------------------------------------
