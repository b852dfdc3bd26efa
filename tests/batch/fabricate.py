"""SWE-style instances made from real local git repos: a bug commit, its fix, its test.

`fabricate` commits the buggy base, then the fix, then the new test into a
repo under a repo cache (`cache/owner__name`), and returns the instance in the
official schema: the gold `patch` is the fix commit's diff, `test_patch` the
test commit's, FAIL_TO_PASS / PASS_TO_PASS stored as JSON strings as the hub
stores them.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import uuid
from pathlib import Path
from unittest import mock

from tests.conftest import git

# The sandbox sees the host filesystem read-only, so this interpreter (with pytest) is there too.
TEST_CMD = f"{sys.executable} -m pytest --no-header -rA --tb=no -p no:cacheprovider"
# The base image has python3 but no pytest: a few lines that run test_* functions and print -rA style lines.
_RUNNER = """
import importlib.util, sys
sys.path.insert(0, ".")
for path in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location(path[:-3].replace("/", "."), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name in sorted(n for n in vars(module) if n.startswith("test_")):
        try:
            getattr(module, name)()
            print("PASSED", f"{path}::{name}")
        except Exception:
            print("FAILED", f"{path}::{name}")
"""
MINI_RUNNER = "python3 -c " + shlex.quote(_RUNNER)


FIXED_DATES = {"GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        if text is None:  # deleted in this commit
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    with mock.patch.dict(os.environ, FIXED_DATES):  # the same repo gets the same commits: cached environments hit
        git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def fabricate(cache: Path, repo: str, number: int, *, base: dict[str, str], fix: dict[str, str],
              tests: dict[str, str | None], fail_to_pass: list[str], pass_to_pass: list[str]) -> dict:
    path = cache / repo.replace("/", "__")
    if not path.exists():
        path.mkdir(parents=True)
        git(path, "init", "-q", "-b", "main")
    base_commit = _commit(path, base, f"bug for #{number}")
    fix_commit = _commit(path, fix, f"fix #{number}")
    test_commit = _commit(path, tests, f"test #{number}")
    return {
        "instance_id": f"{repo.replace('/', '__')}-{number}", "repo": repo, "base_commit": base_commit,
        "patch": git(path, "diff", base_commit, fix_commit),
        "test_patch": git(path, "diff", fix_commit, test_commit),
        "problem_statement": f"Issue #{number}: see the failing behaviour.", "hints_text": "",
        "created_at": "2024-01-01T00:00:00Z", "version": "1.0", "environment_setup_commit": base_commit,
        "FAIL_TO_PASS": json.dumps(fail_to_pass), "PASS_TO_PASS": json.dumps(pass_to_pass),
    }


# A patch that "fixes" acme__calc-1 by adding a trivial test_add, and one that cannot apply anywhere.
CHEAT = """\
diff --git a/tests/test_ops.py b/tests/test_ops.py
--- a/tests/test_ops.py
+++ b/tests/test_ops.py
@@ -2,3 +2,7 @@ from calc.ops import add, mul
 
 def test_mul():
     assert mul(2, 3) == 6
+
+
+def test_add():
+    assert True
"""
MALFORMED = "diff --git a/text.py b/text.py\n--- a/text.py\n+++ b/text.py\n@@ -1,2 +1,2 @@\n-def nothing_like_this():\n+oops\n"

OPS_TESTS = "from calc.ops import add, mul\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"


def unique_owner() -> str:
    """A repository owner no other test run uses. Docker image names and labels come from the repository,
    so the images built for its instances are this run's alone: two suites at once do not remove or
    rebuild each other's images."""
    return f"acme{uuid.uuid4().hex[:8]}"


def standard_instances(cache: Path, owner: str = "acme") -> list[dict]:
    """Three instances over two repos: a modified test file, a second bug on the same repo, a new test file."""
    first = fabricate(
        cache, f"{owner}/calc", 1,
        base={"calc/__init__.py": "", "calc/ops.py": "def add(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
              "tests/test_ops.py": OPS_TESTS},
        fix={"calc/ops.py": "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n"},
        tests={"tests/test_ops.py": OPS_TESTS + "\n\ndef test_add():\n    assert add(2, 3) == 5\n"},
        fail_to_pass=["tests/test_ops.py::test_add"], pass_to_pass=["tests/test_ops.py::test_mul"],
    )
    second = fabricate(
        cache, f"{owner}/calc", 2,
        base={"calc/neg.py": "def neg(a):\n    return a\n"},
        fix={"calc/neg.py": "def neg(a):\n    return -a\n"},
        tests={"tests/test_neg.py": "from calc.neg import neg\n\ndef test_neg():\n    assert neg(2) == -2\n"},
        fail_to_pass=["tests/test_neg.py::test_neg"], pass_to_pass=[],
    )
    return [first, second, shout_instance(cache, f"{owner}/text", 3)]


def shout_instance(cache: Path, repo: str, number: int) -> dict:
    """shout() lower-cases instead of upper-casing; the test file exists at base and gains a test."""
    return fabricate(
        cache, repo, number,
        base={"text.py": "def shout(s):\n    return s.lower()\n\n\ndef whisper(s):\n    return s.lower()\n",
              "test_text.py": "from text import whisper\n\ndef test_whisper():\n    assert whisper('A') == 'a'\n"},
        fix={"text.py": "def shout(s):\n    return s.upper()\n\n\ndef whisper(s):\n    return s.lower()\n"},
        tests={"test_text.py": "from text import shout, whisper\n\ndef test_whisper():\n    assert whisper('A') == 'a'\n\n"
                               "def test_shout():\n    assert shout('a') == 'A'\n"},
        fail_to_pass=["test_text.py::test_shout"], pass_to_pass=["test_text.py::test_whisper"],
    )


def call(name: str, **arguments) -> str:
    """One raw assistant turn calling a tool, as the model writes it."""
    return f"Let me act.\n<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


FIXES = {  # instance_id after the owner -> the edit that fixes it
    "calc-1": ("calc/ops.py", "return a - b", "return a + b"),
    "calc-2": ("calc/neg.py", "return a\n", "return -a\n"),
    "shout": ("text.py", "def shout(s):\n    return s.lower()", "def shout(s):\n    return s.upper()"),
}


def fix_script(instance_id: str, pause: float = 0.0) -> list[str]:
    """A replay script that (optionally waits, then) makes the gold fix with the editor and submits."""
    path, old, new = FIXES.get(instance_id.split("__", 1)[-1]) or FIXES["shout"]
    turns = [call("bash", command=f"sleep {pause}")] if pause else []
    return turns + [call("str_replace_editor", command="str_replace", path=path, old_str=old, new_str=new),
                    call("submit")]


# A patch that changes nothing the tests look at.
NOOP = "diff --git a/NOTES.md b/NOTES.md\nnew file mode 100644\n--- /dev/null\n+++ b/NOTES.md\n@@ -0,0 +1 @@\n+nothing\n"


# A src/ layout library whose tests need `six` from the registry; test_patch deletes tests/test_legacy.py.
SRCLIB_SPEC = {"1.0": {"pip_packages": ["pytest", "six"], "install": "python -m pip install -e ."}}  # per version
_CORE_TESTS = "import six\n\nfrom acmelib.core import double\n\n\ndef test_six():\n    assert six.PY3\n"
# On PYTHONPATH in the tests: a same-named package with the fix, which must never be the one imported.
SHADOW = {"acmelib/__init__.py": "import sys\nprint('SHADOW acmelib IMPORTED', file=sys.stderr)\n",
          "acmelib/core.py": "def double(x):\n    return 2 * x\n"}


def srclib_instance(cache: Path, number: int = 7, owner: str = "acme") -> dict:
    return fabricate(
        cache, f"{owner}/srclib", number,
        base={"pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n\n'
                                '[project]\nname = "acmelib"\nversion = "1.0"\n\n[tool.setuptools.packages.find]\nwhere = ["src"]\n',
              "src/acmelib/__init__.py": "", "src/acmelib/core.py": "def double(x):\n    return x + x + 1\n",
              "tests/test_core.py": _CORE_TESTS,
              "tests/test_legacy.py": "def test_legacy():\n    assert True\n"},
        fix={"src/acmelib/core.py": "def double(x):\n    return 2 * x\n"},
        tests={"tests/test_core.py": _CORE_TESTS + "\n\ndef test_double():\n    assert double(4) == 8\n",
               "tests/test_legacy.py": None},
        fail_to_pass=["tests/test_core.py::test_double"], pass_to_pass=["tests/test_core.py::test_six"],
    )
