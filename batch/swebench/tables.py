"""Rich renderings of batch results: the evaluation table and the batch-run progress line."""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from loopcoder.batch.swebench.eval import Outcome

if TYPE_CHECKING:
    from loopcoder.batch.swebench.run import RunOutcome  # not imported at run time: eval needs no agent core

STYLE = {"resolved": "green", "unresolved": "yellow", "not_applied": "red", "empty_patch": "dim", "error": "bold red"}


def _ratio(block: dict) -> str:
    total = len(block["success"]) + len(block["failure"])
    return f"{len(block['success'])}/{total}" if total else "-"


def eval_table(outcomes: list[Outcome], summary: dict) -> Table:
    table = Table(title=f"resolved {summary['resolved_instances']}/{summary['total_instances']}", title_justify="left")
    table.add_column("instance", no_wrap=True)
    for name in ("status", "applied with", "F2P", "P2P", "notes"):
        table.add_column(name)
    table.add_column("s", justify="right")
    for o in outcomes:
        entry = (o.report or {}).get(o.instance_id, {})
        tests = entry.get("tests_status")
        notes = []
        if o.test_files_touched:
            notes.append(f"edits test files: {', '.join(o.test_files_touched)}")
        if o.error:
            notes.append(o.error.splitlines()[0][:120])
        table.add_row(o.instance_id, Text(o.status, style=STYLE.get(o.status, "")), o.apply_method or "-",
                      _ratio(tests["FAIL_TO_PASS"]) if tests else "-", _ratio(tests["PASS_TO_PASS"]) if tests else "-",
                      "; ".join(notes), f"{o.seconds:.1f}")
    return table


class RunCounters:
    """The live batch-run line (done, patches, errors, elapsed); updated from worker threads."""

    def __init__(self, total: int, skipped: int):
        self.total, self.skipped = total, skipped
        self.done = self.patches = self.errors = 0
        self.statuses: dict[str, int] = {}  # outcome words (agent/outcome.py) -> instances
        self.start = time.monotonic()
        self._lock = threading.Lock()

    def start_run(self, todo: int, skipped: int) -> None:
        self.total, self.skipped = todo, skipped

    def add(self, outcome: RunOutcome) -> None:
        with self._lock:
            self.done += 1
            self.patches += bool(outcome.patch.strip())
            self.errors += outcome.error is not None
            self.statuses[outcome.status] = self.statuses.get(outcome.status, 0) + 1

    def __rich__(self) -> Text:
        elapsed = int(time.monotonic() - self.start)
        outcomes = "".join(f"  {status} {count}" for status, count in sorted(self.statuses.items()))
        return Text(f"done {self.done}/{self.total}  patches {self.patches}  errors {self.errors}{outcomes}  "
                    f"already done {self.skipped}  elapsed {elapsed // 60}:{elapsed % 60:02d}")
