"""The agent loop end to end: real repositories, real tools, scripted model outputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopcoder.agent.loop import Listener, Status
from loopcoder.agent.outcome import tally_from_dict
from loopcoder.agent.session import make_backend, open_workspace, run_task, start_agent
from loopcoder.agent.trajectory import load
from loopcoder.runtime.backends.replay import ReplayBackend
from loopcoder.runtime.toolcalls import EXPECTED_FORMAT
from tests.agent.conftest import FIX, call
from tests.conftest import git

TASK = {"kind": "interactive", "text": "Make test_add pass."}


def run(repo, config, listener=None, trajectory=None):
    path = trajectory or Path(config.run.output_dir) / "trajectory.json"
    result = run_task(make_backend(config), repo, config, TASK, path, listener)
    return result, json.loads(path.read_text())


def test_fixes_a_failing_test_and_submits(repo, script, make_config, copies_root):
    outputs = [
        "Let me run the tests first.\n" + call("run_tests", paths=["test_calc.py"]),
        call("str_replace_editor", command="view", path="calc.py"),
        "The sign is wrong.\n" + call("str_replace_editor", **FIX),
        call("run_tests", paths=["test_calc.py"]),
        "Fixed and verified.\n" + call("submit"),
    ]
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.SUBMITTED and result.exit_code == 0 and result.steps == 5
    assert "-    return a - b\n+    return a + b\n" in result.patch
    assert traj["exit"] == {"status": "submitted", "reason": "the model called submit", "malformed": 0,
                            "tests": {"passed": 2, "failed": 0, "errors": 0, "skipped": 0, "timed_out": False,
                                          "scope": "test_calc.py"},
                            "edited_tests": []}
    assert result.summary() == "submitted: the model called submit; tests (test_calc.py): 2 passed (5 steps)"
    assert traj["patch"] == result.patch
    first, last = traj["steps"][0]["observations"][0], traj["steps"][3]["observations"][0]
    assert "1 failed" in first["text"] and "2 passed" in last["text"]
    assert [s["calls"][0]["name"] for s in traj["steps"]] == ["run_tests", "str_replace_editor", "str_replace_editor",
                                                                "run_tests", "submit"]
    assert traj["repo"]["base_commit"] and traj["repo"]["carried_patch"] == ""
    assert traj["versions"]["python"] and traj["config"]["agent"]["max_steps"] == 50
    roles = [m["role"] for m in traj["messages"]]
    assert roles[:3] == ["system", "user", "assistant"] and roles.count("tool") == 5
    tool_message = traj["messages"][3]
    assert tool_message["name"] == "run_tests" and tool_message["tool_call_id"] == "call_0_0"
    assert (repo / "calc.py").read_text().count("a - b") == 1  # the user's repository is untouched
    assert not any(copies_root.iterdir())  # the working copy is gone


def test_a_run_that_passes_by_editing_the_test_says_so(repo, script, make_config):
    # The code stays wrong; the test is bent to match it. The tests pass, and the outcome names the test file.
    bend = {"command": "str_replace", "path": "test_calc.py", "old_str": "add(2, 3) == 5", "new_str": "add(2, 3) == -1"}
    outputs = [call("str_replace_editor", **bend), call("run_tests"), call("submit")]
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.SUBMITTED and result.tests.passed == 2 and result.tests.failed == 0
    assert result.summary() == "submitted: the model called submit; tests: 2 passed; edits tests: test_calc.py (3 steps)"
    assert traj["exit"]["edited_tests"] == ["test_calc.py"]


def test_several_calls_in_one_turn_answer_in_order(repo, script, make_config):
    outputs = [call("bash", command="echo one") + "\n" + call("bash", command="echo two") + call("submit")]
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.NO_CHANGE
    tools = [m for m in traj["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tools[:2]] == ["one", "two"]
    assert [m["tool_call_id"] for m in tools] == ["call_0_0", "call_0_1", "call_0_2"]


def test_malformed_calls_are_explained_and_the_run_recovers(repo, script, make_config):
    outputs = [
        'I will edit.\n<tool_call>\n{"name": "str_replace_editor", "arguments": {"command": "view", }\n</tool_call>',
        "Just thinking, no call.",
        call("str_replace_editor", **FIX),
        call("submit"),
    ]
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.SUBMITTED and "+    return a + b" in result.patch
    bad, empty = traj["steps"][0], traj["steps"][1]
    assert bad["parse_errors"] and not bad["calls"]
    assert "Tool call format error" in bad["notices"][0] and EXPECTED_FORMAT in bad["notices"][0]
    assert "no tool call" in empty["notices"][0]
    users = [m["content"] for m in traj["messages"] if m["role"] == "user"]
    assert len(users) == 3 and EXPECTED_FORMAT in users[1] and EXPECTED_FORMAT in users[2]


def test_three_format_errors_in_a_row_end_the_run_with_the_patch(repo, script, make_config):
    outputs = [call("str_replace_editor", **FIX), "no call", "<tool_call>\n{\"name\": 3}\n</tool_call>",
               "<tool_call>[1, 2]</tool_call>", call("submit")]
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.FORMAT_ERROR and result.exit_code == 4 and result.steps == 4
    assert "+    return a + b" in result.patch and traj["patch"] == result.patch


def test_valid_call_next_to_a_broken_one_runs_and_counts_as_a_format_error(repo, script, make_config):
    broken = "<tool_call>\n{\"name\": \"bash\", \"arguments\": {oops}}\n</tool_call>"
    outputs = [call("bash", command="echo ran") + broken] * 3
    result, traj = run(repo, make_config(script(outputs), "agent.stuck_repeats=10"))
    assert result.status == Status.FORMAT_ERROR
    step = traj["steps"][0]
    assert step["observations"][0]["text"] == "ran" and step["parse_errors"]
    error_message = [m for m in traj["messages"] if m.get("name") == "format_error"][0]
    assert error_message["role"] == "tool" and EXPECTED_FORMAT in error_message["content"]


def test_a_stuck_loop_is_warned_then_stopped(repo, script, make_config):
    outputs = [call("bash", command="echo same")] * 6
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.STUCK and result.exit_code == 4 and result.steps == 4
    assert not traj["steps"][1]["notices"] and "same action" in traj["steps"][2]["notices"][0]
    assert "Warning" in [m for m in traj["messages"] if m["role"] == "tool"][2]["content"]


@pytest.mark.parametrize("limit", [None, 2])
def test_commands_timing_out_in_a_row_stop_the_run(repo, script, make_config, limit):
    """The run stops at agent.max_consecutive_timeouts, and the last timeout's note says so, with that number."""
    outputs = [call("bash", command=f"sleep {5 + i}", timeout=0.3) for i in range(5)]
    sets = [f"agent.max_consecutive_timeouts={limit}"] if limit else []
    result, traj = run(repo, make_config(script(outputs), *sets))
    expected = limit or 3
    assert result.status == Status.STUCK and "timeout" in result.reason and result.steps == expected
    notes = [m["content"] for m in traj["messages"] if m["role"] == "tool"]
    assert f"{expected} commands in a row have timed out" in notes[-1]
    assert all("in a row" not in note for note in notes[:-1])


@pytest.mark.parametrize("override, status", [
    ("agent.max_steps=2", Status.STEP_LIMIT),
    ("agent.max_tokens=40", Status.TOKEN_LIMIT),
    ("agent.max_seconds=1", Status.TIME_LIMIT),
])
def test_each_limit_ends_the_run_with_its_status_and_the_patch(repo, script, make_config, override, status):
    outputs = [call("str_replace_editor", **FIX) + " " * 200, call("bash", command="sleep 1.2"),
               call("bash", command="echo more")] + [call("bash", command=f"echo {i}") for i in range(5)]
    result, traj = run(repo, make_config(script(outputs), override))
    assert result.status == status and result.exit_code == 3
    assert "+    return a + b" in result.patch and traj["exit"]["status"] == status
    assert result.steps < len(outputs)


def test_trajectory_is_valid_json_after_every_step(repo, script, make_config, tmp_path):
    path = tmp_path / "t" / "trajectory.json"
    seen = []

    class Check(Listener):
        def on_step(self, index):
            if index:  # appended after every step, so step `index` sees all before it (a kill here keeps them)
                data = load(path)
                seen.append((index, len(data["steps"]), data["exit"]["status"]))

    outputs = [call("bash", command=f"echo {i}") for i in range(4)] + [call("submit")]
    result, _ = run(repo, make_config(script(outputs)), Check(), path)
    assert result.status == Status.NO_CHANGE
    assert seen == [(i, i, None) for i in range(1, 5)]
    assert not list(path.parent.glob(".*.tmp"))


def test_old_observations_are_elided_to_fit_the_window(repo, script, make_config):
    outputs = [call("bash", command=f"seq {i} 600") for i in range(1, 5)] + [call("submit")]
    config = make_config(script(outputs), "context.window=3000", "sampling.max_new_tokens=200",
                         "context.keep_last_observations=1")
    result, traj = run(repo, config)
    assert result.status == Status.NO_CHANGE
    contents = [m["content"] for m in traj["messages"] if m["role"] == "tool"]
    assert contents[0] == "[output of step 1 elided]" and contents[3].startswith("4\n")
    assert any("elided" in n for s in traj["steps"] for n in s["notices"])
    assert "1\n2\n3" in traj["steps"][0]["observations"][0]["text"]  # the trajectory keeps every output whole


def test_context_overflow_when_nothing_is_left_to_elide(repo, script, make_config):
    config = make_config(script([call("bash", command="echo hi")]), "context.window=600",
                         "sampling.max_new_tokens=200")
    result, _ = run(repo, config)
    assert result.status == Status.CONTEXT_OVERFLOW and result.exit_code == 3


def test_chat_turns_share_one_backend_and_conversation(repo, script, make_config):
    outputs = [call("str_replace_editor", **FIX), "Done: add now adds.",
               call("bash", command="python -c 'import calc; print(calc.add(2, 3))'"), "It prints 5."]
    config = make_config(script(outputs))
    backend = make_backend(config)
    with open_workspace(repo, config) as ws:
        agent = start_agent(backend, ws, config, None, {"kind": "chat"}, chat=True)
        first = agent.run("fix add")
        second = agent.run("check it")
    assert (first.status, second.status) == (Status.REPLIED, Status.REPLIED)
    assert first.steps == 2 and second.steps == 4 and backend.calls == 4
    assert [m["role"] for m in agent.messages].count("user") == 2
    assert agent.messages[-2]["content"] == "5"
    assert "+    return a + b" in second.patch


def test_in_place_edits_the_repo_and_the_patch_holds_only_the_agents_change(repo, script, make_config):
    (repo / "notes.txt").write_text("mine\n")
    (repo / "test_calc.py").write_text((repo / "test_calc.py").read_text() + "# my edit\n")
    refs = git(repo, "for-each-ref")
    result, traj = run(repo, make_config(script([call("str_replace_editor", **FIX), call("submit")]),
                                         "workspace.in_place=true"))
    assert result.status == Status.SUBMITTED
    assert "calc.py" in result.patch and "notes.txt" not in result.patch and "my edit" not in result.patch
    assert "return a + b" in (repo / "calc.py").read_text()
    assert (repo / "notes.txt").read_text() == "mine\n" and "# my edit" in (repo / "test_calc.py").read_text()
    assert "my edit" in traj["repo"]["carried_patch"] and traj["repo"]["in_place"] is True
    assert git(repo, "for-each-ref") == refs and git(repo, "diff", "--cached") == ""


def test_unknown_tool_is_an_observation_not_a_crash(repo, script, make_config):
    result, traj = run(repo, make_config(script([call("rm_rf", path="/"), call("str_replace_editor", **FIX),
                                                 call("submit")])))
    assert result.status == Status.SUBMITTED and result.malformed == 1
    obs = traj["steps"][0]["observations"][0]
    assert obs["is_error"] and "Unknown tool `rm_rf`" in obs["text"] and "str_replace_editor" in obs["text"]
    assert obs["extra"] == {"call_error": True}


def test_submitting_without_a_change_is_its_own_outcome(repo, script, make_config):
    outputs = [call("run_tests"), call("submit")]
    result, traj = run(repo, make_config(script(outputs)))
    assert result.status == Status.NO_CHANGE and result.exit_code == 5 and result.patch == ""
    assert traj["exit"]["status"] == "no_change" and traj["exit"]["tests"]["failed"] == 1
    assert result.summary() == ("no_change: the model called submit without changing any file; "
                                "tests: 1 failed, 1 passed (2 steps)")


@pytest.mark.parametrize("bad, error", [
    (call("str_replace", path="calc.py"), "Unknown tool `str_replace`"),
    (call("bash"), "Missing required parameter `command`"),
    (call("bash", command="ls", cwd="/"), "Unknown parameter `cwd`"),
    (call("str_replace_editor", command="delete", path="calc.py"), "must be one of"),
    ('<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}', "not closed with </tool_call>"),
    ('<tool_call>\n{"name": "bash", "arguments": {"command": ls}}\n</tool_call>', "invalid JSON"),
])
def test_every_kind_of_malformed_call_counts_toward_the_format_error_limit(repo, script, make_config, bad, error):
    outputs = [call("str_replace_editor", **FIX), bad, bad, bad, call("submit")]
    result, traj = run(repo, make_config(script(outputs), "agent.stuck_repeats=10"))
    assert result.status == Status.FORMAT_ERROR and result.exit_code == 4 and result.steps == 4, result
    assert error in result.reason and result.malformed == 3 and traj["exit"]["malformed"] == 3
    last = traj["messages"][-1]["content"]  # what the model was told about its last call
    assert error in last and "The available tools are: bash, str_replace_editor" in last
    assert "+    return a + b" in result.patch


def test_the_unclosed_last_call_runs_and_the_model_hears_about_it(repo, script, make_config):
    outputs = ['<tool_call>\n{"name": "bash", "arguments": {"command": "echo ran"}}', call("submit")]
    result, traj = run(repo, make_config(script(outputs)))
    step = traj["steps"][0]
    assert step["observations"][0]["text"] == "ran" and "not closed" in step["parse_errors"][0]
    assert [m["name"] for m in traj["messages"] if m["role"] == "tool"][:2] == ["bash", "format_error"]
    assert result.status == Status.NO_CHANGE and result.malformed == 1


def test_the_last_test_result_seen_comes_from_run_tests_or_a_pytest_command(repo, script, make_config):
    outputs = [call("run_tests"), call("str_replace_editor", **FIX),
               call("bash", command="python -m pytest -q -p no:cacheprovider"), call("bash", command="echo 1 passed"),
               call("submit")]
    result, _ = run(repo, make_config(script(outputs)))
    assert result.status == Status.SUBMITTED and str(result.tests.words()) == "2 passed"
    assert "; tests (python -m pytest -q -p no:cacheprovider): 2 passed" in result.summary()
    result, _ = run(repo, make_config(script([call("str_replace_editor", **FIX), call("submit")])))
    assert result.tests is None and "tests: not run" in result.summary()


def test_an_outcome_names_the_test_command_unless_the_whole_suite_ran(repo, script, make_config):
    """The model chooses what run_tests runs: one file, or a command that is no test at all. The outcome
    says which, so 'tests: 1 passed' always means the repository's suite."""
    suite = [call("str_replace_editor", **FIX), call("run_tests"), call("submit")]
    result, traj = run(repo, make_config(script(suite)))
    assert "; tests: 2 passed" in result.summary() and traj["exit"]["tests"]["scope"] == ""
    one_file = [call("str_replace_editor", **FIX), call("run_tests", paths=["test_calc.py"]), call("submit")]
    result, _ = run(repo, make_config(script(one_file)))
    assert "; tests (test_calc.py): 2 passed" in result.summary(), result.summary()
    fake = "python -c 'print(\"1 passed in 0.01s\")'\n\x1b[2J"
    result, traj = run(repo, make_config(script([call("str_replace_editor", **FIX), call("run_tests", command=fake),
                                                 call("submit")])))
    words = result.summary()
    assert "tests (python -c 'print(\"1 passed in 0.01s\")' ?[2J): 1 passed" in words, words
    assert "\x1b" not in words and "\n" not in words.split("tests")[1]
    assert tally_from_dict(traj["exit"]["tests"]) == result.tests  # a trajectory keeps the scope


def test_a_backend_failure_ends_with_status_error_and_keeps_the_work(repo, script, make_config, tmp_path):
    class DeviceLost(ReplayBackend):
        def complete(self, messages, tools=None, params=None, on_text=None):
            if self.calls == 1:
                raise RuntimeError("CUDA error: device lost")
            return super().complete(messages, tools, params, on_text)

    config = make_config(script([]))
    path = tmp_path / "t.json"
    result = run_task(DeviceLost([call("str_replace_editor", **FIX)]), repo, config, TASK, path)
    data = json.loads(path.read_text())
    assert result.status == Status.ERROR and result.exit_code == 1 and "device lost" in result.reason
    assert "RuntimeError" in data["exit"]["traceback"] and "+    return a + b" in data["patch"]


def test_two_runs_of_a_task_read_the_same_and_never_the_copys_host_name(repo, script, make_config, copies_root,
                                                                       monkeypatch):
    """The copy is shown at a path made from the repository and commit (bubblewrap): the same task on the
    same commit gives the model the same bytes, and the random host directory never reaches it."""
    from loopcoder.workspace import repo as repo_module

    made = []
    create = repo_module.WorkingCopy.create.__func__
    monkeypatch.setattr(repo_module.WorkingCopy, "create",
                        classmethod(lambda cls, *a, **k: made.append(create(cls, *a, **k)) or made[-1]))
    outputs = [call("bash", command="pwd && ls"), call("str_replace_editor", **FIX), call("run_tests"), call("submit")]
    runs = [run(repo, make_config(script(outputs)), trajectory=copies_root.parent / f"t{n}.json")[1] for n in (1, 2)]
    first, second = runs
    assert first["messages"] == second["messages"] and first["repo"]["workdir"] == second["repo"]["workdir"]
    shown = first["repo"]["workdir"]
    assert shown.startswith(str(Path.home() / ".cache" / "loopcoder" / "worktrees" / "proj-"))
    assert first["steps"][0]["observations"][0]["text"].splitlines()[0] == shown  # pwd
    text = json.dumps(runs)
    assert len(made) == 2 and made[0].path != made[1].path
    assert not any(copy.path.name in text or str(copies_root) in text for copy in made)
