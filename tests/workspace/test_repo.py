"""Working copies on real repositories: commits, carried work, diff hygiene, patch fallbacks, errors."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.conftest import git
from loopcoder.workspace.repo import RepoError, WorkingCopy


def state(repo: Path) -> tuple[str, dict[str, bytes], bytes]:
    """Everything the user could notice: status, every file's bytes (outside .git) and the index."""
    files = {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*"))
             if p.is_file() and ".git" not in p.relative_to(repo).parts}
    return git(repo, "status", "--porcelain"), files, (repo / ".git" / "index").read_bytes()


def make_user_work(repo: Path) -> None:
    (repo / "hello.py").write_text("print('v2')\nprint('staged')\n")
    git(repo, "add", "hello.py")
    (repo / "hello.py").write_text("print('v2')\nprint('staged')\nprint('unstaged')\n")
    (repo / "data" / "notes.txt").unlink()
    (repo / "new_module.py").write_text("X = 1\n")
    (repo / "pic.bin").write_bytes(b"\x00\xff" * 64)
    (repo / "debug.log").write_text("ignored\n")


def test_copy_at_an_older_commit(git_repo, tmp_path):
    first = git(git_repo, "rev-parse", "HEAD~1").strip()
    before = state(git_repo)
    with WorkingCopy.create(git_repo, "HEAD~1", root=tmp_path / "copies") as wc:
        assert wc.base_commit == first and wc.path != git_repo
        assert not str(wc.path).startswith(str(git_repo))
        assert (wc.path / "hello.py").read_text() == "print('v1')\n"
        assert git(wc.path, "rev-parse", "HEAD").strip() == first
        assert git(wc.path, "remote").strip() == ""  # nothing to push back to
        assert wc.diff() == ""
        path = wc.path
    assert not path.exists()
    assert state(git_repo) == before


def test_uncommitted_work_is_carried_and_the_repo_is_untouched(git_repo, tmp_path):
    make_user_work(git_repo)
    before = state(git_repo)
    with WorkingCopy.create(git_repo, carry_changes=True, root=tmp_path) as wc:
        assert git(wc.path, "status", "--porcelain") == before[0].replace("?? debug.log\n", "")
        assert (wc.path / "hello.py").read_bytes() == (git_repo / "hello.py").read_bytes()
        assert git(wc.path, "diff", "--cached", "--stat") == git(git_repo, "diff", "--cached", "--stat")
        assert (wc.path / "pic.bin").read_bytes() == b"\x00\xff" * 64
        assert not (wc.path / "debug.log").exists() and not (wc.path / "data" / "notes.txt").exists()
        patch = wc.diff()
        # the copy's git is its own: a commit there writes nothing into the user's repository
        git(wc.path, "stash")
        git(wc.path, "stash", "pop")
    assert "+print('unstaged')" in patch and "b/new_module.py" in patch and "deleted file mode" in patch
    assert state(git_repo) == before


def test_without_carrying_the_copy_is_clean(git_repo, tmp_path):
    make_user_work(git_repo)
    with WorkingCopy.create(git_repo, root=tmp_path) as wc:
        assert git(wc.path, "status", "--porcelain") == ""
        assert (wc.path / "hello.py").read_text() == "print('v2')\n"


def test_diff_hygiene_and_roundtrip(git_repo, tmp_path):
    git(git_repo, "config", "diff.noprefix", "true")  # a user setting that would break the patch
    with WorkingCopy.create(git_repo, root=tmp_path) as wc:
        git(wc.path, "config", "diff.noprefix", "true")
        git(wc.path, "config", "color.ui", "always")
        (wc.path / "hello.py").write_text("print('v3')")  # no final newline in the file
        (wc.path / "logo.bin").write_bytes(bytes(range(255, -1, -1)))
        (wc.path / "pkg").mkdir()
        (wc.path / "pkg" / "new.py").write_text("def f():\n    return 1\n")
        (wc.path / "pkg" / "__pycache__").mkdir()
        (wc.path / "pkg" / "__pycache__" / "new.cpython-311.pyc").write_bytes(b"\x00junk")
        for junk in ["hello.py.orig", "hello.py.rej", "stray.pyc", "run.log"]:
            (wc.path / junk).write_text("junk\n")
        patch = wc.diff()
        edited = {p: (wc.path / p).read_bytes() for p in ["hello.py", "logo.bin", "pkg/new.py"]}
        assert "?? pkg/" in git(wc.path, "status", "--porcelain")  # the real index was not touched
    assert patch.endswith("\n") and "\\ No newline at end of file" in patch
    assert "diff --git a/hello.py b/hello.py" in patch and "--- a/hello.py" in patch and "+++ b/hello.py" in patch
    assert "GIT binary patch" in patch and "diff --git a/pkg/new.py b/pkg/new.py" in patch
    assert "\x1b[" not in patch
    for junk in ["__pycache__", ".pyc", ".orig", ".rej", "run.log"]:
        assert junk not in patch
    with WorkingCopy.create(git_repo, root=tmp_path) as fresh:
        result = fresh.apply_patch(patch)
        assert result.applied and result.method == "git apply", result.summary()
        assert {p: (fresh.path / p).read_bytes() for p in edited} == edited
        assert not (fresh.path / ".loopcoder-apply.patch").exists()


def test_in_place_works_on_the_repo_without_touching_its_index(git_repo):
    make_user_work(git_repo)
    index = (git_repo / ".git" / "index").read_bytes()
    wc = WorkingCopy.create(git_repo, in_place=True)
    assert wc.path == git_repo.resolve() and wc.base_commit == git(git_repo, "rev-parse", "HEAD").strip()
    patch = wc.diff()
    assert "b/new_module.py" in patch and "debug.log" not in patch
    wc.close()
    assert git_repo.exists() and (git_repo / ".git" / "index").read_bytes() == index


NUMBERED = "".join(f"line {i}\n" for i in range(1, 21))


@pytest.fixture
def numbered(git_repo, tmp_path):
    """A copy whose base holds a 20-line file; returns (copy, patch changing line 10 made on that base)."""
    (git_repo / "num.txt").write_text(NUMBERED)
    git(git_repo, "add", "num.txt")
    git(git_repo, "commit", "-q", "-m", "numbers")
    with WorkingCopy.create(git_repo, root=tmp_path) as wc:
        (wc.path / "num.txt").write_text(NUMBERED.replace("line 10\n", "line ten\n"))
        patch = wc.diff()
        git(wc.path, "checkout", "--", "num.txt")
        yield wc, patch


def commit_all(path: Path, message: str) -> None:
    git(path, "commit", "-q", "-am", message)


def test_apply_falls_back_to_three_way(numbered):
    wc, patch = numbered
    (wc.path / "num.txt").write_text(NUMBERED.replace("line 8\n", "line eight\n"))  # inside the hunk's context
    commit_all(wc.path, "moved on")
    result = wc.apply_patch(patch)
    assert result.applied and result.method == "git apply --3way", result.summary()
    assert "line eight\n" in (wc.path / "num.txt").read_text() and "line ten\n" in (wc.path / "num.txt").read_text()


def test_apply_falls_back_to_patch_with_fuzz(numbered):
    wc, _ = numbered
    (wc.path / "num.txt").write_text(NUMBERED.replace("line 7\n", "line seven\n"))
    commit_all(wc.path, "moved on")
    # hand-written, no blob ids (so no 3-way), first context line stale: only fuzz gets it in
    patch = ("--- a/num.txt\n+++ b/num.txt\n@@ -7,7 +7,7 @@\n line 7\n line 8\n line 9\n-line 10\n"
             "+line ten\n line 11\n line 12\n line 13\n")
    result = wc.apply_patch(patch)
    assert result.applied and result.method == "patch --fuzz=5", result.summary()
    assert "line ten\n" in (wc.path / "num.txt").read_text()
    assert not list(wc.path.glob("*.orig")) and not list(wc.path.glob("*.rej"))


def test_apply_that_fails_everywhere_leaves_files_and_index_as_they_were(numbered):
    wc, patch = numbered
    (wc.path / "num.txt").write_text(NUMBERED.replace("line 10\n", "line TEN\n"))  # conflicts with the patch
    commit_all(wc.path, "conflicting")
    (wc.path / "num.txt").write_text(NUMBERED.replace("line 10\n", "line TEN\n") + "local\n")
    before = ((wc.path / "num.txt").read_bytes(), (wc.path / ".git" / "index").read_bytes())
    result = wc.apply_patch(patch)
    assert not result.applied and result.method is None
    summary = result.summary()
    assert all(name in summary for name in ["git apply failed", "git apply --3way failed", "patch --fuzz=5 failed"])
    assert ((wc.path / "num.txt").read_bytes(), (wc.path / ".git" / "index").read_bytes()) == before
    assert "<<<<<<<" not in (wc.path / "num.txt").read_text()


def test_empty_patch_is_reported(numbered):
    wc, _ = numbered
    result = wc.apply_patch("  \n")
    assert not result.applied and "empty" in result.summary()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["diff --git a/num.txt b/num.txt\n", "--- a/num.txt\n", "+++ b/num.txt\n",
                                          "@@ -1,3 +1,3 @@\n", " line 1\n", "-line 2\n", "+x\n", "GIT binary patch\n",
                                          "literal 5\n", "../../etc/passwd", "\x00", "\n", "junk"]), max_size=12).map("".join))
def test_model_written_patches_never_raise_and_fail_cleanly(numbered, patch):
    wc, _ = numbered
    before = git(wc.path, "status", "--porcelain"), (wc.path / "num.txt").read_bytes()
    result = wc.apply_patch(patch)
    if not result.applied:
        assert (git(wc.path, "status", "--porcelain"), (wc.path / "num.txt").read_bytes()) == before
    else:
        git(wc.path, "checkout", "--", ".")
        git(wc.path, "clean", "-fdq")


def test_errors_say_what_to_do(git_repo, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RepoError, match="not inside a git repository"):
        WorkingCopy.create(plain)
    with pytest.raises(RepoError, match="does not exist"):
        WorkingCopy.create(tmp_path / "missing")
    with pytest.raises(RepoError, match="Unknown commit 'deadbeef'"):
        WorkingCopy.create(git_repo, "deadbeef", root=tmp_path)
    with pytest.raises(RepoError, match="In-place mode works on HEAD"):
        WorkingCopy.create(git_repo, "HEAD~1", in_place=True)
    with pytest.raises(RepoError, match="only be carried onto HEAD"):
        WorkingCopy.create(git_repo, "HEAD~1", carry_changes=True, root=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(RepoError, match="no commits yet"):
        WorkingCopy.create(empty, root=tmp_path)


def test_unresolved_merge_conflicts_are_refused_when_carrying(git_repo, tmp_path):
    git(git_repo, "checkout", "-q", "-b", "other", "HEAD~1")
    (git_repo / "hello.py").write_text("print('other')\n")
    commit_all(git_repo, "other")
    git(git_repo, "checkout", "-q", "main")
    subprocess.run(["git", "merge", "other"], cwd=git_repo, capture_output=True)  # conflicts, exits 1
    with pytest.raises(RepoError, match="unresolved merge conflicts in hello.py"):
        WorkingCopy.create(git_repo, carry_changes=True, root=tmp_path)
    assert not list(tmp_path.glob("repo-*"))  # nothing half-made left behind


def test_a_same_size_edit_in_the_index_second_is_in_the_diff(git_repo, tmp_path):
    """git trusts an index entry's stat data unless the index file is not newer
    than the file ("racy git"). The diff's scratch index must keep the real
    index's mtime: a fresh copy makes it newer, and an edit of the same size in
    the same second as the index write (an agent's first step) is lost."""
    import time

    with WorkingCopy.create(git_repo, root=tmp_path / "copies") as copy:
        target = copy.path / "hello.py"
        while time.time() % 1 > 0.3:  # start early in a second: the next three steps share it
            time.sleep(0.05)
        target.write_text("print('v2')\n")
        git(copy.path, "update-index", "--refresh")  # index entry and index file: this second
        target.write_text("print('v3')\n")  # same size, same second
        time.sleep(1.1)  # the diff runs in a later second
        assert "+print('v3')" in copy.diff()
