"""Evaluation on fabricated instances from real git repos, in the local sandbox, checked key by key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from loopcoder.batch.swebench.eval import EvalOptions, evaluate
from loopcoder.batch.swebench.instances import parse_instance
from loopcoder.batch.swebench.predictions import load_predictions
from tests.batch.fabricate import CHEAT, MALFORMED, standard_instances

REPORT_KEYS = ["patch_is_None", "patch_exists", "patch_successfully_applied", "resolved", "infra_failure",
               "tests_status"]
SUMMARY_KEYS = [
    "total_instances", "submitted_instances", "completed_instances", "resolved_instances", "unresolved_instances",
    "infra_failure_instances", "ambiguous_failure_instances", "empty_patch_instances", "error_instances",
    "completed_ids", "incomplete_ids", "empty_patch_ids", "submitted_ids", "resolved_ids", "unresolved_ids",
    "infra_failure_ids", "ambiguous_failure_ids", "failure_reasons", "error_ids", "schema_version",
]
@pytest.fixture(scope="module")
def fabricated(tmp_path_factory, env_cache):
    root = tmp_path_factory.mktemp("swe")
    records = standard_instances(root / "cache")
    (root / "envs").symlink_to(env_cache)
    return root, [parse_instance(r, r["instance_id"]) for r in records]


def _options(root: Path) -> EvalOptions:
    return EvalOptions(sandbox="local", repo_cache=root / "cache", work_root=root / "work", env_cache=root / "envs",
                       timeout=120)


def test_gold_patches_resolve_with_official_shapes(fabricated, tmp_path):
    root, instances = fabricated
    gold = load_predictions("gold", instances)
    summary, outcomes, summary_path = evaluate(instances, gold, _options(root), tmp_path, "gold-run", workers=2)
    assert [o.status for o in outcomes] == ["resolved"] * 3, [o.error for o in outcomes]
    assert summary_path == tmp_path / "gold.gold-run.json"
    on_disk = json.loads(summary_path.read_text())
    assert list(on_disk) == SUMMARY_KEYS and on_disk == summary
    ids = [i.instance_id for i in instances]
    assert summary["resolved_ids"] == sorted(ids) and summary["resolved_instances"] == 3
    assert summary["total_instances"] == summary["submitted_instances"] == summary["completed_instances"] == 3
    assert summary["schema_version"] == 2 and summary["error_ids"] == [] and summary["empty_patch_ids"] == []
    first = instances[0]
    out_dir = tmp_path / "gold-run" / "gold" / first.instance_id
    report = json.loads((out_dir / "report.json").read_text())
    assert list(report) == [first.instance_id] and list(report[first.instance_id]) == REPORT_KEYS
    status = report[first.instance_id]["tests_status"]
    assert list(status) == ["FAIL_TO_PASS", "PASS_TO_PASS", "FAIL_TO_FAIL", "PASS_TO_FAIL"]
    assert status["FAIL_TO_PASS"] == {"success": ["tests/test_ops.py::test_add"], "failure": []}
    assert status["PASS_TO_PASS"] == {"success": ["tests/test_ops.py::test_mul"], "failure": []}
    assert (out_dir / "patch.diff").read_text() == first.patch
    log = (out_dir / "test_output.txt").read_text()
    assert ">>>>> Applied Patch (git apply)" in log and ">>>>> Start Test Output" in log
    assert "PASSED tests/test_ops.py::test_add" in log
    # the working copies are gone and the cache is untouched
    assert not any((root / "work").iterdir())


def test_bad_predictions_do_not_resolve(fabricated, tmp_path):
    root, instances = fabricated
    calc1, calc2, text3 = instances
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"instance_id": calc1.instance_id, "model_name_or_path": "org/m", "model_patch": CHEAT},
        {"instance_id": calc2.instance_id, "model_name_or_path": "org/m", "model_patch": ""},
        {"instance_id": text3.instance_id, "model_name_or_path": "org/m", "model_patch": MALFORMED},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary, outcomes, path = evaluate(instances, load_predictions(preds, instances), _options(root), tmp_path, "r1")
    cheat, empty, malformed = outcomes
    assert path.name == "org__m.r1.json"

    assert cheat.status == "unresolved" and cheat.test_files_touched == ["tests/test_ops.py"]
    report = json.loads((tmp_path / "r1" / "org__m" / calc1.instance_id / "report.json").read_text())[calc1.instance_id]
    assert report["patch_successfully_applied"] is True and report["resolved"] is False
    assert report["tests_status"]["FAIL_TO_PASS"] == {"success": [], "failure": ["tests/test_ops.py::test_add"]}
    extras = json.loads((tmp_path / "r1" / "org__m" / calc1.instance_id / "eval.json").read_text())
    assert extras["test_files_touched"] == ["tests/test_ops.py"] and extras["statuses"]["tests/test_ops.py::test_add"] == "FAILED"

    assert empty.status == "empty_patch" and not (tmp_path / "r1" / "org__m" / calc2.instance_id).exists()

    assert malformed.status == "not_applied"
    report = json.loads((tmp_path / "r1" / "org__m" / text3.instance_id / "report.json").read_text())
    assert report == {text3.instance_id: {"patch_is_None": False, "patch_exists": True,
                                          "patch_successfully_applied": False, "resolved": False,
                                          "infra_failure": False}}
    assert ">>>>> Patch Apply Failed" in (tmp_path / "r1" / "org__m" / text3.instance_id / "test_output.txt").read_text()

    assert summary["resolved_ids"] == [] and summary["empty_patch_ids"] == [calc2.instance_id]
    assert summary["unresolved_ids"] == sorted([calc1.instance_id, text3.instance_id])
    assert summary["completed_instances"] == 2 and summary["submitted_instances"] == 3


def test_machinery_failures_are_errors_of_that_instance_only(fabricated, tmp_path):
    root, instances = fabricated
    gold = load_predictions("gold", instances)
    broken = parse_instance({**instances[0].to_dict(), "instance_id": "acme__calc-99", "base_commit": "0" * 40}, "x")
    summary, outcomes, _ = evaluate([broken, instances[2]], gold | {"acme__calc-99": {**gold[instances[0].instance_id],
                                    "instance_id": "acme__calc-99"}}, _options(root), tmp_path, "r2")
    assert [o.status for o in outcomes] == ["error", "resolved"]
    assert "base_commit 0000000000000000000000000000000000000000 is not in" in outcomes[0].error
    assert summary["error_ids"] == ["acme__calc-99"] and summary["resolved_ids"] == [instances[2].instance_id]
    no_cache = EvalOptions(sandbox="local", repo_cache=None, env_cache=root / "envs")
    _, (outcome,), _ = evaluate(instances[:1], gold, no_cache, tmp_path, "r3")
    assert outcome.status == "error" and "pass --repo-cache DIR" in outcome.error


CONFTEST_CHEAT = """\
diff --git a/conftest.py b/conftest.py
new file mode 100644
--- /dev/null
+++ b/conftest.py
@@ -0,0 +1,8 @@
+import pytest
+
+
+@pytest.hookimpl(hookwrapper=True)
+def pytest_runtest_makereport(item, call):
+    outcome = yield
+    report = outcome.get_result()
+    report.outcome = "passed"
"""


def test_test_machinery_edits_are_flagged_even_when_they_win(fabricated, tmp_path):
    root, instances = fabricated
    calc2 = instances[1]
    pred = {calc2.instance_id: {"instance_id": calc2.instance_id, "model_name_or_path": "m", "model_patch": CONFTEST_CHEAT}}
    _, (outcome,), _ = evaluate([calc2], pred, _options(root), tmp_path, "r4")
    # graded as the harness grades it (a conftest.py the test files do not cover games pytest), but flagged
    assert outcome.status == "resolved" and outcome.test_files_touched == ["conftest.py"]
    assert "edits test files or test configuration: conftest.py" in (Path(outcome.log_dir) / "test_output.txt").read_text()
