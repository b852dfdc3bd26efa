"""A real run with a tiny random PLT in process: garbage output must end by a limit, never a traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loopcoder.agent.loop import Status
from loopcoder.agent.session import make_backend, run_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_plt(tmp_path_factory) -> Path:
    """`loopcoder model init-random --preset tiny` with the chat layer's test tokenizer."""
    from nano.tiny_tokenizer import save_test_tokenizer

    root = tmp_path_factory.mktemp("tiny-plt")
    tokenizer = save_test_tokenizer(root / "tokenizer")
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "model", "init-random", str(root / "ckpt"),
                           "--preset", "tiny", "--tokenizer", str(tokenizer)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return root / "ckpt"


def test_random_plt_run_ends_with_a_clear_status(repo, tiny_plt, make_config, tmp_path):
    config = make_config(tmp_path / "unused.json", "backend.name=plt", f"backend.model={tiny_plt}",
                         "backend.device=cpu", "sampling.max_new_tokens=24", "sampling.temperature=1.0",
                         "sampling.seed=0", "agent.max_steps=4")
    backend = make_backend(config)
    trajectory = tmp_path / "t.json"
    try:
        result = run_task(backend, repo, config, {"kind": "interactive", "text": "Make test_add pass."}, trajectory)
    finally:
        backend.close()
    data = json.loads(trajectory.read_text())
    assert result.status in (Status.FORMAT_ERROR, Status.STEP_LIMIT, Status.TOKEN_LIMIT, Status.STUCK), result
    assert data["exit"]["status"] == result.status and "traceback" not in data["exit"]
    assert 1 <= len(data["steps"]) <= 4
    step = data["steps"][0]
    assert step["tokens"]["completion"] > 0 and step["tokens"]["prompt"] > 0
    assert step["finish_reason"] in ("stop", "length")
    if len(data["steps"]) > 1:  # the kept session prefills only what is new
        assert data["steps"][1]["tokens"]["reused"] > 0


def test_a_checkpoints_own_system_prompt_is_what_the_model_sees(repo, tiny_plt, make_config, tmp_path):
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(tiny_plt, checkpoint)
    (checkpoint / "loopcoder_system.jinja").write_text("You are small. Work in {{ workdir }}.\n")
    config = make_config(tmp_path / "unused.json", "backend.name=plt", f"backend.model={checkpoint}",
                         "backend.device=cpu", "sampling.max_new_tokens=4", "agent.max_steps=1")
    backend = make_backend(config)
    try:
        run_task(backend, repo, config, {"kind": "interactive", "text": "Make test_add pass."}, tmp_path / "t.json")
    finally:
        backend.close()
    system = json.loads((tmp_path / "t.json").read_text())["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are small. Work in /")
