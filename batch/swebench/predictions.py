"""Predictions files (`instance_id`, `model_name_or_path`, `model_patch`): read, gold, append-only writes.

A batch run may be killed at any moment, so each prediction is one line
written with a single write, flushed and fsynced under a lock: the file holds
whole lines plus at most one torn last line, which readers skip and the next
writer cuts off before appending.
"""
from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from loopcoder.batch.swebench.instances import Instance, InstanceError

KEYS = ("instance_id", "model_name_or_path", "model_patch")


def _check(record: object, where: str) -> dict:
    if not isinstance(record, dict) or not isinstance(record.get("instance_id"), str):
        raise InstanceError(f"{where}: a prediction must be an object with a string 'instance_id'")
    patch = record.get("model_patch")
    if patch is not None and not isinstance(patch, str):
        raise InstanceError(f"{where} (instance {record['instance_id']}): 'model_patch' must be a string or null")
    return {"instance_id": record["instance_id"], "model_name_or_path": str(record.get("model_name_or_path") or "unknown"),
            "model_patch": patch}


def read_jsonl(path: Path) -> list[dict]:
    """Whole JSON lines of a file being appended to; a torn last line is skipped."""
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n < len(lines):  # only the unterminated last line may be torn
                raise InstanceError(f"{path}:{n}: not valid JSON; fix or remove that line") from None
    return out


def load_predictions(source: str | Path, instances: list[Instance]) -> dict[str, dict]:
    """Predictions by instance_id from a .jsonl/.json file (list, or {id: prediction}), or `gold`."""
    if str(source) == "gold":
        return {i.instance_id: {"instance_id": i.instance_id, "model_name_or_path": "gold", "model_patch": i.patch}
                for i in instances}
    path = Path(source)
    if not path.is_file():
        raise InstanceError(f"{source}: no such predictions file (or pass `gold` to evaluate the reference patches)")
    if path.suffix == ".jsonl":
        records = [(f"{path}:{n}", r) for n, r in enumerate(read_jsonl(path), 1)]
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InstanceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        data = list(data.values()) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise InstanceError(f"{path}: expected a list of predictions or an object keyed by instance_id")
        records = [(f"{path}[{n}]", r) for n, r in enumerate(data)]
    out: dict[str, dict] = {}
    for where, record in records:
        pred = _check(record, where)
        out[pred["instance_id"]] = pred  # a later line wins, as when a run was repeated
    return out


class PredictionsWriter:
    """Append predictions to a JSONL file, one atomic line each, safe across threads and processes."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            if size:
                data = os.pread(fd, size, 0)
                keep = data.rfind(b"\n") + 1
                if keep < size:  # a torn line from a killed run: never completed, drop it
                    os.ftruncate(fd, keep)

    def done(self) -> set[str]:
        return {r["instance_id"] for r in read_jsonl(self.path) if isinstance(r, dict) and "instance_id" in r}

    def append(self, record: dict) -> None:
        line = (json.dumps({k: record[k] for k in KEYS}, ensure_ascii=False) + "\n").encode()
        with self._locked() as fd:
            start = os.fstat(fd).st_size
            written = os.write(fd, line)  # one write; a regular file takes it whole
            if written < len(line):  # disk full: take the partial line back out
                os.ftruncate(fd, start)
                raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)

    @contextmanager
    def _locked(self) -> Iterator[int]:
        with self._lock:  # threads of this process; flock orders other processes
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield fd
            finally:
                os.close(fd)  # also releases the flock
