"""The hand-written evaluation set: every task's check fails on its base and passes after its reference solution,
judged the way the evaluation judges a run (a git diff of a real repository, applied to a fresh copy)."""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tomllib")  # Python 3.11+: the set's files are TOML

from benchmarks.handwritten import (  # noqa: E402
    KINDS, HandTask, TaskFileError, check_patch, load_file, load_tasks, run_hidden, run_suite, write_files)
from tests.conftest import git  # noqa: E402

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
    path.write_text('name = "r"\n')
    with pytest.raises(TaskFileError, match=r"needs `name` .* and a \[files\] table"):
        load_file(path)


# --- benchmarks/nano_eval.py on this set ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}
calls = st.fixed_dictionaries({
    "name": st.sampled_from(["bash", "submit", "str_replace"]),
    "arguments": st.one_of(st.just({}), st.fixed_dictionaries({"command": st.one_of(st.text(max_size=5), st.integers())}),
                           st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)),
})
steps = st.fixed_dictionaries({"parse_errors": st.lists(st.text(max_size=8), max_size=2), "calls": st.lists(calls, max_size=3)})


@settings(max_examples=60, deadline=None)
@given(st.lists(steps, max_size=4))
def test_malformed_calls_by_cause_add_up_to_the_evaluations_count(trajectory_steps):
    from nano.evaluate import malformed_calls
    from benchmarks.nano_eval import malformed_causes

    trajectory = {"tools": [{"function": {"name": "bash", "parameters": SCHEMA}}, {"function": {"name": "submit"}}],
                  "steps": trajectory_steps}
    causes = malformed_causes(trajectory)
    assert sum(causes.values()) == malformed_calls(trajectory)
    assert causes["unknown tool"] == sum(c["name"] == "str_replace" for s in trajectory_steps for c in s["calls"])


def test_set_names_a_task_set_or_overrides_the_config():
    from benchmarks.nano_eval import split_sets

    assert split_sets(["handwritten", "sampling.constrained_tool_calls=false"]) == (
        "handwritten", ["sampling.constrained_tool_calls=false"])
    assert split_sets(["agent.max_steps=3"]) == ("", ["agent.max_steps=3"])
    for bad in (["handwriten"], ["heldout", "handwritten"]):
        with pytest.raises(SystemExit, match="neither KEY=VALUE nor one task set"):
            split_sets(bad)


def test_nano_eval_runs_the_shipped_checkpoint_on_the_handwritten_set(tmp_path: Path):
    out = tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "nano_eval.py"), "--set", "handwritten",
                           "--count", "2", "--set", "agent.max_steps=3", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["set"] == "handwritten" and summary["tasks"] == 2
    assert [o["task_id"] for o in summary["outcomes"]] == [t.id for t in TASKS[:2]]
    assert all(o["steps"] <= 3 for o in summary["outcomes"])
    assert "| kind | solved | steps |" in proc.stdout and "| all | **" in proc.stdout
