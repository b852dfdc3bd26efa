"""Held-out evaluation of a model on generated tasks, end to end through the real agent.

Each task's repo is committed to a fresh git repository and handed to
`run_task` exactly as `loopcoder run` would; the run's patch is then applied
to a fresh copy of the base files and judged by the task's checker.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from loopcoder.agent.config import Config, load_config
from nano.record import check_patch, make_repo, test_environment
from nano.tasks import Task
from loopcoder.agent.session import run_task

# Gold plans take 4-5 turns of well under 300 tokens; these limits only cut failures short.
EVAL_SETTINGS = ("agent.max_steps=12", "sampling.max_new_tokens=512", "sampling.temperature=0")


@dataclass
class Outcome:
    task_id: str
    kind: str
    solved: bool
    status: str
    steps: int
    prefilled_tokens: int  # prompt tokens the model actually ran (the rest came from its kept cache)
    generated_tokens: int
    malformed_calls: int  # calls the parser refused, to unknown tools, or with arguments off their tool's schema
    seconds: float
    detail: str  # the checker's last lines when unsolved


def eval_config(model: str | Path, extra: tuple[str, ...] = ()) -> Config:
    return load_config(user_file=False, overrides=(f"backend.model={model}", "backend.name=plt", "backend.device=cpu",
                                                   *EVAL_SETTINGS, *extra))


def evaluate(backend, task: Task, config: Config, trajectory_dir: Path | None = None, judge=check_patch) -> Outcome:
    """Run the agent with `backend` on `task` and check its patch with `judge(task, patch, scratch)`
    (the generator's checker; the hand-written set brings its own)."""
    test_environment()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nano-eval-") as tmp:
        tmp = Path(tmp)
        repo = make_repo(task.files, tmp / task.facts["package"])
        trajectory = (trajectory_dir or tmp) / f"{task.id}.json"
        result = run_task(backend, repo, config, {"kind": "interactive", "text": task.text}, trajectory)
        verdict = judge(task, result.patch, tmp / "verify")
        record = json.loads(trajectory.read_text())
    totals = record["totals"]
    solved = result.status == "submitted" and verdict.ok
    return Outcome(task.id, task.kind, solved, result.status, result.steps, totals["prefilled_tokens"],
                   totals["completion_tokens"], malformed_calls(record), round(time.perf_counter() - started, 2),
                   "" if solved else (result.reason + "\n" + verdict.output[-600:]).strip())


def malformed_calls(trajectory: dict) -> int:
    """Calls in a trajectory that could not run as written: unparseable, naming no tool, or with
    arguments that do not validate against the tool's JSON schema."""
    from jsonschema import Draft202012Validator

    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in trajectory["tools"]}
    bad = 0
    for step in trajectory["steps"]:
        bad += len(step["parse_errors"])
        for call in step["calls"]:
            schema = schemas.get(call["name"])
            bad += schema is None or not Draft202012Validator(schema).is_valid(call["arguments"])
    return bad


def summarize(outcomes: list[Outcome]) -> dict:
    def rate(items: list[Outcome]) -> float:
        return round(sum(o.solved for o in items) / max(1, len(items)), 3)

    n = max(1, len(outcomes))
    kinds = sorted({o.kind for o in outcomes})
    return {
        "tasks": len(outcomes),
        "solved": sum(o.solved for o in outcomes),
        "solve_rate": rate(outcomes),
        "by_kind": {k: rate([o for o in outcomes if o.kind == k]) for k in kinds},
        "mean_steps": round(sum(o.steps for o in outcomes) / n, 2),
        "mean_generated_tokens": round(sum(o.generated_tokens for o in outcomes) / n, 1),
        "mean_prefilled_tokens": round(sum(o.prefilled_tokens for o in outcomes) / n, 1),
        "mean_seconds": round(sum(o.seconds for o in outcomes) / n, 2),
        "malformed_calls": sum(o.malformed_calls for o in outcomes),
        "outcomes": [asdict(o) for o in outcomes],
    }
