"""`loopcoder`: the command line. Thin: parse options, call the packages, print.

Each command imports what it needs inside its body so `loopcoder --help`
stays fast and a missing optional piece only affects its own command.
"""
from __future__ import annotations

import typer

app = typer.Typer(
    name="loopcoder",
    help="LoopCoder: a coding agent driven by an in-process Parallel Loop Transformer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="Inspect, create and train PLT checkpoints.", no_args_is_help=True)
app.add_typer(model_app, name="model")
swebench_app = typer.Typer(help="SWE-bench-style batch runs and evaluation.", no_args_is_help=True)
app.add_typer(swebench_app, name="swebench")


def fail(message: str, code: int = 2) -> None:
    """Print a user-facing error (what went wrong, what to do) and exit."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# --- model commands (issue: PLT model) -------------------------------------

# --- generate (issue: chat layer) ------------------------------------------

# --- run / chat / replay / inspect (issue: agent) ---------------------------

# --- swebench / refactor (issue: batch) --------------------------------------

# --- serve (issue: serve) ----------------------------------------------------


if __name__ == "__main__":
    app()
