"""Limit settings as the user types them, and patches that reach for git's own files."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from tests.conftest import git
from loopcoder.workspace.limits import describe_size, parse_size
from loopcoder.workspace.local import LocalSandbox
from loopcoder.workspace.patching import apply_patch
from loopcoder.workspace.sandbox import SandboxError


@pytest.mark.parametrize("text, expected", [("4g", 4 << 30), ("512m", 512 << 20), ("1.5G", 3 << 29),
                                            ("4GiB", 4 << 30), ("100k", 100 << 10), (1024, 1024), ("2048", 2048)])
def test_sizes_as_typed(text, expected):
    assert parse_size(text) == expected


@given(st.one_of(st.text(max_size=12), st.integers(max_value=0), st.booleans(), st.none(), st.floats()))
def test_anything_else_is_one_clear_error(value):
    try:
        size = parse_size(value, "sandbox.memory")
    except SandboxError as error:
        assert "sandbox.memory must be a positive size" in str(error)
    else:
        assert isinstance(size, int) and size > 0


def test_sizes_read_back():
    assert describe_size(4 << 30) == "4 GiB" and describe_size(512 << 20) == "512 MiB"


HOOK_PATCH = """diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout
new file mode 100755
--- /dev/null
+++ b/.git/hooks/post-checkout
@@ -0,0 +1,2 @@
+#!/bin/sh
+touch pwned
"""


@pytest.mark.parametrize("patch", [HOOK_PATCH, HOOK_PATCH.replace(".git/hooks", "sub/.GIT/hooks"),
                                   "--- a/.git/config\n+++ b/.git/config\n@@ -1 +1,2 @@\n [core]\n+\tfsmonitor = touch pwned\n"])
def test_a_patch_into_git_s_own_files_is_refused_by_every_method(git_repo: Path, patch):
    (git_repo / "sub").mkdir()
    git(git_repo, "init", "-q", "sub")
    before = (git_repo / ".git" / "config").read_bytes()
    with LocalSandbox(git_repo, isolate=False) as sandbox:
        result = apply_patch(sandbox, patch)
    assert not result.applied and ".git" in result.summary()
    assert not (git_repo / ".git" / "hooks" / "post-checkout").exists()
    assert not (git_repo / "sub" / ".git" / "hooks" / "post-checkout").exists()
    assert (git_repo / ".git" / "config").read_bytes() == before
