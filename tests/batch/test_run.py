"""Batch runs with the replay backend: predictions, trajectories, errors, and resuming after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopcoder.agent.commands import configure
from loopcoder.batch.swebench.backends import BackendProvider
from loopcoder.batch.swebench.environments import EnvOptions
from loopcoder.batch.swebench.eval import EvalOptions, evaluate
from loopcoder.batch.swebench.instances import load_instances
from loopcoder.batch.swebench.predictions import load_predictions, read_jsonl
from loopcoder.batch.swebench.run import run_batch
from tests.batch.fabricate import fix_script, shout_instance, standard_instances

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _scripts(directory: Path, ids: list[str], pause: float = 0.0) -> Path:
    directory.mkdir(exist_ok=True)
    for iid in ids:
        (directory / f"{iid}.json").write_text(json.dumps(fix_script(iid, pause)))
    return directory


def test_batch_run_predicts_records_errors_and_retries_them(tmp_path, env_cache):
    records = standard_instances(tmp_path / "cache")
    instances = load_instances(_write(tmp_path / "instances.jsonl", records))
    ids = [i.instance_id for i in instances]
    scripts = _scripts(tmp_path / "scripts", ids[:2])  # the third has no script yet: its run fails
    config = configure(None, [f"run.output_dir={tmp_path / 'runs'}"], backend="replay", script=str(scripts))
    provider = BackendProvider(config)
    env = EnvOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "work", env_cache=env_cache)
    out = tmp_path / "out"

    outcomes = run_batch(instances, provider, config, env, out, workers=2)
    assert sorted(o.instance_id for o in outcomes) == sorted(ids)
    assert sorted(r["instance_id"] for r in read_jsonl(out / "preds.jsonl")) == sorted(ids[:2])
    (error,) = read_jsonl(out / "errors.jsonl")
    assert error["instance_id"] == ids[2] and "no replay script" in error["error"]
    for iid in ids[:2]:
        traj = json.loads((out / "trajectories" / f"{iid}.traj.json").read_text())
        assert traj["task"]["instance_id"] == iid

    _scripts(scripts, ids[2:])  # fixed: a rerun does only the failed instance
    again = run_batch(instances, provider, config, env, out, workers=2)
    assert [o.instance_id for o in again] == [ids[2]] and again[0].status == "submitted"
    preds = load_predictions(out / "preds.jsonl", instances)
    assert sorted(preds) == sorted(ids) and all(p["model_name_or_path"] == "replay-scripts" for p in preds.values())

    summary, _, _ = evaluate(instances, preds, EvalOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "work",
                                                           env_cache=env_cache), tmp_path / "eval", "e2e", workers=2)
    assert summary["resolved_ids"] == sorted(ids)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def kill_midway_then_rerun(argv: list[str], env: dict, out: Path, ids: list[str], wait: float = 120) -> None:
    """SIGKILL the batch command once it has a prediction, tear a line, rerun it: nothing lost, nothing twice."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + wait
    while not _lines(out / "preds.jsonl") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [json.loads(line)["instance_id"] for line in _lines(out / "preds.jsonl")]
    assert 1 <= len(before) < len(ids), proc.stderr.read().decode()[-2000:]
    stamps = {iid: (out / "trajectories" / f"{iid}.traj.json").stat().st_mtime_ns for iid in before}
    with open(out / "preds.jsonl", "a") as f:  # as if the kill had torn a write in half
        f.write('{"instance_id": "' + next(i for i in ids if i not in before) + '", "model_pa')

    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = [json.loads(line)["instance_id"] for line in _lines(out / "preds.jsonl")]
    assert sorted(after) == sorted(ids) and after[: len(before)] == before  # nothing lost, nothing twice
    assert f"submitted {len(ids) - len(before)}" in done.stdout  # the summary in the outcome words of `run`
    assert all((out / "trajectories" / f"{iid}.traj.json").stat().st_mtime_ns == stamps[iid] for iid in before)


@pytest.mark.timeout(240)
def test_killed_batch_resumes_without_losing_or_repeating(tmp_path, env_cache):
    cache = tmp_path / "cache"
    records = standard_instances(cache) + [shout_instance(cache, f"acme/word{n}", n) for n in range(4, 7)]
    instances_file = _write(tmp_path / "instances.jsonl", records)
    ids = [r["instance_id"] for r in records]
    scripts = _scripts(tmp_path / "scripts", ids, pause=1.0)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "loopcoder.cli", "swebench", "run", "--instances", str(instances_file), "--workers", "2",
            "--repo-cache", str(cache), "--script", str(scripts), "--output", str(out), "--env-cache", str(env_cache)]
    env = {**os.environ, "LOOPCODER_WORKTREES": str(tmp_path / "work"), "LOOPCODER_CONFIG": str(tmp_path / "none.yaml")}

    kill_midway_then_rerun(argv, env, out, ids)
    assert all(p["model_patch"].startswith("diff --git") for p in read_jsonl(out / "preds.jsonl"))


@pytest.fixture
def one_torch_thread():
    """A tiny model runs faster on one thread than on several competing ones."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.timeout(600)  # may build the default environment first
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_batch_leaves_no_clones_or_sandbox_dirs(tmp_path, env_cache, signum):
    cache = tmp_path / "cache"
    records = standard_instances(cache)
    instances_file = _write(tmp_path / "instances.jsonl", records)
    scripts = _scripts(tmp_path / "scripts", [r["instance_id"] for r in records], pause=120.0)
    (tmp_path / "tmp").mkdir()
    argv = [sys.executable, "-m", "loopcoder.cli", "swebench", "run", "--instances", str(instances_file), "--workers", "2",
            "--repo-cache", str(cache), "--script", str(scripts), "--output", str(tmp_path / "out"),
            "--env-cache", str(env_cache)]
    env = {**os.environ, "LOOPCODER_WORKTREES": str(tmp_path / "work"), "LOOPCODER_CONFIG": str(tmp_path / "none.yaml"),
           "TMPDIR": str(tmp_path / "tmp")}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180  # until the workers have clones and sandboxes
    while proc.poll() is None and time.monotonic() < deadline and (
            not any((tmp_path / "work").glob("*")) or not any((tmp_path / "tmp").glob("loopcoder-sandbox-*"))):
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    time.sleep(1)  # the second worker's too, mostly
    proc.send_signal(signum)
    code = proc.wait(timeout=120)
    assert code == 128 + signum, proc.stderr.read().decode()[-3000:]
    assert list((tmp_path / "work").iterdir()) == [] and list((tmp_path / "tmp").glob("loopcoder-sandbox-*")) == []


def test_one_in_process_model_serves_every_worker(tmp_path, one_torch_thread, env_cache):
    from loopcoder.model.presets import init_random_checkpoint
    from nano.tiny_tokenizer import save_test_tokenizer

    init_random_checkpoint(tmp_path / "ckpt", "tiny", seed=0, tokenizer=save_test_tokenizer(tmp_path / "tok"))
    instances = load_instances(_write(tmp_path / "instances.jsonl", standard_instances(tmp_path / "cache")))[:2]
    config = configure(None, ["backend.device=cpu", "sampling.max_new_tokens=16", "sampling.temperature=1.0",
                              "sampling.seed=0"], backend="plt", model=str(tmp_path / "ckpt"), max_steps=3)
    provider = BackendProvider(config)
    views = [provider.for_task(i.instance_id) for i in instances[:2]]
    assert views[0]._backend.model is views[1]._backend.model is provider._shared.model  # loaded once
    assert views[0]._backend.session is not views[1]._backend.session  # each task keeps its own cache
    env = EnvOptions(repo_cache=tmp_path / "cache", work_root=tmp_path / "w", env_cache=env_cache)
    outcomes = run_batch(instances, provider, config, env,
                         tmp_path / "out", workers=2)
    provider.close()
    # random weights never call a tool properly: every run ends on a limit, with its (empty) prediction
    assert all(o.error is None and o.status in ("format_error", "step_limit", "stuck") for o in outcomes), outcomes
    assert sorted(r["instance_id"] for r in read_jsonl(tmp_path / "out" / "preds.jsonl")) == sorted(
        i.instance_id for i in instances)
