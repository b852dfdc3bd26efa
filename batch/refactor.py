"""Scripted refactors across repositories: one agent run per (task, repo), results on new branches.

Each run works in its own copy of the repository's HEAD (the user's checkout,
index and uncommitted work are never read into it nor touched). The patch is
saved; with `commit`, it also becomes a commit on a new branch made with
plumbing only: a temporary index, `commit-tree`, and `update-ref` that refuses
to move an existing branch, so the current branch and working tree stay as
they were. Tests run before and after when a test command is given or
detected. A repo that fails is reported and the next one goes on. Outcomes,
in the words of agent/outcome.py, go to OUTPUT/refactor.json; each repo's
patch and trajectory to OUTPUT/<task>-<repo>-<name>/ (OUTPUT defaults to
refactor-<time>/ under the config's run.output_dir, ~/.cache/loopcoder/runs).

Plan file (YAML):

    commit: true                       # optional, default false
    tasks:
      - task: Rename helper() to assist() everywhere
        repos: [../svc-a, ../svc-b]
        branch: loopcoder/assist       # optional; default loopcoder/refactor-<slug>-<time>
        test_command: python -m pytest -q   # optional; default: detected
        paths: [src/]                  # optional: limit the changes to these
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import git
import yaml
from rich.table import Table
from rich.text import Text

from loopcoder.agent.config import Config
from loopcoder.agent.outcome import Status, TestTally, edited_tests_words, tally_from_dict, tests_words
from loopcoder.agent.prompting import task_prompt, task_template
from loopcoder.agent.session import open_workspace, start_agent
from loopcoder.batch.swebench.backends import BackendProvider
from loopcoder.batch.swebench.executors import ExecutorOptions, Job, Lost, execute
from loopcoder.tools.test_report import TestStatus, parse_log_pytest
from loopcoder.workspace.patching import patch_files
from loopcoder.workspace.repo import GIT_IDENTITY, RepoError, open_repo, resolve_commit
from loopcoder.workspace.sandbox import Sandbox

PYTEST = "python -m pytest -rA --tb=no -p no:cacheprovider"
TEST_TIMEOUT = 1800.0


class PlanError(ValueError):
    """A plan file or refactor request that cannot be used; the message names the entry."""


@dataclass
class RefactorTask:
    task: str
    repos: list[str]
    branch: str | None = None
    test_command: str | None = None
    paths: list[str] = field(default_factory=list)


@dataclass
class TestRun:
    __test__ = False  # not a pytest class

    command: str
    exit_code: int
    passed: int | None = None  # from a pytest -rA log; None for other runners
    failed: int | None = None
    timed_out: bool = False

    def __str__(self) -> str:
        """'tests: 2 failed, 1 passed' from a pytest log; 'tests: exit 1' from another runner."""
        if self.passed is not None or self.timed_out:
            return tests_words(TestTally(self.passed or 0, self.failed or 0, timed_out=self.timed_out))
        return f"tests: exit {self.exit_code}"


@dataclass
class RepoOutcome:
    repo: str
    task: str
    status: str  # the run's outcome (agent.outcome.Status): submitted, no_change, a limit, error, ...
    files: list[str] = field(default_factory=list)
    edited_tests: list[str] = field(default_factory=list)  # the test files among them (outcome.edited_tests)
    tests_seen: dict | None = None  # the last test counts the agent saw (TestTally.to_dict())
    tests_before: TestRun | None = None
    tests_after: TestRun | None = None
    branch: str | None = None
    commit: str | None = None
    patch_path: str | None = None
    error: str | None = None


def load_plan(path: str | Path) -> tuple[list[RefactorTask], bool]:
    """(tasks, commit) from a plan YAML; errors name the file and the entry."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise PlanError(f"cannot read the plan {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list) or not data["tasks"]:
        raise PlanError(f"{path}: expected a mapping with a non-empty `tasks` list")
    unknown = set(data) - {"tasks", "commit"}
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; the keys are tasks and commit")
    base = Path(path).resolve().parent  # repo paths are relative to the plan
    tasks = []
    for n, entry in enumerate(data["tasks"]):
        where = f"{path}: tasks[{n}]"
        if not isinstance(entry, dict):
            raise PlanError(f"{where}: expected a mapping with task and repos")
        extra = set(entry) - {"task", "repos", "branch", "test_command", "paths"}
        if extra:
            raise PlanError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        if not isinstance(entry.get("task"), str) or not entry["task"].strip():
            raise PlanError(f"{where}: `task` must be a non-empty string")
        repos = entry.get("repos")
        if not isinstance(repos, list) or not repos or not all(isinstance(r, str) for r in repos):
            raise PlanError(f"{where}: `repos` must be a non-empty list of paths")
        for key in ("branch", "test_command"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise PlanError(f"{where}: `{key}` must be a string")
        paths = entry.get("paths") or []
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise PlanError(f"{where}: `paths` must be a list of paths")
        tasks.append(RefactorTask(entry["task"], [str(base / r) for r in repos], entry.get("branch"),
                                  entry.get("test_command"), paths))
    commit = data.get("commit", False)
    if not isinstance(commit, bool):
        raise PlanError(f"{path}: `commit` must be true or false")
    return tasks, commit


def detect_test_command(root: Path) -> str | None:
    """A test command from the files a project keeps at its root; None when nothing says how."""
    def has(name: str, pattern: str = "") -> bool:
        f = root / name
        return f.is_file() and (not pattern or re.search(pattern, f.read_text(errors="replace"), re.M) is not None)

    if (has("pytest.ini") or has("pyproject.toml", r"^\[tool\.pytest") or has("setup.cfg", r"^\[tool:pytest")
            or has("tox.ini", r"^\[pytest") or (root / "tests").is_dir() or any(root.glob("test_*.py"))):
        return PYTEST
    if has("package.json", r'"test"\s*:'):
        return "npm test"
    if has("Cargo.toml"):
        return "cargo test"
    if has("go.mod"):
        return "go test ./..."
    if has("Makefile", r"^test:"):
        return "make test"
    return None


def run_tests(sandbox: Sandbox, command: str) -> TestRun:
    result = sandbox.run(command, timeout=TEST_TIMEOUT)
    run = TestRun(command, result.exit_code, timed_out=result.timed_out)
    statuses = parse_log_pytest(result.output) if "pytest" in command else {}
    if statuses:
        values = list(statuses.values())
        run.passed = sum(v in (TestStatus.PASSED, TestStatus.XFAIL) for v in values)
        run.failed = sum(v in (TestStatus.FAILED, TestStatus.ERROR) for v in values)
    return run


def default_branch(task: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:40].rstrip("-") or "task"
    return f"loopcoder/refactor-{slug}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_branch(repo: git.Repo, branch: str) -> None:
    try:
        repo.git.check_ref_format("--branch", branch)
    except git.GitCommandError:
        raise RepoError(f"{branch!r} is not a valid branch name") from None
    if f"refs/heads/{branch}" in {ref.path for ref in repo.branches}:
        raise RepoError(f"branch {branch} already exists in {repo.working_tree_dir}; "
                        "pass another --branch (the result always goes on a new branch)")


def commit_on_branch(repo: git.Repo, base: str, patch: str, branch: str, message: str) -> str:
    """Commit `patch` on top of `base` as a new branch, without touching HEAD, the index or the files."""
    with tempfile.TemporaryDirectory(prefix="loopcoder-commit-") as tmp:
        patch_file = Path(tmp, "patch.diff")
        patch_file.write_text(patch, encoding="utf-8")
        env = {"GIT_INDEX_FILE": str(Path(tmp, "index"))}
        try:
            repo.git.var("GIT_COMMITTER_IDENT")
        except git.GitCommandError:  # no user.name/email configured: sign as loopcoder
            env.update(GIT_IDENTITY)
        g = repo.git
        try:
            g.execute(["git", "read-tree", base], env=env)
            g.execute(["git", "apply", "--cached", "--binary", str(patch_file)], env=env)
            tree = g.execute(["git", "write-tree"], env=env).strip()
            commit = g.execute(["git", "commit-tree", tree, "-p", base, "-m", message], env=env).strip()
            g.execute(["git", "update-ref", f"refs/heads/{branch}", commit, "0" * 40])  # fails if it exists
        except git.GitCommandError as exc:
            raise RepoError(f"could not commit on {branch} in {repo.working_tree_dir}: {str(exc.stderr).strip()}") from None
    return commit


def refactor_repo(task: RefactorTask, repo_path: str, provider: BackendProvider, config: Config, out_dir: Path,
                  commit: bool, branch: str | None) -> RepoOutcome:
    """One (task, repo); raises RepoError and friends for the caller to record."""
    outcome = RepoOutcome(repo_path, task.task, Status.ERROR)
    with open_repo(repo_path) as repo:
        top = Path(repo.working_tree_dir)
        outcome.repo = str(top)
        head = resolve_commit(repo, "HEAD")
        if commit:
            _check_branch(repo, branch)  # before the run: fail fast, not after an hour of work
        out_dir.mkdir(parents=True, exist_ok=True)
        backend = provider.for_task(top.name)
        try:
            with open_workspace(top, config, commit=head) as ws:
                command = task.test_command or detect_test_command(ws.copy.path)
                if command:
                    outcome.tests_before = run_tests(ws.env.sandbox, command)
                fields = {"instructions": task.task, "repo": top.name, "paths": task.paths, "test_command": command}
                agent = start_agent(backend, ws, config, out_dir / "trajectory.json", {"kind": "refactor", **fields})
                template = task_template("refactor", config.backend.model)
                result = agent.run(task_prompt(template, workdir=ws.workdir, **fields))
                if command:
                    outcome.tests_after = run_tests(ws.env.sandbox, command)
        finally:
            backend.close()
        seen = result.tests
        if seen is not None and command and seen.scope.split() == command.split():
            seen = replace(seen, scope="")  # the task's own test command is the suite here
        outcome.status, outcome.tests_seen = result.status, seen.to_dict() if seen else None
        if result.status == Status.ERROR:
            outcome.error = result.reason
            return outcome
        outcome.files, outcome.edited_tests = patch_files(result.patch), list(result.edited_tests)
        if not result.patch.strip():
            return outcome
        patch_path = out_dir / "patch.diff"
        patch_path.write_text(result.patch, encoding="utf-8")
        outcome.patch_path = str(patch_path)
        if commit and result.status == Status.SUBMITTED:
            outcome.commit = commit_on_branch(repo, head, result.patch, branch, f"{task.task}\n\nMade by loopcoder refactor.")
            outcome.branch = branch
    return outcome


class RefactorWorker:
    """The worker side: the backend provider (a model loads once) and refactor_repo per (task, repo, branch).

    Given no provider (a Ray actor), it makes its own from the config; it never raises for a repo.
    """

    def __init__(self, config: Config, commit: bool, provider: BackendProvider | None = None):
        self.config, self.commit = config, commit
        self.provider = provider or BackendProvider(config)

    def __call__(self, item: tuple[RefactorTask, str, str], out_dir: Path) -> RepoOutcome:
        task, repo_path, branch = item
        try:
            return refactor_repo(task, repo_path, self.provider, self.config, out_dir, self.commit, branch)
        except Exception as exc:  # this repo's failure, whatever it is; the others still run
            return RepoOutcome(repo_path, task.task, Status.ERROR, error=str(exc) or type(exc).__name__)


def run_refactors(tasks: list[RefactorTask], provider: BackendProvider | None, config: Config, output: Path,
                  commit: bool, on_done: Callable[[RepoOutcome], None] | None = None,
                  executor: ExecutorOptions | None = None) -> list[RepoOutcome]:
    """Every (task, repo), outcomes in plan order; a failure is that repo's outcome, never the end of the batch.

    executor: local (default: one at a time, sharing `provider`) or Ray actors, each loading its own backend
    (the repos must be at the same paths on the workers: a shared filesystem).
    """
    executor = executor or ExecutorOptions()
    jobs = []
    for t, task in enumerate(tasks):
        branch = task.branch or default_branch(task.task)
        jobs += [Job(repo_path, (task, repo_path, branch), output / f"{t + 1}-{r + 1}-{Path(repo_path).name or 'repo'}")
                 for r, repo_path in enumerate(task.repos)]
    make_worker = partial(RefactorWorker, config, commit, provider if executor.kind == "local" else None)
    results = {}
    for job, outcome in execute(jobs, make_worker, executor):
        if isinstance(outcome, Lost):
            task, repo_path, _ = job.payload
            outcome = RepoOutcome(repo_path, task.task, Status.ERROR, error=outcome.error)
        if outcome.patch_path:  # where it is on this machine (a Ray worker wrote it in its scratch directory)
            outcome.patch_path = str(job.dest / "patch.diff")
        results[id(job)] = outcome
        if on_done:
            on_done(outcome)
    outcomes = [results[id(job)] for job in jobs]
    output.mkdir(parents=True, exist_ok=True)
    (output / "refactor.json").write_text(json.dumps([asdict(o) for o in outcomes], indent=2), encoding="utf-8")
    return outcomes


FILES_WIDTH = 24  # the files column: a count, then the test files among them on lines of their own


def refactor_table(outcomes: list[RepoOutcome]) -> Table:
    """One row per repo: the outcome, the files changed (naming the test files among them), the tests the agent
    saw, then the tests run before and after it."""
    table = Table(title="refactor", title_justify="left")
    for name in ("repo", "outcome", "files", "agent saw", "before", "after", "committed on", "patch"):
        table.add_column(name, overflow="fold", max_width=FILES_WIDTH if name == "files" else None)
    for o in outcomes:
        status = Text(o.status, style={Status.SUBMITTED: "green", Status.ERROR: "bold red"}.get(o.status, "yellow"))
        if o.error:
            status.append(f"\n{o.error.splitlines()[0][:160]}", style="red")
        seen = "-" if o.status == Status.ERROR else tests_words(tally_from_dict(o.tests_seen))
        files = f"{len(o.files)}\n{edited_tests_words(o.edited_tests).removeprefix('; ')}".strip() if o.files else "-"
        table.add_row(o.repo, status, files, seen, str(o.tests_before or "-"),
                      str(o.tests_after or "-"), f"{o.branch} {o.commit[:10]}" if o.commit else "-", o.patch_path or "-")
    return table
