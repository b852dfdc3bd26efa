"""What a test run says: counts, failing test ids and the first failure, from JUnit XML or pytest's summary.

JUnit XML (pytest --junitxml, family xunit1 for the `file` attribute) is
exact; the text summary is the fallback for commands that write no XML. Both
inputs come from the sandbox and are parsed defensively: None when unusable.
`parse_log_pytest` is the one reader of pytest's per-test lines: the summary
fallback takes the failing ids from it, and so do SWE-bench grading and the
refactor runs (batch/).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from enum import Enum

from loopcoder.tools.output import truncate

TRACEBACK_LIMIT = 3_000  # characters of the first failure shown


@dataclass
class TestReport:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failing: list[str] = field(default_factory=list)  # ids of failed and erroring tests, in run order
    first_failure: str = ""  # its traceback, trimmed

    def counts(self) -> str:
        if not self.passed + self.failed + self.errors + self.skipped:
            return "no tests ran"
        return f"{self.passed} passed, {self.failed} failed, {self.errors} errors, {self.skipped} skipped"


def _node_id(case: ET.Element) -> str:
    """pytest's node id from a testcase: file::Class::name, as `pytest path::id` accepts it."""
    name, classname, path = case.get("name", ""), case.get("classname", ""), case.get("file", "")
    if not path:
        return f"{classname}::{name}" if classname else name
    module = path[:-3].replace("/", ".") if path.endswith(".py") else ""
    inner = classname[len(module) + 1 :] if module and classname.startswith(module + ".") else ""
    return "::".join(part for part in (path, inner.replace(".", "::"), name) if part)


def from_junit(xml_text: str) -> TestReport | None:
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError:
        return None
    report = TestReport()
    for case in root.iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            if problem.tag == "failure":
                report.failed += 1
            else:
                report.errors += 1
            report.failing.append(_node_id(case))
            if not report.first_failure:
                detail = (problem.text or problem.get("message") or "").strip("\n")
                report.first_failure = truncate(detail, TRACEBACK_LIMIT)
        elif case.find("skipped") is not None:
            report.skipped += 1
        else:
            report.passed += 1
    return report


class TestStatus(str, Enum):
    """A test's status in a log, named as the SWE-bench harness names them."""

    __test__ = False  # not a pytest test class

    FAILED = "FAILED"
    PASSED = "PASSED"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"
    XFAIL = "XFAIL"


_STATUS = "|".join(s.value for s in TestStatus)
_STATUS_FIRST = re.compile(rf"^({_STATUS})\s+(\S+)")  # -rA/-rfE summary: "FAILED path::test - msg"
_TEST_FIRST = re.compile(rf"^(\S+)\s+({_STATUS})(?:\s|$)")  # -v progress: "path::test PASSED [ 50%]"
_SKIP_COUNT = re.compile(r"\[\d+\]")  # "SKIPPED [2] path:3: reason" names no test
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_log_pytest(log: str) -> dict[str, str]:
    """{test id: status} from pytest's -rA / -rfE summary lines or -v progress lines; colour codes ignored."""
    statuses: dict[str, str] = {}
    for line in ANSI.sub("", log).splitlines():
        line = line.strip("\r")
        if m := _STATUS_FIRST.match(line):
            status, name = m.groups()
            if status == TestStatus.SKIPPED and _SKIP_COUNT.fullmatch(name):
                continue
        elif m := _TEST_FIRST.match(line):
            name, status = m.groups()
        else:
            continue
        statuses[name] = status
    return statuses


_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)\b")
_SUMMARY_LINE = re.compile(r"^=*\s*(?:\d+ \w+,? ?)+.* in [\d.]+s", re.MULTILINE)
_SECTION = re.compile(r"^=+ (FAILURES|ERRORS) =+$", re.MULTILINE)
_BLOCK_END = re.compile(r"^(?:_{3,} .* _{3,}|={3,}.*)$", re.MULTILINE)


def from_summary(output: str) -> TestReport | None:
    """From pytest's terminal output (`-rfE` gives the ids); None when it has no summary line."""
    lines = _SUMMARY_LINE.findall(output)
    if not lines:
        return None
    report = TestReport()
    for number, word in _SUMMARY_COUNT.findall(lines[-1]):
        if word in ("passed", "xpassed"):
            report.passed += int(number)
        elif word == "failed":
            report.failed += int(number)
        elif word.startswith("error"):
            report.errors += int(number)
        else:
            report.skipped += int(number)
    report.failing = [name for name, status in parse_log_pytest(output).items()
                      if status in (TestStatus.FAILED, TestStatus.ERROR)]
    section = _SECTION.search(output)
    if section:
        body = output[section.end() :].lstrip("\n")
        first_header = _BLOCK_END.match(body)
        start = first_header.end() if first_header else 0
        end = _BLOCK_END.search(body, start)
        report.first_failure = truncate(body[start : end.start() if end else len(body)].strip("\n"), TRACEBACK_LIMIT)
    return report
