"""Seeded small Python repos and edit tasks for training and evaluating loopcoder-nano.

Each task is a generated package (2-4 modules, a pytest suite) plus a task
text, the reference solution and a hidden check test. The held-out split
draws every name from word lists the training split never sees, so solving
it means copying names from the task and the observations, not recalling
them.

The hand-written evaluation set (benchmarks/handwritten/) is written without
this generator and is never used for training: keep it out of every data build.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nano import words

KINDS = ("rename", "change_constant", "fix_off_by_one", "add_parameter")
SPLITS = {
    "train": (words.TRAIN_VERBS, words.TRAIN_NOUNS),
    "heldout": (words.HELDOUT_VERBS, words.HELDOUT_NOUNS),
}
CHECK_TEST = "tests/test_nano_check.py"
PACKAGE_SUFFIXES = ("kit", "lib", "ops", "tools")  # a package is a noun plus one of these


@dataclass(frozen=True)
class Task:
    id: str
    kind: str
    text: str
    files: dict[str, str]  # the repo at base: path -> content
    solution: dict[str, str]  # files the reference solution changes: path -> new content
    check_test: str  # hidden pytest file the solved repo must pass
    facts: dict = field(default_factory=dict)  # what the gold trajectory needs (names, paths, lines)

    def solved_files(self) -> dict[str, str]:
        return {**self.files, **self.solution}


@dataclass
class CheckResult:
    ok: bool
    output: str


# --- names -------------------------------------------------------------------


class _Namer:
    """Hands out identifiers that never collide within one repo."""

    def __init__(self, rng: random.Random, split: str):
        self.rng = rng
        self.verbs, self.nouns = SPLITS[split]
        self.used: set[str] = set()

    def _fresh(self, make) -> str:
        while True:
            name = make()
            if name not in self.used and not name.startswith("test"):  # pytest would collect test_* as a test
                self.used.add(name)
                return name

    def noun(self) -> str:
        return self._fresh(lambda: self.rng.choice(self.nouns))

    def func(self) -> str:
        return self._fresh(lambda: f"{self.rng.choice(self.verbs)}_{self.rng.choice(self.nouns)}")

    def cls(self) -> str:
        return self._fresh(lambda: "".join(w.capitalize() for w in self.rng.sample(self.nouns, 2)))

    def const(self) -> str:
        prefix = self.rng.choice(("MAX", "MIN", "DEFAULT", "BASE", "LIMIT"))
        return self._fresh(lambda: f"{prefix}_{self.rng.choice(self.nouns).upper()}")


# --- code items --------------------------------------------------------------


@dataclass
class _Item:
    """One top-level definition of a module with its pinned test calls."""

    kind: str  # "function" | "class" | "constant"
    name: str
    lines: list[str]
    calls: list[str]  # expressions whose values the tests pin
    deps: list[str] = field(default_factory=list)  # names imported from earlier modules
    bug: tuple[int, str, str] | None = None  # (line index, buggy line, task detail)
    unary: bool = False  # a numeric function of one int argument, usable by wrappers
    returns_number: bool = False  # ends in `return EXPR` with a number; can take a new parameter
    method: str = ""  # a class's method, for wrappers that use the class

    @property
    def source(self) -> str:
        return "\n".join(self.lines) + "\n"


def _loop_sum(nm: _Namer, rng: random.Random, _deps) -> _Item:
    f, n, acc, k = nm.func(), nm.noun(), nm.noun(), rng.randint(2, 9)
    lines = [f"def {f}({n}):", f"    {acc} = 0", f"    for i in range({n}):", f"        {acc} += i * {k}", f"    return {acc}"]
    bug = (2, f"    for i in range({n} + 1):", "the loop runs one step too far")
    return _Item("function", f, lines, [f"{f}({rng.randint(3, 9)})"], bug=bug, unary=True)


def _product(nm: _Namer, rng: random.Random, _deps) -> _Item:
    f, n, acc = nm.func(), nm.noun(), nm.noun()
    lines = [f"def {f}({n}):", f"    {acc} = 1", f"    for i in range(1, {n} + 1):", f"        {acc} *= i", f"    return {acc}"]
    bug = (2, f"    for i in range(1, {n}):", "the loop stops one step too early")
    return _Item("function", f, lines, [f"{f}({rng.randint(3, 6)})"], bug=bug, unary=True)


def _take_first(nm: _Namer, rng: random.Random, _deps) -> _Item:
    f, items, n = nm.func(), nm.noun(), nm.noun()
    lines = [f"def {f}({items}, {n}):", f"    return {items}[:{n}]"]
    values = [rng.randint(1, 50) for _ in range(rng.randint(5, 7))]
    bug = (1, f"    return {items}[:{n} + 1]", "it returns one item too many")
    return _Item("function", f, lines, [f"{f}({values}, {rng.randint(1, 4)})"], bug=bug)


def _count_below(nm: _Namer, rng: random.Random, _deps) -> _Item:
    f, values, limit = nm.func(), nm.noun(), nm.noun()
    lines = [f"def {f}({values}, {limit}):", f"    return len([v for v in {values} if v < {limit}])"]
    data = [rng.randint(1, 20) for _ in range(rng.randint(5, 7))]
    bug = (1, f"    return len([v for v in {values} if v <= {limit}])", f"it also counts values equal to `{limit}`")
    return _Item("function", f, lines, [f"{f}({data}, {rng.choice(data)})"], bug=bug, returns_number=True)


def _linear(nm: _Namer, rng: random.Random, _deps) -> _Item:
    f, x, y, k = nm.func(), nm.noun(), nm.noun(), rng.randint(2, 9)
    lines = [f"def {f}({x}, {y}):", f"    return {x} * {k} + {y}"]
    return _Item("function", f, lines, [f"{f}({rng.randint(1, 9)}, {rng.randint(1, 9)})"], returns_number=True)


def _offset(nm: _Namer, rng: random.Random, _deps) -> _Item:
    f, x, tmp, k, k2 = nm.func(), nm.noun(), nm.noun(), rng.randint(1, 9), rng.randint(2, 5)
    lines = [f"def {f}({x}):", f"    {tmp} = {x} + {k}", f"    return {tmp} * {k2}"]
    return _Item("function", f, lines, [f"{f}({rng.randint(1, 9)})"], unary=True, returns_number=True)


def _wrapper(nm: _Namer, rng: random.Random, deps: list[_Item]) -> _Item | None:
    usable = [d for d in deps if d.unary or d.kind == "class"]
    if not usable:
        return None
    dep = rng.choice(usable)
    f, x, k = nm.func(), nm.noun(), rng.randint(1, 9)
    call = f"{dep.name}({x}).{dep.method}()" if dep.kind == "class" else f"{dep.name}({x})"
    lines = [f"def {f}({x}):", f"    return {call} + {k}"]
    return _Item("function", f, lines, [f"{f}({rng.randint(2, 6)})"], deps=[dep.name], returns_number=True)


def _class(nm: _Namer, rng: random.Random, _deps) -> _Item:
    c, x, m, k = nm.cls(), nm.noun(), nm.func(), rng.randint(2, 9)
    lines = [
        f"class {c}:",
        f"    def __init__(self, {x}):",
        f"        self.{x} = {x}",
        "",
        f"    def {m}(self):",
        f"        return self.{x} * {k}",
    ]
    return _Item("class", c, lines, [f"{c}({rng.randint(1, 9)}).{m}()"], method=m)


def _constant(nm: _Namer, rng: random.Random) -> _Item:
    c = nm.const()
    return _Item("constant", c, [f"{c} = {rng.randint(2, 60)}"], [c])


FUNCTION_TEMPLATES = (_loop_sum, _product, _take_first, _count_below, _linear, _offset, _wrapper, _class)


# --- repos -------------------------------------------------------------------


@dataclass
class _Module:
    name: str
    items: list[_Item]


def _make_modules(nm: _Namer, rng: random.Random) -> list[_Module]:
    modules: list[_Module] = []
    for _ in range(rng.randint(2, 4)):
        earlier = [it for m in modules for it in m.items]
        items = [_constant(nm, rng)] if rng.random() < 0.6 else []
        for template in rng.sample(FUNCTION_TEMPLATES, rng.randint(2, 3)):
            item = template(nm, rng, earlier)
            if item is not None:
                items.append(item)
        modules.append(_Module(nm.noun(), items))
    return modules


def _evaluate(modules: list[_Module]) -> dict[str, object]:
    """Value of every pinned call, computed by running the (correct) generated code."""
    namespace: dict = {}
    for module in modules:
        for item in module.items:
            exec(item.source, namespace)  # noqa: S102 - our own generated code
    return {call: eval(call, namespace) for m in modules for it in m.items for call in it.calls}  # noqa: S307


def _owner(modules: list[_Module], name: str) -> _Module:
    return next(m for m in modules if any(it.name == name for it in m.items))


def _render_module(pkg: str, module: _Module, modules: list[_Module]) -> str:
    deps = sorted({d for it in module.items for d in it.deps})
    by_module: dict[str, list[str]] = {}
    for d in deps:
        by_module.setdefault(_owner(modules, d).name, []).append(d)
    head = [f'"""{module.name.capitalize()} helpers."""']
    if by_module:
        head.append("")
        head += [f"from {pkg}.{mod} import {', '.join(names)}" for mod, names in sorted(by_module.items())]
    blocks = ["\n".join(head)]
    consts = [line for it in module.items if it.kind == "constant" for line in it.lines]
    if consts:
        blocks.append("\n".join(consts))
    defs = [it.source for it in module.items if it.kind != "constant"]
    return "\n\n".join(blocks) + "\n\n\n" + "\n\n".join(defs)


def _test_name(item: _Item) -> str:
    return f"test_{item.name.lower()}"


def _render_tests(pkg: str, module: _Module, values: dict) -> str:
    names = ", ".join(it.name for it in module.items)
    parts = [f"from {pkg}.{module.name} import {names}"]
    for it in module.items:
        body = "\n".join(f"    assert {call} == {values[call]!r}" for call in it.calls)
        parts.append(f"def {_test_name(it)}():\n{body}")
    return "\n\n\n".join(parts) + "\n"


def _render_repo(pkg: str, modules: list[_Module]) -> dict[str, str]:
    values = _evaluate(modules)
    files = {
        "pyproject.toml": f'[project]\nname = "{pkg}"\nversion = "0.1.0"\n\n'
        '[tool.pytest.ini_options]\npythonpath = ["."]\ntestpaths = ["tests"]\n',
        f"{pkg}/__init__.py": f'"""The {pkg} package."""\n',
    }
    for m in modules:
        files[f"{pkg}/{m.name}.py"] = _render_module(pkg, m, modules)
        files[f"tests/test_{m.name}.py"] = _render_tests(pkg, m, values)
    return files


# --- tasks -------------------------------------------------------------------


def _check_header(pkg: str, module: str, names: list[str]) -> str:
    return f"import inspect\nimport pathlib\nimport re\n\nfrom {pkg}.{module} import {', '.join(names)}\n\nROOT = pathlib.Path(__file__).resolve().parents[1]\n"


def _rename(nm, rng, pkg, modules, files, values) -> tuple[str, dict, str, dict] | None:
    targets = [it for m in modules for it in m.items if it.kind in ("function", "class")]
    used_elsewhere = [it for it in targets if any(it.name in d.deps for m in modules for d in m.items)]
    item = rng.choice(used_elsewhere or targets)
    new = nm.cls() if item.kind == "class" else nm.func()
    word = re.compile(rf"\b{item.name}\b")
    solution = {p: word.sub(new, text) for p, text in files.items() if word.search(text)}
    text = (
        f"Rename the {item.kind} `{item.name}` to `{new}` everywhere in the repository "
        "(definition, imports, uses and tests)."
    )
    owner = _owner(modules, item.name).name
    calls = "\n".join(f"    assert {word.sub(new, c)} == {values[c]!r}" for c in item.calls)
    check = _check_header(pkg, owner, [new]) + (
        f"\n\ndef test_renamed():\n{calls}\n"
        "    hits = [str(p) for p in ROOT.rglob('*.py')\n"
        f"            if p.name != 'test_nano_check.py' and re.search(r'\\b{item.name}\\b', p.read_text())]\n"
        "    assert not hits, hits\n"
    )
    return text, solution, check, {"symbol": item.kind, "old": item.name, "new": new}


def _change_constant(nm, rng, pkg, modules, files, values):
    consts = [(m, it) for m in modules for it in m.items if it.kind == "constant"]
    if not consts:
        return None
    module, item = rng.choice(consts)
    old = int(item.lines[0].split(" = ")[1])
    new = rng.choice([v for v in range(2, 100) if v != old])
    path, test_path = f"{pkg}/{module.name}.py", f"tests/test_{module.name}.py"
    line, new_line = f"{item.name} = {old}", f"{item.name} = {new}"
    pin, new_pin = f"assert {item.name} == {old}", f"assert {item.name} == {new}"
    solution = {path: files[path].replace(line, new_line), test_path: files[test_path].replace(pin, new_pin)}
    text = f"Change the constant `{item.name}` in `{path}` from {old} to {new}, and update the test that pins its value."
    check = _check_header(pkg, module.name, [item.name]) + (
        f"\n\ndef test_constant():\n    assert {item.name} == {new}\n"
        f"    assert {new_pin!r} in (ROOT / {test_path!r}).read_text()\n"
    )
    facts = {"name": item.name, "path": path, "test_path": test_path, "value": old, "new_value": new,
             "line": line, "new_line": new_line, "pin": pin, "new_pin": new_pin}
    return text, solution, check, facts


def _fix_off_by_one(nm, rng, pkg, modules, files, values):
    buggy = [(m, it) for m in modules for it in m.items if it.bug]
    if not buggy:
        return None
    module, item = rng.choice(buggy)
    index, bad, detail = item.bug
    good = item.lines[index]
    path = f"{pkg}/{module.name}.py"
    if files[path].count(good) != 1:
        return None
    files[path] = files[path].replace(good, bad)  # the base repo carries the bug; its test fails
    solution = {path: files[path].replace(bad, good)}
    text = f"Fix the off-by-one error in `{item.name}` in `{path}`: {detail}. The test `{_test_name(item)}` fails."
    calls = "\n".join(f"    assert {c} == {values[c]!r}" for c in item.calls)
    check = _check_header(pkg, module.name, [item.name]) + f"\n\ndef test_fixed():\n{calls}\n"
    return text, solution, check, {"function": item.name, "path": path, "bad_line": bad, "good_line": good}


def _add_parameter(nm, rng, pkg, modules, files, values):
    candidates = [(m, it) for m in modules for it in m.items if it.returns_number]
    if not candidates:
        return None
    module, item = rng.choice(candidates)
    param, factor = nm.noun(), rng.randint(2, 5)
    multiply = rng.random() < 0.5
    default = 1 if multiply else 0
    expr = item.lines[-1].removeprefix("    return ")
    new_lines = list(item.lines)
    new_lines[0] = item.lines[0].replace("):", f", {param}={default}):")
    new_lines[-1] = f"    return ({expr}) * {param}" if multiply else f"    return {expr} + {param}"
    old_src, new_src = "\n".join(item.lines), "\n".join(new_lines)
    path = f"{pkg}/{module.name}.py"
    solution = {path: files[path].replace(old_src, new_src)}
    use = "multiply the returned value by it" if multiply else "add it to the returned value"
    text = f"Add a parameter `{param}` with default value {default} to `{item.name}` in `{path}`, and {use}."
    call = item.calls[0]
    base = values[call]
    expected = base * factor if multiply else base + factor
    with_param = f"{call[:-1]}, {param}={factor})"
    check = _check_header(pkg, module.name, [item.name]) + (
        f"\n\ndef test_parameter():\n"
        f"    assert inspect.signature({item.name}).parameters[{param!r}].default == {default}\n"
        f"    assert {call} == {base!r}\n    assert {with_param} == {expected!r}\n"
    )
    facts = {"function": item.name, "path": path, "param": param, "multiply": multiply,
             "old_src": old_src, "new_src": new_src}
    return text, solution, check, facts


_MAKERS = {
    "rename": _rename,
    "change_constant": _change_constant,
    "fix_off_by_one": _fix_off_by_one,
    "add_parameter": _add_parameter,
}


def generate_task(split: str, seed: int, kind: str | None = None) -> Task:
    """The task for (split, seed); the kind rotates with the seed unless given."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
    kind = kind or KINDS[seed % len(KINDS)]
    for attempt in range(100):
        rng = random.Random(f"loopcoder-nano:{split}:{seed}:{attempt}")
        nm = _Namer(rng, split)
        pkg = nm.noun() + rng.choice(PACKAGE_SUFFIXES)
        if pkg in sys.stdlib_module_names:  # "pathlib" would import the standard library's
            continue
        modules = _make_modules(nm, rng)
        files = _render_repo(pkg, modules)
        values = _evaluate(modules)
        made = _MAKERS[kind](nm, rng, pkg, modules, files, values)
        if made is not None:
            text, solution, check, facts = made
            return Task(f"{split}-{seed}", kind, text, files, solution, check, {"package": pkg, **facts})
    raise RuntimeError(f"no {kind} task found for {split} seed {seed}")


def generate_tasks(split: str, count: int, start: int = 0) -> list[Task]:
    return [generate_task(split, seed) for seed in range(start, start + count)]


# --- files and checking ------------------------------------------------------


def write_files(files: dict[str, str], root: str | Path) -> Path:
    root = Path(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def apply_to_copy(files: dict[str, str], patch: str, scratch: str | Path) -> tuple[Path, str | None]:
    """Write `files` under `scratch` and apply `patch` (a git diff) there: the copy, and why the patch
    did not apply (None when it did, or when it is empty)."""
    base = write_files(files, scratch)
    if patch.strip():
        applied = subprocess.run(["git", "apply", "-"], cwd=base, input=patch, text=True, capture_output=True)
        if applied.returncode != 0:
            return base, f"the patch does not apply: {applied.stderr}"
    return base, None


def run_pytest(root: str | Path, timeout: float = 120.0) -> CheckResult:
    """Run the repo's pytest suite with this interpreter; ok when every test passes."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=root, capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # the plugins cost 1 s a run here
        )
    except subprocess.TimeoutExpired:
        return CheckResult(False, f"pytest timed out after {timeout:.0f}s")
    return CheckResult(proc.returncode == 0, proc.stdout + proc.stderr)


def check(task: Task, workdir: str | Path) -> CheckResult:
    """Solved = the repo's own tests and the hidden check test all pass, on a copy of workdir."""
    with tempfile.TemporaryDirectory(prefix="nano-check-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(".git", "__pycache__"))
        write_files({CHECK_TEST: task.check_test}, copy)
        return run_pytest(copy)
