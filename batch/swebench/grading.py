"""Grading in the official harness's terms (swebench 5.0.x): report.json from a test log, and the run summary.

The rules are the harness's, so its own grading code agrees with ours on our
logs (tests/batch/test_conformance.py checks that):
- the log counts only when it has no failure marker, has both output
  markers, parses to some test statuses (or shows the suite ran), and its
  recorded `>>>>> Test Exit Code:` is not non-zero while nothing failed;
  otherwise patch_successfully_applied is false and the log is classified
  for an infrastructure signature (infra_failure, infra_failure_reason);
- a FAIL_TO_PASS test succeeds when PASSED or XFAIL; a PASS_TO_PASS test is
  also maintained when SKIPPED; a test missing from the log failed; an id
  truncated mid-parameter matches by prefix when the candidates agree;
- the summary's infra_failure_ids / ambiguous_failure_ids / failure_reasons
  classify the unresolved and errored instances' logs.
"""
from __future__ import annotations

import re
from typing import Iterable

from loopcoder.batch.swebench.log_parsers import Parser, TestStatus

SUMMARY_SCHEMA_VERSION = 2
APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
APPLY_PATCH_PASS = ">>>>> Applied Patch"
RESET_FAILED = ">>>>> Reset Failed"
TESTS_ERROR = ">>>>> Tests Errored"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"
TEST_EXIT_CODE = ">>>>> Test Exit Code"  # written as f"{TEST_EXIT_CODE}: {code}" after END_TEST_OUTPUT
_EXIT_CODE = re.compile(rf"{re.escape(TEST_EXIT_CODE)}:\s*(-?\d+)")
# Evidence that a runner executed although nothing parsed (the harness's list; every count non-zero).
SUITE_RAN = re.compile(
    r"Executed [1-9]\d* of \d+|TOTAL: [1-9]\d* (?:SUCCESS|FAILED)|[1-9]\d* passing|Tests:\s+[1-9]\d*"
    r"|Test Suites:\s+(?:\d+ \w+, )*[1-9]\d* total|^# tests [1-9]\d*|[1-9]\d* specs?, \d+ failures?|': ok$",
    re.M,
)
TIER_ENVIRONMENT, TIER_AMBIGUOUS = "environment", "ambiguous"
# (reason, tier, pattern): the first match wins, as in swebench.harness.infra_failure.
INFRA_FAILURE_SIGNATURES = tuple((reason, tier, re.compile(pattern, re.M)) for reason, tier, pattern in (
    ("browser_launch_failed", TIER_ENVIRONMENT, r"Failed to launch|Failed to connect to the bus"),
    ("display_unavailable", TIER_ENVIRONMENT, r"cannot open display|Missing X server|unable to open X display"),
    ("out_of_memory", TIER_ENVIRONMENT, r"Cannot allocate memory|OutOfMemoryError|^Killed$"),
    ("container_unavailable", TIER_ENVIRONMENT, r"Error response from daemon|Cannot connect to the Docker daemon"),
    ("network_unreachable", TIER_ENVIRONMENT, r"Could not resolve host|Temporary failure in name resolution"),
    ("missing_module", TIER_AMBIGUOUS, r"Cannot find module|MODULE_NOT_FOUND|ModuleNotFoundError"),
    ("no_tests_collected", TIER_AMBIGUOUS, r"no tests ran|collected 0 items"),
    ("tests_timed_out", TIER_AMBIGUOUS, r"Timeout error: \d+ seconds exceeded"),
))
_PASSED = {TestStatus.PASSED.value, TestStatus.XFAIL.value}
_FAILED = {TestStatus.FAILED.value, TestStatus.ERROR.value, TestStatus.SKIPPED.value}  # a skipped F2P is no fix


def classify_text(text: str) -> tuple[str, str] | None:
    """(reason, tier) of the first infrastructure signature in a log, else None."""
    for reason, tier, pattern in INFRA_FAILURE_SIGNATURES:
        if text and pattern.search(text):
            return reason, tier
    return None


def logs_eval(log: str, parser: Parser) -> tuple[dict[str, str], bool]:
    """(status map, whether the log describes a real test run), by the harness's rules."""
    if any(bad in log for bad in (APPLY_PATCH_FAIL, RESET_FAILED, TESTS_ERROR, TESTS_TIMEOUT)):
        return {}, False
    if START_TEST_OUTPUT not in log or END_TEST_OUTPUT not in log:
        return {}, False
    statuses = parser(log.split(START_TEST_OUTPUT)[1].split(END_TEST_OUTPUT)[0]) or parser(log)
    if not statuses and not SUITE_RAN.search(log):
        return {}, False
    found = _EXIT_CODE.search(log)
    code = int(found.group(1)) if found else None
    if code not in (None, 0) and statuses and not any(s in (TestStatus.FAILED.value, TestStatus.ERROR.value)
                                                          for s in statuses.values()):
        return {}, False  # the log claims success the command's own exit status denies
    return statuses, True


def _resolve(case: str, statuses: dict[str, str]) -> str | None:
    if case in statuses:
        return case
    if case.count("[") > case.count("]"):  # an id truncated mid-parameter in the dataset
        matches = [k for k in statuses if k.startswith(case)]
        if matches and len({statuses[k] in _PASSED for k in matches}) == 1:
            return matches[0]
    return None


def _split(tests: Iterable[str], statuses: dict[str, str], ok: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"success": [], "failure": []}
    for test in tests:
        key = _resolve(test, statuses)
        status = statuses.get(key) if key is not None else None
        if status in ok:
            out["success"].append(test)
        elif status is None or status in _FAILED:
            out["failure"].append(test)
    return out


def grade_tests(statuses: dict[str, str], fail_to_pass: list[str], pass_to_pass: list[str]) -> dict:
    """The `tests_status` block; FAIL_TO_FAIL / PASS_TO_FAIL stay empty as in the official runs."""
    return {
        "FAIL_TO_PASS": _split(fail_to_pass, statuses, _PASSED),
        "PASS_TO_PASS": _split(pass_to_pass, statuses, _PASSED | {TestStatus.SKIPPED.value}),
        "FAIL_TO_FAIL": {"success": [], "failure": []},
        "PASS_TO_FAIL": {"success": [], "failure": []},
    }


def _fully_resolved(tests: dict) -> bool:
    """The harness's RESOLVED_FULL: every F2P and P2P success (an empty list counts as all)."""
    def rate(block: dict) -> float:
        total = len(block["success"]) + len(block["failure"])
        return 1 if total == 0 else len(block["success"]) / total

    return rate(tests["FAIL_TO_PASS"]) == 1 and rate(tests["PASS_TO_PASS"]) == 1


def instance_report(instance_id: str, patch: str | None, log: str, parser: Parser,
                    fail_to_pass: list[str], pass_to_pass: list[str]) -> dict:
    """report.json's content for one graded log, as swebench.harness.grading.get_eval_report writes it."""
    entry: dict = {"patch_is_None": patch is None, "patch_exists": False, "patch_successfully_applied": False,
                   "resolved": False, "infra_failure": False}
    if patch is None:
        return {instance_id: entry}
    entry["patch_exists"] = True
    statuses, found = logs_eval(log, parser)
    if not found:
        classified = classify_text(log)
        if classified:
            entry["infra_failure"] = classified[1] == TIER_ENVIRONMENT
            entry["infra_failure_reason"] = classified[0]
        return {instance_id: entry}
    entry["patch_successfully_applied"] = True
    tests = grade_tests(statuses, fail_to_pass, pass_to_pass)
    entry["resolved"] = _fully_resolved(tests)
    entry["tests_status"] = tests
    return {instance_id: entry}


def run_summary(instance_ids: list[str], predictions: dict[str, dict], reports: dict[str, dict | None],
                logs: dict[str, str]) -> dict:
    """The official run summary (schema_version 2) over the selected instances.

    `reports` maps an evaluated instance to its report.json content, or to
    None when its evaluation failed; `logs` holds the test logs classified
    for failure reasons. Empty patches are not evaluated.
    """
    ids = set(instance_ids)
    submitted = sorted(ids & predictions.keys())
    empty = sorted(i for i in submitted if not predictions[i].get("model_patch"))
    completed = sorted(i for i, r in reports.items() if r is not None)
    resolved = sorted(i for i in completed if reports[i][i]["resolved"])  # type: ignore[index]
    unresolved = sorted(set(completed) - set(resolved))
    errors = sorted(i for i, r in reports.items() if r is None)
    reasons, infra, ambiguous = {}, [], []
    for iid in sorted(set(unresolved) | set(errors)):
        classified = classify_text(logs.get(iid, ""))
        if classified:
            reasons[iid] = classified[0]
            (infra if classified[1] == TIER_ENVIRONMENT else ambiguous).append(iid)
    return _summary(sorted(ids - set(submitted)), submitted, completed, empty, resolved, unresolved, errors,
                    infra, ambiguous, reasons)


def _summary(incomplete, submitted, completed, empty, resolved, unresolved, errors, infra, ambiguous, reasons) -> dict:
    return {
        "total_instances": len(incomplete) + len(submitted),
        "submitted_instances": len(submitted),
        "completed_instances": len(completed),
        "resolved_instances": len(resolved),
        "unresolved_instances": len(unresolved),
        "infra_failure_instances": len(infra),
        "ambiguous_failure_instances": len(ambiguous),
        "empty_patch_instances": len(empty),
        "error_instances": len(errors),
        "completed_ids": completed,
        "incomplete_ids": incomplete,
        "empty_patch_ids": empty,
        "submitted_ids": submitted,
        "resolved_ids": resolved,
        "unresolved_ids": unresolved,
        "infra_failure_ids": infra,
        "ambiguous_failure_ids": ambiguous,
        "failure_reasons": reasons,
        "error_ids": errors,
        "schema_version": SUMMARY_SCHEMA_VERSION,
    }


def merge_summaries(earlier: dict, later: dict, later_ids: Iterable[str]) -> dict:
    """One summary for a run id evaluated in parts (several --filter calls): `later` decides its own instances."""
    mine = set(later_ids)

    def merged(name: str) -> list[str]:
        return sorted({i for i in earlier.get(name, []) if i not in mine} | set(later.get(name, [])))

    reasons = {i: r for i, r in earlier.get("failure_reasons", {}).items() if i not in mine}
    reasons.update(later.get("failure_reasons", {}))
    return _summary(merged("incomplete_ids"), merged("submitted_ids"), merged("completed_ids"),
                    merged("empty_patch_ids"), merged("resolved_ids"), merged("unresolved_ids"), merged("error_ids"),
                    merged("infra_failure_ids"), merged("ambiguous_failure_ids"), dict(sorted(reasons.items())))
