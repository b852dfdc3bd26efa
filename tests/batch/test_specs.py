"""Spec files: the official keys, lookup order, one-line errors, directives and the `{tests}` placeholder."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopcoder.batch.swebench import specs as S  # test_* names imported bare would be collected as tests
from loopcoder.batch.swebench.instances import Instance
from loopcoder.batch.swebench.specs import DEFAULT_SPEC, MAP_REPO_TO_TEST_CMD, SpecError, deleted_files, load_specs

TEST_PATCH = """\
diff --git a/tests/test_a.py b/tests/test_a.py
--- a/tests/test_a.py
+++ b/tests/test_a.py
@@ -1 +1,2 @@
 x = 1
+y = 2
diff --git a/tests/test_old.py b/tests/test_old.py
deleted file mode 100644
--- a/tests/test_old.py
+++ /dev/null
@@ -1 +0,0 @@
-def test_old(): pass
diff --git a/tests/data.json b/tests/data.json
new file mode 100644
--- /dev/null
+++ b/tests/data.json
@@ -0,0 +1 @@
+{}
"""


def _instance(iid="o__r-1", repo="o/r", version="1.0") -> Instance:
    return Instance(iid, repo, "a" * 40, "p", test_patch=TEST_PATCH, version=version)


def test_lookup_order_and_official_keys(tmp_path):
    path = tmp_path / "specs.yaml"
    path.write_text("o/r:\n  '1.0':\n    python: 3.11\n    pip_packages: [pytest, six]\n    test_cmd: [cd src, 'pytest {tests} -q']\n"
                    "    eval_commands: export A=1\n    packages: requirements.txt\n"
                    "o__r-2:\n  install: python -m pip install .\n")
    specs = load_specs(path)
    spec = specs.for_instance(_instance())
    assert spec.python == "3.11" and spec.pip_packages == ("pytest", "six") and spec.eval_commands == ("export A=1",)
    assert spec.install == DEFAULT_SPEC.install and spec.depends_on_repo()
    assert S.test_command(_instance(), spec) == "export A=1\ncd src && pytest tests/test_a.py -q"
    assert specs.for_instance(_instance("o__r-2")).install == "python -m pip install ."
    assert specs.for_instance(_instance(version="2.0")) == DEFAULT_SPEC
    django = specs.for_instance(_instance("django__django-1", "django/django"))
    assert django.test_cmd == MAP_REPO_TO_TEST_CMD["django/django"]
    assert spec.key(_instance()) != spec.key(_instance("o__r-9", "o/other"))


def test_deleted_test_files_are_not_directives():
    assert deleted_files(TEST_PATCH) == {"tests/test_old.py"}
    assert S.test_directives(_instance()) == ["tests/test_a.py"]
    assert S.test_command(_instance(), DEFAULT_SPEC).endswith("-p no:cacheprovider tests/test_a.py")


@pytest.mark.parametrize("text, message", [
    ("o/r: [1, 2]", "expected a mapping of version -> spec"),
    ("o/r:\n  '1':\n    pip_packages: six\n    colour: red", "unknown key(s) colour"),
    ("x-1:\n  packages: environment.yml", "conda environment files are not supported"),
    ("x-1:\n  python: three", "'python' must look like 3.11"),
    ("x-1:\n  pip_packages: [1]", "'pip_packages' must be a list of strings"),
    ("[: bad", "not valid YAML"),
])
def test_bad_spec_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "specs.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_specs(path)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=12))
def test_any_json_loads_or_is_a_spec_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("s") / "specs.json"
    path.write_text(json.dumps(data))
    try:
        specs = load_specs(path)
    except SpecError:
        return
    for spec in [*specs.instances.values(), *(s for v in specs.repos.values() for s in v.values())]:
        assert isinstance(spec.test_cmd, str) and all(isinstance(p, str) for p in spec.pip_packages)
