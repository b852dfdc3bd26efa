"""Wiring for one run: backend, working copy, sandbox, tools, trajectory; and the clean-up.

The working copy starts from the user's current state: HEAD plus their
uncommitted work, frozen in a snapshot commit object (no ref, nothing written
to the user's branches or index). The agent's patch is the diff against that
snapshot, so it holds only the agent's changes and applies to the user's
working tree as it is. The trajectory records HEAD and the carried changes so
`loopcoder replay` can rebuild the same start.

Clean-up (sandbox, container, temporary copy) runs with interrupts deferred:
a second Ctrl-C cannot leave a half-removed copy behind.
"""
from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from loopcoder.agent.config import Config, ConfigError
from loopcoder.agent.environment import Environment
from loopcoder.agent.interrupts import deferred_interrupts
from loopcoder.agent.loop import Agent, Listener, RunResult
from loopcoder.agent.prompting import system_prompt, system_template, task_prompt
from loopcoder.agent.trajectory import Trajectory
from loopcoder.runtime.backends import IN_PROCESS
from loopcoder.workspace.repo import RepoError, WorkingCopy


@dataclass
class Workspace:
    """Where a run acts: its environment (sandbox, tools, diff) and what the trajectory records of its start.

    `open_workspace` makes one over a copy of the user's repository (`copy` is that copy); a SWE-bench
    instance's is made over the instance's environment (batch/swebench/run.py).
    """

    env: Environment
    start: dict  # the trajectory's "repo" record, less the workdir
    copy: WorkingCopy | None = None

    @property
    def workdir(self) -> str:
        return self.env.sandbox.workdir

    def record(self) -> dict:
        return {**self.start, "workdir": self.workdir}


def make_backend(config: Config):
    """The configured backend; errors say which option to fix."""
    from loopcoder.runtime.backends import create_backend

    b = config.backend
    if b.name == "replay":
        if not b.script:
            raise ConfigError("the replay backend needs a script: --script FILE (JSON list of outputs, JSONL or a trajectory)")
        return create_backend("replay", script=b.script, context_window=config.context.window or 32768)
    if b.name == "openai":
        return create_backend("openai", base_url=b.base_url, model=b.model, context_window=config.context.window)
    if not b.model:
        raise ConfigError(f"the {b.name} backend needs a model: --model PATH (a checkpoint directory)")
    extra = {**({"quantize": b.quantize} if b.quantize else {}), **({"compile": True} if b.compile else {})}
    return create_backend(b.name, model_path=b.model, device=b.device, dtype=b.dtype, **extra)


def make_sandbox(config: Config, path: Path, shown_as: str | None = None):
    """The configured sandbox over the working copy at `path` (bind-mounted at /testbed in Docker, at
    `shown_as` in bubblewrap when given).

    kind "none" runs commands as plain processes: the same environment allow-list and limits, no isolation.
    In-place runs get the repository's .git read-only, so nothing in it (config, hooks) can be planted.
    """
    from loopcoder.workspace.limits import Limits
    from loopcoder.workspace.sandbox import SandboxError

    s = config.sandbox
    try:
        limits = Limits.from_settings(s.memory, s.pids, s.cpus, s.file_size)
    except SandboxError as error:
        raise ConfigError(str(error)) from None
    common = {"network": s.network, "limits": limits, "passthrough_env": s.env, "command_timeout": s.command_timeout,
              "protect_git": config.workspace.in_place}
    if s.kind == "docker":
        from loopcoder.workspace.docker_sandbox import BASE_IMAGE, DockerSandbox

        return DockerSandbox(s.image or BASE_IMAGE, copy_from=path, mount=True, **common)
    from loopcoder.workspace.local import LocalSandbox

    return LocalSandbox(path, isolate=s.kind != "none", shown_as=shown_as, **common)


@contextlib.contextmanager
def open_workspace(repo: str | Path, config: Config, commit: str | None = None,
                   carried_patch: str | None = None) -> Iterator[Workspace]:
    """A working copy with a sandbox and tools; removed on exit, whatever happens.

    Without `commit` the copy starts from the user's current state (HEAD plus
    uncommitted work); with `commit` (and optionally `carried_patch`, as a
    replay does) it starts from that commit plus that patch.
    """
    from loopcoder.tools import default_tools

    in_place = config.workspace.in_place
    stack = contextlib.ExitStack()
    try:
        copy = WorkingCopy.create(repo, commit, carry_changes=commit is None and not in_place, in_place=in_place)
        stack.callback(copy.close)
        head = copy.base_commit
        if carried_patch:
            result = copy.apply_patch(carried_patch)
            if not result.applied:
                raise RepoError(f"the recorded uncommitted changes do not apply to {head[:12]}: {result.summary()}")
        copy.base_commit = copy.snapshot()
        carried = "" if copy.base_commit == head else copy.diff(against=head)
        sandbox = make_sandbox(config, copy.path, copy.shown_as)
        stack.callback(sandbox.close)
        base = copy.base_commit
        # from here on the copy's .git is the model's: the diff is computed inside the sandbox
        env = Environment(sandbox, default_tools(config.agent.max_consecutive_timeouts), lambda: sandbox.diff(base))
        # head: the user's HEAD, what the trajectory calls the base commit; carried: the uncommitted work the copy
        # started with ("" when clean)
        yield Workspace(env, {"path": str(copy.source), "base_commit": head, "carried_patch": carried,
                              "in_place": copy.in_place}, copy)
    finally:
        with deferred_interrupts("removing the sandbox and the working copy, please wait..."):
            stack.close()


def default_trajectory_path(config: Config, repo: str | Path) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(repo).resolve().name) or "repo"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(config.run.output_dir).expanduser() / f"{stamp}-{name}-{os.getpid()}" / "trajectory.json"


def start_agent(backend, ws: Workspace, config: Config, trajectory_path: Path | None, task: dict,
                listener: Listener | None = None, chat: bool = False) -> Agent:
    """An agent on this workspace with its trajectory; `task` is recorded as given."""
    env = ws.env
    trajectory = Trajectory(trajectory_path, config.to_dict(), task, ws.record(),
                            {"name": backend.name, "context_window": backend.context_window}, env.schemas())
    model_dir = config.backend.model if config.backend.name in IN_PROCESS else None
    template = system_template(config.prompts.system, model_dir)
    system = system_prompt(template, ws.workdir, chat=chat)
    return Agent(backend, env, config, trajectory, system, listener, chat=chat)


def run_task(backend, repo: str | Path, config: Config, task: dict, trajectory_path: Path | None,
             listener: Listener | None = None, commit: str | None = None) -> RunResult:
    """One autonomous run on `task` ({"kind": interactive|swebench|refactor, plus the template's fields})."""
    with open_workspace(repo, config, commit) as ws:
        agent = start_agent(backend, ws, config, trajectory_path, task, listener)
        fields = {k: v for k, v in task.items() if k != "kind"}
        template = config.prompts.task if task["kind"] == "interactive" else task["kind"]
        return agent.run(task_prompt(template, workdir=ws.workdir, **fields))
