"""SWE-bench task instances in the official schema, loaded from files or the hub.

The official dataset stores FAIL_TO_PASS / PASS_TO_PASS as JSON strings;
files written by hand usually hold lists. Both are accepted and normalised to
lists, and every problem is reported with the instance and the field so a bad
line in a 2,000-instance file is easy to find.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

TEXT_FIELDS = (
    "instance_id", "repo", "base_commit", "patch", "test_patch", "problem_statement",
    "hints_text", "created_at", "version", "environment_setup_commit",
)
REQUIRED = ("instance_id", "repo", "base_commit", "problem_statement")
TEST_LISTS = ("FAIL_TO_PASS", "PASS_TO_PASS")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # becomes a directory and a file name
_REPO = re.compile(r"[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")
_COMMIT = re.compile(r"[0-9a-f]{7,40}")


class InstanceError(ValueError):
    """An instance file or record that cannot be used; the message names where and what."""


@dataclass(frozen=True)
class Instance:
    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str = ""
    test_patch: str = ""
    hints_text: str = ""
    created_at: str = ""
    version: str = ""
    environment_setup_commit: str = ""
    FAIL_TO_PASS: list[str] = field(default_factory=list)
    PASS_TO_PASS: list[str] = field(default_factory=list)

    @property
    def repo_dirname(self) -> str:
        """`owner__name`, the directory name a repo cache uses (and the instance-id prefix)."""
        return self.repo.replace("/", "__")

    def to_dict(self) -> dict:
        return asdict(self)


def _test_list(where: str, name: str, value: object) -> list[str]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise InstanceError(f"{where}: field {name!r} is a string but not a JSON list ({exc.msg})") from None
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InstanceError(f"{where}: field {name!r} must be a list of test names (or a JSON string holding one)")
    return value


def parse_instance(record: object, where: str) -> Instance:
    """Validate one record (a dict from JSON) into an Instance; `where` locates it in error messages."""
    if not isinstance(record, dict):
        raise InstanceError(f"{where}: expected a JSON object, got {type(record).__name__}")
    iid = record.get("instance_id")
    if isinstance(iid, str) and iid:
        where = f"{where} (instance {iid})"
    for name in REQUIRED:
        if not isinstance(record.get(name), str) or not record[name].strip():
            raise InstanceError(f"{where}: required field {name!r} is missing or empty")
    values: dict[str, object] = {}
    for name in TEXT_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        if isinstance(value, (int, float)) and name in ("version", "created_at"):
            value = str(value)  # the hub stores some versions as numbers
        if not isinstance(value, str):
            raise InstanceError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        values[name] = value
    for name in TEST_LISTS:
        if record.get(name) is not None:
            values[name] = _test_list(where, name, record[name])
    if not _ID.fullmatch(values["instance_id"]):
        raise InstanceError(f"{where}: field 'instance_id' may hold only letters, digits, '.', '_' and '-'")
    if not _REPO.fullmatch(values["repo"]):
        raise InstanceError(f"{where}: field 'repo' must look like 'owner/name'")
    if not _COMMIT.fullmatch(values["base_commit"]):
        raise InstanceError(f"{where}: field 'base_commit' must be a hex commit id (7 to 40 digits)")
    return Instance(**values)  # type: ignore[arg-type]


def _records(path: Path) -> list[tuple[str, object]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append((f"{path}:{n}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise InstanceError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InstanceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); use .jsonl for one object per line") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise InstanceError(f"{path}: expected a JSON list of instances")
    return [(f"{path}[{i}]", rec) for i, rec in enumerate(data)]


def _hub_records(name: str) -> list[tuple[str, object]]:
    dataset, _, split = name.partition(":")
    try:
        import datasets  # optional: only for hub names
    except ImportError:
        raise InstanceError(
            f"{name!r} is not a file, and loading a dataset by name needs the `datasets` package "
            "(pip install datasets); or pass a .json/.jsonl file of instances"
        ) from None
    try:
        rows = datasets.load_dataset(dataset, split=split or "test")
    except Exception as exc:  # offline, unknown name, bad split: all reported the same way
        raise InstanceError(f"could not load dataset {dataset!r} split {split or 'test'!r}: {exc}") from None
    return [(f"{dataset}[{i}]", dict(row)) for i, row in enumerate(rows)]


def load_instances(source: str | Path, filter: str | None = None) -> list[Instance]:
    """Instances from a .json/.jsonl file or a hub dataset name (`name[:split]`), optionally filtered.

    `filter` is a regular expression searched in each instance_id.
    """
    try:
        pattern = re.compile(filter) if filter else None
    except re.error as exc:
        raise InstanceError(f"--filter {filter!r} is not a valid regular expression: {exc}") from None
    path = Path(source)
    if path.is_file():
        records = _records(path)
    elif path.suffix in (".json", ".jsonl") or path.exists():
        raise InstanceError(f"{source}: no such instances file")
    else:
        records = _hub_records(str(source))
    instances, seen = [], set()
    for where, record in records:
        inst = parse_instance(record, where)
        if inst.instance_id in seen:
            raise InstanceError(f"{where}: duplicate instance_id {inst.instance_id!r}")
        seen.add(inst.instance_id)
        if pattern is None or pattern.search(inst.instance_id):
            instances.append(inst)
    return instances
