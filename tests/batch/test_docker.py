"""The Docker variants: evaluation and a batch run in the local base image and in an instance image."""
from __future__ import annotations

import json

import pytest

from loopcoder.agent.commands import configure
from loopcoder.batch.swebench.backends import BackendProvider
from loopcoder.batch.swebench.checkout import checkout
from loopcoder.batch.swebench.environments import EnvOptions
from loopcoder.batch.swebench.eval import EvalOptions, evaluate
from loopcoder.batch.swebench.instances import parse_instance
from loopcoder.batch.swebench.predictions import load_predictions, read_jsonl
from loopcoder.batch.swebench.run import run_batch
from tests.batch.fabricate import CHEAT, MALFORMED, MINI_RUNNER, fix_script, standard_instances, unique_owner

pytestmark = pytest.mark.docker


@pytest.fixture
def fabricated(tmp_path, base_image, docker_client):
    owner = unique_owner()
    yield [parse_instance(r, r["instance_id"]) for r in standard_instances(tmp_path / "cache", owner)]
    for image in docker_client.images.list(filters={"label": "loopcoder.swebench.repo"}):
        if image.labels["loopcoder.swebench.repo"].startswith(f"{owner}/"):  # the instance images this test built
            docker_client.images.remove(image.id, force=True)


@pytest.mark.timeout(900)  # builds three instance images
def test_eval_in_instance_images_built_from_the_base_image(fabricated, tmp_path, env_cache):
    calc1, calc2, text3 = fabricated
    options = EvalOptions(sandbox="docker", repo_cache=tmp_path / "cache", work_root=tmp_path / "work",
                          env_cache=env_cache, timeout=120)
    preds = load_predictions("gold", fabricated)
    preds[calc2.instance_id] = {**preds[calc2.instance_id], "model_patch": MALFORMED.replace("text.py", "calc/neg.py")}
    preds[calc1.instance_id] = {**preds[calc1.instance_id], "model_patch": CHEAT}
    summary, outcomes, _ = evaluate(fabricated, preds, options, tmp_path / "out", "dock", workers=2)
    assert [o.status for o in outcomes] == ["unresolved", "not_applied", "resolved"], [o.error for o in outcomes]
    assert outcomes[0].test_files_touched == ["tests/test_ops.py"]
    report = json.loads((tmp_path / "out" / "dock" / "gold" / text3.instance_id / "report.json").read_text())
    assert report[text3.instance_id]["tests_status"]["PASS_TO_PASS"]["success"] == ["test_text.py::test_whisper"]
    assert summary["resolved_ids"] == [text3.instance_id]


def test_instance_image_is_preferred_to_the_cache(fabricated, tmp_path, docker_client):
    from loopcoder.workspace.docker_sandbox import BASE_IMAGE, DockerSandbox, swebench_image

    calc1 = fabricated[0]
    image = swebench_image(calc1.instance_id)  # a stand-in: the repo at /testbed, as the official images hold it
    with checkout(tmp_path / "cache", calc1, tmp_path / "work") as copy, \
            DockerSandbox(BASE_IMAGE, copy_from=copy.path, client=docker_client) as box:
        box.container.commit(repository=image, tag="latest")
    try:
        no_cache = EvalOptions(sandbox="docker", test_cmd=MINI_RUNNER, timeout=120)
        _, (outcome,), _ = evaluate([calc1], load_predictions("gold", [calc1]), no_cache, tmp_path / "out", "img")
        assert outcome.status == "resolved", outcome.error
        assert f"in image {image}" in (tmp_path / "out" / "img" / "gold" / calc1.instance_id / "test_output.txt").read_text()
    finally:
        docker_client.images.remove(image, force=True)


def test_batch_run_in_docker(fabricated, tmp_path, env_cache):
    text3 = fabricated[2]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(fix_script(text3.instance_id)))
    config = configure(None, [], backend="replay", script=str(script), sandbox="docker")
    env = EnvOptions(sandbox="docker", repo_cache=tmp_path / "cache", work_root=tmp_path / "work", env_cache=env_cache)
    (outcome,) = run_batch([text3], BackendProvider(config), config, env, tmp_path / "out")
    assert outcome.status == "submitted" and outcome.error is None
    (pred,) = read_jsonl(tmp_path / "out" / "preds.jsonl")
    assert pred["model_patch"] == text3.patch  # the agent's fix is the gold fix, byte for byte
