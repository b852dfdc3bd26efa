"""The trajectory file: steps appended to a journal as they happen, the whole record written at the end."""
from __future__ import annotations

import json

import pytest

from loopcoder.agent.trajectory import FORMAT, Trajectory, TrajectoryError, journal_path, load
from loopcoder.runtime.backends.replay import load_script


def make(path):
    return Trajectory(path, {"agent": {}}, {"kind": "interactive", "text": "fix it"}, {"path": "/r"},
                      {"name": "replay", "context_window": 100}, [])


def step(index: int) -> dict:
    return {"index": index, "raw_output": f"output {index}", "tokens": {"prompt": 10, "completion": 3}}


def test_steps_are_appended_and_a_killed_run_reads_back(tmp_path):
    path = tmp_path / "run" / "trajectory.json"
    traj = make(path)
    messages = [{"role": "system", "content": "S"}]
    traj.add_input("fix it")
    sizes, texts = [], []
    for i in range(4):
        messages += [{"role": "assistant", "content": f"output {i}"}, {"role": "tool", "content": "x" * 2000}]
        if i == 2:
            messages[2]["content"] = "[output of step 1 elided]"  # an elision changes an old message in place
        traj.add_step(step(i), messages)
        texts.append(journal_path(path).read_text())
        sizes.append(len(texts[-1]))
    assert not path.exists()  # nothing rewritten whole while the run goes
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))  # append-only
    grown = [b - a for a, b in zip(sizes, sizes[1:])]
    assert max(grown) < 2600 and abs(grown[2] - grown[0]) < 50  # a step costs what it adds, not the conversation
    for read in (load(path), load(journal_path(path))):  # a kill here: either path reads the journal
        assert [s["raw_output"] for s in read["steps"]] == [f"output {i}" for i in range(4)]
        assert read["messages"] == messages and read["inputs"] == [{"step": 0, "text": "fix it"}]
        assert read["totals"]["steps"] == 4 and read["totals"]["completion_tokens"] == 12
        assert read["exit"]["status"] is None


def test_finish_writes_the_whole_record_and_drops_the_journal(tmp_path):
    path = tmp_path / "trajectory.json"
    traj = make(path)
    traj.add_input("fix it")
    messages = [{"role": "user", "content": "fix it"}, {"role": "assistant", "content": "output 0"}]
    traj.add_step(step(0), messages)
    traj.finish("submitted", "the model called submit", "diff", messages)
    assert not journal_path(path).exists()
    data = json.loads(path.read_text())
    assert data["format"] == FORMAT and data["exit"]["status"] == "submitted" and data["patch"] == "diff"
    assert load(path) == data
    traj.add_input("and the docs")  # a chat's next turn: a new journal, starting from the whole record
    traj.add_step(step(1), messages + [{"role": "assistant", "content": "output 1"}])
    again = load(path)
    assert [s["index"] for s in again["steps"]] == [0, 1] and again["inputs"][-1]["text"] == "and the docs"


def test_a_line_cut_by_a_kill_is_dropped(tmp_path):
    path = tmp_path / "trajectory.json"
    traj = make(path)
    traj.add_input("fix it")
    traj.add_step(step(0), [{"role": "assistant", "content": "output 0"}])
    traj.add_step(step(1), [{"role": "assistant", "content": "output 0"}, {"role": "assistant", "content": "output 1"}])
    journal = journal_path(path)
    journal.write_text(journal.read_text()[:-20])
    assert [s["index"] for s in load(path)["steps"]] == [0]


def test_a_version_1_file_without_journal_still_loads(tmp_path):
    """Files written before the journal existed (the same record) read as they did."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "steps": [{"raw_output": "a"}], "messages": []}))
    assert load(path)["steps"] == [{"raw_output": "a"}]
    (tmp_path / "old.jsonl").write_text("not a journal\n")  # an unrelated neighbour is not mistaken for one
    assert load(path)["steps"] == [{"raw_output": "a"}]
    with pytest.raises(TrajectoryError, match="cannot read trajectory"):
        load(tmp_path / "old.jsonl")


def test_a_killed_runs_trajectory_is_a_replay_script(tmp_path):
    """--script PATH of a run that did not finish: the replay backend reads the outputs from its journal."""
    path = tmp_path / "trajectory.json"
    traj = make(path)
    traj.add_input("fix it")
    traj.add_step(step(0), [{"role": "assistant", "content": "output 0"}])
    traj.add_input("more")  # a line that is no step
    traj.add_step(step(1), [{"role": "assistant", "content": "output 0"}, {"role": "assistant", "content": "output 1"}])
    assert load_script(path) == load_script(journal_path(path)) == ["output 0", "output 1"]
