"""Log parsers: real pytest output, the -rA and -v forms, and arbitrary text that must never crash them."""
from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from loopcoder.batch.swebench.grading import grade_tests, instance_report
from loopcoder.batch.swebench.log_parsers import MAP_REPO_TO_PARSER, TestStatus, get_parser, parse_log_django, parse_log_pytest

STATUSES = [s.value for s in TestStatus]
node_ids = st.from_regex(r"tests/test_[a-z]{1,6}\.py::test_[a-z0-9_]{1,10}(\[[a-z0-9-]{1,5}\])?", fullmatch=True)


def test_real_pytest_run_maps_every_outcome(tmp_path):
    (tmp_path / "test_all.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "def test_bad(): assert 0\n"
        "@pytest.mark.skip(reason='no')\ndef test_skip(): pass\n"
        "@pytest.mark.xfail\ndef test_xf(): assert 0\n"
        "@pytest.fixture\ndef boom(): raise RuntimeError\n"
        "def test_err(boom): pass\n"
        "@pytest.mark.parametrize('x', [1, 2])\ndef test_p(x): assert x == 1\n"
    )
    for flags in (["-rA"], ["-v", "-rA"]):
        run = subprocess.run([sys.executable, "-m", "pytest", "--no-header", "--tb=no", "-p", "no:cacheprovider",
                              *flags, "test_all.py"], cwd=tmp_path, capture_output=True, text=True)
        got = parse_log_pytest(run.stdout)
        assert got["test_all.py::test_ok"] == "PASSED"
        assert got["test_all.py::test_bad"] == "FAILED"
        assert got["test_all.py::test_xf"] == "XFAIL"
        assert got["test_all.py::test_err"] == "ERROR"
        assert got["test_all.py::test_p[1]"] == "PASSED" and got["test_all.py::test_p[2]"] == "FAILED"
        assert not any(name.startswith("[") for name in got)  # "SKIPPED [1] file:line" names no test


@given(st.dictionaries(node_ids, st.sampled_from(STATUSES), max_size=8), st.booleans())
def test_summary_lines_round_trip(expected, verbose):
    lines = ["============ short test summary info ============"]
    for name, status in expected.items():
        lines.append(f"{name} {status} [ 10%]" if verbose else f"{status} {name} - AssertionError: x - y")
    lines.append("\x1b[32m==== 3 passed in 0.1s ====\x1b[0m")
    assert parse_log_pytest("\n".join(lines)) == expected


@given(st.text())
def test_parsers_never_raise_and_only_emit_known_statuses(text):
    for parser in set(MAP_REPO_TO_PARSER.values()):
        assert set(parser(text).values()) <= set(STATUSES)


def test_django_verbose_output():
    log = (
        "test_a (admin.tests.A) ... ok\n"
        "test_b (admin.tests.A) ... FAIL\n"
        "test_c (admin.tests.A) ... skipped 'needs db'\n"
        "test_d (admin.tests.A) ... expected failure\n"
        "ERROR: test_e (admin.tests.A)\n"
    )
    assert parse_log_django(log) == {
        "test_a (admin.tests.A)": "PASSED", "test_b (admin.tests.A)": "FAILED",
        "test_c (admin.tests.A)": "SKIPPED", "test_d (admin.tests.A)": "XFAIL", "test_e (admin.tests.A)": "ERROR",
    }
    assert get_parser("django/django") is parse_log_django and get_parser("me/mine") is parse_log_pytest


def test_grading_follows_the_harness_semantics():
    statuses = {"f1": "PASSED", "f2": "XFAIL", "f3": "SKIPPED", "p1": "SKIPPED", "p2": "ERROR"}
    got = grade_tests(statuses, ["f1", "f2", "f3", "missing"], ["p1", "p2"])
    assert got["FAIL_TO_PASS"] == {"success": ["f1", "f2"], "failure": ["f3", "missing"]}
    assert got["PASS_TO_PASS"] == {"success": ["p1"], "failure": ["p2"]}
    log = ">>>>> Start Test Output\nPASSED f\nSKIPPED p\n>>>>> End Test Output\n>>>>> Test Exit Code: 0\n"
    resolved = instance_report("x", "diff", log, parse_log_pytest, ["f"], ["p"])
    assert resolved["x"]["resolved"] is True
    assert instance_report("x", None, "", parse_log_pytest, [], []) == {
        "x": {"patch_is_None": True, "patch_exists": False, "patch_successfully_applied": False, "resolved": False,
              "infra_failure": False}}