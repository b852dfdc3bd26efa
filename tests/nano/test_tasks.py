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


def _is_test_file(path: str) -> bool:
    return path.startswith("tests/") or path.rsplit("/", 1)[-1].startswith("test_")


def _defined_names(task) -> set[str]:
    """Every function, class, constant and parameter name the repo and its solution define."""
    names = set()
    for path, text in task.solved_files().items():
        if path.endswith(".py") and not _is_test_file(path):
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
            if not _is_test_file(path):
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


def _first_seed_per_layout(split: str, kind: str, seeds: int = 120) -> dict[str, int]:
    found: dict[str, int] = {}
    for seed in range(seeds):
        found.setdefault(generate_task(split, seed, kind=kind).facts["layout"], seed)
    return found


def test_repositories_come_in_every_layout_and_each_one_tests_as_the_task_says(tmp_path):
    """A package at the root, a src/ layout and flat modules; pytest configured by pyproject, setup.cfg,
    pytest.ini or a root conftest.py: each passes its suite, fails the check at base, passes after the solution."""
    layouts = _first_seed_per_layout("train", "rename")
    assert {name.split("/")[0] for name in layouts} == {"package", "src", "flat"}
    assert {name.split("/")[1] for name in layouts} == {"pyproject", "setup.cfg", "pytest.ini", "conftest"}
    for name, seed in layouts.items():
        task = generate_task("train", seed, kind="rename")
        base = write_files(task.files, tmp_path / f"{seed}-base")
        assert run_pytest(base).ok, (name, run_pytest(base).output)
        assert not check(task, base).ok, name
        assert check(task, write_files(task.solved_files(), tmp_path / f"{seed}-solved")).ok, name


def test_a_constant_change_whose_tests_do_not_follow_is_not_accepted(tmp_path):
    """Tests that pin values computed from the constant must be updated too: the constant's line and its
    own pin alone leave the suite red."""
    task = next(t for t in (generate_task("train", s, kind="change_constant") for s in range(60)) if t.facts["follow"])
    f = task.facts
    half = {**task.files, f["path"]: task.solution[f["path"]],
            f["test_path"]: task.files[f["test_path"]].replace(f["pin"], f["new_pin"])}
    assert not check(task, write_files(half, tmp_path / "half")).ok
    assert check(task, write_files(task.solved_files(), tmp_path / "solved")).ok


def test_renamed_functions_keep_the_functions_whose_names_they_start():
    """A sibling (`total` and `totals`) keeps its name in the reference solution and in the check."""
    for seed in range(80):
        task = generate_task("train", seed, kind="rename")
        old = task.facts["old"]
        siblings = {m for text in task.files.values() for m in re.findall(rf"\bdef ({old}\w+)\(", text)}
        if siblings:
            assert all(re.search(rf"\b{s}\b", "".join(task.solution.values())) for s in siblings)
            assert all(s in task.check_test for s in siblings)
            return
    pytest.fail("no rename of a function with a sibling in 80 seeds")


def test_task_texts_are_phrased_many_ways_and_name_what_the_plan_copies():
    texts = {kind: [generate_task("train", s, kind=kind) for s in range(60)] for kind in KINDS}
    for kind, tasks in texts.items():
        assert len({re.sub(r"`?\b\w*[_\d]\w*\b`?|\d+", "N", t.text)[:25] for t in tasks}) >= 5, kind
        for t in tasks:
            for key in ("old", "new", "name", "function", "param", "path"):
                if key in t.facts and (key != "path" or kind in ("fix_off_by_one", "add_parameter")):
                    assert t.facts[key] in t.text, (key, t.text)
            if kind == "change_constant":
                assert str(t.facts["new_value"]) in t.text


def test_phrasings_write_no_name_word():
    """Scrambling replaces the name lists' words; a template that wrote one would change with every transcript."""
    from nano.phrasing import fixed_words

    names = set(words.TRAIN_VERBS) | set(words.TRAIN_NOUNS) | set(words.HELDOUT_VERBS) | set(words.HELDOUT_NOUNS)
    # "test" and "update" are FIXED_WORDS (never scrambled); "add it to the returned value" was the wording before
    assert fixed_words() & names <= {"add", "test", "update"}
