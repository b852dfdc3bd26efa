"""str_replace_editor on a real repository in a real sandbox; messages checked word for word.

The quoted messages are SWE-agent's editor wording, which models were trained on.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.tools.conftest import SOURCE
from loopcoder.tools.str_replace_editor import HUGE_FILE_BYTES, REVIEW, REVIEW_INSERT, UNDO_LEVELS


def edit(call, **arguments):
    return call("str_replace_editor", **arguments)


def test_view_file_is_cat_n(call, sandbox):
    obs = edit(call, command="view", path="a.py")
    assert not obs.is_error
    assert obs.text == (
        f"Here's the result of running `cat -n` on {sandbox.workdir}/a.py:\n"
        "     1\tdef f():\n     2\t    return 1\n     3\t\n     4\t\n     5\tdef g():\n     6\t    return 1\n"
    )


@pytest.mark.parametrize("view_range, shown", [([2, 3], [2, 3]), ([5, -1], [5, 6]), ([6, 6], [6, 6])])
def test_view_range(call, view_range, shown):
    obs = edit(call, command="view", path="a.py", view_range=view_range)
    numbers = [int(line.split("\t")[0]) for line in obs.text.splitlines()[1:]]
    assert numbers == list(range(shown[0], shown[1] + 1))


def test_view_range_past_the_end_shows_what_exists_and_says_so(call):
    obs = edit(call, command="view", path="a.py", view_range=[5, 40])
    assert "     6\t    return 1" in obs.text and "[The file has 6 lines; showing lines 5-6.]" in obs.text


@pytest.mark.parametrize("view_range, message", [
    ([0, 3], "Invalid `view_range`: [0, 3]. Its first element `0` should be within the range of lines of the file: [1, 6]"),
    ([7, 8], "Invalid `view_range`: [7, 8]. Its first element `7` should be within the range of lines of the file: [1, 6]"),
    ([4, 2], "Invalid `view_range`: [4, 2]. Its second element `2` should be larger or equal than its first `4`"),
    ([1, 2, 3], "Invalid `view_range`. It should be a list of two integers."),
])
def test_bad_view_range(call, view_range, message):
    obs = edit(call, command="view", path="a.py", view_range=view_range)
    assert obs.is_error and obs.text == message


def test_view_range_of_wrong_type_names_parameter_and_type(call):
    obs = edit(call, command="view", path="a.py", view_range=["one", 2])
    assert obs.is_error and "`view_range`" in obs.text and "integer" in obs.text


def test_view_directory_two_levels_hidden_skipped(call, sandbox):
    obs = edit(call, command="view", path=".")
    root = sandbox.workdir
    assert obs.text.startswith(f"Here's the files and directories up to 2 levels deep in {root}, excluding hidden items:\n")
    listed = obs.text.splitlines()[1:]
    assert f"{root}/a.py" in listed and f"{root}/pkg/sub" in listed and f"{root}/pkg/__init__.py" in listed
    assert f"{root}/pkg/sub/mod.py" not in listed  # third level
    assert not any(".hidden" in line or ".git" in line for line in listed)


def test_view_range_on_directory_is_refused(call):
    obs = edit(call, command="view", path="pkg", view_range=[1, 2])
    assert obs.text == "The `view_range` parameter is not allowed when `path` points to a directory."


def test_huge_file_is_not_shown_whole(call, repo):
    line, lines = b"0123456789abcdefghi\n", 2_500_000  # 50 MB
    assert len(line) * lines > HUGE_FILE_BYTES
    (repo / "huge.txt").write_bytes(line * (lines - 1) + b"last\n")
    obs = edit(call, command="view", path="huge.txt")
    assert not obs.is_error and "too large to show whole" in obs.text and "view_range" in obs.text
    assert len(obs.text) < 1000
    part = edit(call, command="view", path="huge.txt", view_range=[lines - 1, -1])
    assert part.text.endswith(f"{lines - 1:6}\t0123456789abcdefghi\n{lines:6}\tlast\n")


def test_long_file_is_cut_with_a_note(call, repo):
    (repo / "long.py").write_text("".join(f"x_{i} = {i}\n" for i in range(5000)))
    obs = edit(call, command="view", path="long.py")
    assert len(obs.text) < 17_000 and "cut from the middle" in obs.text and "view_range" in obs.text
    assert "     1\tx_0 = 0" in obs.text and "  5000\tx_4999 = 4999" in obs.text


def test_binary_file_gets_a_clear_message(call):
    obs = edit(call, command="view", path="logo.bin")
    assert obs.is_error and "binary" in obs.text and "PNG" not in obs.text


def test_missing_path(call, sandbox):
    for command in ("view", "str_replace", "insert", "undo_edit"):
        obs = edit(call, command=command, path="nope.py", old_str="x", new_str="y", insert_line=0)
        assert obs.is_error
        assert obs.text == f"The path {sandbox.workdir}/nope.py does not exist. Please provide a valid path."


def test_create_and_refuse_overwrite(call, sandbox, repo):
    obs = edit(call, command="create", path="new/dir/b.py", file_text="B = 1\n")
    assert obs.text == f"File created successfully at: {sandbox.workdir}/new/dir/b.py"
    assert (repo / "new" / "dir" / "b.py").read_text() == "B = 1\n"
    again = edit(call, command="create", path="new/dir/b.py", file_text="other")
    assert again.is_error
    assert again.text == f"File already exists at: {sandbox.workdir}/new/dir/b.py. Cannot overwrite files using command `create`."
    assert (repo / "new" / "dir" / "b.py").read_text() == "B = 1\n"


def test_create_needs_file_text(call):
    assert edit(call, command="create", path="c.py").text == "Parameter `file_text` is required for command: create"


def test_str_replace_success_shows_snippet(call, sandbox, repo):
    obs = edit(call, command="str_replace", path="a.py", old_str="def g():\n    return 1", new_str="def g():\n    return 2")
    assert not obs.is_error
    path = f"{sandbox.workdir}/a.py"
    assert obs.text == (
        f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of {path}:\n"
        "     1\tdef f():\n     2\t    return 1\n     3\t\n     4\t\n     5\tdef g():\n     6\t    return 2\n"
        + REVIEW
    )
    assert REVIEW == "Review the changes and make sure they are as expected. Edit the file again if necessary."
    assert (repo / "a.py").read_text() == "def f():\n    return 1\n\n\ndef g():\n    return 2\n"


def test_str_replace_not_found(call, sandbox, repo):
    obs = edit(call, command="str_replace", path="a.py", old_str="return 3", new_str="return 4")
    assert obs.is_error
    assert obs.text == f"No replacement was performed, old_str `return 3` did not appear verbatim in {sandbox.workdir}/a.py."
    assert (repo / "a.py").read_text() == SOURCE


def test_str_replace_multiple_lists_lines(call, repo):
    obs = edit(call, command="str_replace", path="a.py", old_str="    return 1", new_str="    return 2")
    assert obs.is_error
    assert obs.text == ("No replacement was performed. Multiple occurrences of old_str `    return 1` in lines [2, 6]. "
                        "Please ensure it is unique")
    assert (repo / "a.py").read_text() == SOURCE


def test_str_replace_counts_multiline_and_overlapping_occurrences(call, repo):
    (repo / "m.txt").write_text("ab\nab\nxaaa\n")
    assert "in lines [1, 2]." in edit(call, command="str_replace", path="m.txt", old_str="ab\n", new_str="").text
    assert "in lines [3]." in edit(call, command="str_replace", path="m.txt", old_str="aa", new_str="b").text


def test_str_replace_deletes_with_empty_new_str_and_refuses_no_op(call, repo):
    obs = edit(call, command="str_replace", path="a.py", old_str="\n\ndef g():\n    return 1\n")
    assert not obs.is_error and (repo / "a.py").read_text() == "def f():\n    return 1\n"
    same = edit(call, command="str_replace", path="a.py", old_str="def f", new_str="def f")
    assert same.is_error and same.text == "No replacement was performed, old_str `def f` is the same as new_str `def f`."
    assert edit(call, command="str_replace", path="a.py").text == "Parameter `old_str` is required for command: str_replace"


@pytest.mark.parametrize("key", ["new_str", "insert_text"])
def test_insert_at_top_middle_end(call, repo, sandbox, key):
    obs = edit(call, command="insert", path="a.py", insert_line=0, **{key: "import os\n"})
    assert obs.text == (
        f"The file {sandbox.workdir}/a.py has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n"
        "     1\timport os\n     2\tdef f():\n     3\t    return 1\n     4\t\n     5\t\n" + REVIEW_INSERT
    )
    edit(call, command="insert", path="a.py", insert_line=3, **{key: "# middle"})
    edit(call, command="insert", path="a.py", insert_line=8, **{key: "# end\n# really"})
    assert (repo / "a.py").read_text() == "import os\n" + SOURCE.replace("return 1\n\n", "return 1\n# middle\n\n", 1) + "# end\n# really\n"


def test_insert_errors(call):
    out_of_range = edit(call, command="insert", path="a.py", insert_line=7, new_str="x")
    assert out_of_range.text == "Invalid `insert_line` parameter: 7. It should be within the range of lines of the file: [0, 6]"
    assert edit(call, command="insert", path="a.py", new_str="x").text == "Parameter `insert_line` is required for command: insert"
    assert edit(call, command="insert", path="a.py", insert_line=1).text == "Parameter `new_str` is required for command: insert"
    both = edit(call, command="insert", path="a.py", insert_line=1, new_str="x", insert_text="y")
    assert both.is_error and "`new_str`" in both.text and "`insert_text`" in both.text


def test_undo_levels_per_file(call, sandbox, repo):
    versions = [SOURCE]
    for n in range(3):
        edit(call, command="insert", path="a.py", insert_line=0, new_str=f"# v{n}")
        versions.append((repo / "a.py").read_text())
    edit(call, command="create", path="other.py", file_text="o = 1\n")
    for expected in reversed(versions[:-1]):
        obs = edit(call, command="undo_edit", path="a.py")
        assert obs.text.startswith(f"Last edit to {sandbox.workdir}/a.py undone successfully. ")
        assert (repo / "a.py").read_text() == expected
    none_left = edit(call, command="undo_edit", path="a.py")
    assert none_left.is_error and none_left.text == f"No edit history found for {sandbox.workdir}/a.py."
    assert (repo / "other.py").read_text() == "o = 1\n"  # another file's history is its own
    edit(call, command="undo_edit", path="other.py")
    assert not (repo / "other.py").exists()  # undoing a create removes the file


def test_undo_keeps_a_bounded_number_of_levels(call, repo):
    for n in range(UNDO_LEVELS + 3):
        edit(call, command="insert", path="a.py", insert_line=0, new_str=f"# v{n}")
    undone = [edit(call, command="undo_edit", path="a.py") for _ in range(UNDO_LEVELS + 1)]
    assert [obs.is_error for obs in undone] == [False] * UNDO_LEVELS + [True]
    assert (repo / "a.py").read_text().splitlines()[:3] == ["# v2", "# v1", "# v0"]


def test_directory_only_allows_view(call, sandbox):
    obs = edit(call, command="str_replace", path="pkg", old_str="a", new_str="b")
    assert obs.text == f"The path {sandbox.workdir}/pkg is a directory and only the `view` command can be used on directories"


@pytest.mark.parametrize("data, old, new, expected", [
    (b"one\r\ntwo\r\nthree\r\n", "two\n", "TWO\nTWO2\n", b"one\r\nTWO\r\nTWO2\r\nthree\r\n"),  # CRLF kept
    (b"caf\xe9 = 1\n", "= 1", "= 2", b"caf\xe9 = 2\n"),  # Latin-1 kept
    (b"\tindented\n\t\tmore", "more", "most", b"\tindented\n\t\tmost"),  # tabs and no final newline kept
    ("unicode \u00e9\u4e2d = 1\n".encode(), "= 1", "= '\u2713'", "unicode \u00e9\u4e2d = '\u2713'\n".encode()),
])
def test_edits_keep_bytes_they_do_not_touch(call, repo, data, old, new, expected):
    (repo / "f.txt").write_bytes(data)
    assert not edit(call, command="str_replace", path="f.txt", old_str=old, new_str=new).is_error
    assert (repo / "f.txt").read_bytes() == expected
    edit(call, command="undo_edit", path="f.txt")
    assert (repo / "f.txt").read_bytes() == data


def test_insert_keeps_crlf_and_missing_final_newline(call, repo):
    (repo / "w.txt").write_bytes(b"a\r\nb")
    edit(call, command="insert", path="w.txt", insert_line=2, new_str="c")
    assert (repo / "w.txt").read_bytes() == b"a\r\nb\r\nc"


@pytest.fixture
def outside(tmp_path: Path, repo: Path) -> Path:
    """A directory next to the repository, reachable from it through a symlink; /etc linked too."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "keep.txt").write_text("outside\n")
    (repo / "out_link").symlink_to(out)
    (repo / "etc_link").symlink_to("/etc")
    return out


@pytest.mark.parametrize("path", ["../outside/keep.txt", "{outside}/keep.txt", "out_link/keep.txt", "etc_link/hostname", "/etc/passwd"])
def test_paths_outside_are_refused_and_untouched(call, outside, path):
    path = path.format(outside=outside)
    for arguments in (dict(command="view"), dict(command="str_replace", old_str="outside", new_str="changed"),
                      dict(command="insert", insert_line=0, new_str="x"), dict(command="create", file_text="x")):
        obs = edit(call, path=path, **arguments)
        assert obs.is_error and ("outside" in obs.text or "leaves the repository" in obs.text), obs.text
    created = [dict(command="create", path=p, file_text="x") for p in ("out_link/new.txt", "../outside/new.txt", "etc_link/loopcoder-probe")]
    assert all(edit(call, **a).is_error for a in created)
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "outside\n"
    assert not Path("/etc/loopcoder-probe").exists()
