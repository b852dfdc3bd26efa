"""The attacker's kit: a user repository, host-side evidence paths, the CLI run as a subprocess.

Every probe is scripted model output (`--backend replay`) through `loopcoder run`, as root like CI. A probe
succeeds only if something shows up on the host: a marker file the sandbox cannot see, changed bytes in the
user's repository, a secret value in the patch, the trajectory or the repository, a container, a process.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import call, make_calc_repo

ROOT = Path(__file__).resolve().parents[2]
SECRET_VARS = ("OPENAI_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY")


@pytest.fixture(params=["local", "docker"])
def sandbox_kind(request) -> str:
    if request.param == "docker":
        request.getfixturevalue("base_image")  # skips without an engine, fails without the image
    else:
        from loopcoder.workspace.local import bwrap_works

        if not bwrap_works():
            pytest.skip("bubblewrap is not usable here (scripts/sandbox-deps.sh installs it)")
    return request.param


@pytest.fixture
def user_repo(tmp_path: Path) -> Path:
    return make_calc_repo(tmp_path / "user-repo")


def snapshot_bytes(repo: Path) -> dict[str, bytes]:
    """Every file of the repository, .git included (config, hooks, index)."""
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted(repo.rglob("*")) if p.is_file()}


class Host:
    """Where evidence lands: paths outside every sandbox's view, and the run's outputs."""

    def __init__(self, tmp_path: Path):
        # Outside /tmp (the local sandbox's private /tmp would hide /tmp paths for the wrong reason) and
        # never bound into a sandbox: a marker here was written by a host process.
        self.evidence = Path.home() / ".cache" / f"loopcoder-security-{secrets.token_hex(6)}"
        self.evidence.mkdir(parents=True)
        self.system_marker = Path("/usr") / f"loopcoder-probe-{secrets.token_hex(6)}"  # a read-only system dir
        self.tmp = tmp_path
        self.secrets = {name: f"{name.lower()}-{secrets.token_hex(12)}" for name in SECRET_VARS}
        self.copies = tmp_path / "copies"
        self.temp = tmp_path / "temp"  # the CLI's TMPDIR: where its sandbox temp dirs go
        self.temp.mkdir()

    def sandbox_dirs(self) -> list[Path]:
        """The local sandboxes' temp dirs in the CLI's TMPDIR (other libraries put their caches there too)."""
        return [p for p in self.temp.iterdir() if p.name.startswith("loopcoder-sandbox-")]

    def marker(self, name: str) -> Path:
        return self.evidence / name

    def markers(self) -> list[str]:
        return sorted(p.name for p in self.evidence.iterdir())

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.secrets, "LOOPCODER_WORKTREES": str(self.copies), "TMPDIR": str(self.temp),
                "LOOPCODER_CONFIG": str(self.tmp / "no-user-config.yaml"), "COLUMNS": "200"}

    def loopcoder(self, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, env=env or self.env(), cwd=self.tmp)

    def run_script(self, repo: Path, kind: str, calls: list[str], *sets: str, name: str = "run"):
        """`loopcoder run` over the scripted calls (submit appended), --yes; (process, trajectory, patch file)."""
        script = self.tmp / f"{name}.json"
        script.write_text(json.dumps([*calls, call("submit")]))
        traj, patch = self.tmp / f"{name}-trajectory.json", self.tmp / f"{name}.patch"
        args = ["run", "probe", "--repo", str(repo), "--backend", "replay", "--script", str(script), "--sandbox", kind,
                "--yes", "-o", str(patch), "--trajectory", str(traj)]
        for item in sets:
            args += ["--set", item]
        return self.loopcoder(*args), traj, patch

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.evidence, ignore_errors=True)
        self.system_marker.unlink(missing_ok=True)


@pytest.fixture
def host(tmp_path: Path):
    h = Host(tmp_path)
    yield h
    h.cleanup()
