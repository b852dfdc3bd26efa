"""The hand-written evaluation set for loopcoder-nano: tasks people write, on repositories of ordinary shapes.

Written by hand, not by the task generator (nano/tasks.py), and never
used for training: it measures how far nano's plans carry beyond the
generator's repositories and wording. Each `*.toml` here is one repository
(its files, verbatim) and the tasks asked of it, in a user's own words. A
task may first edit the files into its base (`[[tasks.base]]`: the bug of an
off-by-one), names its reference solution (`[[tasks.edits]]` exact
replacements and/or `rename`: an identifier, as a word, in every .py file),
and carries a hidden pytest file (`check`, after a shared header with
`ROOT` and `files_using`). Solved = the repository's own suite and the
hidden check both pass on the patched base; tests/benchmarks verifies that
each check fails on the base and passes after the reference solution.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nano.tasks import apply_to_copy, write_files

HERE = Path(__file__).resolve().parent
KINDS = ("rename", "change_constant", "fix_off_by_one", "add_parameter")
CHECK_FILE = "hidden_check.py"  # outside pytest's default test_*.py pattern: the repo's own suite never collects it
CHECK_HEADER = '''import inspect
import io as _io
import pathlib
import tokenize as _tokenize  # a task may rename something to `tokenize`

import pytest

ROOT = pathlib.Path(__file__).resolve().parent


def files_using(name):
    """The repository's .py files (not this one) with `name` as an identifier, outside strings and comments."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name == "hidden_check.py" or "__pycache__" in path.parts:
            continue
        tokens = _tokenize.generate_tokens(_io.StringIO(path.read_text()).readline)
        if any(t.type == _tokenize.NAME and t.string == name for t in tokens):
            found.append(str(path.relative_to(ROOT)))
    return found

'''


class TaskFileError(ValueError):
    """A task file that does not describe a usable task; the message names the file and task."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    output: str


@dataclass(frozen=True)
class HandTask:
    id: str
    kind: str
    text: str
    repo: str  # the repository's directory name (the agent sees it in its working copy's path)
    files: dict[str, str]  # the base: path -> content
    solution: dict[str, str]  # files the reference solution changes: path -> new content
    check_test: str  # the hidden pytest file, header included

    @property
    def facts(self) -> dict:
        return {"package": self.repo}  # what the evaluation reads to name the repository's directory

    def solved_files(self) -> dict[str, str]:
        return {**self.files, **self.solution}


def _replace(files: dict[str, str], edit: dict, where: str) -> dict[str, str]:
    path, old, new = edit["path"], edit["old"], edit["new"]
    text = files.get(path)
    if text is None:
        raise TaskFileError(f"{where}: no file {path!r} in the repository")
    if text.count(old) != 1:
        raise TaskFileError(f"{where}: {old!r} occurs {text.count(old)} times in {path}, not once")
    return {**files, path: text.replace(old, new)}


def _rename(files: dict[str, str], old: str, new: str) -> dict[str, str]:
    word = re.compile(rf"\b{re.escape(old)}\b")
    return {p: word.sub(new, t) if p.endswith(".py") else t for p, t in files.items()}


def _task(spec: dict, name: str, repo_files: dict[str, str], where: str) -> HandTask:
    missing = {"id", "kind", "text", "check"} - spec.keys()
    if missing:
        raise TaskFileError(f"{where}: missing {', '.join(sorted(missing))}")
    if spec["kind"] not in KINDS:
        raise TaskFileError(f"{where}: kind {spec['kind']!r} is not one of {', '.join(KINDS)}")
    base = dict(repo_files)
    for edit in spec.get("base", []):
        base = _replace(base, edit, where)
    solved = dict(base)
    for edit in spec.get("edits", []):
        solved = _replace(solved, edit, where)
    if "rename" in spec:
        solved = _rename(solved, spec["rename"]["old"], spec["rename"]["new"])
    solution = {p: t for p, t in solved.items() if base.get(p) != t}
    if not solution:
        raise TaskFileError(f"{where}: the reference solution changes nothing")
    return HandTask(spec["id"], spec["kind"], spec["text"].strip(), name, base, solution,
                    CHECK_HEADER + "\n" + spec["check"])


def load_file(path: Path) -> list[HandTask]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise TaskFileError("the hand-written set is TOML: it needs Python 3.11 or later (tomllib)") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TaskFileError(f"{path.name}: not valid TOML ({exc})") from exc
    if not isinstance(data.get("name"), str) or not isinstance(data.get("files"), dict):
        raise TaskFileError(f"{path.name}: needs `name` (the repository's directory) and a [files] table")
    return [_task(spec, data["name"], data["files"], f"{path.name} task {spec.get('id', i)}")
            for i, spec in enumerate(data.get("tasks", []))]


def load_tasks(directory: Path = HERE) -> list[HandTask]:
    """Every task of every repository file, in file order."""
    tasks = [t for path in sorted(directory.glob("*.toml")) for t in load_file(path)]
    seen: set[str] = set()
    for t in tasks:
        if t.id in seen:
            raise TaskFileError(f"task id {t.id!r} is used twice")
        seen.add(t.id)
    return tasks


def _pytest(root: Path, *args: str, timeout: float = 120.0) -> Verdict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=root,
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"pytest {' '.join(args)} timed out after {timeout:.0f}s")
    return Verdict(proc.returncode == 0, proc.stdout + proc.stderr)


def run_suite(root: Path) -> Verdict:
    """The repository's own tests, as `python -m pytest` in its root runs them."""
    return _pytest(root)


def run_hidden(task: HandTask, root: Path) -> Verdict:
    """The task's hidden check, written into `root` and run on its own."""
    write_files({CHECK_FILE: task.check_test}, root)
    return _pytest(root, CHECK_FILE)


def check_dir(task: HandTask, root: Path) -> Verdict:
    """Solved = the repository's own suite and the hidden check both pass in `root`."""
    suite = run_suite(root)
    if not suite.ok:
        return Verdict(False, "the repository's tests fail:\n" + suite.output)
    hidden = run_hidden(task, root)
    return Verdict(hidden.ok, "" if hidden.ok else "the hidden check fails:\n" + hidden.output)


def check_patch(task: HandTask, patch: str, scratch: Path) -> Verdict:
    """Apply `patch` (a git diff) to a fresh copy of the base files and judge the result."""
    base, failure = apply_to_copy(task.files, patch, scratch)
    return Verdict(False, failure) if failure else check_dir(task, base)
