"""Grading in the official harness's terms: per-instance report.json and the run summary.

Semantics match swebench.harness.grading: a FAIL_TO_PASS test succeeds when
it PASSED or XFAILed; a PASS_TO_PASS test is maintained when it PASSED,
XFAILed or was SKIPPED; a test missing from the log failed. Resolved means
every FAIL_TO_PASS succeeded and every PASS_TO_PASS was maintained.
"""
from __future__ import annotations

from typing import Iterable

from agent.swebench.log_parsers import TestStatus

SUMMARY_SCHEMA_VERSION = 2
_PASSED = {TestStatus.PASSED.value, TestStatus.XFAIL.value}
_MAINTAINED = _PASSED | {TestStatus.SKIPPED.value}


def _split(tests: Iterable[str], statuses: dict[str, str], ok: set[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"success": [], "failure": []}
    for test in tests:
        out["success" if statuses.get(test) in ok else "failure"].append(test)
    return out


def grade_tests(statuses: dict[str, str], fail_to_pass: list[str], pass_to_pass: list[str]) -> dict:
    """The `tests_status` block; FAIL_TO_FAIL / PASS_TO_FAIL stay empty as in the official runs."""
    return {
        "FAIL_TO_PASS": _split(fail_to_pass, statuses, _PASSED),
        "PASS_TO_PASS": _split(pass_to_pass, statuses, _MAINTAINED),
        "FAIL_TO_FAIL": {"success": [], "failure": []},
        "PASS_TO_FAIL": {"success": [], "failure": []},
    }


def instance_report(
    instance_id: str,
    patch: str | None,
    applied: bool,
    statuses: dict[str, str] | None = None,
    fail_to_pass: list[str] = (),  # type: ignore[assignment]
    pass_to_pass: list[str] = (),  # type: ignore[assignment]
) -> dict:
    """`{instance_id: {patch_is_None, patch_exists, patch_successfully_applied, resolved[, tests_status]}}`.

    tests_status is present once the patch applied and the tests ran, as in the official report.
    """
    entry: dict = {"patch_is_None": patch is None, "patch_exists": patch is not None,
                   "patch_successfully_applied": False, "resolved": False}
    if patch is not None and applied:
        entry["patch_successfully_applied"] = True
        status = grade_tests(statuses or {}, list(fail_to_pass), list(pass_to_pass))
        entry["resolved"] = not status["FAIL_TO_PASS"]["failure"] and not status["PASS_TO_PASS"]["failure"]
        entry["tests_status"] = status
    return {instance_id: entry}


def run_summary(instance_ids: list[str], predictions: dict[str, dict], reports: dict[str, dict | None]) -> dict:
    """The official run summary (schema_version 2) over the selected instances.

    `reports` maps an evaluated instance to its report.json content, or to
    None when its evaluation failed; empty patches are not evaluated.
    """
    ids = set(instance_ids)
    submitted = sorted(ids & predictions.keys())
    empty = sorted(i for i in submitted if not predictions[i].get("model_patch"))
    completed = sorted(i for i, r in reports.items() if r is not None)
    resolved = sorted(i for i in completed if reports[i][i]["resolved"])  # type: ignore[index]
    unresolved = sorted(set(completed) - set(resolved))
    errors = sorted(i for i, r in reports.items() if r is None)
    return {
        "total_instances": len(ids),
        "submitted_instances": len(submitted),
        "completed_instances": len(completed),
        "resolved_instances": len(resolved),
        "unresolved_instances": len(unresolved),
        "empty_patch_instances": len(empty),
        "error_instances": len(errors),
        "completed_ids": completed,
        "incomplete_ids": sorted(ids - set(submitted)),
        "empty_patch_ids": empty,
        "submitted_ids": submitted,
        "resolved_ids": resolved,
        "unresolved_ids": unresolved,
        "error_ids": errors,
        "schema_version": SUMMARY_SCHEMA_VERSION,
    }
