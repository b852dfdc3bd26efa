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
not counted as submitted; files test_patch deletes are not passed to the
test command. A broken environment is an error, never "unresolved": when a
run shows no results, a collection error or a missing module, the gold
patch is run the same way (output in control_output.txt), and if it fails
alike the instance is an error with the reason.
"""
from __future__ import annotations

import json
import re
import shlex
import time
import traceback
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from loopcoder.batch.swebench.environments import EnvOptions, InstanceEnv, open_instance
from loopcoder.batch.swebench.executors import ExecutorOptions, Job, Lost, execute
from loopcoder.batch.swebench.grading import (APPLY_PATCH_FAIL, APPLY_PATCH_PASS, END_TEST_OUTPUT, START_TEST_OUTPUT,
                                    TEST_EXIT_CODE, TESTS_TIMEOUT, classify_text, instance_report, logs_eval,
                                    merge_summaries, run_summary)
from loopcoder.batch.swebench.instances import Instance
from loopcoder.batch.swebench.log_parsers import get_parser
from loopcoder.batch.swebench.specs import test_command, test_directives
from loopcoder.workspace.patching import looks_like_test, patch_files
from loopcoder.workspace.patching import apply_patch

# pytest's words for tests that never ran: with a missing module these point at the environment.
_COLLECTION_ERROR = re.compile(r"^ERROR collecting |errors? during collection|^ImportError while ", re.M)
STALE = ("report.json", "control_output.txt")  # an earlier evaluation's under the same run id, if this one has none


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
        """eval.json: everything but the report, which has its own file, and the directory it is in."""
        return {k: v for k, v in asdict(self).items() if k not in ("report", "log_dir")}


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


def _run_tests(env: InstanceEnv, instance: Instance, patch: str, options: EvalOptions, log: list[str]) -> str | None:
    """Apply `patch`, reset the test files, apply test_patch, run the tests; the apply method, None if it failed."""
    applied = apply_patch(env.sandbox, patch)
    log.extend(applied.log)
    if not applied.applied:
        log.append(APPLY_PATCH_FAIL)
        return None
    log.append(f"{APPLY_PATCH_PASS} ({applied.method})")
    _reset_test_files(env, instance, patch_files(instance.test_patch), 300)
    if instance.test_patch.strip():
        test_applied = apply_patch(env.sandbox, instance.test_patch)
        if not test_applied.applied:
            raise EvalError("test_patch does not apply on base_commit plus the patch:\n" + "\n".join(test_applied.log))
    command = test_command(instance, env.spec, options.test_cmd)
    log.append(f"+ {command}")
    result = env.sandbox.run(command, timeout=options.timeout)
    log.extend([START_TEST_OUTPUT, result.output.rstrip("\n"), END_TEST_OUTPUT])
    if result.timed_out:
        log.append(TESTS_TIMEOUT)
        raise EvalError(f"the tests timed out after {options.timeout:.0f}s")
    log.append(f"{TEST_EXIT_CODE}: {result.exit_code}")
    return applied.method


def environment_fault(log: str, instance: Instance) -> str | None:
    """Why a test log looks like the environment's failure (no results, collection error, missing module), or None."""
    if APPLY_PATCH_FAIL in log:
        return None
    _, found = logs_eval(log, get_parser(instance.repo))
    output = log.split(START_TEST_OUTPUT)[-1]
    classified = classify_text(output)
    if classified and classified[0] in ("missing_module", "no_tests_collected"):
        return classified[0]
    if _COLLECTION_ERROR.search(output):
        return "collection_error"
    return None if found else "no_test_results"


def _control(env: InstanceEnv, instance: Instance, options: EvalOptions, log_dir: Path) -> str | None:
    """Run the gold patch in the same environment: its fault, if it fails like the prediction did."""
    reset = env.sandbox.run("git reset -q --hard HEAD && git clean -fdq", timeout=300)
    if reset.exit_code != 0:
        raise EvalError(f"could not reset the working copy for the gold control run: {reset.output.strip()[-2000:]}")
    control: list[str] = []
    try:
        _run_tests(env, instance, instance.patch, options, control)
    finally:
        (log_dir / "control_output.txt").write_text("\n".join(control) + "\n", encoding="utf-8")
    return environment_fault("\n".join(control), instance)


def _grade(env: InstanceEnv, instance: Instance, prediction: dict, options: EvalOptions, log: list[str],
           log_dir: Path) -> Outcome:
    patch = prediction["model_patch"]
    outcome = Outcome(instance.instance_id, "unresolved", prediction["model_name_or_path"])
    test_files = patch_files(instance.test_patch)
    outcome.test_files_touched = sorted(f for f in patch_files(patch) if f in test_files or looks_like_test(f))
    if outcome.test_files_touched:
        log.append(f"the patch edits test files or test configuration: {', '.join(outcome.test_files_touched)}; "
                   f"those test_patch touches are reset to base_commit before testing")
    outcome.apply_method = _run_tests(env, instance, patch, options, log)
    parser = get_parser(instance.repo)
    outcome.report = instance_report(instance.instance_id, patch, "\n".join(log), parser, instance.FAIL_TO_PASS,
                                     instance.PASS_TO_PASS)
    if outcome.apply_method is None:
        outcome.status = "not_applied"
        return outcome
    outcome.statuses = logs_eval("\n".join(log), parser)[0]
    if outcome.report[instance.instance_id]["resolved"]:
        outcome.status = "resolved"
        return outcome
    fault = environment_fault("\n".join(log), instance)
    if fault and instance.patch.strip() and patch != instance.patch:
        log.append(f"the tests show {fault}; running the gold patch the same way (control_output.txt)")
        fault = _control(env, instance, options, log_dir)
    if fault:
        detail = _why_collection_fails(env, instance, options, log)
        raise EvalError(f"the environment cannot run the tests ({fault}{detail}): see test_output.txt; fix the "
                        "spec (--specs) and rebuild with `loopcoder swebench env build`")
    return outcome


def _why_collection_fails(env: InstanceEnv, instance: Instance, options: EvalOptions, log: list[str]) -> str:
    """pytest's own reason (the --tb=no run hides it), appended to the log: ', ModuleNotFoundError: ...' or ''."""
    if "pytest" not in (options.test_cmd or env.spec.test_cmd):
        return ""
    tests = " ".join(map(shlex.quote, test_directives(instance)))
    result = env.sandbox.run(f"python -m pytest --collect-only -q -p no:cacheprovider {tests}", timeout=300)
    log.extend(["+ collecting the tests again to show why they cannot run:", result.output.rstrip()])
    found = re.search(r"^E?\s*(\w*(?:Error|Exception): .+)$", result.output, re.M)
    return f", {found.group(1).strip()[:200]}" if found else ""


def evaluate_instance(instance: Instance, prediction: dict, options: EvalOptions, log_dir: Path) -> Outcome:
    """Grade one non-empty prediction and write its files under log_dir; never raises."""
    start = time.monotonic()
    log_dir.mkdir(parents=True, exist_ok=True)
    _clear_stale(log_dir)
    patch = prediction["model_patch"]
    (log_dir / "patch.diff").write_text(patch, encoding="utf-8")
    log: list[str] = []
    try:
        with open_instance(instance, options) as env:
            log.append(f"evaluating {instance.instance_id} in {env.where}")
            outcome = _grade(env, instance, prediction, options, log, log_dir)
    except Exception as exc:  # any failure of the machinery is this instance's error, never the batch's
        outcome = Outcome(instance.instance_id, "error", prediction["model_name_or_path"],
                          error=f"{type(exc).__name__}: {exc}")
        log.append(traceback.format_exc())
    outcome.seconds = round(time.monotonic() - start, 3)
    _write_results(outcome, log, log_dir)
    return outcome


def _clear_stale(log_dir: Path) -> None:
    for stale in STALE:
        (log_dir / stale).unlink(missing_ok=True)


def _write_results(outcome: Outcome, log: list[str], log_dir: Path) -> None:
    outcome.log_dir = str(log_dir)
    (log_dir / "test_output.txt").write_text("\n".join(log) + "\n", encoding="utf-8")
    if outcome.report is not None:
        (log_dir / "report.json").write_text(json.dumps(outcome.report, indent=4), encoding="utf-8")
    (log_dir / "eval.json").write_text(json.dumps(outcome.extras(), indent=2), encoding="utf-8")


class EvalWorker:
    """The worker side of an evaluation: evaluate_instance for each (instance, prediction)."""

    def __init__(self, options: EvalOptions):
        self.options = options

    def __call__(self, item: tuple[Instance, dict], log_dir: Path) -> Outcome:
        return evaluate_instance(item[0], item[1], self.options, log_dir)


def evaluate(
    instances: list[Instance],
    predictions: dict[str, dict],
    options: EvalOptions,
    output: Path,
    run_id: str,
    workers: int = 1,
    on_done: Callable[[Outcome], None] | None = None,
    executor: ExecutorOptions | None = None,
) -> tuple[dict, list[Outcome], Path]:
    """Evaluate every selected instance that has a prediction; returns (summary, outcomes, summary path).

    executor: local threads (default, `workers` of them) or Ray actors; the files land under OUTPUT here.
    A summary already written for this run id and model (an earlier --filter) is merged, not overwritten.
    """
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

    jobs = [Job(inst.instance_id, (inst, pred), output / run_id / model_dirname(pred["model_name_or_path"]) /
                inst.instance_id) for inst, pred in todo]
    for job in jobs:  # a Ray worker's files land over whatever is there
        _clear_stale(job.dest)
    for job, outcome in execute(jobs, partial(EvalWorker, options), executor or ExecutorOptions(workers=workers)):
        if isinstance(outcome, Lost):
            outcome = Outcome(job.key, "error", job.payload[1]["model_name_or_path"], error=outcome.error)
            job.dest.mkdir(parents=True, exist_ok=True)
            _write_results(outcome, [outcome.error], job.dest)
        outcome.log_dir = str(job.dest)
        outcomes.append(outcome)
        if on_done:
            on_done(outcome)
    evaluated = [o for o in outcomes if o.status != "empty_patch"]
    logs = {o.instance_id: (Path(o.log_dir) / "test_output.txt").read_text(encoding="utf-8") for o in evaluated}
    ids = [i.instance_id for i in instances]
    selected = {i: p for i, p in predictions.items() if i in set(ids)}
    summary = run_summary(ids, selected, {o.instance_id: o.report for o in evaluated}, logs)
    models = sorted({p["model_name_or_path"] for p in selected.values()})
    summary_path = output / f"{model_dirname(models[0] if len(models) == 1 else 'mixed')}.{run_id}.json"
    output.mkdir(parents=True, exist_ok=True)
    if summary_path.is_file():
        try:
            summary = merge_summaries(json.loads(summary_path.read_text(encoding="utf-8")), summary, ids)
        except (ValueError, AttributeError):
            pass  # not a summary we can read: this evaluation's own replaces it
    summary_path.write_text(json.dumps(summary, indent=4), encoding="utf-8")
    order = {iid: n for n, iid in enumerate(ids)}
    return summary, sorted(outcomes, key=lambda o: order[o.instance_id]), summary_path
