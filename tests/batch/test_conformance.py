"""Our reports and summary re-graded by the official swebench package's own code must agree field for field.

The official package (swebench==5.0.2, ~500 MB with its dependencies) goes in
its own venv, built once and kept under ~/.cache/loopcoder/conformance (or
the interpreter named by LOOPCODER_SWEBENCH_PYTHON); the test is skipped,
saying why, only when it cannot be installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loopcoder.batch.swebench.eval import EvalOptions, evaluate
from loopcoder.batch.swebench.instances import parse_instance
from loopcoder.batch.swebench.specs import load_specs
from tests.batch.fabricate import CHEAT, MALFORMED, NOOP, shout_instance, srclib_instance, standard_instances

pytestmark = pytest.mark.slow
OFFICIAL = "swebench==5.0.2"
VENV = Path("~/.cache/loopcoder/conformance/swebench-5.0.2").expanduser()
# Runs in the official package's venv: its get_eval_report on each report.json's log, and make_run_report.
REGRADE = r"""
import json, sys
from pathlib import Path
from swebench.harness.grading import get_eval_report
from swebench.harness.reporting import make_run_report
from swebench.types import TestSpec

data = json.loads(Path(sys.argv[1]).read_text())
reports = {}
for inst in data["instances"]:
    iid, pred = inst["instance_id"], data["predictions"].get(inst["instance_id"])
    log_dir = Path("logs/run_evaluation") / data["run_id"] / pred["model_name_or_path"].replace("/", "__") / iid
    if pred and (log_dir / "report.json").exists():
        spec = TestSpec(instance_id=iid, image="", eval_script_list=[], repo=inst["repo"], version=inst["version"],
                        FAIL_TO_PASS=json.loads(inst["FAIL_TO_PASS"]), PASS_TO_PASS=json.loads(inst["PASS_TO_PASS"]),
                        log_parser="parse_log_pytest", eval_type="pass_and_fail")
        reports[iid] = get_eval_report(spec, pred, str(log_dir / "test_output.txt"), include_tests_status=True)
path = make_run_report(data["predictions"], data["instances"], data["run_id"], report_dir="official")
print(json.dumps({"reports": reports, "summary": json.loads(Path(path).read_text())}))
"""


@pytest.fixture(scope="session")
def official_python() -> str:
    python = os.environ.get("LOOPCODER_SWEBENCH_PYTHON") or str(VENV / "bin" / "python")
    if Path(python).is_file() and (Path(python).parent.parent / ".installed").exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True)
        subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", OFFICIAL], check=True,
                       capture_output=True, timeout=1500)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        out = getattr(exc, "stderr", b"") or b""
        pytest.skip(f"cannot install the official {OFFICIAL} to grade against: {out.decode(errors='replace')[-300:]}")
    (VENV / ".installed").touch()
    return str(VENV / "bin" / "python")


@pytest.mark.timeout(2400)  # the first run installs the official package (minutes)
def test_official_grading_agrees_on_every_report_and_summary_field(official_python, env_cache, tmp_path):
    cache = tmp_path / "cache"
    calc1, calc2, text3 = standard_instances(cache)
    srclib = srclib_instance(cache)
    word5 = shout_instance(cache, "acme/word5", 5)
    broken = {**calc1, "instance_id": "acme__calc-99", "base_commit": "0" * 40}
    records = [calc1, calc2, text3, srclib, word5, broken]
    patches = {calc1["instance_id"]: CHEAT, calc2["instance_id"]: "", text3["instance_id"]: text3["patch"],
               srclib["instance_id"]: NOOP, word5["instance_id"]: MALFORMED, "acme__calc-99": calc1["patch"]}
    preds = {iid: {"instance_id": iid, "model_name_or_path": "org/m", "model_patch": p} for iid, p in patches.items()}
    specs = tmp_path / "specs.json"  # srclib without `six`: its tests cannot be collected (an environment failure)
    specs.write_text(json.dumps({srclib["instance_id"]: {"pip_packages": ["pytest"], "install": "python -m pip install -e ."}}))
    options = EvalOptions(repo_cache=cache, work_root=tmp_path / "work", env_cache=env_cache, specs=load_specs(specs),
                          timeout=120)
    instances = [parse_instance(r, r["instance_id"]) for r in records]
    out = tmp_path / "logs" / "run_evaluation"
    evaluate(instances[:3], preds, options, out, "conf", workers=2)  # two --filter invocations, one run id
    summary, outcomes, path = evaluate(instances[3:], preds, options, out, "conf", workers=2)
    assert [o.status for o in outcomes] == ["error", "not_applied", "error"]
    ours = json.loads(path.read_text())

    (tmp_path / "data.json").write_text(json.dumps({"instances": records, "predictions": preds, "run_id": "conf"}))
    run = subprocess.run([official_python, "-c", REGRADE, str(tmp_path / "data.json")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    official = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(official["reports"]) == sorted([calc1["instance_id"], text3["instance_id"], word5["instance_id"]])
    for iid, report in official["reports"].items():
        mine = json.loads((out / "conf" / "org__m" / iid / "report.json").read_text())
        assert mine == report, iid
    assert ours == official["summary"]
    assert ours["resolved_ids"] == [text3["instance_id"]] and ours["empty_patch_ids"] == [calc2["instance_id"]]
    assert ours["failure_reasons"][srclib["instance_id"]] == "missing_module"
    assert ours["total_instances"] == 6 and ours["error_ids"] == sorted(["acme__calc-99", srclib["instance_id"]])
