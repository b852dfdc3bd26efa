"""`loopcoder run / replay / inspect`: exit codes, no TTY never blocks, Ctrl-C leaves nothing behind.

Most commands run in process (typer's runner: stdin is not a terminal, so a
prompt would fail the test instead of waiting); the no-TTY and Ctrl-C checks
run real subprocesses.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import loopcoder.cli as cli
from loopcoder.agent.commands import deliver
from loopcoder.agent.config import load_config
from tests.agent.conftest import CALC, FIX, call
from tests.conftest import git

ROOT = Path(__file__).resolve().parents[2]
FIX_AND_SUBMIT = [call("str_replace_editor", **FIX), call("submit", message="fixed add")]


def loopcoder(*args: str, env: dict, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run the CLI with no terminal: stdin is /dev/null, output is captured."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def invoke(*args: str):
    """The CLI in this process, with no terminal."""
    return CliRunner().invoke(cli.app, list(args), env={"COLUMNS": "120"}, catch_exceptions=False)


@pytest.fixture
def env(tmp_path, copies_root) -> dict:
    return {**os.environ, "LOOPCODER_WORKTREES": str(copies_root), "LOOPCODER_CONFIG": str(tmp_path / "none.yaml"),
            "COLUMNS": "120"}


def test_run_with_yes_applies_the_patch_without_a_terminal(repo, script, env, tmp_path, copies_root):
    traj = tmp_path / "run" / "trajectory.json"
    done = loopcoder("run", "fix add", "--repo", str(repo), "--script", str(script(FIX_AND_SUBMIT)), "--yes",
                     "--trajectory", str(traj), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "submitted" in done.stdout and "+    return a + b" in done.stdout and "applied" in done.stdout
    assert "return a + b" in (repo / "calc.py").read_text()
    assert json.loads(traj.read_text())["exit"]["status"] == "submitted"
    assert traj.with_suffix(".patch").read_text() == json.loads(traj.read_text())["patch"]
    assert not any(copies_root.iterdir())


def test_run_without_yes_or_terminal_keeps_the_repo_and_saves_the_patch(repo, script, tmp_path):
    out = tmp_path / "fix.patch"
    done = invoke("run", "fix add", "--repo", str(repo), "--script", str(script(FIX_AND_SUBMIT)),
                  "--output", str(out), "--trajectory", str(tmp_path / "t.json"))
    assert done.exit_code == 0, done.output
    assert (repo / "calc.py").read_text() == CALC
    assert "+    return a + b" in out.read_text() and f"git apply {out}" in " ".join(done.stdout.split())
    git(repo, "apply", "--check", str(out))


def test_limit_status_is_the_exit_code(repo, script, tmp_path):
    outputs = [call("bash", command=f"echo {i}") for i in range(3)]
    done = invoke("run", "x", "--repo", str(repo), "--script", str(script(outputs)), "--max-steps", "2",
                  "--trajectory", str(tmp_path / "t.json"))
    assert done.exit_code == 3 and "step_limit" in done.stdout


def test_bad_input_is_a_one_line_error(repo, script, tmp_path):
    done = invoke("run", "x", "--repo", str(repo), "--backend", "replay", "--set", "agent.max_step=3")
    assert done.exit_code == 2 and "unknown config key 'agent.max_step'" in done.stderr
    done = invoke("run", "x", "--repo", str(repo), "--backend", "replay")
    assert done.exit_code == 2 and "--script" in done.stderr
    done = invoke("run", "x", "--repo", str(tmp_path / "missing.json"), "--script", str(script([])))
    assert done.exit_code == 2 and "does not exist" in done.stderr
    done = invoke("run", "x", "--repo", str(repo), "--script", str(tmp_path / "missing.json"))
    assert done.exit_code == 2 and "cannot read replay script" in done.stderr
    for limit in (["--max-steps", "0"], ["--set", "agent.max_steps=0"], ["--set", "sandbox.command_timeout=-1"]):
        done = invoke("run", "x", "--repo", str(repo), "--script", str(script([])), *limit)
        assert done.exit_code == 2 and "must be positive" in done.stderr, done.output
        assert len(done.stderr.strip().splitlines()) == 1


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def interrupt_run(repo: Path, script_path: Path, env: dict, traj: Path, copies_root: Path, *extra: str,
                  presses: int = 1):
    """Start `loopcoder run`, wait until its command sleeps in the sandbox, SIGINT it; return the result."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "run", "sleep", "--repo", str(repo),
                             "--script", str(script_path), "--trajectory", str(traj), *extra],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not list(copies_root.glob("*/started")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started its command"
        time.sleep(0.1)
    time.sleep(0.3)  # let `sleep` start after the marker
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    return proc, out, err


SLEEPER = "sleep 37.25"


def sleeping_script(script) -> Path:
    return script([call("str_replace_editor", **FIX), call("bash", command=f"touch started && {SLEEPER}"),
                   call("submit")])


def test_sigint_twice_leaves_no_copy_no_process_and_an_interrupted_trajectory(repo, script, env, tmp_path,
                                                                            copies_root):
    """The first Ctrl-C stops the run; the second arrives during the clean-up and must not cut it short."""
    traj = tmp_path / "t.json"
    proc, out, err = interrupt_run(repo, sleeping_script(script), env, traj, copies_root, presses=2)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in err
    data = json.loads(traj.read_text())
    assert data["exit"]["status"] == "interrupted" and len(data["steps"]) == 1
    assert "+    return a + b" in data["patch"]  # the diff is still produced
    assert not any(copies_root.iterdir())
    assert _processes_with(SLEEPER) == []
    assert (repo / "calc.py").read_text() == CALC and git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1


def test_sigint_with_docker_leaves_no_container(repo, script, env, tmp_path, copies_root, base_image, docker_client):
    proc, out, err = interrupt_run(repo, sleeping_script(script), env, tmp_path / "t.json", copies_root,
                                   "--sandbox", "docker")
    assert proc.returncode == 130, out + err
    assert json.loads((tmp_path / "t.json").read_text())["exit"]["status"] == "interrupted"
    assert docker_client.containers.list(all=True, filters={"label": f"loopcoder.pid={proc.pid}"}) == []
    assert not any(copies_root.iterdir())


def test_replay_reproduces_the_diff_and_says_when_it_does_not(repo, script, tmp_path):
    traj = tmp_path / "t.json"
    (repo / "notes.txt").write_text("uncommitted work\n")  # carried into the copy, not part of the patch
    outputs = [call("bash", command="echo hi > new.txt && cat notes.txt"), *FIX_AND_SUBMIT]
    assert invoke("run", "fix", "--repo", str(repo), "--script", str(script(outputs)), "--trajectory", str(traj)
                  ).exit_code == 0
    data = json.loads(traj.read_text())
    assert "notes.txt" in data["repo"]["carried_patch"] and "notes.txt" not in data["patch"]
    assert data["steps"][0]["observations"][0]["text"] == "uncommitted work"
    (repo / "notes.txt").unlink()  # the replay rebuilds the start from the trajectory, not from the repo
    done = invoke("replay", str(traj))
    assert done.exit_code == 0 and "same diff (2 files changed)" in done.stdout, done.output
    data["patch"] = data["patch"].replace("+hi", "+bye")
    traj.write_text(json.dumps(data))
    done = invoke("replay", str(traj))
    assert done.exit_code == 1 and "differ" in done.stdout and "+bye" in done.stdout


def test_inspect_shows_the_run_step_by_step(repo, script, tmp_path):
    traj = tmp_path / "t.json"
    outputs = ["Looking first.\n" + call("bash", command="seq 1 30"), *FIX_AND_SUBMIT]
    invoke("run", "fix add", "--repo", str(repo), "--script", str(script(outputs)), "--trajectory", str(traj))
    shown = invoke("inspect", str(traj)).stdout
    for text in ("fix add", "submitted", "step 1", "Looking first.", "> bash seq 1 30", "(22 more lines)",
                 "step 3", "> submit", "+    return a + b"):
        assert text in shown, text
    assert "\n30\n" in invoke("inspect", str(traj), "--full").stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    done = invoke("inspect", str(bad))
    assert done.exit_code == 2 and "not a LoopCoder trajectory" in done.stderr


def test_a_patch_that_no_longer_applies_is_kept_and_the_files_untouched(repo, tmp_path):
    patch = ("diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n"
             " def add(a, b):\n-    return a - b\n+    return a + b\n")
    (repo / "calc.py").write_text("def add(x, y):\n    return x - y\n")  # the user changed it meanwhile
    import io

    out = io.StringIO()
    config = load_config(user_file=False)
    deliver(Console(file=out, width=200), patch, str(repo), config, yes=True, output=None,
            fallback=tmp_path / "kept.patch")
    assert "did not apply" in out.getvalue() and "kept.patch" in out.getvalue()
    assert (tmp_path / "kept.patch").read_text() == patch
    assert (repo / "calc.py").read_text() == "def add(x, y):\n    return x - y\n"


def test_chat_keeps_one_session_until_end_of_input(repo, script, tmp_path):
    outputs = [call("str_replace_editor", **FIX), "Fixed: add adds now.", "Nothing else to do."]
    traj = tmp_path / "chat.json"
    done = CliRunner().invoke(cli.app, ["chat", "--repo", str(repo), "--script", str(script(outputs)),
                                        "--trajectory", str(traj)], input="fix add\n/diff\nanything else?\n",
                              env={"COLUMNS": "120"}, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "Fixed: add adds now." in done.stdout and "Nothing else to do." in done.stdout
    assert done.stdout.count("+    return a + b") == 2  # /diff, then the diff at the end
    assert (repo / "calc.py").read_text() == CALC
    assert f"git apply {traj.with_suffix('.patch')}" in " ".join(done.stdout.split())
    data = json.loads(traj.read_text())
    assert [i["text"] for i in data["inputs"]] == ["fix add", "anything else?"]
    assert data["exit"]["status"] == "replied" and len(data["steps"]) == 3


@pytest.mark.parametrize("args, message", [
    (["run", " \n\t"], 'the task is empty: say what to do, e.g. loopcoder run "Make test_add pass"'),
    (["run", "fix", "--max-steps", "0"], "agent.max_steps' (from --max-steps 0) must be positive"),
    (["run", "fix", "--backend", "nosuch"], "(from --backend nosuch) must be one of plt, hf, openai, replay"),
    (["chat", "--sandbox", "vm"], "(from --sandbox vm) must be one of local, docker"),
])
def test_bad_input_is_refused_up_front_in_the_words_the_user_typed(repo, script, tmp_path, args, message):
    done = invoke(*args, "--repo", str(repo), "--script", str(script(FIX_AND_SUBMIT)),
                  "--trajectory", str(tmp_path / "t.json"))
    assert done.exit_code == 2 and done.stderr.startswith("error: ") and message in done.stderr, done.output
    assert len(done.stderr.strip().splitlines()) == 1
    assert "--set" not in done.stderr and not (tmp_path / "t.json").exists()


def test_help_shows_names_not_placeholders_and_every_exit_code():
    from loopcoder.agent.outcome import EXIT_CODES

    shown = {name: invoke(*name.split(), "--help").stdout for name in ("run", "chat", "refactor", "model train")}
    for name, text in shown.items():
        assert "<bool>" not in text and "<list[" not in text and "{" not in text, (name, text)
    assert "Usage: loopcoder run [OPTIONS] TASK" in shown["run"]
    assert "Usage: loopcoder refactor [OPTIONS] [REPOS]..." in shown["refactor"]
    assert "default: the config's backend.name, plt" in " ".join(shown["run"].replace("│", " ").split())
    for code in set(EXIT_CODES.values()) | {2}:
        assert f" {code} " in shown["run"].replace("\n", " "), code


def test_submitting_nothing_exits_5_and_says_what_the_tests_showed(repo, script, tmp_path):
    outputs = [call("run_tests"), call("submit")]
    done = invoke("run", "fix add", "--repo", str(repo), "--script", str(script(outputs)), "--trajectory",
                  str(tmp_path / "t.json"))
    assert done.exit_code == 5, done.output
    assert "no_change: the model called submit without changing any file; tests: 1 failed, 1 passed (2 steps)" \
        in done.stdout


@pytest.mark.parametrize("args, message", [
    (["run", "fix", "--repo", "{plain}"], "is not inside a git repository"),
    (["chat", "--repo", "{plain}"], "is not inside a git repository"),
    (["run", "fix", "--repo", "{empty}"], "has no commits yet"),
    (["generate", "x", "--temperature", "-1"], "temperature must be >= 0"),
    (["generate", "x", "--speculative-tokens", "40"], "speculative_tokens must be in 1..16"),
    (["refactor", "--task", "rename a to b", "{plain}", "{empty}"], "no repository to work on: "),
])
def test_input_errors_come_before_the_model_loads(tmp_path, args, message):
    """A checkpoint whose weights cannot load: the error the user gets is about their input, so it was
    checked first (loading a 7B takes minutes)."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "iquest_plt_coder"}))
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    for name in ("plain", "empty"):
        (tmp_path / name).mkdir()
    git(tmp_path / "empty", "init", "-q")
    args = [a.format(plain=tmp_path / "plain", empty=tmp_path / "empty") for a in args]
    done = invoke(*args, "--model", str(broken))
    assert done.exit_code == 2 and message in done.stderr, done.output
    assert "safetensors" not in done.stderr and "config" not in done.stderr


def test_a_port_out_of_range_is_refused_by_the_option():
    done = invoke("serve", "--model", "anything", "--port", "99999")
    assert done.exit_code == 2 and "--port" in done.output and "Traceback" not in done.output
