"""Fixtures for agent tests: a real repository with a failing test, replay scripts, configs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopcoder.agent.config import load_config
from loopcoder.runtime.toolcalls import render_tool_call
from tests.conftest import git

CALC = "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n"
TEST_CALC = "from calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
FIX = {"command": "str_replace", "path": "calc.py", "old_str": "return a - b", "new_str": "return a + b"}


def call(name: str, **arguments) -> str:
    """One tool call exactly as the model writes it."""
    return render_tool_call(name, arguments)


def make_calc_repo(path: Path) -> Path:
    """A repository at `path` whose test_add fails until calc.add is fixed."""
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "calc.py").write_text(CALC)
    (path / "test_calc.py").write_text(TEST_CALC)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "calc")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_calc_repo(tmp_path / "proj")


@pytest.fixture(autouse=True)
def copies_root(tmp_path: Path, monkeypatch) -> Path:
    """Working copies go here, so a test can check that none is left behind."""
    root = tmp_path / "copies"
    monkeypatch.setenv("LOOPCODER_WORKTREES", str(root))
    monkeypatch.setattr("loopcoder.workspace.repo.DEFAULT_ROOT", root)
    monkeypatch.setenv("LOOPCODER_CONFIG", str(tmp_path / "no-user-config.yaml"))
    return root


@pytest.fixture
def script(tmp_path: Path):
    """Write a replay script (a JSON list of raw outputs) and return its path."""
    def write(outputs: list[str], name: str = "script.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(outputs))
        return path
    return write


@pytest.fixture
def make_config(tmp_path: Path):
    """A replay config over `script` with overrides (`section.key=value`)."""
    def make(script_path: Path, *overrides: str):
        return load_config(overrides=["backend.name=replay", f"backend.script={script_path}",
                                      f"run.output_dir={tmp_path / 'runs'}", *overrides], user_file=False)
    return make
