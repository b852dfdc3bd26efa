"""Evaluate predictions the way the official harness does, without needing its images.

Per instance: a working copy at base_commit (environments.py), the model
patch applied (git apply, then --3way, then patch --fuzz), the files test_patch
touches put back to base_commit (so a patch that edits them gains nothing, and
is flagged), test_patch applied, the tests run, the log parsed and graded.
Outputs mirror logs/run_evaluation of the harness:

    OUTPUT/RUN_ID/MODEL/INSTANCE_ID/report.json      official per-instance report
    OUTPUT/RUN_ID/MODEL/INSTANCE_ID/test_output.txt  the log, with the harness's markers
    OUTPUT/RUN_ID/MODEL/INSTANCE_ID/patch.diff       the patch as evaluated
    OUTPUT/RUN_ID/MODEL/INSTANCE_ID/eval.json        our extras (apply method, flags, statuses, error)
    OUTPUT/MODEL.RUN_ID.json                         official run summary

Deviations from the harness, on purpose: a patch that does not apply gets a
report.json with patch_successfully_applied false (the harness writes none
and counts an error); predictions for instances outside the selection are
not counted as submitted.
"""
from __future__ import annotations

import json
import shlex
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from agent.swebench.environments import EnvOptions, InstanceEnv, open_instance
from agent.swebench.grading import instance_report, run_summary
from agent.swebench.instances import Instance
from agent.swebench.log_parsers import get_parser
from agent.swebench.specs import looks_like_test, patch_files, test_command
from workspace.patching import apply_patch

# The harness's log markers, so its own parser reads our logs.
APPLY_PATCH_FAIL = ">>>>> Patch Apply Failed"
APPLY_PATCH_PASS = ">>>>> Applied Patch"
TESTS_TIMEOUT = ">>>>> Tests Timed Out"
START_TEST_OUTPUT = ">>>>> Start Test Output"
END_TEST_OUTPUT = ">>>>> End Test Output"


class EvalError(Exception):
    """The evaluation itself failed (not the patch): the instance counts as an error."""


@dataclass
class EvalOptions(EnvOptions):
    test_cmd: str | None = None  # replaces the per-repo test command
    timeout: float = 1800.0  # seconds for the test run


@dataclass
class Outcome:
    instance_id: str
    status: str  # resolved | unresolved | not_applied | empty_patch | error
    model_name_or_path: str = ""
    apply_method: str | None = None
    test_files_touched: list[str] = field(default_factory=list)  # test files/config the patch edits (flagged)
    statuses: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    log_dir: str = ""
    report: dict | None = None  # report.json's content; None when not evaluated or the evaluation failed

    def extras(self) -> dict:
        """eval.json: everything but the report, which has its own file."""
        return {k: v for k, v in asdict(self).items() if k != "report"}


def model_dirname(model: str) -> str:
    return model.replace("/", "__")


def _reset_test_files(env: InstanceEnv, instance: Instance, files: list[str], timeout: float) -> None:
    """Files test_patch touches back to base_commit: existing ones checked out, new ones removed."""
    commit = shlex.quote(instance.base_commit)
    script = "".join(
        f"if git cat-file -e {commit}:{shlex.quote(f)} 2>/dev/null; then git checkout -q {commit} -- {shlex.quote(f)};"
        f" else rm -f -- {shlex.quote(f)}; fi && "
        for f in files
    ) + "true"
    result = env.sandbox.run(script, timeout=timeout)
    if result.exit_code != 0:
        raise EvalError(f"could not reset the test files to base_commit: {result.output.strip()[-2000:]}")


def _grade(env: InstanceEnv, instance: Instance, prediction: dict, options: EvalOptions, log: list[str]) -> Outcome:
    patch = prediction["model_patch"]
    outcome = Outcome(instance.instance_id, "unresolved", prediction["model_name_or_path"])
    test_files = patch_files(instance.test_patch)
    outcome.test_files_touched = sorted(f for f in patch_files(patch) if f in test_files or looks_like_test(f))
    applied = apply_patch(env.sandbox, patch)
    log.extend(applied.log)
    if not applied.applied:
        log.append(APPLY_PATCH_FAIL)
        outcome.status = "not_applied"
        return outcome
    outcome.apply_method = applied.method
    log.append(f"{APPLY_PATCH_PASS} ({applied.method})")
    if outcome.test_files_touched:
        log.append(f"the patch edits test files or test configuration: {', '.join(outcome.test_files_touched)}; "
                   f"those test_patch touches are reset to base_commit before testing")
    _reset_test_files(env, instance, test_files, 300)
    if instance.test_patch.strip():
        test_applied = apply_patch(env.sandbox, instance.test_patch)
        if not test_applied.applied:
            raise EvalError("test_patch does not apply on base_commit plus the patch:\n" + "\n".join(test_applied.log))
    command = test_command(instance, options.test_cmd)
    log.append(f"+ {command}")
    result = env.sandbox.run(command, timeout=options.timeout)
    log.extend([START_TEST_OUTPUT, result.output.rstrip("\n"), END_TEST_OUTPUT])
    if result.timed_out:
        log.append(TESTS_TIMEOUT)
        raise EvalError(f"the tests timed out after {options.timeout:.0f}s")
    log.append(f">>>>> Test Exit Code {result.exit_code}")
    outcome.statuses = get_parser(instance.repo)(result.output)
    return outcome


def evaluate_instance(instance: Instance, prediction: dict, options: EvalOptions, log_dir: Path) -> Outcome:
    """Grade one non-empty prediction and write its files under log_dir; never raises."""
    start = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / "report.json").unlink(missing_ok=True)  # from an earlier evaluation under the same run id
    patch = prediction["model_patch"]
    (log_dir / "patch.diff").write_text(patch, encoding="utf-8")
    log: list[str] = []
    try:
        with open_instance(instance, options) as env:
            log.append(f"evaluating {instance.instance_id} in {env.where}")
            outcome = _grade(env, instance, prediction, options, log)
        report = instance_report(instance.instance_id, patch, outcome.status != "not_applied", outcome.statuses,
                                 instance.FAIL_TO_PASS, instance.PASS_TO_PASS)
        if report[instance.instance_id]["resolved"]:
            outcome.status = "resolved"
        outcome.report = report
    except Exception as exc:  # any failure of the machinery is this instance's error, never the batch's
        outcome = Outcome(instance.instance_id, "error", prediction["model_name_or_path"],
                          error=f"{type(exc).__name__}: {exc}")
        log.append(traceback.format_exc())
    outcome.seconds = round(time.monotonic() - start, 3)
    outcome.log_dir = str(log_dir)
    (log_dir / "test_output.txt").write_text("\n".join(log) + "\n", encoding="utf-8")
    if outcome.report is not None:
        (log_dir / "report.json").write_text(json.dumps(outcome.report, indent=4), encoding="utf-8")
    (log_dir / "eval.json").write_text(json.dumps(outcome.extras(), indent=2), encoding="utf-8")
    return outcome


def evaluate(
    instances: list[Instance],
    predictions: dict[str, dict],
    options: EvalOptions,
    output: Path,
    run_id: str,
    workers: int = 1,
    on_done: Callable[[Outcome], None] | None = None,
) -> tuple[dict, list[Outcome], Path]:
    """Evaluate every selected instance that has a prediction; returns (summary, outcomes, summary path)."""
    todo, outcomes = [], []
    for inst in instances:
        pred = predictions.get(inst.instance_id)
        if pred is None:
            continue
        if not pred["model_patch"]:  # the harness does not run empty patches either
            outcome = Outcome(inst.instance_id, "empty_patch", pred["model_name_or_path"])
            outcomes.append(outcome)
            if on_done:
                on_done(outcome)
        else:
            todo.append((inst, pred))

    def one(item: tuple[Instance, dict]) -> Outcome:
        inst, pred = item
        log_dir = output / run_id / model_dirname(pred["model_name_or_path"]) / inst.instance_id
        outcome = evaluate_instance(inst, pred, options, log_dir)
        if on_done:
            on_done(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes.extend(pool.map(one, todo))
    reports = {o.instance_id: o.report for o in outcomes if o.status != "empty_patch"}
    ids = [i.instance_id for i in instances]
    summary = run_summary(ids, predictions, reports)
    models = sorted({p["model_name_or_path"] for p in predictions.values() if p["instance_id"] in set(ids)})
    summary_path = output / f"{model_dirname(models[0] if len(models) == 1 else 'mixed')}.{run_id}.json"
    output.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(summary, indent=4), encoding="utf-8")
    order = {iid: n for n, iid in enumerate(ids)}
    return summary, sorted(outcomes, key=lambda o: order[o.instance_id]), summary_path
