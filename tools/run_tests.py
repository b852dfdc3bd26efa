"""run_tests: run pytest (or a given test command) and report counts, failing ids and the first failure.

A summary beats raw output for the model: a 2,000-line pytest log becomes a
few lines it can act on. pytest writes JUnit XML into the sandbox's private
/tmp, read back through the sandbox; commands that write none are read from
pytest's text summary, and failing that the (truncated) output is shown.
"""
from __future__ import annotations

import re
import secrets
import shlex

from loopcoder.tools.base import Observation, Tool, define
from loopcoder.tools.interactive import refusal
from loopcoder.tools.shell import OUTPUT_DIR, TimeoutStreak, check_timeout, effective_timeout, observation, run_captured
from loopcoder.tools.test_report import TestReport, from_junit, from_summary
from loopcoder.workspace.sandbox import Sandbox

NAME = "run_tests"
DEFAULT_TIMEOUT = 300.0
MAX_IDS_SHOWN = 50
PYTEST_ARGS = "-m pytest -q -rfE -p no:cacheprovider --color=no"
DESCRIPTION = (
    "Run the tests and get a summary: passed/failed/error/skipped counts, the failing test ids and the first "
    "failure's traceback. Without arguments runs `python -m pytest` in the repository root. `paths`: test files, "
    "directories or ids such as `tests/test_x.py::test_y`. `command`: another test command to run instead "
    f"(e.g. `python -m pytest -x tests/unit` or `tox -e py`). The run is killed after `timeout` seconds (default {DEFAULT_TIMEOUT:g})."
)
PARAMETERS = {
    "type": "object",
    "properties": {
        "paths": {"type": "array", "items": {"type": "string"}, "description": "Test files, directories or test ids to run."},
        "command": {"type": "string", "description": "A test command to run instead of `python -m pytest`."},
        "timeout": {"type": "number", "description": f"Seconds before the run is killed (default {DEFAULT_TIMEOUT:g})."},
    },
}
_PYTEST = re.compile(r"(?:^|[\s/;&|(])(?:py\.test|pytest)(?=\s|$)")
_SHELL_AFTER = re.compile(r"[|;&<>`]|\$\(")


def _commands(args: dict, junit: str) -> tuple[str, str]:
    """(command as shown to the model, command as run: with JUnit XML requested when it is a pytest run)."""
    paths = " ".join(shlex.quote(path) for path in args.get("paths") or [])
    wants_xml = f"-o junit_family=xunit1 --junitxml={junit}"
    if not args.get("command"):
        python = '"$(command -v python || command -v python3 || echo python)"'
        return f"python {PYTEST_ARGS} {paths}".strip(), f"{python} {PYTEST_ARGS} {paths} {wants_xml}"
    shown = f"{args['command']} {paths}".strip()
    found = list(_PYTEST.finditer(shown))
    if found and not _SHELL_AFTER.search(shown, found[-1].end()) and "--junit" not in shown:
        return shown, f"{shown} {wants_xml}"
    return shown, shown


def _describe(report: TestReport) -> list[str]:
    parts = [f"Result: {report.counts()}."]
    if report.failing:
        parts.append(f"Failing tests ({len(report.failing)}):")
        parts += [f"  {test_id}" for test_id in report.failing[:MAX_IDS_SHOWN]]
        if len(report.failing) > MAX_IDS_SHOWN:
            parts.append(f"  ... and {len(report.failing) - MAX_IDS_SHOWN} more")
    if report.first_failure:
        parts.append(f"First failure ({report.failing[0] if report.failing else 'see above'}):\n{report.first_failure}")
    return parts


def _run(args: dict, sandbox: Sandbox, timeouts: TimeoutStreak) -> Observation:
    seconds, error = check_timeout(args.get("timeout"), DEFAULT_TIMEOUT)
    if error:
        return Observation(error, is_error=True)
    seconds = effective_timeout(sandbox, args.get("timeout"), DEFAULT_TIMEOUT)
    if args.get("command") is not None and not args["command"].strip():
        return Observation("Parameter `command` is empty; omit it to run pytest, or give the test command.", is_error=True)
    reason = refusal(args.get("command") or "")
    if reason:
        return Observation(f"Command not run: {reason}", is_error=True)
    junit = f'"{OUTPUT_DIR}/junit-{secrets.token_hex(4)}.xml"'
    shown, command = _commands(args, junit)
    captured = run_captured(sandbox, command, seconds, kind="tests")
    streak = timeouts.record(sandbox, captured.timed_out)
    report = None
    if command != shown and not captured.timed_out:
        xml = sandbox.run(f"f={junit}; cat \"$f\" 2>/dev/null; rm -f \"$f\"", timeout=30)
        report = None if xml.truncated or not xml.output.strip() else from_junit(xml.output)
    report = report or from_summary(captured.text)
    parts = [f"Ran: {shown}"]
    if report and not captured.timed_out:
        parts += _describe(report)
    if captured.timed_out or report is None or captured.exit_code not in (0, 1):
        parts.append(f"Output:\n{captured.text.strip(chr(10))}" if captured.text.strip() else "(no output)")
    elif captured.saved_to:
        parts.append(f"[The full output is saved in {captured.saved_to}.]")
    if captured.timed_out:
        parts.append(timeouts.note(seconds, streak))
    else:
        parts.append(f"[exit code: {captured.exit_code}]")
    counts = {} if report is None else dict(passed=report.passed, failed=report.failed, errors=report.errors,
                                            skipped=report.skipped, failing=report.failing)
    # what an outcome's test result covers: "" the whole suite, else the paths given or the command run
    counts["scope"] = shown if args.get("command") else " ".join(args.get("paths") or [])
    return observation(captured, parts, streak, **counts)


def make(timeouts: TimeoutStreak | None = None) -> Tool:
    """The run_tests tool; `timeouts` is the streak it shares with bash (a fresh default one when None)."""
    streak = timeouts or TimeoutStreak()
    return define(NAME, DESCRIPTION, PARAMETERS, lambda args, sandbox: _run(args, sandbox, streak))
