"""Instances in their own environments, built from specs: a src/ layout library with a registry dependency.

The host has a same-named package with the fix on PYTHONPATH: if grading
imported it, the no-op patch would "resolve". Built environments are cached
for the session (env_cache), so each spec is built once.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from loopcoder.batch.swebench.envbuild import EnvBuildError
from loopcoder.batch.swebench.environments import EnvOptions, build_environment, open_instance
from loopcoder.batch.swebench.eval import EvalOptions, evaluate
from loopcoder.batch.swebench.instances import parse_instance
from loopcoder.batch.swebench.specs import load_specs
from tests.batch.fabricate import NOOP, SHADOW, SRCLIB_SPEC, srclib_instance, unique_owner

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def srclib(tmp_path_factory):
    root = tmp_path_factory.mktemp("srclib")
    instance = parse_instance(srclib_instance(root / "cache", owner=unique_owner()), "srclib")  # its own image tag
    (root / "specs.yaml").write_text(yaml.safe_dump({instance.repo: SRCLIB_SPEC}))
    return root, instance


@pytest.fixture
def shadowed(monkeypatch):
    """A user site and PYTHONPATH holding the shadow package, outside /tmp so a sandbox could see it."""
    base = Path(tempfile.mkdtemp(prefix="loopcoder-shadow-", dir="/var/tmp"))
    site = base / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name, text in SHADOW.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.setenv("PYTHONUSERBASE", str(base))
    yield
    shutil.rmtree(base)


def _evaluate(root: Path, instance, patch: str, model: str, options: EvalOptions, out: Path):
    preds = {instance.instance_id: {"instance_id": instance.instance_id, "model_name_or_path": model,
                                    "model_patch": patch}}
    summary, (outcome,), _ = evaluate([instance], preds, options, out, "env")
    return summary, outcome, (Path(outcome.log_dir) / "test_output.txt").read_text()


def _check_gold_and_noop(root: Path, instance, options: EvalOptions, out: Path) -> None:
    _, gold, log = _evaluate(root, instance, instance.patch, "gold", options, out)
    assert gold.status == "resolved", (gold.error, log[-3000:])
    assert "SHADOW" not in log
    command = next(line for line in log.splitlines() if line.startswith("+ "))
    assert "tests/test_core.py" in command and "test_legacy" not in command  # deleted by test_patch: not passed
    assert gold.statuses == {"tests/test_core.py::test_six": "PASSED", "tests/test_core.py::test_double": "PASSED"}
    _, noop, log = _evaluate(root, instance, NOOP, "noop", options, out)
    assert noop.status == "unresolved", (noop.error, log[-3000:])
    assert "SHADOW" not in log
    report = noop.report[instance.instance_id]
    assert report["patch_successfully_applied"] and report["tests_status"]["FAIL_TO_PASS"]["failure"] == [
        "tests/test_core.py::test_double"]


@pytest.mark.timeout(900)  # builds environments from the registry
def test_local_env_gold_resolves_noop_does_not_shadow_never_seen(srclib, shadowed, env_cache, tmp_path):
    root, instance = srclib
    options = EvalOptions(repo_cache=root / "cache", work_root=tmp_path / "work", env_cache=env_cache,
                          specs=load_specs(root / "specs.yaml"), timeout=120)
    _check_gold_and_noop(root, instance, options, tmp_path / "out")
    # the agent's side: the same environment, the repository's package from the working copy
    with open_instance(instance, options) as env:
        probe = env.sandbox.run("python -c 'import acmelib, six, sys; print(acmelib.__file__); print(sys.flags.no_user_site)'"
                                " && command -v pytest && echo PYTHONPATH=$PYTHONPATH")
        assert probe.exit_code == 0, probe.output
        file, no_user_site, pytest_path, pythonpath = probe.output.split()
        assert file == "/testbed/src/acmelib/__init__.py" and no_user_site == "1"  # where the official images have it
        assert env.sandbox.workdir == "/testbed" and env.sandbox.root.startswith(str(tmp_path / "work"))
        assert pytest_path.startswith(str(env_cache)) and pythonpath == "PYTHONPATH="
        assert env.diff() == ""  # what the offline install built is no part of a patch
    assert not any((tmp_path / "work").iterdir())


@pytest.mark.timeout(900)  # builds environments from the registry
def test_env_build_command_reports_each_environment(srclib, env_cache, tmp_path):
    root, instance = srclib
    instances = tmp_path / "instances.jsonl"
    instances.write_text(json.dumps(instance.to_dict()) + "\n")
    base = [sys.executable, "-m", "loopcoder.cli", "swebench", "env", "build", "-i", str(instances), "--repo-cache",
            str(root / "cache"), "--env-cache", str(env_cache), "--workers", "2"]
    env = {**os.environ, "COLUMNS": "250"}
    ok = subprocess.run([*base, "--specs", str(root / "specs.yaml")], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600)
    assert ok.returncode == 0 and "1/1 environments ready" in ok.stdout, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"{instance.repo}:\n  '1.0':\n    pip_pakages: [six]\n")
    wrong = subprocess.run([*base, "--specs", str(bad)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "unknown key(s) pip_pakages" in wrong.stderr and "Traceback" not in wrong.stderr


@pytest.mark.timeout(900)  # builds environments from the registry
def test_broken_environments_are_errors_with_a_reason(srclib, env_cache, tmp_path):
    root, instance = srclib
    # no `six`: collecting tests/test_core.py fails for every patch, the gold one included
    no_six = tmp_path / "no-six.json"
    no_six.write_text(json.dumps({instance.instance_id: {"pip_packages": ["pytest"],
                                                         "install": "python -m pip install -e ."}}))
    options = EvalOptions(repo_cache=root / "cache", work_root=tmp_path / "work", env_cache=env_cache,
                          specs=load_specs(no_six), timeout=120)
    summary, noop, log = _evaluate(root, instance, NOOP, "noop", options, tmp_path / "out")
    assert noop.status == "error", noop.error
    assert "cannot run the tests (no_tests_collected, ModuleNotFoundError: No module named 'six')" in noop.error
    assert (Path(noop.log_dir) / "control_output.txt").is_file() and noop.report is None
    assert summary["error_ids"] == [instance.instance_id] and summary["unresolved_ids"] == []
    assert summary["ambiguous_failure_ids"] == [instance.instance_id]
    assert summary["failure_reasons"] == {instance.instance_id: "missing_module"}
    # a build that fails is an error naming its log, never "unresolved"
    failing = tmp_path / "failing.yaml"
    failing.write_text(yaml.safe_dump({instance.repo: {"1.0": {"pre_install": ["echo no compiler here; exit 3"]}}}))
    env_options = EnvOptions(repo_cache=root / "cache", work_root=tmp_path / "work", env_cache=tmp_path / "envs",
                             specs=load_specs(failing))
    with pytest.raises(EnvBuildError, match=r"failed at pre_install \(exit 3\); full log: .*\.log\n(.|\n)*no compiler here"):
        build_environment(instance, env_options)
    assert [p.suffix for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == [".log"]


@pytest.mark.timeout(900)  # builds environments from the registry
@pytest.mark.docker
def test_docker_env_gold_resolves_noop_does_not(srclib, shadowed, base_image, docker_client, env_cache, tmp_path):
    from loopcoder.batch.swebench.envbuild import image_tag

    root, instance = srclib
    options = EvalOptions(sandbox="docker", repo_cache=root / "cache", work_root=tmp_path / "work",
                          env_cache=env_cache, specs=load_specs(root / "specs.yaml"), timeout=120)
    tag = build_environment(instance, options)
    try:
        assert tag == image_tag(instance, options.specs.for_instance(instance))
        labels = docker_client.images.get(tag).labels
        assert labels["loopcoder.swebench.base_commit"] == instance.base_commit
        assert json.loads(labels["loopcoder.swebench.spec"])["pip_packages"] == ["pytest", "six"]
        _check_gold_and_noop(root, instance, options, tmp_path / "out")
    finally:
        docker_client.images.remove(tag, force=True)
