"""Test-log parsers: a test log in, {test name: status} out.

Status names and repo keys follow the official harness (`TestStatus`,
`MAP_REPO_TO_PARSER`) so grading agrees with it; a repo without an entry uses
the pytest parser, which is the one the run_tests tool reads pytest's lines
with (tools/test_report.py). Parsers read untrusted output and never raise.
"""
from __future__ import annotations

import re
from typing import Callable

from loopcoder.tools.test_report import ANSI, TestStatus, parse_log_pytest

__all__ = ["MAP_REPO_TO_PARSER", "Parser", "TestStatus", "get_parser", "parse_log_django", "parse_log_pytest"]

Parser = Callable[[str], dict[str, str]]

_DJANGO_LINE = re.compile(r"^(.+?) \.\.\. (ok|OK|skipped.*|FAIL|ERROR|expected failure)$")
_DJANGO_HEADER = re.compile(r"^(FAIL|ERROR): (\S+ \(\S+\))")
_DJANGO_STATUS = {"ok": TestStatus.PASSED, "OK": TestStatus.PASSED, "FAIL": TestStatus.FAILED,
                  "ERROR": TestStatus.ERROR, "expected failure": TestStatus.XFAIL}


def parse_log_django(log: str) -> dict[str, str]:
    """Django's runtests.py --verbosity 2: "test_x (app.tests.Case) ... ok" lines and FAIL:/ERROR: headers."""
    statuses: dict[str, str] = {}
    for line in ANSI.sub("", log).splitlines():
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
