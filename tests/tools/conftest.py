"""Fixtures for the tool tests: a real git repository and a real LocalSandbox on it (bubblewrap when usable)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from loopcoder.tools import default_tools, get_tool
from loopcoder.workspace.local import LocalSandbox

SOURCE = "def f():\n    return 1\n\n\ndef g():\n    return 1\n"


def make_repo(root: Path) -> Path:
    """A small repository with the files the tests need, committed with git."""
    root.mkdir()
    (root / "a.py").write_text(SOURCE)
    (root / "pkg" / "sub" / "deep").mkdir(parents=True)
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "sub" / "mod.py").write_text("VALUE = 'needle'\n")
    (root / "pkg" / "sub" / "deep" / "far.txt").write_text("far\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("needle\n")
    (root / "logo.bin").write_bytes(b"\x89PNG\x00\x01needle\x00" + bytes(range(256)))
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "T",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "T", "GIT_COMMITTER_EMAIL": "t@example.com"}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "base"]):
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)
    return root


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def sandbox(repo: Path):
    with LocalSandbox(repo) as sb:
        yield sb


@pytest.fixture
def tools():
    """A fresh tool set (undo history and timeout streaks start empty)."""
    return default_tools()


@pytest.fixture
def call(tools, sandbox):
    """call(tool_name, **arguments) -> Observation, against the fixture sandbox."""
    return lambda name, **arguments: get_tool(name, tools).run(arguments, sandbox)
