"""The agent end to end through the `openai` backend against `loopcoder serve` with a tiny PLT.

The tiny model writes garbage: the run must still end on a limit with a clean
exit status and a trajectory, and never a traceback."""
from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import git
from tests.server.test_cli import LOOPCODER, ROOT


def test_agent_runs_through_the_openai_backend(plt_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.py").write_text("print('hi')\n")
    git(repo, "add", "a.py")
    git(repo, "commit", "-q", "-m", "init")
    trajectory = tmp_path / "run.json"

    proc = subprocess.run(
        [*LOOPCODER, "run", "Make a.py print bye.", "--repo", str(repo), "--backend", "openai", "--model", "tiny",
         "--set", f"backend.base_url={plt_server.url}", "--set", "sampling.max_new_tokens=12",
         "--max-steps", "2", "--yes", "--trajectory", str(trajectory)],
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LOOPCODER_"))}, "HOME": str(tmp_path)},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode in (3, 4), out  # a step limit or format errors, not an error (1)
    assert "Traceback" not in out
    steps = json.loads(trajectory.read_text())["steps"]
    assert len(steps) == 2
    assert steps[1]["tokens"]["reused"] >= steps[0]["tokens"]["prompt"]  # step 2 reused the server's KV cache
