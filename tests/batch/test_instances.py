"""Instance files: the official schema from JSON and JSONL, filters, and errors that name the culprit."""
from __future__ import annotations

import json
import sys

import pytest

from loopcoder.batch.swebench import specs
from loopcoder.batch.swebench.instances import InstanceError, load_instances, parse_instance
from loopcoder.workspace.patching import looks_like_test

RECORD = {
    "instance_id": "acme__calc-1", "repo": "acme/calc", "base_commit": "a" * 40,
    "problem_statement": "add() subtracts", "patch": "", "test_patch": "",
    "hints_text": "", "created_at": "2024-01-01T00:00:00Z", "version": 1.0,
    "environment_setup_commit": "b" * 40,
    "FAIL_TO_PASS": '["tests/test_ops.py::test_add"]', "PASS_TO_PASS": ["tests/test_ops.py::test_mul"],
}


def test_json_strings_and_lists_both_become_lists(tmp_path):
    path = tmp_path / "i.jsonl"
    second = {**RECORD, "instance_id": "acme__calc-2", "FAIL_TO_PASS": ["t::a"], "PASS_TO_PASS": "[]"}
    path.write_text(json.dumps(RECORD) + "\n\n" + json.dumps(second) + "\n")
    first, other = load_instances(path)
    assert first.FAIL_TO_PASS == ["tests/test_ops.py::test_add"]
    assert first.PASS_TO_PASS == ["tests/test_ops.py::test_mul"]
    assert first.version == "1.0" and first.repo_dirname == "acme__calc"
    assert other.FAIL_TO_PASS == ["t::a"] and other.PASS_TO_PASS == []


def test_json_list_and_single_object_and_filter(tmp_path):
    path = tmp_path / "i.json"
    path.write_text(json.dumps([RECORD, {**RECORD, "instance_id": "other__x-7", "repo": "other/x"}]))
    assert [i.instance_id for i in load_instances(path, filter=r"^other")] == ["other__x-7"]
    assert len(load_instances(path, filter="calc|x-7")) == 2
    path.write_text(json.dumps(RECORD))
    assert load_instances(path)[0].instance_id == "acme__calc-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"repo": None}, "instance acme__calc-1): required field 'repo'"),
        ({"base_commit": "HEAD"}, "'base_commit' must be a hex commit id"),
        ({"repo": "calc"}, "'repo' must look like 'owner/name'"),
        ({"instance_id": "../evil"}, "'instance_id' may hold only"),
        ({"FAIL_TO_PASS": "[not json"}, "'FAIL_TO_PASS' is a string but not a JSON list"),
        ({"PASS_TO_PASS": [1, 2]}, "'PASS_TO_PASS' must be a list of test names"),
        ({"hints_text": ["x"]}, "'hints_text' must be a string"),
    ],
)
def test_errors_name_instance_and_field(tmp_path, change, message):
    path = tmp_path / "i.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps({**RECORD, **change}) + "\n")
    with pytest.raises(InstanceError, match="i.jsonl:2") as err:
        load_instances(path)
    assert message in str(err.value)


def test_file_level_errors(tmp_path):
    path = tmp_path / "i.jsonl"
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(RECORD) + "\n")
    with pytest.raises(InstanceError, match="duplicate instance_id 'acme__calc-1'"):
        load_instances(path)
    path.write_text("{broken\n")
    with pytest.raises(InstanceError, match=r"i.jsonl:1: not valid JSON"):
        load_instances(path)
    with pytest.raises(InstanceError, match="no such instances file"):
        load_instances(tmp_path / "missing.json")
    with pytest.raises(InstanceError, match="not a valid regular expression"):
        load_instances(path, filter="(")
    with pytest.raises(InstanceError, match="expected a JSON object"):
        parse_instance([1], "x")


def test_hub_name_without_datasets_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    with pytest.raises(InstanceError, match="needs the `datasets` package"):
        load_instances("princeton-nlp/SWE-bench_Lite:test")


TEST_PATCH = """\
diff --git a/tests/test_ops.py b/tests/test_ops.py
--- a/tests/test_ops.py
+++ b/tests/test_ops.py
@@ -1 +1,2 @@
 x
+y
diff --git a/tests/data/case.json b/tests/data/case.json
new file mode 100644
--- /dev/null
+++ b/tests/data/case.json
@@ -0,0 +1 @@
+{}
"""


def test_directives_and_commands_follow_the_harness():
    inst = parse_instance({**RECORD, "test_patch": TEST_PATCH}, "x")
    assert specs.patch_files(TEST_PATCH) == ["tests/test_ops.py", "tests/data/case.json"]
    assert specs.test_directives(inst) == ["tests/test_ops.py"]
    spec = specs.SpecMap().for_instance(inst)
    assert specs.test_command(inst, spec) == "python -m pytest --no-header -rA --tb=no -p no:cacheprovider tests/test_ops.py"
    assert specs.test_command(inst, spec, "pytest -rA {tests} -x") == "pytest -rA tests/test_ops.py -x"
    django = parse_instance({**RECORD, "repo": "django/django",
                             "test_patch": TEST_PATCH.replace("tests/test_ops.py", "tests/admin_views/tests.py")}, "x")
    assert specs.test_directives(django) == ["admin_views.tests"]


def test_test_like_paths():
    for path in ("conftest.py", "pkg/tests/helpers.py", "test_x.py", "src/x_test.py", "tox.ini", "a/testing/b.py"):
        assert looks_like_test(path), path
    for path in ("calc/ops.py", "attest.py", "contest.py", "docs/testing.md"):
        assert not looks_like_test(path), path
