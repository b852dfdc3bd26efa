"""Test-log parsers: a test log in, {test name: status} out.

Status names and repo keys follow the official harness (`TestStatus`,
`MAP_REPO_TO_PARSER`) so grading agrees with it; a repo without an entry uses
the pytest parser. Parsers read untrusted output and never raise.
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Callable


class TestStatus(str, Enum):
    __test__ = False  # not a pytest test class

    FAILED = "FAILED"
    PASSED = "PASSED"
    SKIPPED = "SKIPPED"
    ERROR = "ERROR"
    XFAIL = "XFAIL"


Parser = Callable[[str], dict[str, str]]

_STATUS = "|".join(s.value for s in TestStatus)
_STATUS_FIRST = re.compile(rf"^({_STATUS})\s+(\S+)")  # -rA summary: "FAILED path::test - msg"
_TEST_FIRST = re.compile(rf"^(\S+)\s+({_STATUS})(?:\s|$)")  # -v progress: "path::test PASSED [ 50%]"
_SKIP_COUNT = re.compile(r"\[\d+\]")  # "SKIPPED [2] path:3: reason" names no test
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def parse_log_pytest(log: str) -> dict[str, str]:
    """pytest run with -rA (summary lines) or -v (progress lines); colour codes are ignored."""
    statuses: dict[str, str] = {}
    for line in _ANSI.sub("", log).splitlines():
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


_DJANGO_LINE = re.compile(r"^(.+?) \.\.\. (ok|OK|skipped.*|FAIL|ERROR|expected failure)$")
_DJANGO_HEADER = re.compile(r"^(FAIL|ERROR): (\S+ \(\S+\))")
_DJANGO_STATUS = {"ok": TestStatus.PASSED, "OK": TestStatus.PASSED, "FAIL": TestStatus.FAILED,
                  "ERROR": TestStatus.ERROR, "expected failure": TestStatus.XFAIL}


def parse_log_django(log: str) -> dict[str, str]:
    """Django's runtests.py --verbosity 2: "test_x (app.tests.Case) ... ok" lines and FAIL:/ERROR: headers."""
    statuses: dict[str, str] = {}
    for line in _ANSI.sub("", log).splitlines():
        line = line.strip()
        if m := _DJANGO_LINE.match(line):
            name, word = m.groups()
            statuses[name] = (TestStatus.SKIPPED if word.startswith("skipped") else _DJANGO_STATUS[word]).value
        elif m := _DJANGO_HEADER.match(line):
            statuses[m.group(2)] = _DJANGO_STATUS[m.group(1)].value
    return statuses


MAP_REPO_TO_PARSER: dict[str, Parser] = {
    "django/django": parse_log_django,
    **{repo: parse_log_pytest for repo in (
        "astropy/astropy", "marshmallow-code/marshmallow", "matplotlib/matplotlib", "pallets/flask",
        "psf/requests", "pvlib/pvlib-python", "pydata/xarray", "pydicom/pydicom", "pylint-dev/astroid",
        "pylint-dev/pylint", "pytest-dev/pytest", "pyvista/pyvista", "scikit-learn/scikit-learn",
        "sqlfluff/sqlfluff", "sphinx-doc/sphinx", "mwaskom/seaborn",
    )},
}


def get_parser(repo: str) -> Parser:
    return MAP_REPO_TO_PARSER.get(repo, parse_log_pytest)
