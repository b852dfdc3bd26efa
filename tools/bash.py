"""bash: run one shell command in the working copy, with a timeout and output that always fits."""
from __future__ import annotations

from loopcoder.tools.base import Observation, Tool, define
from loopcoder.tools.interactive import refusal
from loopcoder.tools.shell import (DEFAULT_TIMEOUT, MAX_TIMEOUT, TimeoutStreak, check_timeout, effective_timeout, observation,
                         run_captured)
from loopcoder.workspace.sandbox import Sandbox

NAME = "bash"
DESCRIPTION = (
    "Run a bash command in the repository root and return its output (stdout and stderr together) and exit code. "
    "Each call starts a fresh shell: `cd` and variables do not carry over, so chain steps with `&&`. "
    "There is no terminal and stdin is closed: interactive programs (editors, pagers, REPLs) are refused. "
    f"The command is killed after `timeout` seconds (default {DEFAULT_TIMEOUT:g}). "
    "Long output is cut to its head and tail; the full output is saved to a file whose path is given, for grep."
)
PARAMETERS = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "description": "The shell command to run, e.g. `grep -rn 'def main' src/`."},
        "timeout": {"type": "number", "description": f"Seconds before the command is killed (default {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})."},
    },
    "required": ["command"],
}
NO_OUTPUT = "Your command ran successfully and did not produce any output."
LINGERING = ("[A background process started by this command was stopped when the command ended: processes do not "
             "outlive a command in this sandbox. Run servers or watchers in the foreground under `timeout N CMD`.]")


def _run(arguments: dict, sandbox: Sandbox, timeouts: TimeoutStreak) -> Observation:
    command = arguments["command"]
    if not command.strip():
        return Observation("Parameter `command` is empty; give the shell command to run.", is_error=True)
    seconds, error = check_timeout(arguments.get("timeout"), DEFAULT_TIMEOUT)
    if error:
        return Observation(error, is_error=True)
    seconds = effective_timeout(sandbox, arguments.get("timeout"), DEFAULT_TIMEOUT)
    reason = refusal(command)
    if reason:
        return Observation(f"Command not run: {reason}", is_error=True)
    captured = run_captured(sandbox, command, seconds)
    streak = timeouts.record(sandbox, captured.timed_out)
    text = captured.text.rstrip("\n")
    parts = [text] if text else []
    if captured.timed_out:
        parts.append(timeouts.note(seconds, streak))
    elif captured.exit_code != 0:
        parts.append(f"[exit code: {captured.exit_code}]")
    elif not parts:
        parts.append(NO_OUTPUT)
    if captured.lingering:
        parts.append(LINGERING)
    return observation(captured, parts, streak)


def make(timeouts: TimeoutStreak | None = None) -> Tool:
    """The bash tool; `timeouts` is the streak it shares with run_tests (a fresh default one when None)."""
    streak = timeouts or TimeoutStreak()
    return define(NAME, DESCRIPTION, PARAMETERS, lambda arguments, sandbox: _run(arguments, sandbox, streak))
