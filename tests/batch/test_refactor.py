"""Refactors over several real repos with the replay backend: branches, untouched checkouts, failures reported."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopcoder.batch.refactor import PlanError, detect_test_command, load_plan
from tests.batch.fabricate import TEST_CMD, call
from tests.conftest import git

RENAME = [call("bash", command="sed -i 's/helper/assist/g' util.py test_util.py"), call("submit")]


def _project(root: Path, name: str) -> Path:
    repo = root / name
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "util.py").write_text("def helper():\n    return 1\n")
    (repo / "test_util.py").write_text("from util import helper\n\ndef test_helper():\n    assert helper() == 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    return repo


@pytest.fixture
def three_repos(tmp_path):
    good = [_project(tmp_path, "svc-a"), _project(tmp_path, "svc-b")]
    (good[0] / "util.py").write_text("def helper():\n    return 1\n# work in progress\n")  # the user's own edit
    (good[0] / "notes.txt").write_text("untracked\n")
    broken = tmp_path / "not-a-repo"
    broken.mkdir()
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for name in ("svc-a", "svc-b", "not-a-repo"):
        (scripts / f"{name}.json").write_text(json.dumps(RENAME))
    return good, broken, scripts


def test_refactor_plan_over_three_repos_reports_all(three_repos, tmp_path, monkeypatch):
    (a, b), broken, scripts = three_repos
    monkeypatch.setenv("LOOPCODER_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("LOOPCODER_WORKTREES", str(tmp_path / "work"))
    heads = {r: git(r, "rev-parse", "HEAD").strip() for r in (a, b)}
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"commit: true\ntasks:\n  - task: Rename helper to assist\n    repos: [svc-a, not-a-repo, svc-b]\n"
                    f"    branch: loopcoder/assist\n    test_command: {TEST_CMD}\n")
    from loopcoder.cli import app

    result = CliRunner().invoke(app, ["refactor", "--plan", str(plan), "--script", str(scripts),
                                      "--output", str(tmp_path / "out")], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output  # one repo failed; the table still lists all three
    outcomes = json.loads((tmp_path / "out" / "refactor.json").read_text())
    assert [Path(o["repo"]).name for o in outcomes] == ["svc-a", "not-a-repo", "svc-b"]
    assert [o["status"] for o in outcomes] == ["submitted", "error", "submitted"]
    assert [bool(o["commit"]) for o in outcomes] == [True, False, True]
    assert f"results: {tmp_path / 'out' / 'refactor.json'}" in result.output
    assert result.output.count("edits tests:") == result.output.count("test_util.py") == 2  # each refactored repo's
    assert "not inside a git repository" in outcomes[1]["error"] and "not-a-repo" in result.output
    for o in (outcomes[0], outcomes[2]):
        assert o["files"] == ["test_util.py", "util.py"] and o["branch"] == "loopcoder/assist"
        assert o["edited_tests"] == ["test_util.py"]  # a rename reaches the tests too: shown, not hidden
        assert o["tests_before"]["passed"] == o["tests_after"]["passed"] == 1 and o["tests_after"]["exit_code"] == 0

    for repo in (a, b):
        assert git(repo, "rev-parse", "HEAD").strip() == heads[repo]  # the checkout did not move
        assert git(repo, "branch", "--show-current").strip() == "main"
        assert git(repo, "rev-parse", "loopcoder/assist^").strip() == heads[repo]
        assert "def assist" in git(repo, "show", "loopcoder/assist:util.py")
        assert git(repo, "diff", "--name-only", "main", "loopcoder/assist").split() == ["test_util.py", "util.py"]
    assert (a / "util.py").read_text().endswith("# work in progress\n") and (a / "notes.txt").exists()
    assert "work in progress" not in git(a, "show", "loopcoder/assist:util.py")
    assert git(a, "status", "--porcelain").split() == ["M", "util.py", "??", "notes.txt"]
    patches = sorted((tmp_path / "out").glob("*/patch.diff"))
    assert len(patches) == 2 and all("+def assist" in p.read_text() for p in patches)


def test_existing_branch_is_refused_and_plain_runs_only_save_patches(three_repos, tmp_path, monkeypatch):
    (a, b), _, scripts = three_repos
    monkeypatch.setenv("LOOPCODER_CONFIG", str(tmp_path / "none.yaml"))
    from loopcoder.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["refactor", "--task", "Rename helper to assist", str(a), str(b),
                                      "--branch", "main", "--script", str(scripts), "--test-cmd", TEST_CMD,
                                      "--output", str(out)], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert [o["error"].startswith("branch main already exists") for o in json.loads((out / "refactor.json").read_text())] == [True, True]
    result = CliRunner().invoke(app, ["refactor", "--task", "Rename helper to assist", str(b), "--script",
                                      str(scripts), "--test-cmd", TEST_CMD, "--output", str(out)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads((out / "refactor.json").read_text())
    assert outcome["status"] == "submitted" and outcome["commit"] is None and Path(outcome["patch_path"]).is_file()
    assert git(b, "branch", "--list").split() == ["*", "main"]


def test_plan_errors_and_test_detection(tmp_path):
    plan = tmp_path / "plan.yaml"
    for text, message in [
        ("tasks: []\n", "non-empty `tasks` list"),
        ("tasks:\n  - task: x\n", r"tasks\[0\]: `repos` must be a non-empty list"),
        ("tasks:\n  - task: x\n    repos: [a]\n    colour: red\n", r"tasks\[0\]: unknown key\(s\) colour"),
        ("commit: maybe\ntasks:\n  - task: x\n    repos: [a]\n", "`commit` must be true or false"),
        ("tasks: [\n", "not valid YAML"),
    ]:
        plan.write_text(text)
        with pytest.raises(PlanError, match=message):
            load_plan(plan)
    plan.write_text("tasks:\n  - task: x\n    repos: [a, ../b]\n")
    (task,), commit = load_plan(plan)
    assert task.repos == [str(tmp_path / "a"), str(tmp_path / "../b")] and commit is False
    assert detect_test_command(tmp_path) is None
    (tmp_path / "go.mod").write_text("module x\n")
    assert detect_test_command(tmp_path) == "go test ./..."
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
    assert "pytest" in detect_test_command(tmp_path)


def test_refactor_output_goes_under_the_cache_and_the_table_tells_a_no_change_apart(three_repos, tmp_path,
                                                                                    monkeypatch):
    (a, b), _, scripts = three_repos
    (scripts / "svc-b.json").write_text(json.dumps([call("run_tests", command=TEST_CMD), call("submit")]))
    runs = tmp_path / "cache" / "runs"
    (tmp_path / "user.yaml").write_text(f"run:\n  output_dir: {runs}\n")
    monkeypatch.setenv("LOOPCODER_CONFIG", str(tmp_path / "user.yaml"))
    monkeypatch.chdir(tmp_path)
    from loopcoder.cli import app

    result = CliRunner().invoke(app, ["refactor", "--task", "Rename helper to assist", str(a), str(b), "--script",
                                      str(scripts), "--test-cmd", TEST_CMD], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    (report,) = runs.glob("refactor-*/refactor.json")
    assert f"results: {report}" in result.output and not (tmp_path / "runs").exists()
    assert [o["status"] for o in json.loads(report.read_text())] == ["submitted", "no_change"]
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "svc-" in line}
    assert "no_change" in rows[str(b)] and "tests: 1 passed" in rows[str(b)]
    assert "submitted" in rows[str(a)] and "tests: not run" in rows[str(a)]
