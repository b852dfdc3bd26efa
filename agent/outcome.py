"""How a run ended, in the words every report uses: `run`'s last line, chat turns, refactor's table, batch summaries.

One vocabulary so a run that did nothing never reads as a success:
`submitted` always comes with a patch, `no_change` is a submit with none, and
the last test result the agent saw travels with the outcome
(`tests: 2 failed, 3 passed`, `tests: not run`; with the command that ran
when it was not the whole suite: `tests (tests/test_a.py): 1 passed`,
`tests (make check): 3 passed`, since the model chooses what it runs), and so does every test file
the patch changes (`edits tests: tests/test_core.py`): a run can make its tests
pass by editing them, and the reader should see that without reading the diff.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from loopcoder.tools.output import replace_unprintable
from loopcoder.workspace.patching import looks_like_test, patch_files


class Status:
    SUBMITTED = "submitted"  # the model called submit and the working copy differs from the start
    NO_CHANGE = "no_change"  # the model called submit without changing anything
    REPLIED = "replied"  # chat: the model answered without a tool call and waits for the user
    STEP_LIMIT = "step_limit"
    TOKEN_LIMIT = "token_limit"
    TIME_LIMIT = "time_limit"
    FORMAT_ERROR = "format_error"
    STUCK = "stuck"
    CONTEXT_OVERFLOW = "context_overflow"
    INTERRUPTED = "interrupted"
    ERROR = "error"


EXIT_CODES = {
    Status.SUBMITTED: 0, Status.REPLIED: 0, Status.ERROR: 1, Status.STEP_LIMIT: 3, Status.TOKEN_LIMIT: 3,
    Status.TIME_LIMIT: 3, Status.CONTEXT_OVERFLOW: 3, Status.FORMAT_ERROR: 4, Status.STUCK: 4,
    Status.NO_CHANGE: 5, Status.INTERRUPTED: 130,
}
# 2 is bad input, refused before anything ran (cli.fail)


def submit_status(patch: str) -> str:
    """What a call to submit means, given the diff it leaves."""
    return Status.SUBMITTED if patch.strip() else Status.NO_CHANGE


@dataclass(frozen=True)
class TestTally:
    """Counts of one test run; `errors` are pytest's collection/fixture errors."""

    __test__ = False  # not a pytest class

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    timed_out: bool = False
    scope: str = ""  # "" the whole suite (run_tests with no arguments), else the paths given or the command run

    def words(self) -> str:
        """'2 failed, 3 passed', '1 error', 'timed out', 'no tests ran': failures first."""
        if self.timed_out:
            return "timed out"
        parts = [f"{self.failed} failed" if self.failed else "",
                 f"{self.errors} error{'s' if self.errors != 1 else ''}" if self.errors else "",
                 f"{self.passed} passed" if self.passed else "",
                 f"{self.skipped} skipped" if self.skipped else ""]
        return ", ".join(p for p in parts if p) or "no tests ran"

    def to_dict(self) -> dict:
        return asdict(self)


SCOPE_SHOWN = 60  # characters of a test command shown in an outcome


def tests_words(tally: TestTally | None) -> str:
    """'tests: 3 passed', 'tests: not run', 'tests (make check): 2 failed' (a command other than the suite)."""
    if tally is None:
        return "tests: not run"
    scope = replace_unprintable(" ".join(tally.scope.split()))  # the model's text
    if len(scope) > SCOPE_SHOWN:
        scope = scope[:SCOPE_SHOWN - 3] + "..."
    return f"tests{f' ({scope})' if scope else ''}: {tally.words()}"


def outcome_words(status: str, reason: str, tests: TestTally | None, edited: list[str] | tuple[str, ...],
                  tests_recorded: bool = True) -> str:
    """A run's outcome in words: 'submitted: the model called submit; tests: 2 passed; edits tests: t.py'.
    tests_recorded=False (a trajectory written before runs recorded their tests) leaves the tests out."""
    return f"{status}: {reason}" + (f"; {tests_words(tests)}" if tests_recorded else "") + edited_tests_words(edited)


def tally_from_dict(data: dict | None) -> TestTally | None:
    """The inverse of `TestTally.to_dict` for a trajectory's `exit.tests` (None stays None)."""
    if not isinstance(data, dict):
        return None
    return TestTally(**{k: data[k] for k in ("passed", "failed", "errors", "skipped", "timed_out", "scope")
                      if k in data})


def edited_tests(patch: str) -> list[str]:
    """The test files (and test configuration) a git diff touches: added, changed, deleted or renamed, in order."""
    return [path for path in patch_files(patch) if looks_like_test(path)]


def edited_tests_words(paths: list[str] | tuple[str, ...], shown: int = 3) -> str:
    """'; edits tests: a.py, b.py' (the first `shown`, then 'and N more'), or '' when there are none."""
    if not paths:
        return ""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f"; edits tests: {', '.join(paths[:shown])}{more}"
