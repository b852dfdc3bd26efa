"""Plan openings: a task's gold plan up to its last edit, run on the real tools in a plain directory.

No agent loop, git, isolation or pytest: milliseconds a task instead of seconds,
so training can have many thousands of them. They carry the copies nano finds
hardest (an edit's path from the view call a whole file above it, its lines
from the view, the task's new names and values), and the observations are the
tools' own text, equal to the agent's recordings of the same task (tested).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from nano.record import gold_calls
from nano.tasks import Task, write_files
from loopcoder.agent.prompting import task_prompt
from loopcoder.runtime.toolcalls import render_tool_call
from loopcoder.tools import get_tool
from loopcoder.workspace.local import LocalSandbox

AFTER_EDITS = ("run_tests", "submit")


def opening(task: Task, workdir: str) -> list[dict]:
    """The user turn and the plan's turns up to and including its last edit before it first runs the
    tests (that edit gets no observation), with the working copy shown as `workdir`."""
    calls = gold_calls(task)
    first_run = next(i for i, (name, _) in enumerate(calls) if name in AFTER_EDITS)
    last = max(i for i, (name, _) in enumerate(calls[:first_run]) if name not in AFTER_EDITS)
    messages = [{"role": "user", "content": task_prompt("interactive", text=task.text)}]
    with tempfile.TemporaryDirectory(prefix="nano-opening-") as tmp:
        root = write_files(task.files, Path(tmp) / task.facts["package"])
        sandbox = LocalSandbox(root, isolate=False)
        for index, (name, arguments) in enumerate(calls[:last + 1]):
            messages.append({"role": "assistant", "content": render_tool_call(name, arguments)})
            if index < last:
                text = get_tool(name).run(dict(arguments), sandbox).text
                messages.append({"role": "tool", "name": name, "content": text.replace(sandbox.workdir, workdir)})
    return messages
