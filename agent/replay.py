"""Re-run a recorded trajectory without a model and check that it ends with the same diff.

The recorded raw outputs go back through the same agent loop (via the replay
backend) in a fresh working copy at the recorded base commit plus the
recorded uncommitted changes. Limits that depend on the clock, the tokenizer
or the machine (time, tokens, stuck and timeout detection) are lifted: the
script itself ends where the original run ended, and then submits.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from loopcoder.agent.config import from_dict
from loopcoder.agent.loop import Listener, RunResult
from loopcoder.agent.outcome import Status
from loopcoder.agent.session import open_workspace, start_agent
from loopcoder.agent.trajectory import TrajectoryError
from loopcoder.runtime.backends.replay import ReplayBackend

UNLIMITED = 10**12


@dataclass
class ReplayOutcome:
    result: RunResult
    recorded_patch: str
    same: bool

    def summary(self, lines: int = 40) -> str:
        """What differs between the recorded and the replayed patch."""
        if self.same:
            return f"same diff ({_files(self.recorded_patch)})"
        delta = list(difflib.unified_diff(self.recorded_patch.splitlines(), self.result.patch.splitlines(),
                                          "recorded.patch", "replayed.patch", lineterm="", n=1))
        more = f"\n... ({len(delta) - lines} more lines)" if len(delta) > lines else ""
        return (f"the diffs differ: recorded {_files(self.recorded_patch)}, replayed {_files(self.result.patch)}\n"
                + "\n".join(delta[:lines]) + more)


def _files(patch: str) -> str:
    n = sum(1 for line in patch.splitlines() if line.startswith("diff --git "))
    return f"{n} file{'s' if n != 1 else ''} changed"


def replay(data: dict, repo: str | Path | None = None, overrides: dict | None = None,
           trajectory_path: Path | None = None, listener: Listener | None = None) -> ReplayOutcome:
    """Replay `data` (a loaded trajectory) on `repo` (default: the recorded repository path)."""
    try:
        recorded_repo, steps, inputs = data["repo"], data["steps"], data["inputs"]
        config = from_dict(data["config"])
    except (KeyError, TypeError) as exc:
        raise TrajectoryError(f"the trajectory lacks what a replay needs ({exc})") from exc
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            setattr(getattr(config, section), key, value)
    config.workspace.in_place = False
    a = config.agent
    a.max_seconds = a.max_tokens = a.stuck_repeats = a.max_consecutive_timeouts = UNLIMITED
    old_workdir = recorded_repo["workdir"]
    with open_workspace(repo or recorded_repo["path"], config, commit=recorded_repo["base_commit"],
                        carried_patch=recorded_repo.get("carried_patch") or None) as ws:
        moved = _mover(old_workdir, ws.workdir)
        backend = ReplayBackend([moved(step["raw_output"]) for step in steps],
                                context_window=data.get("backend", {}).get("context_window") or 32768)
        agent = start_agent(backend, ws, config, trajectory_path, {**data["task"], "replay_of": data.get("created")},
                            listener, chat=data["task"].get("kind") == "chat")
        result = None
        for item in inputs:
            result = agent.run(moved(item["text"]))
            if result.status not in (Status.REPLIED, Status.SUBMITTED, Status.NO_CHANGE):
                break
    if result is None:
        raise TrajectoryError("the trajectory has no user input to replay")
    recorded = data.get("patch") or ""
    return ReplayOutcome(result, recorded, result.patch == recorded)


def _mover(old: str, new: str):
    """Rewrite the recorded working copy's path to the new one (commands and prompts may name it)."""
    if not old or old == new:
        return lambda text: text
    return lambda text: text.replace(old, new)
