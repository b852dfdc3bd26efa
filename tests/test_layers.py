"""Dependencies point one way: cli -> agent / batch / server -> runtime / tools -> model / workspace.

Every module of the product (and nano/) is parsed with `ast`; each import that
names a project package, at module level or inside a function, is an edge
between top-level packages and must be one that LAYERS allows. A new top-level
package fails until it is given a place here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from setuptools import find_packages

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent
NOT_PRODUCT = {"tests", "benchmarks", "examples", "scripts", "docs", "checkpoints", "build"}

# package -> the project packages it may import (besides itself)
LAYERS: dict[str, set[str]] = {
    "cli": {"agent", "batch", "server", "runtime", "tools", "model", "workspace", "prompts", "nano"},
    "nano": {"agent", "runtime", "tools", "model", "workspace", "prompts"},  # research code, on top of the product
    "batch": {"agent", "runtime", "tools", "workspace", "prompts"},  # runs the agent on many repositories
    "server": {"runtime"},
    "agent": {"runtime", "tools", "workspace", "prompts"},
    "runtime": {"model"},
    "tools": {"workspace"},
    "model": set(),
    "workspace": set(),
    "prompts": set(),
}


def project_packages(root: Path) -> set[str]:
    """The top-level importable names of the repository: packages with an __init__.py, and cli."""
    names = {p.parent.name for p in root.glob("*/__init__.py") if p.parent.name not in NOT_PRODUCT}
    return names | {p.stem for p in root.glob("*.py") if p.stem not in NOT_PRODUCT}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file; relative ones resolved."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module))
    return [(line, target.removeprefix("loopcoder.")) for line, target in found]  # the one install namespace


def layer_violations(root: Path) -> list[str]:
    packages = project_packages(root)
    unplaced = sorted(packages - LAYERS.keys())
    problems = [f"{p}: a top-level package with no place in LAYERS" for p in unplaced]
    files = [f for p in sorted(packages) for f in ([root / f"{p}.py"] if (root / f"{p}.py").is_file()
                                                  else sorted((root / p).rglob("*.py")))]
    for file in files:
        source = module_name(file, root).split(".")[0]
        for line, target in imported_modules(file, root):
            top = target.split(".")[0]
            if top in packages and top != source and top not in LAYERS.get(source, set()):
                problems.append(f"{file.relative_to(root)}:{line}: {source} imports {target}")
    return problems


def test_dependencies_point_one_way():
    assert layer_violations(ROOT) == []


def test_an_upward_import_is_caught(tmp_path):
    """The check on a copy of two packages: model importing the runtime is reported with its line."""
    for package in ("model", "runtime"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "runtime" / "session.py").write_text("from model.cache import PLTCache\n")
    (tmp_path / "model" / "cache.py").write_text("import torch\n\n\ndef f():\n    from runtime.session import Session\n")
    (tmp_path / "model" / "loading.py").write_text("from ..runtime import backends\n")  # relative, resolved
    assert layer_violations(tmp_path) == [
        "model/cache.py:5: model imports runtime.session",
        "model/loading.py:1: model imports runtime",
    ]


def test_a_new_top_level_package_must_be_placed(tmp_path):
    (tmp_path / "extras").mkdir()
    (tmp_path / "extras" / "__init__.py").write_text("")
    assert layer_violations(tmp_path) == ["extras: a top-level package with no place in LAYERS"]


def test_the_product_installs_every_package_but_nano_under_one_namespace():
    """pyproject's package list: every product package, as loopcoder.<package>; nano/ (research code) never."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    product = sorted(set(LAYERS) - {"cli", "nano"})
    expected = {"loopcoder"} | {f"loopcoder.{p}" for p in find_packages(str(ROOT), include=[f"{t}*" for t in product])}
    assert setuptools["package-dir"] == {"loopcoder": "."}
    assert set(setuptools["packages"]) == expected
    assert not [p for p in setuptools["packages"] if p.startswith("loopcoder.nano")]
