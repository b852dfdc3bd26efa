"""The nano task generator: repos whose test suites behave as each task kind says."""
from __future__ import annotations

import ast
import re

import pytest

from nano import words
from nano.tasks import KINDS, check, generate_task, run_pytest, write_files


@pytest.mark.parametrize("split,kind", [("train", k) for k in KINDS] + [("heldout", "fix_off_by_one")])
def test_suite_state_at_base_and_after_the_reference_solution(tmp_path, split, kind):
    task = generate_task(split, 5, kind=kind)
    base = write_files(task.files, tmp_path / "base")
    solved = write_files(task.solved_files(), tmp_path / "solved")

    base_suite = run_pytest(base)
    assert base_suite.ok == (kind != "fix_off_by_one"), base_suite.output
    if kind == "fix_off_by_one":
        assert f"{task.facts['function']}" in base_suite.output  # the named test is the one failing
    assert not check(task, base).ok
    solved_check = check(task, solved)
    assert solved_check.ok, solved_check.output


def test_a_partial_change_is_not_accepted(tmp_path):
    task = generate_task("train", 9, kind="change_constant")
    path = task.facts["path"]
    only_source = {**task.files, path: task.solution[path]}  # the pinning test left alone
    assert not check(task, write_files(only_source, tmp_path)).ok


def test_kinds_rotate_and_generation_is_deterministic():
    assert [generate_task("train", s).kind for s in range(8)] == list(KINDS) * 2
    assert generate_task("heldout", 3) == generate_task("heldout", 3)
    assert generate_task("train", 3).files != generate_task("train", 4).files


def _defined_names(task) -> set[str]:
    """Every function, class, constant and parameter name the repo and its solution define."""
    names = set()
    for path, text in task.solved_files().items():
        if path.endswith(".py") and not path.startswith("tests/"):
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.arg):
                    names.add(node.arg)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    names.add(node.id)
    return names - {"self", "__init__", "i"}


def test_heldout_names_never_come_from_training_words():
    train_words = set(words.TRAIN_VERBS) | set(words.TRAIN_NOUNS)
    for seed in range(40):
        task = generate_task("heldout", seed)
        parts = {p.lower() for name in _defined_names(task) for p in re.findall(r"[A-Z]?[a-z]+", name)}
        assert parts and not parts & train_words, (task.id, parts & train_words)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_facts_point_at_unique_text_in_the_base_files(split):
    for seed in range(60):
        task = generate_task(split, seed)
        for path, text in task.solved_files().items():
            if path.endswith(".py"):
                ast.parse(text)
            if not path.startswith("tests/"):
                assert not re.search(r"^def test", text, re.M), path  # pytest would collect it from the tests
        facts = task.facts
        if task.kind == "change_constant":
            assert task.files[facts["path"]].count(facts["line"]) == 1
            assert task.files[facts["test_path"]].count(facts["pin"]) == 1
        elif task.kind == "fix_off_by_one":
            assert task.files[facts["path"]].count(facts["bad_line"]) == 1
        elif task.kind == "add_parameter":
            assert task.files[facts["path"]].count(facts["old_src"]) == 1
        else:
            assert all(re.search(rf"\b{facts['old']}\b", task.files[p]) for p in task.solution)
        assert task.solution and all(task.files[p] != text for p, text in task.solution.items())
