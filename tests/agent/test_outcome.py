"""Which files of a patch are tests (workspace.patching.looks_like_test), on real git diffs and on generated paths."""
from __future__ import annotations

from hypothesis import given, strategies as st

from loopcoder.agent.outcome import edited_tests, edited_tests_words
from loopcoder.workspace.patching import looks_like_test
from tests.conftest import git


def test_test_paths_are_test_code_or_test_configuration():
    for path in ("test_calc.py", "pkg/calc_test.py", "conftest.py", "tests/helpers.py", "src/pkg/test/data.json"):
        assert looks_like_test(path), path
    for path in ("calc.py", "testing.py", "pkg/contest.py", "docs/tests.md", "latest_test.txt", "tests"):
        assert not looks_like_test(path), path


def test_a_real_diff_names_its_test_files_once(tmp_path):
    repo = tmp_path / "r"
    (repo / "tests").mkdir(parents=True)
    (repo / "calc.py").write_text("x = 1\n")
    (repo / "tests" / "test_calc.py").write_text("def test_x():\n    assert 1\n")
    (repo / "old_test.py").write_text("def test_old():\n    assert True\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    (repo / "calc.py").write_text("x = 2\n")
    (repo / "tests" / "test_calc.py").write_text("def test_x():\n    assert 2\n")
    git(repo, "mv", "old_test.py", "renamed_test.py")
    (repo / "conftest.py").write_text("import pytest\n")
    git(repo, "add", "-A")
    patch = git(repo, "diff", "--cached", "HEAD")
    assert edited_tests(patch) == ["conftest.py", "old_test.py", "renamed_test.py", "tests/test_calc.py"]
    assert edited_tests_words(edited_tests(patch)) == ("; edits tests: conftest.py, old_test.py, renamed_test.py"
                                                       " and 1 more")
    assert edited_tests("") == [] and edited_tests_words([]) == ""


segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))


def file_diff(path: str, content: str) -> str:
    """One file's section of a git diff; every content line carries its +/- prefix, as git writes it."""
    removed = "".join(f"-{line}\n" for line in content.splitlines() or [""])
    return f"diff --git a/{path} b/{path}\nindex 0000000..1111111 100644\n--- a/{path}\n+++ b/{path}\n@@ -1 +1 @@\n{removed}+x\n"


@given(st.lists(st.lists(segment, min_size=1, max_size=4).map("/".join), max_size=6), st.text(max_size=200))
def test_any_diff_lists_exactly_its_test_paths(paths, content):
    patch = "".join(file_diff(path, content) for path in paths)
    assert edited_tests(patch) == list(dict.fromkeys(p for p in paths if looks_like_test(p)))
