"""The wheel installs one import namespace, `loopcoder`, so it sits beside any package named `tools` or `model`."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERIC = {"agent", "batch", "model", "prompts", "runtime", "server", "tools", "workspace", "nano", "tests", "cli.py"}


def run(*argv, cwd=None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, ROOT)
    return next(out.glob("loopcoder-*.whl"))


def test_the_wheel_holds_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"loopcoder"}
    assert {"loopcoder/cli.py", "loopcoder/tools/__init__.py", "loopcoder/prompts/system.jinja"} <= set(names)
    assert not [n for n in names if n.split("/")[1] in {"nano", "tests", "benchmarks", "scripts"}]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "loopcoder = loopcoder.cli:app" in zipfile.ZipFile(wheel).read(entry).decode()


def test_installs_beside_a_package_that_owns_tools(wheel, tmp_path):
    other = tmp_path / "othertools"
    (other / "tools").mkdir(parents=True)
    (other / "tools" / "__init__.py").write_text('OWNER = "othertools"\n')
    (other / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = '
                                          '"setuptools.build_meta"\n[project]\nname = "othertools"\nversion = "1.0"\n'
                                          '[tool.setuptools]\npackages = ["tools"]\n')
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, other)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel,
        next(tmp_path.glob("othertools-*.whl")))
    # the dependencies (typer, torch, ...) from this environment's site-packages, read as a plain path:
    # its .pth files (the checkout's editable `loopcoder`) are not processed
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    probe = ("import tools, loopcoder.tools, loopcoder.cli; "
             "print(tools.OWNER, loopcoder.tools.__file__, loopcoder.cli.__file__, sorted(loopcoder.tools.TOOL_NAMES))")
    shown = run(python, "-c", probe, cwd=tmp_path).stdout.split()
    assert shown[0] == "othertools"
    assert all(path.startswith(str(site)) for path in shown[1:3]), shown
    assert "bash" in " ".join(shown[3:])
    assert "Usage: loopcoder" in run(venv / "bin" / "loopcoder", "--help", cwd=tmp_path).stdout
