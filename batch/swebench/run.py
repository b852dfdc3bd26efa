"""Batch agent runs over SWE-bench instances, resumable after a kill.

Per instance: a working copy at base_commit (environments.py), the agent on
the SWE-bench task template, the trajectory at
DIR/trajectories/<instance_id>.traj.json, and one line appended to
DIR/preds.jsonl. A rerun skips the instances preds.jsonl already holds.

Failures: an agent run that ends on its own (submitted, a limit, format
errors, stuck) is the model's answer and gets its prediction, even an empty
patch. A run that could not happen or broke (no working copy, sandbox or
backend failure: agent status "error", or an exception) gets no prediction;
its error is appended to DIR/errors.jsonl and a rerun tries it again. So
preds.jsonl holds only real answers, and an evaluation never grades an
infrastructure failure as the model's empty patch.
"""
from __future__ import annotations

import json
import threading
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from loopcoder.agent.config import Config
from loopcoder.agent.environment import Environment
from loopcoder.agent.loop import Status
from loopcoder.agent.prompting import task_prompt
from loopcoder.agent.session import Workspace, start_agent
from loopcoder.batch.swebench.backends import BackendProvider, model_name
from loopcoder.batch.swebench.environments import EnvOptions, open_instance
from loopcoder.batch.swebench.executors import ExecutorOptions, Job, Lost, execute, where_am_i
from loopcoder.batch.swebench.instances import Instance
from loopcoder.batch.swebench.predictions import PredictionsWriter
from loopcoder.tools import default_tools


@dataclass
class RunOutcome:
    instance_id: str
    status: str  # the agent's exit status, or "error"
    patch: str = ""
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""  # host:pid that ran it
    trace: str = ""  # the traceback of an exception that ended it


def task_of(instance: Instance) -> dict:
    return {"kind": "swebench", "instance_id": instance.instance_id, "repo": instance.repo,
            "problem_statement": instance.problem_statement, "hints": instance.hints_text}


class _ErrorLog:
    def __init__(self, path: Path):
        self.path, self._lock = path, threading.Lock()

    def add(self, instance_id: str, error: str, trace: str) -> None:
        line = json.dumps({"instance_id": instance_id, "error": error, "traceback": trace[-4000:],
                           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


def run_instance(instance: Instance, provider: BackendProvider, config: Config, env_options: EnvOptions,
                 output: Path) -> RunOutcome:
    start = time.monotonic()
    trajectory = output / "trajectories" / f"{instance.instance_id}.traj.json"
    trajectory.parent.mkdir(parents=True, exist_ok=True)
    task = task_of(instance)
    backend = provider.for_task(instance.instance_id)
    try:
        with open_instance(instance, env_options) as ienv:
            tools = default_tools(config.agent.max_consecutive_timeouts)
            ws = Workspace(Environment(ienv.sandbox, tools, ienv.diff),
                           {"instance_id": instance.instance_id, "repo": instance.repo,
                            "base_commit": instance.base_commit, "where": ienv.where})
            agent = start_agent(backend, ws, config, trajectory, task)
            fields = {k: v for k, v in task.items() if k != "kind"}
            result = agent.run(task_prompt("swebench", workdir=ws.workdir, **fields))
    finally:
        backend.close()
    error = result.reason if result.status == Status.ERROR else None
    return RunOutcome(instance.instance_id, result.status, result.patch, error, time.monotonic() - start)


class InstanceRunner:
    """The worker side of a batch run: the backend provider (a model loads once) and run_instance per instance.

    Given no provider (a Ray actor), it makes its own from the config; it never raises for an instance.
    """

    def __init__(self, config: Config, env_options: EnvOptions, provider: BackendProvider | None = None):
        self.config, self.env_options = config, env_options
        self.provider = provider or BackendProvider(config)

    def __call__(self, instance: Instance, output: Path) -> RunOutcome:
        try:
            outcome = run_instance(instance, self.provider, self.config, self.env_options, output)
        except Exception as exc:  # one instance's failure is recorded, never the batch's end
            outcome = RunOutcome(instance.instance_id, "error", error=f"{type(exc).__name__}: {exc}",
                                 trace=traceback.format_exc())
        outcome.worker = where_am_i()
        return outcome


def run_batch(
    instances: list[Instance],
    provider: BackendProvider | None,
    config: Config,
    env_options: EnvOptions,
    output: Path,
    workers: int = 1,
    on_start: Callable[[int, int], None] | None = None,
    on_done: Callable[[RunOutcome], None] | None = None,
    executor: ExecutorOptions | None = None,
    on_dispatch: Callable[[Job, int, str], None] | None = None,
    on_retry: Callable[[Job, int, str], None] | None = None,
) -> list[RunOutcome]:
    """Run every instance not yet in OUTPUT/preds.jsonl; returns this run's outcomes in the instances' order.

    executor: local threads (default, `workers` of them, sharing `provider`) or Ray actors, each loading
    its own backend from `config` (then `provider` may be None). Only this process writes OUTPUT.
    on_dispatch(job, attempt, worker) and on_retry(job, attempt, why) as in executors.execute.
    """
    executor = executor or ExecutorOptions(workers=workers)
    (output / "trajectories").mkdir(parents=True, exist_ok=True)
    preds = PredictionsWriter(output / "preds.jsonl")
    errors = _ErrorLog(output / "errors.jsonl")
    done = preds.done()
    todo = [i for i in instances if i.instance_id not in done]
    if on_start:
        on_start(len(todo), len(instances) - len(todo))
    name = model_name(config)
    # local threads share the model loaded here; each Ray actor loads its own
    make_worker = partial(InstanceRunner, config, env_options, provider if executor.kind == "local" else None)
    outcomes = {}
    jobs = (Job(i.instance_id, i, output) for i in todo)
    for job, outcome in execute(jobs, make_worker, executor, on_dispatch, on_retry):
        if isinstance(outcome, Lost):
            outcome = RunOutcome(job.key, "error", error=outcome.error)
        if outcome.error is not None:
            errors.add(outcome.instance_id, outcome.error, outcome.trace)
        elif outcome.instance_id not in done:  # a job is yielded once; the guard keeps it so
            preds.append({"instance_id": outcome.instance_id, "model_name_or_path": name,
                          "model_patch": outcome.patch})
            done.add(outcome.instance_id)
        outcomes[outcome.instance_id] = outcome
        if on_done:
            on_done(outcome)
    return [outcomes[i.instance_id] for i in todo if i.instance_id in outcomes]
