"""The search tool in a real sandbox, with ripgrep and with the grep/find fallback."""
from __future__ import annotations

import shutil

import pytest

from loopcoder.tools.search import MAX_RESULTS
from loopcoder.workspace.local import LocalSandbox


@pytest.fixture(params=["rg", "grep"])
def finder(request, monkeypatch, tmp_path):
    """(name, dirs to bind): ripgrep, or a PATH holding only what the fallback needs (no rg)."""
    if request.param == "rg":
        if not shutil.which("rg"):
            pytest.skip("ripgrep is not installed here")
        return "rg", []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "bwrap", "grep", "awk", "find", "sort", "head", "rm", "cat"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    return "grep", [str(bin_dir)]


@pytest.fixture
def sandbox(repo, finder):
    with LocalSandbox(repo, ro_binds=finder[1]) as sb:  # the sandbox's /tmp is private: bind the bin dir in
        yield sb


def search(call, pattern, **more):
    return call("search", pattern=pattern, **more)


def test_content_matches_with_path_and_line(call, finder):
    obs = search(call, "return 1")
    assert obs.text == 'Found 2 matches for "return 1" in the repository:\na.py:2:    return 1\na.py:6:    return 1'


def test_regex_literal_and_case(call, finder):
    assert "a.py:5:def g():" in search(call, r"def \w\(").text
    assert search(call, "f()", literal=True).text.endswith("a.py:1:def f():")
    assert "a.py:1:def f():" in search(call, "DEF F", ignore_case=True).text


def test_no_matches(call, finder):
    assert search(call, "nothing_like_this").text == 'No matches found for "nothing_like_this" in the repository.'


def test_skips_git_and_binary_files_but_not_hidden_ones(call, finder):
    obs = search(call, "needle")  # logo.bin holds it too
    assert obs.text == ('Found 2 matches for "needle" in the repository:\n.hidden/secret.txt:1:needle\n'
                        "pkg/sub/mod.py:1:VALUE = 'needle'")
    assert "No matches" in search(call, "refs/heads/main").text  # .git/HEAD holds it


def test_path_and_glob_narrow(call, finder):
    assert search(call, "return", path="pkg").text.startswith("No matches")
    assert search(call, "needle", glob="*.py").text.endswith("\npkg/sub/mod.py:1:VALUE = 'needle'")
    assert search(call, "needle", path="pkg/sub/mod.py").text.endswith("pkg/sub/mod.py:1:VALUE = 'needle'")


def test_results_are_capped_with_a_note(call, repo, finder):
    (repo / "many.txt").write_text("hit\n" * (MAX_RESULTS + 50) + "x" * 5000 + " hit\n")
    obs = search(call, "hit", path="many.txt")
    lines = obs.text.splitlines()
    assert lines[0] == f'Found {MAX_RESULTS + 51} matches for "hit" in many.txt:'
    assert len(lines) == MAX_RESULTS + 2 and lines[-1].startswith(f"[Showing the first {MAX_RESULTS} of {MAX_RESULTS + 51}")
    wide = search(call, "x hit", path="many.txt").text
    assert "[... line cut]" in wide and len(wide) < 500


def test_file_name_mode(call, finder):
    assert search(call, "mod", mode="files").text == 'Found 1 file matching "mod" in the repository:\npkg/sub/mod.py'
    listed = search(call, "*.py", mode="files").text.splitlines()[1:]
    assert listed == ["a.py", "pkg/__init__.py", "pkg/sub/mod.py"]
    assert search(call, "zzz", mode="files").text == 'No files matching "zzz" in the repository.'


def test_errors_are_observations(call, sandbox, finder):
    bad = search(call, "(unclosed")
    assert bad.is_error and bad.text.startswith('The search for "(unclosed" failed:')
    missing = search(call, "x", path="nope")
    assert missing.text == f"The path {sandbox.workdir}/nope does not exist. Please provide a valid path."
    assert search(call, "x", path="../").is_error
    assert search(call, "x", mode="files", glob="*.py").is_error


def test_fallback_really_has_no_ripgrep(call, finder):
    has_rg = call("bash", command="command -v rg >/dev/null && echo yes || echo no").text
    assert has_rg == ("yes" if finder[0] == "rg" else "no")
