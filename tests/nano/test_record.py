"""Gold trajectories: real tools on a real working copy, through the real agent, with patches that pass."""
from __future__ import annotations

import subprocess

import pytest

from nano.openings import opening
from nano.record import gold_calls, gold_script, record
from nano.tasks import KINDS, generate_task, write_files
from loopcoder.runtime.toolcalls import parse_tool_calls
from loopcoder.tools import default_tools


@pytest.mark.parametrize("kind", KINDS)
def test_gold_trajectory_solves_the_task(kind):
    task = generate_task("train", 11, kind=kind)
    rec = record(task)
    assert rec.ok, (rec.status, rec.reason, rec.check.output)
    roles = [m["role"] for m in rec.messages]
    assert roles[:2] == ["system", "user"] and roles[2:] == ["assistant", "tool"] * len(gold_calls(task))
    assert rec.workdir in rec.messages[0]["content"]  # the system prompt names the real working copy
    assert task.text in rec.messages[1]["content"]
    assert [m["content"] for m in rec.messages if m["role"] == "assistant"] == gold_script(task)
    observations = [m["content"] for m in rec.messages if m["role"] == "tool"]
    assert "0 failed, 0 errors" in observations[-2] and observations[-1] == "Submitted."
    assert {t["function"]["name"] for t in rec.tools} == {t.name for t in default_tools()}
    # the plan's opening, run on the tools without the agent, is the recording's text up to the last edit
    start = opening(task, rec.workdir)
    assert [(m["role"], m["content"]) for m in start] == [(m["role"], m["content"]) for m in rec.messages[1:len(start) + 1]]
    assert start[-1]["role"] == "assistant" and rec.messages[len(start) + 2]["content"] == gold_script(task)[-2]


def test_a_wrong_edit_is_recorded_as_unsolved():
    task = generate_task("train", 11, kind="fix_off_by_one")
    script = gold_script(task)
    wrong = script[:-3] + script[-2:]  # skip the edit (the call before run_tests): the bug stays
    rec = record(task, wrong)
    assert rec.status == "no_change" and not rec.ok  # the edit was skipped: submit left no change
    assert "failed" in rec.check.output


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_gold_calls_parse_back_to_themselves(split):
    schemas = [t.schema() for t in default_tools()]
    for seed in range(40):
        task = generate_task(split, seed)
        for text, (name, arguments) in zip(gold_script(task), gold_calls(task)):
            parsed = parse_tool_calls(text, schemas)
            assert not parsed.errors and [(c.name, c.arguments) for c in parsed.calls] == [(name, arguments)]


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("kind", ["rename", "change_constant", "add_parameter"])
def test_one_command_plans_write_the_reference_solution(kind, split, tmp_path):
    """The plan's shell commands (one, or for a constant also one per test that follows it), run in order by a
    real shell, give the solved repo byte for byte."""
    follows = 0
    for seed in range(30):
        task = generate_task(split, seed, kind=kind)
        root = write_files(task.files, tmp_path / task.id)
        edits = [(name, arguments) for name, arguments in gold_calls(task) if name not in ("run_tests", "submit")]
        assert [name for name, _ in edits] == ["bash"] * (1 + len(task.facts.get("follow", [])))
        follows += len(edits) > 1
        for _, arguments in edits:
            subprocess.run(arguments["command"], shell=True, cwd=root, check=True)
        assert {path: (root / path).read_text() for path in task.solved_files()} == task.solved_files()
    assert (follows > 0) == (kind == "change_constant")
