"""Batch runs, evaluations and refactors on a real Ray cluster on loopback (one per module, two CPUs).

The replay and tiny-PLT backends run in Ray actors; a worker killed mid-instance, a driver killed mid-batch.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray

from loopcoder.agent.commands import configure
from loopcoder.batch.refactor import RefactorTask, run_refactors
from loopcoder.batch.swebench.environments import EnvOptions
from loopcoder.batch.swebench.eval import EvalOptions, evaluate
from loopcoder.batch.swebench.executors import JOB_PREFIX, ExecutorError, ExecutorOptions
from loopcoder.batch.swebench.instances import load_instances
from loopcoder.batch.swebench.predictions import load_predictions, read_jsonl
from loopcoder.batch.swebench.run import run_batch
from tests.batch.fabricate import shout_instance, standard_instances
from tests.batch.test_refactor import RENAME, _project
from tests.batch.test_run import _lines, _scripts, _write, kill_midway_then_rerun
from tests.conftest import git

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-CPU Ray cluster started here; its address, for drivers in other processes."""
    work = tmp_path_factory.mktemp("ray-work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOPCODER_WORKTREES", str(work))  # the workers' clones (they inherit this environment)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 << 20, log_to_driver=False,
                 logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _pid(where: str) -> int:
    return int(where.rsplit(":", 1)[1])


def test_ray_batch_writes_as_local_and_retries_errors(cluster, tmp_path, env_cache):
    records = standard_instances(tmp_path / "cache")
    instances = load_instances(_write(tmp_path / "instances.jsonl", records))
    ids = [i.instance_id for i in instances]
    scripts = _scripts(tmp_path / "scripts", ids[:2])  # the third has no script yet: its run fails
    config = configure(None, [f"run.output_dir={tmp_path / 'runs'}"], backend="replay", script=str(scripts))
    env = EnvOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "work", env_cache=env_cache)
    out, ray2 = tmp_path / "out", ExecutorOptions("ray", workers=2)

    outcomes = run_batch(instances, None, config, env, out, executor=ray2)
    assert [o.instance_id for o in outcomes] == ids
    assert all(o.worker and _pid(o.worker) != os.getpid() for o in outcomes)  # each ran in an actor
    assert sorted(r["instance_id"] for r in read_jsonl(out / "preds.jsonl")) == sorted(ids[:2])
    (error,) = read_jsonl(out / "errors.jsonl")
    assert error["instance_id"] == ids[2] and "no replay script" in error["error"] and error["traceback"]
    for iid in ids[:2]:  # written here, from what the worker sent back
        assert json.loads((out / "trajectories" / f"{iid}.traj.json").read_text())["task"]["instance_id"] == iid

    _scripts(scripts, ids[2:])  # fixed: a rerun does only the failed instance
    again = run_batch(instances, None, config, env, out, executor=ray2)
    assert [o.instance_id for o in again] == [ids[2]] and again[0].status == "submitted"
    preds = load_predictions(out / "preds.jsonl", instances)
    assert sorted(preds) == sorted(ids) and {p["model_name_or_path"] for p in preds.values()} == {"replay-scripts"}

    options = EvalOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "work", env_cache=env_cache)
    ray3 = ExecutorOptions("ray", workers=3)  # one more than the two CPUs hold: the batch goes on with two
    summary, evaluated, _ = evaluate(instances, preds, options, tmp_path / "eval", "e2e", executor=ray3)
    assert summary["resolved_ids"] == sorted(ids)
    for o in evaluated:
        assert Path(o.log_dir) == tmp_path / "eval" / "e2e" / "replay-scripts" / o.instance_id
        assert json.loads((Path(o.log_dir) / "report.json").read_text())[o.instance_id]["resolved"]


@pytest.mark.timeout(240)
def test_worker_killed_mid_instance_is_retried_elsewhere_once(cluster, tmp_path, env_cache):
    cache = tmp_path / "cache"
    records = standard_instances(cache) + [shout_instance(cache, "acme/word4", 4)]
    instances = load_instances(_write(tmp_path / "instances.jsonl", records))
    ids = [i.instance_id for i in instances]
    scripts = _scripts(tmp_path / "scripts", ids, pause=2.0)
    config = configure(None, [], backend="replay", script=str(scripts))
    env = EnvOptions(repo_cache=cache, work_root=tmp_path / "work", env_cache=env_cache)
    victim, killed, retries = ids[1], [], []

    def kill_when_busy(pid: int) -> None:
        """SIGKILL the worker once it runs something for its instance (a clone or a sandbox command)."""
        proc, deadline = psutil.Process(pid), time.monotonic() + 60
        while not proc.children(recursive=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.kill()
        killed.append(pid)

    def on_dispatch(job, attempt, where):
        if job.key == victim and attempt == 1:
            threading.Thread(target=kill_when_busy, args=(_pid(where),), daemon=True).start()

    out = tmp_path / "out"
    outcomes = run_batch(instances, None, config, env, out, executor=ExecutorOptions("ray", workers=2),
                         on_dispatch=on_dispatch, on_retry=lambda job, attempt, why: retries.append((job.key, attempt, why)))
    assert len(killed) == 1 and [r[:2] for r in retries] == [(victim, 2)] and "died" in retries[0][2]
    by_id = {o.instance_id: o for o in outcomes}
    assert by_id[victim].status == "submitted" and _pid(by_id[victim].worker) != killed[0]
    lines = [json.loads(line)["instance_id"] for line in _lines(out / "preds.jsonl")]
    assert sorted(lines) == sorted(ids)  # every instance, none twice
    assert not (out / "errors.jsonl").exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"{JOB_PREFIX}*.pid{killed[0]}"))  # its scratch dir, reaped


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_ray_driver_resumes_without_losing_or_repeating(cluster, tmp_path, env_cache):
    cache = tmp_path / "cache"
    records = standard_instances(cache) + [shout_instance(cache, "acme/word4", 4)]
    instances_file = _write(tmp_path / "instances.jsonl", records)
    ids = [r["instance_id"] for r in records]
    scripts = _scripts(tmp_path / "scripts", ids, pause=1.0)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "loopcoder.cli", "swebench", "run", "--instances", str(instances_file), "--workers", "2",
            "--repo-cache", str(cache), "--script", str(scripts), "--output", str(out), "--env-cache", str(env_cache),
            "--executor", "ray", "--ray-address", cluster]
    env = {**os.environ, "LOOPCODER_CONFIG": str(tmp_path / "none.yaml")}

    kill_midway_then_rerun(argv, env, out, ids, wait=150)  # the actors go with the driver; the rerun resumes


def test_tiny_plt_model_loads_once_per_ray_worker(cluster, tmp_path, env_cache):
    from loopcoder.model.presets import init_random_checkpoint
    from nano.tiny_tokenizer import save_test_tokenizer

    init_random_checkpoint(tmp_path / "ckpt", "tiny", seed=0, tokenizer=save_test_tokenizer(tmp_path / "tok"))
    instances = load_instances(_write(tmp_path / "instances.jsonl", standard_instances(tmp_path / "cache")))[:2]
    config = configure(None, ["backend.device=cpu", "sampling.max_new_tokens=16", "sampling.temperature=1.0",
                              "sampling.seed=0"], backend="plt", model=str(tmp_path / "ckpt"), max_steps=3)
    env = EnvOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "w", env_cache=env_cache)
    outcomes = run_batch(instances, None, config, env, tmp_path / "out", executor=ExecutorOptions("ray", workers=1))
    # one actor, one model: both instances ran in the same worker process, which loaded it when it started
    assert len({o.worker for o in outcomes}) == 1 and _pid(outcomes[0].worker) != os.getpid()
    assert all(o.error is None and o.status in ("format_error", "step_limit", "stuck") for o in outcomes), outcomes
    preds = read_jsonl(tmp_path / "out" / "preds.jsonl")
    assert sorted(r["instance_id"] for r in preds) == sorted(i.instance_id for i in instances)
    assert {r["model_name_or_path"] for r in preds} == {str(tmp_path / "ckpt")}


def test_refactor_on_ray_commits_and_lands_results_here(cluster, tmp_path):
    repos = [_project(tmp_path, "svc-a"), _project(tmp_path, "svc-b")]
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    for repo in repos:
        (scripts / f"{repo.name}.json").write_text(json.dumps(RENAME))
    config = configure(None, [], backend="replay", script=str(scripts))
    task = RefactorTask("Rename helper to assist", [str(r) for r in repos], branch="loopcoder/assist")
    outcomes = run_refactors([task], None, config, tmp_path / "out", True, executor=ExecutorOptions("ray", workers=2))
    assert [Path(o.repo).name for o in outcomes] == ["svc-a", "svc-b"]
    for n, (o, repo) in enumerate(zip(outcomes, repos), 1):
        assert o.status == "submitted" and o.branch == "loopcoder/assist", o
        assert "assist" in git(repo, "show", "loopcoder/assist:util.py")
        assert Path(o.patch_path) == tmp_path / "out" / f"1-{n}-{repo.name}" / "patch.diff"
        assert "+def assist" in Path(o.patch_path).read_text()
        assert (tmp_path / "out" / f"1-{n}-{repo.name}" / "trajectory.json").is_file()


def test_executor_ray_without_ray_says_how_to_install(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from loopcoder.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` raises ImportError
    result = CliRunner().invoke(app, ["swebench", "run", "--instances", "x.jsonl", "--output", str(tmp_path / "out"),
                                      "--executor", "ray"], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "pip install 'loopcoder[ray]'" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_workers_that_cannot_start_stop_the_batch_with_the_reason(cluster, tmp_path):
    instances = load_instances(_write(tmp_path / "instances.jsonl", standard_instances(tmp_path / "cache")))
    env = EnvOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "work")
    replay = configure(None, [], backend="replay", script=str(tmp_path / "scripts"))
    with pytest.raises(ExecutorError, match=r"has 0 GPUs in all.*lower --gpus-per-worker"):  # never placeable
        run_batch(instances, None, replay, env, tmp_path / "a", executor=ExecutorOptions("ray", gpus_per_worker=1))
    missing = configure(None, ["backend.device=cpu"], backend="plt", model=str(tmp_path / "no-such-checkpoint"))
    with pytest.raises(ExecutorError, match=r"Ray worker on .* could not start: .*no-such-checkpoint"):
        run_batch(instances, None, missing, env, tmp_path / "b", executor=ExecutorOptions("ray"))
    assert not (tmp_path / "b" / "preds.jsonl").read_text() and not (tmp_path / "b" / "errors.jsonl").exists()
