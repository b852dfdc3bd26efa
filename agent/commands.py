"""The bodies of `loopcoder run / chat / replay / inspect`; cli.py only parses options.

Each returns the process exit code. Problems the user can fix raise one of
USER_ERRORS, which cli.py prints as a one-line error.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm

from loopcoder.agent.config import Config, ConfigError, load_config
from loopcoder.agent.interrupts import interrupt_once
from loopcoder.agent.outcome import EXIT_CODES, Status
from loopcoder.agent.prompting import PromptError
from loopcoder.agent.session import default_trajectory_path, make_backend, open_workspace, run_task, start_agent
from loopcoder.agent.trajectory import TrajectoryError, load
from loopcoder.agent.view import LiveView, show_patch, show_trajectory
from loopcoder.runtime.backends.base import BackendError
from loopcoder.runtime.backends.replay import ReplayScriptError
from loopcoder.workspace.repo import RepoError, WorkingCopy, check_repository
from loopcoder.workspace.sandbox import SandboxError

USER_ERRORS = (ConfigError, RepoError, BackendError, PromptError, ReplayScriptError, TrajectoryError, SandboxError)


FLAG_KEYS = {"model": "backend.model", "backend": "backend.name", "script": "backend.script",
             "sandbox": "sandbox.kind", "image": "sandbox.image", "max_steps": "agent.max_steps",
             "in_place": "workspace.in_place", "compile": "backend.compile"}


def flag_overrides(**flags) -> dict[str, str]:
    """Command-line flags as `section.key=value` overrides -> the flag as the user typed it (unset flags skipped)."""
    out = {}
    for name, value in flags.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        out[f"{FLAG_KEYS[name]}={value}"] = flag if value is True else f"{flag} {value}"
    if flags.get("script") and not flags.get("backend"):
        out["backend.name=replay"] = f"--script {flags['script']}"
    return out


def configure(config_file: str | None, sets: list[str], **flags) -> Config:
    """The effective config; an error about a flag's value quotes the flag as typed, not its `--set` form."""
    overrides = flag_overrides(**flags)
    try:
        return load_config(config_file, [*sets, *overrides])
    except ConfigError as error:
        message = str(error)
        for item, typed in overrides.items():
            message = message.replace(f"--set {item}", typed)
        raise ConfigError(message) from None


def check_task(task: str) -> None:
    """A one-line ConfigError when the task says nothing to do."""
    if not task.strip():
        raise ConfigError('the task is empty: say what to do, e.g. loopcoder run "Make test_add pass"')


def run_command(task: str, repo: str, config: Config, yes: bool, output: str | None,
                trajectory: str | None) -> int:
    """One autonomous run, shown live; then the diff, and an offer to apply it."""
    console = Console()
    view = LiveView(console)
    traj_path = Path(trajectory) if trajectory else default_trajectory_path(config, repo)
    check_repository(repo)
    try:
        with interrupt_once():
            with console.status("loading the model..."):
                backend = make_backend(config)
            try:
                result = run_task(backend, repo, config, {"kind": "interactive", "text": task}, traj_path, view)
            finally:
                backend.close()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: nothing was changed in your repository")
        return EXIT_CODES[Status.INTERRUPTED]
    view.show_result(result, str(traj_path))
    deliver(console, result.patch, repo, config, yes, output, traj_path.with_suffix(".patch"),
            offer=result.status != Status.INTERRUPTED)
    return result.exit_code


def deliver(console: Console, patch: str, repo: str, config: Config, yes: bool, output: str | None,
            fallback: Path, offer: bool = True) -> None:
    """Save the patch, and apply it to the user's working tree when asked (--yes, or yes at the prompt).

    Never blocks without a terminal, and never loses the patch: when applying
    fails the user's files are left as they were and the patch file stays.
    """
    if not patch:
        return
    if config.workspace.in_place:
        console.print("[dim]the changes are already in your working tree (--in-place)[/]")
        return
    saved = Path(output) if output else fallback
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(patch, encoding="utf-8")
    interactive = sys.stdin.isatty() and not yes
    where = escape(str(Path(repo).resolve()))
    if not offer or not (yes or (interactive and Confirm.ask(f"Apply this patch to {where}?", default=False))):
        console.print(f"patch saved to [bold]{escape(str(saved))}[/]; apply it with: git apply {escape(str(saved))}")
        return
    with WorkingCopy.create(repo, in_place=True) as tree:
        outcome = tree.apply_patch(patch)
    if outcome.applied:
        console.print(f"[green]applied[/] to {escape(str(tree.path))} ({outcome.method}); patch kept at {escape(str(saved))}")
    else:
        console.print(f"[red]the patch did not apply[/]; your files are unchanged. The patch is at "
                      f"[bold]{escape(str(saved))}[/].\n{escape(outcome.summary())}")


def chat_command(repo: str, config: Config, yes: bool, trajectory: str | None) -> int:
    """A multi-turn session: one backend (and its KV cache) and one working copy for every turn."""
    console = Console()
    traj_path = Path(trajectory) if trajectory else default_trajectory_path(config, repo)
    check_repository(repo)
    try:
        with interrupt_once() as interrupts:
            with console.status("loading the model..."):
                backend = make_backend(config)
            try:
                patch = _converse(console, backend, repo, config, traj_path, interrupts.rearm)
            finally:
                backend.close()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_CODES[Status.INTERRUPTED]
    show_patch(console, patch)
    console.print(f"[dim]trajectory: {escape(str(traj_path))}[/]")
    deliver(console, patch, repo, config, yes, None, traj_path.with_suffix(".patch"))
    return 0


def _converse(console: Console, backend, repo: str, config: Config, traj_path: Path, rearm) -> str:
    """Read user turns until /exit or Ctrl-D; Ctrl-C during a turn stops that turn only. Returns the diff."""
    view = LiveView(console)
    with open_workspace(repo, config) as ws:
        agent = start_agent(backend, ws, config, traj_path, {"kind": "chat"}, view, chat=True)
        console.print(f"[dim]working copy: {escape(str(ws.copy.path))} - /diff shows the changes, /exit or Ctrl-D ends[/]")
        while (text := _ask(console)) is not None and text != "/exit":
            if text == "/diff":
                show_patch(console, ws.env.diff())
            elif text:
                result = agent.run(text)
                rearm()
                view.end_text()
                view.show_outcome(result)
        return ws.env.diff()


def _ask(console: Console) -> str | None:
    """The next user line; None on Ctrl-D or Ctrl-C at the prompt."""
    try:
        return console.input("[bold green]> [/]").strip()
    except (EOFError, KeyboardInterrupt):
        console.print()
        return None


def replay_command(path: str, repo: str | None, sandbox: str | None, image: str | None,
                   trajectory: str | None) -> int:
    """Replay a trajectory; 0 when the final diff is the recorded one, 1 (with a summary) when not."""
    from loopcoder.agent.replay import replay

    console = Console()
    view = LiveView(console)
    data = load(path)
    overrides = {"sandbox": {k: v for k, v in (("kind", sandbox), ("image", image)) if v}}
    try:
        with interrupt_once():
            outcome = replay(data, repo, overrides, Path(trajectory) if trajectory else None, view)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_CODES[Status.INTERRUPTED]
    view.end_text()
    console.print(f"replayed: {escape(outcome.result.summary())}")
    style = "green" if outcome.same else "red"
    console.print(f"[{style}]{escape(outcome.summary())}[/]")
    if trajectory:
        console.print(f"[dim]trajectory: {escape(trajectory)}[/]")
    return 0 if outcome.same else 1


def inspect_command(path: str, full: bool) -> int:
    show_trajectory(Console(), load(path), full=full)
    return 0
