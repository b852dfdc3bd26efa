"""loopcoder-nano on held-out tasks, end to end through the real agent (plt backend, greedy, CPU).

    .venv/bin/python benchmarks/nano_eval.py [--model checkpoints/loopcoder-nano] [--count 50] [--seed 0] [--quantize int8]

Held-out tasks use word lists and repos the training data never saw; --seed
picks another run of seeds (unseen as well). Prints one line per task and a
summary: solve rate (overall and per task kind), steps, generated and
prefilled tokens, seconds per task, and malformed tool calls. --out writes the summary as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "checkpoints" / "loopcoder-nano"))
    parser.add_argument("--count", type=int, default=50, help="number of tasks")
    parser.add_argument("--seed", type=int, default=0, help="first task seed")
    parser.add_argument("--split", default="heldout", choices=["heldout", "train"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quantize", choices=["int8", "int4"], help="load the model weight-only quantized")
    parser.add_argument("--out", help="write the summary JSON here")
    parser.add_argument("--trajectories", help="keep every run's trajectory in this directory")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. --set sampling.constrained_tool_calls=false")
    args = parser.parse_args()

    import torch

    from nano.evaluate import eval_config, evaluate, summarize
    from nano.tasks import generate_task
    from agent.session import make_backend

    torch.set_num_threads(args.threads)
    quantize = (f"backend.quantize={args.quantize}",) if args.quantize else ()
    config = eval_config(args.model, quantize + tuple(args.set))
    backend = make_backend(config)
    keep = Path(args.trajectories) if args.trajectories else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for seed in range(args.seed, args.seed + args.count):
        task = generate_task(args.split, seed)
        outcome = evaluate(backend, task, config, keep)
        outcomes.append(outcome)
        mark = "solved" if outcome.solved else f"FAILED ({outcome.status})"
        print(f"{task.id:<14} {task.kind:<16} {mark:<24} steps {outcome.steps:>2}  generated {outcome.generated_tokens:>4}"
              f"  prefilled {outcome.prefilled_tokens:>5}  malformed {outcome.malformed_calls}  {outcome.seconds:6.1f}s", flush=True)
    summary = summarize(outcomes)
    by_kind = ", ".join(f"{k} {v:.0%}" for k, v in summary["by_kind"].items())
    print(f"\nsolved {summary['solved']}/{summary['tasks']} = {summary['solve_rate']:.0%} ({by_kind}); "
          f"per task: {summary['mean_steps']} steps, {summary['mean_generated_tokens']} generated tokens, "
          f"{summary['mean_prefilled_tokens']} prefilled tokens, {summary['mean_seconds']} s; "
          f"malformed calls: {summary['malformed_calls']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "split": args.split, "seed": args.seed, **summary},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
