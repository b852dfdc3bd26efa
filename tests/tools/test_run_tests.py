"""run_tests on a real tiny project with one passing and one failing test, in a real sandbox."""
from __future__ import annotations

import os
import sys

import pytest

from loopcoder.tools.test_report import from_junit, from_summary

TESTS = '''
def test_passes():
    assert 1 + 1 == 2


def test_fails():
    answer = 41
    assert answer == 42, "off by one"
'''


@pytest.fixture
def project(repo, monkeypatch):
    """The repo with a test module; the sandbox's `python` is this interpreter, which has pytest."""
    (repo / "tests").mkdir()
    (repo / "tests" / "test_math.py").write_text(TESTS)
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # this venv's plugins add seconds to each run
    return repo


def check_report(obs):
    assert (obs.extra["passed"], obs.extra["failed"], obs.extra["errors"], obs.extra["skipped"]) == (1, 1, 0, 0)
    assert obs.extra["failing"] == ["tests/test_math.py::test_fails"]
    assert "Result: 1 passed, 1 failed, 0 errors, 0 skipped." in obs.text
    assert "Failing tests (1):\n  tests/test_math.py::test_fails" in obs.text
    first = obs.text.split("First failure (tests/test_math.py::test_fails):\n", 1)[1]
    assert "assert answer == 42" in first and "AssertionError: off by one" in first


def test_default_pytest_run_reads_junit(call, project):
    obs = call("run_tests")
    check_report(obs)
    assert obs.text.startswith("Ran: python -m pytest") and obs.text.endswith("[exit code: 1]")
    assert not obs.is_error and obs.exit_code == 1
    assert call("bash", command="git status --porcelain").text == "?? tests/"  # no junit/cache files left in the copy


def test_paths_select_tests(call, project):
    obs = call("run_tests", paths=["tests/test_math.py::test_passes"])
    assert obs.extra["failing"] == [] and "Result: 1 passed, 0 failed, 0 errors, 0 skipped." in obs.text
    assert obs.exit_code == 0


def test_custom_command_without_xml_falls_back_to_the_summary(call, project):
    obs = call("run_tests", command=f"{sys.executable} -m pytest -rfE tests | cat")
    check_report(obs)


def test_custom_pytest_command_gets_junit(call, project):
    obs = call("run_tests", command=f"{sys.executable} -m pytest", paths=["tests"])
    check_report(obs)
    assert obs.text.startswith(f"Ran: {sys.executable} -m pytest tests\n")


def test_non_pytest_command_shows_output(call, project):
    obs = call("run_tests", command="echo 'custom runner: all good'")
    assert "Output:\ncustom runner: all good" in obs.text and obs.exit_code == 0


def test_collection_problems_show_pytest_output(call, project):
    obs = call("run_tests", paths=["tests/missing.py"])
    assert "Result: no tests ran." in obs.text and "file or directory not found" in obs.text and obs.exit_code == 4


def test_timeout(call, project):
    obs = call("run_tests", command="echo starting; sleep 1000", timeout=0.5)
    assert obs.is_error and obs.extra["timed_out"] and "starting" in obs.text and "timed out after 0.5 seconds" in obs.text


def test_parsers_reject_garbage():
    assert from_junit("<not xml") is None and from_summary("no summary here") is None
    assert from_junit("<testsuites/>").counts() == "no tests ran"
