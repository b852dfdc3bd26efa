"""`python -m nano data --out DIR --count N`: record gold trajectories and write a training directory."""
from __future__ import annotations

import time
from pathlib import Path

import typer

app = typer.Typer(help="loopcoder-nano data.", no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """loopcoder-nano data."""


@app.command()
def data(
    out: Path = typer.Option(..., help="Training directory to write (recordings.jsonl, train.jsonl, tokenizer/)."),
    count: int = typer.Option(1500, help="Training tasks to record (seeds start..start+count)."),
    start: int = typer.Option(0, help="First seed."),
    jobs: int = typer.Option(2, help="Recordings run in parallel."),
    vocab: int = typer.Option(2048, help="Tokenizer vocabulary size."),
) -> None:
    """Record (resuming where a previous build stopped), render, and train the tokenizer."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from nano.build import record_all, write_training_dir

    failures = []
    t0 = time.time()
    with Progress(TextColumn("recording"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as progress:
        bar = progress.add_task("record", total=count)

        def done(rec: dict) -> None:
            progress.advance(bar)
            if not rec["ok"]:
                failures.append(rec["task_id"])

        record_all(out, "train", range(start, start + count), jobs, done)
    summary = write_training_dir(out, vocab)
    print(f"{summary['transcripts']} transcripts, {summary['failed']} failed recordings "
          f"({', '.join(failures[:10])}); {time.time() - t0:.0f}s -> {out}")


if __name__ == "__main__":
    app()
