"""The hand-written evaluation set: every task's check fails on its base and passes after its reference solution,
judged the way the evaluation judges a run (a git diff of a real repository, applied to a fresh copy)."""
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.handwritten import (KINDS, HandTask, TaskFileError, check_patch, load_file, load_tasks, run_hidden,
                                    run_suite, write_files)
from tests.conftest import git

TASKS = load_tasks()


def test_the_set_is_large_and_covers_every_kind_and_many_repositories():
    kinds = Counter(t.kind for t in TASKS)
    assert len(TASKS) >= 40 and set(kinds) == set(KINDS) and min(kinds.values()) >= 10, kinds
    assert len({t.repo for t in TASKS}) >= 6
    assert len({t.text for t in TASKS}) == len(TASKS)


def _repo(task: HandTask, root: Path) -> Path:
    write_files(task.files, root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


@pytest.mark.parametrize("task", TASKS, ids=[t.id for t in TASKS])
def test_check_fails_on_the_base_and_passes_after_the_reference(task: HandTask, tmp_path: Path):
    repo = _repo(task, tmp_path / task.repo)
    base = tmp_path / "base"
    write_files(task.files, base)
    assert not run_hidden(task, base).ok, "the hidden check passes on the unchanged base"
    if task.kind != "fix_off_by_one":  # a bug may have a failing test; anything else starts from a green suite
        assert run_suite(base).ok
    assert not check_patch(task, "", tmp_path / "empty").ok

    write_files(task.solution, repo)
    patch = git(repo, "diff")
    assert patch.strip()
    verdict = check_patch(task, patch, tmp_path / "solved")
    assert verdict.ok, verdict.output[-2000:]


def test_a_task_file_that_does_not_fit_its_repository_is_refused(tmp_path: Path):
    base = ('name = "r"\n[files]\n"m.py" = "X = 1\\n"\n[[tasks]]\nid = "t"\nkind = "%s"\ntext = "do it"\n'
            'check = "def test_x(): pass"\n[[tasks.edits]]\npath = "m.py"\nold = "%s"\nnew = "X = 2"\n')
    path = tmp_path / "r.toml"
    path.write_text(base % ("change_constant", "X = 1"))
    assert load_file(path)[0].solution == {"m.py": "X = 2\n"}
    for kind, old, says in (("change_constant", "Y = 1", "occurs 0 times"), ("refactor", "X = 1", "not one of"),
                            ("change_constant", "X = 2", "occurs 0 times")):
        path.write_text(base % (kind, old))
        with pytest.raises(TaskFileError, match=says):
            load_file(path)
    path.write_text("name = ")
    with pytest.raises(TaskFileError, match="not valid TOML"):
        load_file(path)
