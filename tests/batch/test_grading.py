"""Grading a log by the harness's rules: markers, the recorded exit code, truncated ids, failure reasons, merges."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from loopcoder.batch.swebench.grading import classify_text, instance_report, logs_eval, merge_summaries, run_summary
from loopcoder.batch.swebench.log_parsers import parse_log_pytest


def _log(body: str, code: int | None = 0) -> str:
    tail = f"\n>>>>> Test Exit Code: {code}" if code is not None else ""
    return f">>>>> Applied Patch (git apply)\n>>>>> Start Test Output\n{body}\n>>>>> End Test Output{tail}\n"


def test_a_log_counts_only_when_it_describes_a_real_run():
    assert logs_eval(_log("PASSED t::a"), parse_log_pytest) == ({"t::a": "PASSED"}, True)
    # a conftest printing PASSED lines while the command failed: the exit status wins
    assert logs_eval(_log("PASSED t::a", code=1), parse_log_pytest) == ({}, False)
    assert logs_eval(_log("FAILED t::a", code=1), parse_log_pytest) == ({"t::a": "FAILED"}, True)
    assert logs_eval(_log("collected 0 items\nno tests ran"), parse_log_pytest) == ({}, False)
    assert logs_eval(_log("PASSED t::a") + ">>>>> Tests Timed Out\n", parse_log_pytest)[1] is False
    assert logs_eval("PASSED t::a\n", parse_log_pytest)[1] is False  # no markers


def test_reports_flag_infrastructure_and_match_truncated_ids():
    broken = instance_report("x", "diff", _log("ModuleNotFoundError: No module named 'six'\nno tests ran", 4),
                             parse_log_pytest, ["t::a"], [])
    assert broken == {"x": {"patch_is_None": False, "patch_exists": True, "patch_successfully_applied": False,
                            "resolved": False, "infra_failure": False, "infra_failure_reason": "missing_module"}}
    oom = instance_report("x", "diff", _log("Killed", None), parse_log_pytest, ["t::a"], [])["x"]
    assert oom["infra_failure"] is True and oom["infra_failure_reason"] == "out_of_memory"
    truncated = instance_report("x", "diff", _log("PASSED t::a[log(photon-1]\nPASSED t::a[log(photon-2]"),
                                parse_log_pytest, ["t::a[log(photon"], [])
    assert truncated["x"]["resolved"] is True
    assert classify_text("all fine") is None


def test_summaries_of_one_run_id_merge():
    preds = {i: {"instance_id": i, "model_patch": "d"} for i in ("a", "b", "c")}
    ok = {"a": {"a": {"resolved": True}}}
    first = run_summary(["a", "b"], {k: preds[k] for k in "ab"}, {**ok, "b": None}, {"b": "Could not resolve host"})
    assert first["infra_failure_ids"] == ["b"] and first["failure_reasons"] == {"b": "network_unreachable"}
    second = run_summary(["b", "c"], {k: preds[k] for k in "bc"}, {"b": {"b": {"resolved": True}}, "c": None}, {})
    merged = merge_summaries(first, second, ["b", "c"])
    assert merged["resolved_ids"] == ["a", "b"] and merged["error_ids"] == ["c"]
    assert merged["infra_failure_ids"] == [] and merged["failure_reasons"] == {}
    assert merged["total_instances"] == merged["submitted_instances"] == 3 and merged["completed_instances"] == 2


@given(st.text(max_size=400), st.lists(st.text(max_size=20), max_size=4))
def test_any_log_grades_without_raising(body, tests):
    report = instance_report("x", "diff", _log(body), parse_log_pytest, tests, tests)["x"]
    assert set(report) >= {"patch_successfully_applied", "resolved", "infra_failure"}
    assert not report["resolved"] or report["patch_successfully_applied"]
