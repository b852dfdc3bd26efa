"""Gold trajectories: each task solved by a fixed, short plan, run through the real agent.

The plan's calls go through `run_task` with the replay backend, so every
observation comes from the real tools in a real sandbox on a real working
copy, and the messages are exactly those the agent sends a model at
inference. A recording counts only when the run submitted and its patch,
applied to a fresh copy of the base repo, passes the task's checker.

The plans are regular on purpose (a nano model must learn them):
  rename:          one grep|sed over the .py files -> run_tests -> submit
  change_constant: one grep|sed (the definition and the test's pin) -> run_tests -> submit
  fix_off_by_one:  sed -n prints the function -> str_replace the bad line -> run_tests -> submit
  add_parameter:   one sed (signature, then the function's return line) -> run_tests -> submit

What a call copies stands close above it: the three one-command plans copy
everything from the task right above, the off-by-one's edit copies its line
from the few lines printed right above it (a search and a view from the
function's line on made it copy a line number and a line from a whole file
above: 6 of 12 held-out tasks; add_parameter's one str_replace of the whole
function, its new name ~350 tokens back: 0 of 12).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loopcoder.agent.config import Config, load_config
from loopcoder.agent.session import run_task
from nano.tasks import CheckResult, Task, apply_to_copy, check, write_files
from loopcoder.runtime.backends.replay import ReplayBackend
from loopcoder.runtime.toolcalls import render_tool_call
from loopcoder.workspace.repo import GIT_IDENTITY


@dataclass
class Recording:
    task_id: str
    messages: list[dict]
    tools: list[dict]
    workdir: str  # the working copy's path, as the system prompt and observations name it
    patch: str
    status: str
    reason: str  # why the run ended, as the agent says
    check: CheckResult

    @property
    def ok(self) -> bool:
        return self.status == "submitted" and self.check.ok


def _editor(**arguments) -> tuple[str, dict]:
    return "str_replace_editor", arguments


def sed_where_named(name: str, script: str) -> str:
    """Run the sed `script` in place on every .py file that has `name` as a word."""
    return f"grep -rlw --include='*.py' {name} . | xargs sed -i '{script}'"


def change_constant_sed(name: str, new: str) -> str:
    """One grep|sed: the definition `NAME = <number>` and every pin `... NAME == <number>` to NEW, in the files
    that name it. The old value is not needed, so a request that does not say it is solved the same way."""
    return sed_where_named(name, f"s/\\<{name} = [0-9][0-9]*$/{name} = {new}/; s/\\<{name} == [0-9][0-9]*$/{name} == {new}/")


def follow_test_sed(test_path: str, line: int, before, after) -> str:
    """One sed: the assert at `line` of `test_path` now expects `after` instead of `before`."""
    return f"sed -i '{line}s/== {before}$/== {after}/' {test_path}"


def function_lines(function: str) -> str:
    """sed's address of top-level `function`: its `def` to its return line, the first at the body's indent."""
    return f"/^def {function}(/,/^    return /"


def add_parameter_sed(function: str, param: str, multiply: bool, path: str) -> str:
    """One sed: `param` (default 1 when it multiplies, else 0) last in `function`'s signature and into its return line."""
    default, returned = ("1", f"(\\1) * {param}") if multiply else ("0", f"\\1 + {param}")
    return (f"sed -i -e 's/^def {function}(\\(.*\\)):/def {function}(\\1, {param}={default}):/' "
            f"-e '{function_lines(function)}s/^    return \\(.*\\)/    return {returned}/' {path}")


def gold_calls(task: Task) -> list[tuple[str, dict]]:
    """The plan: one (tool, arguments) per assistant turn."""
    f = task.facts
    if task.kind == "rename":
        old, new = f["old"], f["new"]
        # GNU sed's \< \> rather than \b: the pre-tokenizer glues an escape's letter to the name after it
        # (`\\bpolish` -> `\\ bp ol ish`), which would make the name other tokens than in the task.
        edits = [("bash", {"command": sed_where_named(old, f"s/\\<{old}\\>/{new}/g")})]
    elif task.kind == "change_constant":
        # Tests that pin values computed from the constant fail after its change: run them, and for each first
        # failure, set the assert's expected value to what the code now returns, at the line the failure names.
        edits = [("bash", {"command": change_constant_sed(f["name"], f["new_value"])})]
        for line, before, after in f.get("follow", []):
            edits += [("run_tests", {}), ("bash", {"command": follow_test_sed(f["test_path"], line, before, after)})]
    elif task.kind == "add_parameter":
        edits = [("bash", {"command": add_parameter_sed(f["function"], f["param"], f["multiply"], f["path"])})]
    else:
        edits = [("bash", {"command": f"sed -n '{function_lines(f['function'])}p' {f['path']}"}),
                 _editor(command="str_replace", path=f["path"], old_str=f["bad_line"], new_str=f["good_line"])]
    return edits + [("run_tests", {}), ("submit", {})]


def gold_script(task: Task) -> list[str]:
    """The raw assistant outputs of the plan, written as the model must write them."""
    return [render_tool_call(name, arguments) for name, arguments in gold_calls(task)]


class PacedReplay(ReplayBackend):
    """The replay backend, but the first turn comes a second after the checkout, as a model's would.

    An edit that keeps a file's size within the checkout's second is invisible to
    the working copy's diff (git trusts the copied index's stat data), so an
    instant replay would lose it.
    """

    def complete(self, *args, **kwargs):
        if self.calls == 0:
            time.sleep(1.05)
        return super().complete(*args, **kwargs)


FIXED_DATE = {"GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z"}


def make_repo(files: dict[str, str], root: Path) -> Path:
    """The task's files committed as a git repository at `root`; the same files give the same commit (a
    fixed date), so the working copy's path, and with it every run of the task, repeats exactly."""
    write_files(files, root)
    env = {**os.environ, **GIT_IDENTITY, **FIXED_DATE}
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "base"]):
        subprocess.run(argv, cwd=root, env=env, check=True, capture_output=True)
    return root


def check_patch(task: Task, patch: str, scratch: Path) -> CheckResult:
    """Apply `patch` to a fresh copy of the base files and run the checker there."""
    base, failure = apply_to_copy(task.files, patch, scratch)
    return CheckResult(False, failure) if failure else check(task, base)


def test_environment() -> None:
    """run_tests calls `python`: make it this interpreter (which has pytest) inside the sandbox too.

    pytest's plugin autoload (hypothesis, timeout, ...) is switched off: it costs
    most of a run on these tiny suites and changes nothing in the summary the
    model reads.
    """
    bin_dir = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"


def record(task: Task, script: list[str] | None = None, config: Config | None = None) -> Recording:
    """Run `script` (default: the gold plan) on the task through the real agent and check the result."""
    test_environment()
    config = config or load_config(user_file=False)
    with tempfile.TemporaryDirectory(prefix="nano-record-") as tmp:
        tmp = Path(tmp)
        repo = make_repo(task.files, tmp / task.facts["package"])
        trajectory = tmp / "trajectory.json"
        backend = PacedReplay(script if script is not None else gold_script(task))
        result = run_task(backend, repo, config, {"kind": "interactive", "text": task.text}, trajectory)
        data = json.loads(trajectory.read_text())
        verdict = check_patch(task, result.patch, tmp / "verify")
    return Recording(task.id, data["messages"], data["tools"], data["repo"]["workdir"], result.patch,
                     result.status, result.reason, verdict)
