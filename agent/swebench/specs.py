"""How an instance's tests run: the per-repo test command and the test files to pass it.

Commands are the official harness's (constants/python.py) for the repos that
need something other than plain pytest; the directives are the files that
test_patch touches, as the harness computes them.
"""
from __future__ import annotations

import posixpath
import re
import shlex

from agent.swebench.instances import Instance

TEST_PYTEST = "pytest --no-header -rA --tb=no -p no:cacheprovider"
MAP_REPO_TO_TEST_CMD = {
    "astropy/astropy": "pytest -rA -vv -o console_output_style=classic --tb=no",
    "django/django": "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
    "sphinx-doc/sphinx": "tox --current-env -epy39 -v --",
    "mwaskom/seaborn": "pytest --no-header -rA",
}
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


def patch_files(patch: str) -> list[str]:
    """Paths a unified git diff touches (new side, and old side for renames/deletes), in order."""
    seen: dict[str, None] = {}
    for old, new in _DIFF_HEADER.findall(patch):
        seen.setdefault(old)
        seen.setdefault(new)
    return list(seen)


def looks_like_test(path: str) -> bool:
    """Test code or test configuration, which a fix has no business changing."""
    name = posixpath.basename(path)
    parts = path.split("/")[:-1]
    return (name.startswith("test_") or name.endswith(("_test.py", "_tests.py")) or name == "tests.py"
            or name in ("conftest.py", "pytest.ini", "tox.ini") or any(p in ("test", "tests", "testing") for p in parts))


def test_directives(instance: Instance) -> list[str]:
    files = [f for f in patch_files(instance.test_patch) if not f.endswith(NON_TEST_EXTS)]
    if instance.repo != "django/django":
        return files
    modules = []  # runtests.py takes dotted module names below tests/
    for f in files:
        name = posixpath.basename(f)
        if name == "tests.py" or name.startswith("test_") or "/tests/" in f or "/test_" in f:
            f = f.removesuffix(".py").removeprefix("tests/")
            modules.append(f.replace("/", "."))
    return modules


def test_command(instance: Instance, override: str | None = None) -> str:
    """The shell command that runs this instance's tests; `override` replaces the per-repo command."""
    base = override or MAP_REPO_TO_TEST_CMD.get(instance.repo, TEST_PYTEST)
    return " ".join([base, *map(shlex.quote, test_directives(instance))])
