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

import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nano import phrasing, words
from nano.phrasing import phrase

KINDS = ("rename", "change_constant", "fix_off_by_one", "add_parameter")
SPLITS = {
    "train": (words.TRAIN_VERBS, words.TRAIN_NOUNS),
    "heldout": (words.HELDOUT_VERBS, words.HELDOUT_NOUNS),
}
CHECK_TEST = "tests/test_nano_check.py"
PACKAGE_SUFFIXES = ("kit", "lib", "ops", "tools")  # a package is a noun, alone or plus one of these
# Name parts of real code that are no list's words (both splits use them; they are never scrambled).
SHORT_HEADS = ("first", "last", "top", "max", "min", "get", "to", "is", "as", "next")
SHORT_TAILS = ("n", "x", "id", "all", "one", "key", "at", "by", "list", "str")
GENERIC_NAMES = ("helper", "process", "handle", "run", "main_loop", "do_work", "do_it", "util", "go", "fn2")
CLASS_TAILS = ("List", "Parser", "Error", "Config", "Base")
CONST_TAILS = ("SIZE", "PERCENT", "TOTAL", "WIDTH", "DEPTH", "STEPS", "TIMEOUT")
SIBLING_TAILS = ("s", "_all", "2", "_list")  # a sibling's name is another function's name plus one of these


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

    def module(self) -> str:
        """A module name no standard module has (a flat layout puts modules at the import root)."""
        return self._fresh(lambda: next(n for n in iter(lambda: self.rng.choice(self.nouns), None)
                                        if n not in sys.stdlib_module_names))

    def func(self) -> str:
        """Mostly verb_noun; also the shapes of real code: a digit, a short generic word, one word alone."""
        rng, verb, noun = self.rng, lambda: self.rng.choice(self.verbs), lambda: self.rng.choice(self.nouns)
        shapes = (
            lambda: f"{verb()}_{noun()}",
            lambda: f"{verb()}_{noun()}{rng.randint(2, 9)}",
            lambda: f"{rng.choice(SHORT_HEADS)}_{rng.choice(SHORT_TAILS)}",
            lambda: f"{verb()}_{rng.choice(SHORT_TAILS)}",
            lambda: rng.choice(GENERIC_NAMES),
            lambda: verb(),
            lambda: f"{verb()}_{noun()}_{noun()}",
        )
        weights = (10, 1, 1, 1, 1, 1, 1)
        return self._fresh(lambda: rng.choices(shapes, weights)[0]())

    def cls(self) -> str:
        rng = self.rng
        shapes = (lambda: "".join(w.capitalize() for w in rng.sample(self.nouns, 2)),
                  lambda: rng.choice(self.nouns).capitalize(),
                  lambda: rng.choice(self.nouns).capitalize() + rng.choice(CLASS_TAILS))
        return self._fresh(lambda: rng.choices(shapes, (4, 1, 1))[0]())

    def const(self) -> str:
        rng = self.rng
        shapes = (lambda: f"{rng.choice(('MAX', 'MIN', 'DEFAULT', 'BASE', 'LIMIT'))}_{rng.choice(self.nouns).upper()}",
                  lambda: f"{rng.choice(self.nouns).upper()}_{rng.choice(CONST_TAILS)}")
        return self._fresh(lambda: rng.choices(shapes, (3, 1))[0]())


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
    sibling_of: str = ""  # the function whose name this one's starts with (a rename must keep this one)
    uses: str = ""  # the module constant this function's value depends on

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


def _sibling(nm: _Namer, rng: random.Random, of: _Item) -> _Item | None:
    """A function whose name is `of`'s plus a tail (`total` and `totals`): a rename of `of` must keep it."""
    name = f"{of.name}{rng.choice(SIBLING_TAILS)}"
    if name in nm.used:
        return None
    nm.used.add(name)
    x, k = nm.noun(), rng.randint(2, 9)
    lines = [f"def {name}({x}):", f"    return [v * {k} for v in {x}]"]
    return _Item("function", name, lines, [f"{name}({[rng.randint(1, 9) for _ in range(3)]})"], sibling_of=of.name)


def _uses_constant(nm: _Namer, rng: random.Random, const: _Item) -> _Item:
    """A function of the module's constant: changing the constant breaks its test until the test follows."""
    f, x = nm.func(), nm.noun()
    op = rng.choice(("*", "+"))
    lines = [f"def {f}({x}):", f"    return {x} {op} {const.name}"]
    return _Item("function", f, lines, [f"{f}({rng.randint(2, 9)})"], uses=const.name)


def _make_modules(nm: _Namer, rng: random.Random) -> list[_Module]:
    modules: list[_Module] = []
    for _ in range(rng.randint(2, 4)):
        earlier = [it for m in modules for it in m.items]
        items = [_constant(nm, rng)] if rng.random() < 0.6 else []
        for _ in range(rng.choice((0, 1, 1, 2)) if items else 0):
            items.append(_uses_constant(nm, rng, items[0]))
        for template in rng.sample(FUNCTION_TEMPLATES, rng.randint(2, 3)):
            item = template(nm, rng, earlier)
            if item is not None:
                items.append(item)
        functions = [it for it in items if it.kind == "function"]
        if functions and rng.random() < 0.3:
            sibling = _sibling(nm, rng, rng.choice(functions))
            if sibling is not None:
                items.append(sibling)
        modules.append(_Module(nm.module(), items))
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


@dataclass(frozen=True)
class Layout:
    """Where a repo keeps its modules and tests, and how pytest finds them."""

    kind: str  # "package": pkg/ at the root | "src": src/pkg/ | "flat": modules at the root, no package
    name: str  # the package (for "flat", the project's name)
    config: str  # "pyproject" | "setup.cfg" | "pytest.ini" | "conftest" (pytest puts the root on sys.path)
    root_tests: bool = False  # "flat" only: test_*.py beside the modules instead of in tests/

    def module(self, name: str) -> str:
        return name if self.kind == "flat" else f"{self.name}.{name}"

    def path(self, name: str) -> str:
        return {"package": f"{self.name}/{name}.py", "src": f"src/{self.name}/{name}.py", "flat": f"{name}.py"}[self.kind]

    def test_path(self, name: str) -> str:
        return f"test_{name}.py" if self.root_tests else f"tests/test_{name}.py"

    def config_files(self) -> dict[str, str]:
        where = "src" if self.kind == "src" else "."
        tests = "" if self.root_tests else "tests"
        if self.config == "pyproject":
            return {"pyproject.toml": f'[project]\nname = "{self.name}"\nversion = "0.1.0"\n\n'
                    f'[tool.pytest.ini_options]\npythonpath = ["{where}"]\n'
                    + (f'testpaths = ["{tests}"]\n' if tests else "")}
        if self.config == "setup.cfg":
            return {"setup.cfg": f"[metadata]\nname = {self.name}\nversion = 0.1.0\n\n[tool:pytest]\n"
                    f"pythonpath = {where}\n" + (f"testpaths = {tests}\n" if tests else "")}
        if self.config == "pytest.ini":
            return {"pytest.ini": f"[pytest]\npythonpath = {where}\n"}
        return {"conftest.py": '"""pytest puts this directory on sys.path, so the tests import the code."""\n'}


def _layout(nm: _Namer, rng: random.Random) -> Layout | None:
    name = nm.noun() + (rng.choice(PACKAGE_SUFFIXES) if rng.random() < 0.6 else "")
    if name in sys.stdlib_module_names:  # "pathlib" would import the standard library's
        return None
    kind = rng.choices(("package", "src", "flat"), (5, 2, 2))[0]
    configs = ("pyproject", "setup.cfg", "pytest.ini") + (() if kind == "src" else ("conftest",))
    config = rng.choices(configs, (6, 2, 1, 1)[:len(configs)])[0]
    return Layout(kind, name, config, root_tests=kind == "flat" and rng.random() < 0.5)


def _render_module(layout: Layout, module: _Module, modules: list[_Module]) -> str:
    deps = sorted({d for it in module.items for d in it.deps})
    by_module: dict[str, list[str]] = {}
    for d in deps:
        by_module.setdefault(_owner(modules, d).name, []).append(d)
    head = [f'"""{module.name.capitalize()} helpers."""']
    if by_module:
        head.append("")
        head += [f"from {layout.module(mod)} import {', '.join(names)}" for mod, names in sorted(by_module.items())]
    blocks = ["\n".join(head)]
    consts = [line for it in module.items if it.kind == "constant" for line in it.lines]
    if consts:
        blocks.append("\n".join(consts))
    defs = [it.source for it in module.items if it.kind != "constant"]
    return "\n\n".join(blocks) + "\n\n\n" + "\n\n".join(defs)


def _test_name(item: _Item) -> str:
    return f"test_{item.name.lower()}"


def _render_tests(layout: Layout, module: _Module, values: dict) -> str:
    names = ", ".join(it.name for it in module.items)
    parts = [f"from {layout.module(module.name)} import {names}"]
    for it in module.items:
        body = "\n".join(f"    assert {call} == {values[call]!r}" for call in it.calls)
        parts.append(f"def {_test_name(it)}():\n{body}")
    return "\n\n\n".join(parts) + "\n"


def _render_repo(layout: Layout, modules: list[_Module]) -> dict[str, str]:
    values = _evaluate(modules)
    files = layout.config_files()
    if layout.kind != "flat":
        files[layout.path("__init__")] = f'"""The {layout.name} package."""\n'
    for m in modules:
        files[layout.path(m.name)] = _render_module(layout, m, modules)
        files[layout.test_path(m.name)] = _render_tests(layout, m, values)
    return files


# --- tasks -------------------------------------------------------------------


def _check_header(layout: Layout, module: str, names: list[str]) -> str:
    return (f"import inspect\nimport pathlib\nimport re\n\nfrom {layout.module(module)} import {', '.join(names)}\n\n"
            "ROOT = pathlib.Path(__file__).resolve().parents[1]\n")


def _rename(nm, rng, layout, modules, files, values) -> tuple[str, dict, str, dict] | None:
    targets = [it for m in modules for it in m.items if it.kind in ("function", "class") and not it.sibling_of]
    with_sibling = [it for it in targets if any(s.sibling_of == it.name for m in modules for s in m.items)]
    used_elsewhere = [it for it in targets if any(it.name in d.deps for m in modules for d in m.items)]
    item = rng.choice(with_sibling if with_sibling and rng.random() < 0.7 else used_elsewhere or targets)
    new = nm.cls() if item.kind == "class" else nm.func()
    word = re.compile(rf"\b{item.name}\b")
    solution = {p: word.sub(new, text) for p, text in files.items() if word.search(text)}
    owner = _owner(modules, item.name).name
    sibling = next((s.name for m in modules for s in m.items if s.sibling_of == item.name), None)
    text = phrase(phrasing.RENAME, rng, {"old": item.name, "new": new, "path": layout.path(owner)},
                  {"symbol": item.kind})
    if sibling and rng.random() < 0.5:
        text += phrase(phrasing.KEEP_SIBLING, rng, {"sibling": sibling}, {})
    calls = "\n".join(f"    assert {word.sub(new, c)} == {values[c]!r}" for c in item.calls)
    kept = (f"    assert re.search(r'\\b{sibling}\\b', (ROOT / {layout.path(owner)!r}).read_text())\n"
            if sibling else "")
    check = _check_header(layout, owner, [new]) + (
        f"\n\ndef test_renamed():\n{calls}\n"
        "    hits = [str(p) for p in ROOT.rglob('*.py')\n"
        f"            if p.name != 'test_nano_check.py' and re.search(r'\\b{item.name}\\b', p.read_text())]\n"
        f"    assert not hits, hits\n{kept}"
    )
    return text, solution, check, {"symbol": item.kind, "old": item.name, "new": new}


def _change_constant(nm, rng, layout, modules, files, values):
    consts = [(m, it) for m in modules for it in m.items if it.kind == "constant"]
    if not consts:
        return None
    module, item = rng.choice(consts)
    old = int(item.lines[0].split(" = ")[1])
    new = rng.choice([v for v in range(2, 100) if v != old])
    path, test_path = layout.path(module.name), layout.test_path(module.name)
    line, new_line = f"{item.name} = {old}", f"{item.name} = {new}"
    pin, new_pin = f"assert {item.name} == {old}", f"assert {item.name} == {new}"
    changed = [_Module(m.name, [dataclasses.replace(it, lines=[new_line]) if it is item else it for it in m.items])
               for m in modules]
    new_values = _evaluate(changed)
    tests = files[test_path].replace(pin, new_pin)
    follow = []  # (line number, expected before, value after) of each test assert the change breaks, in file order
    for it in module.items:
        for call in it.calls:
            if it.uses == item.name:
                assert_line = f"assert {call} == {values[call]!r}"
                number = tests.splitlines().index(f"    {assert_line}") + 1
                follow.append((number, values[call], new_values[call]))
                tests = tests.replace(assert_line, f"assert {call} == {new_values[call]!r}")
    solution = {path: files[path].replace(line, new_line), test_path: tests}
    text = phrase(phrasing.CHANGE_CONSTANT, rng, {"name": item.name, "path": path}, {"old": str(old), "new": str(new)})
    check = _check_header(layout, module.name, [item.name]) + (
        f"\n\ndef test_constant():\n    assert {item.name} == {new}\n"
        f"    assert {new_pin!r} in (ROOT / {test_path!r}).read_text()\n"
    )
    facts = {"name": item.name, "path": path, "test_path": test_path, "value": old, "new_value": new,
             "line": line, "new_line": new_line, "pin": pin, "new_pin": new_pin, "follow": follow}
    return text, solution, check, facts


def _fix_off_by_one(nm, rng, layout, modules, files, values):
    buggy = [(m, it) for m in modules for it in m.items if it.bug]
    if not buggy:
        return None
    module, item = rng.choice(buggy)
    index, bad, detail = item.bug
    good = item.lines[index]
    path = layout.path(module.name)
    if files[path].count(good) != 1:
        return None
    files[path] = files[path].replace(good, bad)  # the base repo carries the bug; its test fails
    solution = {path: files[path].replace(bad, good)}
    text = phrase(phrasing.FIX_OFF_BY_ONE, rng, {"function": item.name, "path": path, "test": _test_name(item)},
                  {"detail": detail})
    calls = "\n".join(f"    assert {c} == {values[c]!r}" for c in item.calls)
    check = _check_header(layout, module.name, [item.name]) + f"\n\ndef test_fixed():\n{calls}\n"
    return text, solution, check, {"function": item.name, "path": path, "bad_line": bad, "good_line": good}


def _add_parameter(nm, rng, layout, modules, files, values):
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
    path = layout.path(module.name)
    solution = {path: files[path].replace(old_src, new_src)}
    use = "multiply the returned value by it" if multiply else "add it to the returned value"
    text = phrase(phrasing.ADD_PARAMETER, rng, {"function": item.name, "path": path, "param": param},
                  {"default": str(default), "use": use})
    call = item.calls[0]
    base = values[call]
    expected = base * factor if multiply else base + factor
    with_param = f"{call[:-1]}, {param}={factor})"
    check = _check_header(layout, module.name, [item.name]) + (
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
        layout = _layout(nm, rng)
        if layout is None:
            continue
        modules = _make_modules(nm, rng)
        files = _render_repo(layout, modules)
        values = _evaluate(modules)
        made = _MAKERS[kind](nm, rng, layout, modules, files, values)
        if made is not None:
            text, solution, check, facts = made
            return Task(f"{split}-{seed}", kind, text, files, solution, check,
                        {"package": layout.name, "layout": f"{layout.kind}/{layout.config}", **facts})
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
