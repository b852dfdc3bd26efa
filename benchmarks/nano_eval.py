"""loopcoder-nano on held-out or hand-written tasks, end to end through the real agent (plt backend, greedy, CPU).

    .venv/bin/python benchmarks/nano_eval.py [--model checkpoints/loopcoder-nano] [--count 50] [--seed 0] [--quantize int8]
    .venv/bin/python benchmarks/nano_eval.py --set handwritten [--set sampling.constrained_tool_calls=false]

`--set` names the task set (heldout, the default; train; handwritten) or,
as KEY=VALUE, overrides the config. Held-out tasks use word lists and repos
the training data never saw; --seed picks another run of seeds (unseen as
well). The hand-written set (benchmarks/handwritten/) is 46 tasks written
without the generator, on repositories of ordinary shapes, in users' words;
--count takes its first N. Prints one line per task, then a table per task
kind (solved, steps, malformed calls: unparseable, unknown tool, arguments
off the tool's schema) and a summary: solve rate, steps, generated and
prefilled tokens, seconds per task. --out writes the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TASK_SETS = ("heldout", "train", "handwritten")
CAUSES = ("unparseable", "unknown tool", "off schema")


def split_sets(values: list[str]) -> tuple[str, list[str]]:
    """--set values: (the one task set named, the KEY=VALUE config overrides)."""
    names = [v for v in values if "=" not in v]
    unknown = [n for n in names if n not in TASK_SETS]
    if unknown or len(names) > 1:
        sys.exit(f"error: --set {(unknown or names)[0]!r} is neither KEY=VALUE nor one task set of "
                 f"{', '.join(TASK_SETS)}; name one set at most")
    return (names[0] if names else ""), [v for v in values if "=" in v]


def malformed_causes(trajectory: dict) -> Counter:
    """A trajectory's malformed calls by cause; they add up to nano.evaluate.malformed_calls."""
    from jsonschema import Draft202012Validator

    schemas = {t["function"]["name"]: t["function"].get("parameters") or {} for t in trajectory["tools"]}
    causes: Counter = Counter()
    for step in trajectory["steps"]:
        causes["unparseable"] += len(step["parse_errors"])
        for call in step["calls"]:
            schema = schemas.get(call["name"])
            if schema is None:
                causes["unknown tool"] += 1
            elif not Draft202012Validator(schema).is_valid(call["arguments"]):
                causes["off schema"] += 1
    return causes


def kind_table(rows: list[dict]) -> str:
    """A markdown table per task kind: solved, mean steps, malformed calls by cause."""
    lines = ["| kind | solved | steps | malformed: unparseable | unknown tool | off schema |", "|---|---|---|---|---|---|"]
    kinds = sorted({r["kind"] for r in rows})
    for kind in [*kinds, "all"]:
        mine = [r for r in rows if kind in ("all", r["kind"])]
        solved = sum(r["solved"] for r in mine)
        steps = sum(r["steps"] for r in mine) / len(mine)
        cause = [sum(r["malformed"][c] for r in mine) for c in CAUSES]
        label = f"**{solved}/{len(mine)}**" if kind == "all" else f"{solved}/{len(mine)}"
        lines.append(f"| {kind} | {label} | {steps:.1f} | " + " | ".join(map(str, cause)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "loopcoder-nano"))
    parser.add_argument("--count", type=int, help="number of tasks (default: 50 generated; every hand-written one)")
    parser.add_argument("--seed", type=int, default=0, help="first task seed (generated sets)")
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"], help="same as --set heldout|train")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", choices=["int8", "int4"], help="load the model weight-only quantized")
    parser.add_argument("--out", help="write the summary JSON here")
    parser.add_argument("--trajectories", help="keep every run's trajectory in this directory")
    parser.add_argument("--set", action="append", default=[], metavar="SET|KEY=VALUE",
                        help="task set (heldout, train, handwritten) or a config override, "
                             "e.g. --set sampling.constrained_tool_calls=false")
    args = parser.parse_args()
    task_set, overrides = split_sets(args.set)
    task_set = task_set or args.split

    import torch

    from nano.evaluate import eval_config, evaluate, summarize
    from loopcoder.agent.session import make_backend

    if task_set == "handwritten":
        from benchmarks.handwritten import TaskFileError, check_patch, load_tasks

        try:
            tasks, judge = load_tasks()[:args.count], check_patch
        except TaskFileError as exc:
            sys.exit(f"error: {exc}")
    else:
        from nano.record import check_patch
        from nano.tasks import generate_task

        count = 50 if args.count is None else args.count
        tasks, judge = (generate_task(task_set, s) for s in range(args.seed, args.seed + count)), check_patch

    torch.set_num_threads(args.threads)
    quantize = (f"backend.quantize={args.quantize}",) if args.quantize else ()
    config = eval_config(args.model, quantize + tuple(overrides))
    backend = make_backend(config)
    scratch = tempfile.TemporaryDirectory(prefix="nano-eval-trajectories-")
    keep = Path(args.trajectories or scratch.name)
    keep.mkdir(parents=True, exist_ok=True)
    outcomes, rows = [], []
    for task in tasks:
        outcome = evaluate(backend, task, config, keep, judge)
        outcomes.append(outcome)
        causes = malformed_causes(json.loads((keep / f"{task.id}.json").read_text()))
        rows.append({"kind": task.kind, "solved": outcome.solved, "steps": outcome.steps, "malformed": causes})
        mark = "solved" if outcome.solved else f"FAILED ({outcome.status})"
        print(f"{task.id:<30} {task.kind:<16} {mark:<24} steps {outcome.steps:>2}  generated {outcome.generated_tokens:>4}"
              f"  prefilled {outcome.prefilled_tokens:>5}  malformed {outcome.malformed_calls}  {outcome.seconds:6.1f}s", flush=True)
    scratch.cleanup()
    summary = summarize(outcomes)
    by_kind = ", ".join(f"{k} {v:.0%}" for k, v in summary["by_kind"].items())
    settings = " ".join(f"--set {o}" for o in overrides)
    print(f"\n{task_set} tasks, {args.model} {settings}\n{kind_table(rows)}")
    print(f"\nsolved {summary['solved']}/{summary['tasks']} = {summary['solve_rate']:.0%} ({by_kind}); "
          f"per task: {summary['mean_steps']} steps, {summary['mean_generated_tokens']} generated tokens, "
          f"{summary['mean_prefilled_tokens']} prefilled tokens, {summary['mean_seconds']} s; "
          f"malformed calls: {summary['malformed_calls']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "set": task_set, "seed": args.seed,
                                              "overrides": overrides, "table": kind_table(rows), **summary},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
