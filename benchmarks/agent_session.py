"""What KV-cache reuse saves an agent: a 30-turn tool conversation through the plt backend.

An agent's prompt grows by one assistant tool call and one observation per
turn. With session reuse the backend prefills only those new tokens; without
it (a fresh `backend.spawn()` per turn) it prefills the whole history every
turn, so per-turn latency grows with the history. The conversation is
synthetic but shaped like a real run: the system prompt with the real tool
schemas, an issue, then calls rendered exactly as the model writes them
(`render_tool_call`) and observations of a few hundred tokens. Each turn the
model (random weights, a test tokenizer, built in a temp dir) decodes a few
tokens that the scripted call then replaces: at most the cache's rollback
slack, so the reused cache rolls back exactly instead of re-prefilling.

    .venv/bin/python benchmarks/agent_session.py            # small preset, 30 turns, ~6 min on one core
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ISSUE = """\
`parse_duration("1h30m")` returns 5400 but `parse_duration("1h 30m")` raises ValueError: invalid duration.
The docs say whitespace between units is allowed. Please fix `timeparse/durations.py` so both forms work,
and add a test. Do not change the public API."""

WORDS = ("value", "unit", "total", "parts", "match", "pattern", "seconds", "factor", "text", "token", "result",
         "index", "config", "logger", "cache", "items", "name", "offset", "buffer", "stream", "parser", "state")
FILES = ("timeparse/durations.py", "timeparse/__init__.py", "timeparse/units.py", "tests/test_durations.py",
         "tests/test_units.py", "timeparse/_compat.py", "docs/usage.rst", "setup.cfg")


def code_line(rng: random.Random) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return rng.choice((
        f"    {a} = {b}.get({c!r}, 0)",
        f"    if not {a}:\n        raise ValueError(f\"invalid {b}: {{{c}!r}}\")",
        f"def {a}_{b}({c}, {a}=None):",
        f"    for {a} in {b}.{c}():",
        f"        {a} += {rng.randint(1, 3600)} * {b}[{c}]",
        f"    return {a}.strip() or {b}",
        f"    {a} = re.compile(r\"(\\d+)\\s*({b}|{c})\")",
        f"class {a.title()}{b.title()}Error(ValueError):",
        f"    # {a} of each {b}, see {rng.choice(FILES)}",
    ))


def observation(rng: random.Random, tool: str, count_tokens, target: int) -> str:
    """Tool output of about `target` tokens, shaped like that tool's."""
    lines: list[str] = []
    path = rng.choice(FILES)
    while count_tokens("\n".join(lines)) < target:
        n = len(lines) + 1
        if tool == "search":
            lines.append(f"{rng.choice(FILES)}:{rng.randint(1, 400)}:{code_line(rng).strip()}")
        elif tool == "str_replace_editor":
            lines.append(f"{n:6d}\t{code_line(rng)}")
        elif tool == "run_tests":
            lines.append(rng.choice((f"tests/test_durations.py::test_{rng.choice(WORDS)}_{n} PASSED",
                                     f"tests/test_durations.py::test_{rng.choice(WORDS)}_{n} FAILED",
                                     f"E       {code_line(rng).strip()}",
                                     f"{path}:{rng.randint(1, 400)}: in {rng.choice(WORDS)}")))
        else:
            lines.append(rng.choice((code_line(rng), f"{rng.choice(WORDS)}: {rng.randint(0, 10**6)}")))
    header = {"search": f"Found matches for the pattern in {len(lines)} lines:",
              "str_replace_editor": f"Here's the result of running `cat -n` on {path}:",
              "run_tests": "============================= test session starts ==============================",
              }.get(tool, "exit code 0")
    return header + "\n" + "\n".join(lines)


def call(rng: random.Random, turn: int, turns: int) -> tuple[str, dict]:
    """The scripted tool call of one turn: explore, reproduce, edit, verify, submit."""
    if turn == turns - 1:
        return "submit", {"message": "parse_duration accepts whitespace between units; test added"}
    path = rng.choice(FILES[:5])
    return rng.choice((
        ("search", {"pattern": rng.choice(WORDS), "path": "timeparse", "glob": "*.py"}),
        ("str_replace_editor", {"command": "view", "path": path, "view_range": [1, 80]}),
        ("run_tests", {"paths": ["tests/test_durations.py"]}),
        ("bash", {"command": f"python -c 'from timeparse import parse_duration; print(parse_duration(\"1h {turn}m\"))'"}),
        ("str_replace_editor", {"command": "str_replace", "path": path, "old_str": code_line(rng).strip(),
                                "new_str": code_line(rng).strip()}),
    ))


def build_backend(root: Path, preset: str, context_window: int):
    from loopcoder.model.presets import init_random_checkpoint
    from nano.tiny_tokenizer import save_test_tokenizer
    from loopcoder.runtime.backends import create_backend

    init_random_checkpoint(root / "checkpoint", preset, tokenizer=save_test_tokenizer(root / "tokenizer"))
    return create_backend("plt", model_path=root / "checkpoint", device="cpu", dtype="float32",
                          context_window=context_window)


def run(args) -> dict:
    from loopcoder.agent.prompting import system_prompt
    from loopcoder.runtime.backends.base import GenerationParams
    from loopcoder.runtime.toolcalls import render_tool_call
    from loopcoder.tools import default_tools

    rng = random.Random(args.seed)
    tools = [tool.schema() for tool in default_tools()]
    params = GenerationParams(temperature=0.0, max_new_tokens=args.new_tokens)
    with tempfile.TemporaryDirectory(prefix="agent-session-") as tmp:
        reused = build_backend(Path(tmp), args.preset, args.context_window)
        count = lambda text: len(reused.tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        messages = [{"role": "system", "content": system_prompt("system.jinja", workdir="/repo")},
                    {"role": "user", "content": ISSUE}]
        turns = []
        for turn in range(args.turns):
            fresh = reused.spawn()
            row = {"turn": turn + 1}
            for label, backend in (("reuse", reused), ("fresh", fresh)):  # interleaved: load hits both alike
                start = time.perf_counter()
                completion = backend.complete(messages, tools, params)
                row[f"{label}_seconds"] = time.perf_counter() - start
                row[f"{label}_prefilled"] = completion.prefilled_tokens
                row["prompt_tokens"] = completion.prompt_tokens
            fresh.close()
            turns.append(row)
            print(f"turn {turn + 1}/{args.turns}: {row['prompt_tokens']} prompt tokens, prefilled {row['reuse_prefilled']} "
                  f"(reuse) / {row['fresh_prefilled']} (fresh), {row['reuse_seconds']:.2f} s / {row['fresh_seconds']:.2f} s",
                  file=sys.stderr, flush=True)
            name, arguments = call(rng, turn, args.turns)
            low, high = args.observation_tokens
            messages.append({"role": "assistant", "content": f"Next I use `{name}`.\n" + render_tool_call(name, arguments)})
            messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "name": name,
                             "content": observation(rng, name, count, rng.randint(low, high))})
        reused.close()
    totals = {key: sum(row[key] for row in turns) for key in ("reuse_prefilled", "fresh_prefilled",
                                                               "reuse_seconds", "fresh_seconds")}
    return {
        "benchmark": "agent_session", "preset": args.preset, "turns": args.turns, "threads": torch.get_num_threads(),
        "new_tokens_per_turn": args.new_tokens, "final_prompt_tokens": turns[-1]["prompt_tokens"],
        "per_turn": turns, "totals": totals,
        "ratios": {"prefilled fresh / reuse": totals["fresh_prefilled"] / totals["reuse_prefilled"],
                   "latency fresh / reuse": totals["fresh_seconds"] / totals["reuse_seconds"]},
    }


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['turns']}-turn tool conversation, plt backend ({result['preset']} random "
                        f"checkpoint, CPU, {result['threads']} threads, {result['new_tokens_per_turn']} new tokens/turn)")
    for column in ("turn", "prompt tokens", "prefilled (reuse)", "prefilled (fresh)", "latency reuse ms",
                   "latency fresh ms"):
        table.add_column(column, justify="right")
    for row in result["per_turn"]:
        table.add_row(str(row["turn"]), str(row["prompt_tokens"]), str(row["reuse_prefilled"]), str(row["fresh_prefilled"]),
                      f"{1e3 * row['reuse_seconds']:.0f}", f"{1e3 * row['fresh_seconds']:.0f}")
    t, r = result["totals"], result["ratios"]
    table.add_section()
    table.add_row("total", "", str(t["reuse_prefilled"]), str(t["fresh_prefilled"]), f"{1e3 * t['reuse_seconds']:.0f}",
                  f"{1e3 * t['fresh_seconds']:.0f}")
    table.add_row("fresh / reuse", "", "", f"{r['prefilled fresh / reuse']:.1f}x", "", f"{r['latency fresh / reuse']:.1f}x")
    Console(width=140).print(table)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("small", "tiny"), default="small")
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--observation-tokens", type=int, nargs=2, default=(150, 400), metavar=("LOW", "HIGH"),
                        help="each observation's size in tokens, drawn between LOW and HIGH")
    parser.add_argument("--new-tokens", type=int, default=8,
                        help="tokens decoded per turn; at most the cache's rollback slack (16) keeps reuse exact")
    parser.add_argument("--context-window", type=int, default=32768)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a small shared machine, 2 threads stall whenever another "
                             "process holds a core, and the latencies measure that instead of the model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.turns < 1 or args.new_tokens < 1 or not 1 <= args.observation_tokens[0] <= args.observation_tokens[1]:
        parser.error("--turns and --new-tokens must be >= 1, and 1 <= LOW <= HIGH")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(args)
    print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
