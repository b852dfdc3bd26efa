"""How an instance's environment is built and its tests run: specs, test directives, the test command.

Specs are keyed like the official harness's MAP_REPO_VERSION_TO_SPECS
(repo -> version -> spec) with its key names; a top-level key equal to an
instance_id gives that one instance its own spec. Lookup order: the
instance's own spec, the spec file's repo/version entry, the built-in entry
for the official repositories (their test commands), then DEFAULT_SPEC:
install the repository if it has packaging metadata, plus pytest.

Directives are the files test_patch touches, as the harness computes them,
except files test_patch deletes (the harness passes those too, and pytest
then runs nothing: a deliberate deviation).
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from loopcoder.batch.swebench.instances import Instance
from loopcoder.workspace.patching import deleted_files, patch_files

TEST_PYTEST = "pytest --no-header -rA --tb=no -p no:cacheprovider"
MAP_REPO_TO_TEST_CMD = {
    "astropy/astropy": "pytest -rA -vv -o console_output_style=classic --tb=no",
    "django/django": "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1",
    "sphinx-doc/sphinx": "tox --current-env -epy39 -v --",
    "mwaskom/seaborn": "pytest --no-header -rA",
}
NON_TEST_EXTS = (".json", ".png", "csv", ".txt", ".md", ".jpg", ".jpeg", ".pkl", ".yml", ".yaml", ".toml")
# The repository is installed only when it has packaging metadata (the documented default).
PACKAGING_FILES = ("pyproject.toml", "setup.py", "setup.cfg")
DEFAULT_INSTALL = ("if [ -f pyproject.toml ] || [ -f setup.py ] || [ -f setup.cfg ]; "
                   "then python -m pip install -e .; fi")
TESTS_PLACEHOLDER = "{tests}"


class SpecError(ValueError):
    """A spec file or entry that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Spec:
    """One environment: the official key names, each optional."""

    python: str = ""  # "3.11": the interpreter version ("" = the one running loopcoder / the image's python3)
    pre_install: tuple[str, ...] = ()  # shell commands before anything is installed (system packages)
    packages: str = ""  # a requirements file in the repository, or space-separated package names
    pip_packages: tuple[str, ...] = ()
    install: str = ""  # installs the repository itself, e.g. `python -m pip install -e .`
    test_cmd: str = TEST_PYTEST  # `{tests}` marks where the test files go (default: appended)
    eval_commands: tuple[str, ...] = ()  # shell commands run before the tests, in the same shell

    def depends_on_repo(self) -> bool:
        """True when building reads the repository: the environment is then per base commit."""
        return bool(self.install) or self.packages.strip().endswith((".txt", ".in"))

    def key(self, instance: Instance | None = None, *, per_commit: bool | None = None) -> str:
        """A short hash naming the built environment (plus the repo and base commit when it depends on them)."""
        data = asdict(self)
        if instance is not None and (self.depends_on_repo() if per_commit is None else per_commit):
            data |= {"repo": instance.repo, "base_commit": instance.base_commit}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# `python -m pytest` puts the repository root on sys.path, so an unpackaged repository imports too.
DEFAULT_SPEC = Spec(pip_packages=("pytest",), install=DEFAULT_INSTALL, test_cmd=f"python -m {TEST_PYTEST}")
_LIST_KEYS = {"pre_install", "pip_packages", "eval_commands"}
_KEYS = {f.name for f in fields(Spec)}


def _spec(where: str, raw: object, base: Spec = DEFAULT_SPEC) -> Spec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec must be a mapping of {', '.join(sorted(_KEYS))}")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec takes {', '.join(sorted(_KEYS))}")
    values: dict = {}
    for name, value in raw.items():
        if name in _LIST_KEYS:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{where}: {name!r} must be a list of strings")
            values[name] = tuple(value)
        elif name == "test_cmd" and isinstance(value, list):
            if not value or not all(isinstance(v, str) for v in value):
                raise SpecError(f"{where}: 'test_cmd' must be a string or a non-empty list of strings")
            values[name] = " && ".join(value)  # the official lists are steps of one command
        elif name == "python" and isinstance(value, (int, float)):
            values[name] = str(value)
        elif not isinstance(value, str):
            raise SpecError(f"{where}: {name!r} must be a string")
        else:
            values[name] = value.strip()
    if "packages" in values and values["packages"].endswith((".yml", ".yaml")):
        raise SpecError(f"{where}: conda environment files are not supported; list the packages in pip_packages")
    if values.get("python") and not re.fullmatch(r"3\.\d+", values["python"]):
        raise SpecError(f"{where}: 'python' must look like 3.11")
    return replace(base, **values)


@dataclass
class SpecMap:
    """Specs from a file: {repo: {version: spec}} and {instance_id: spec}."""

    repos: dict[str, dict[str, Spec]] = field(default_factory=dict)
    instances: dict[str, Spec] = field(default_factory=dict)
    source: str = "built-in"

    def for_instance(self, instance: Instance) -> Spec:
        if instance.instance_id in self.instances:
            return self.instances[instance.instance_id]
        by_version = self.repos.get(instance.repo, {})
        if instance.version in by_version:
            return by_version[instance.version]
        if instance.repo in MAP_REPO_TO_TEST_CMD:
            return replace(DEFAULT_SPEC, test_cmd=MAP_REPO_TO_TEST_CMD[instance.repo])
        return DEFAULT_SPEC


def load_specs(path: str | Path | None) -> SpecMap:
    """A SpecMap from a YAML or JSON file (None: built-in defaults only)."""
    if path is None:
        return SpecMap()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the specs file ({exc.strerror})") from None
    import yaml

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        what = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError(f"{path}: not valid {what}: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of repo -> version -> spec (or instance_id -> spec)")
    specs = SpecMap(source=str(path))
    for key, value in data.items():
        key = str(key)
        if "/" in key:
            if not isinstance(value, dict):
                raise SpecError(f"{path}: {key}: expected a mapping of version -> spec")
            specs.repos[key] = {str(v): _spec(f"{path}: {key} {v}", s) for v, s in value.items()}
        else:
            specs.instances[key] = _spec(f"{path}: {key}", value)
    return specs


# -- test directives and the command -------------------------------------------------

def test_directives(instance: Instance) -> list[str]:
    gone = deleted_files(instance.test_patch)
    files = [f for f in patch_files(instance.test_patch) if not f.endswith(NON_TEST_EXTS) and f not in gone]
    if instance.repo != "django/django":
        return files
    modules = []  # runtests.py takes dotted module names below tests/
    for f in files:
        name = posixpath.basename(f)
        if name == "tests.py" or name.startswith("test_") or "/tests/" in f or "/test_" in f:
            f = f.removesuffix(".py").removeprefix("tests/")
            modules.append(f.replace("/", "."))
    return modules


def test_command(instance: Instance, spec: Spec, override: str | None = None) -> str:
    """The shell command that runs this instance's tests: eval_commands, then test_cmd with the directives."""
    base = override or spec.test_cmd
    tests = " ".join(map(shlex.quote, test_directives(instance)))
    command = base.replace(TESTS_PLACEHOLDER, tests) if TESTS_PLACEHOLDER in base else f"{base} {tests}".rstrip()
    return "\n".join([*spec.eval_commands, command])
