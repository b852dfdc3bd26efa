"""Per-token cost of grammar-constrained tool calls: decode ms/token with and without the grammar.

The ratio of whole decode steps is what users see, but on a shared machine
it moves with the load; the grammar's own work (masking the logits and
accepting the token, replayed along the constrained reply without the
model) is printed too, with 1 + that / the free step: a load-robust figure.

Two workloads, each decoded through the real `Session.generate` path, the
unconstrained and the constrained run alternating so load from other
processes hits both alike; each figure is a median over replies:
- nano: loopcoder-nano's first turn on held-out tasks (greedy; the agent's
  tools and prompts), where the reply is mostly a tool call;
- scaled: benchmarks/decode.py's PLT (7B proportions at width 1280, random
  weights) with a 19,200-piece byte-level BPE trained on this repository's
  Python files and the agent's tool schemas, once with tool_choice
  "required" (every token inside a call, where the JSON-schema masks are
  built) and once "auto" (free text).

    .venv/bin/python benchmarks/constrained.py [--threads 1] [--replies 4] [--tokens 32]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

from benchmarks.common import median  # noqa: E402


def decode(backend, prompt: list[int], params, grammar) -> tuple[float, list[int]]:
    """Decode ms/token of one reply from a fresh cache, and its ids."""
    backend.session.reset()
    constraint = None if grammar is None else backend.grammars.constraint(grammar)
    gen = backend.session.generate(prompt, params, backend.stop_ids, constraint=constraint)
    return 1000 * gen.decode_seconds / max(1, len(gen.ids) - 1), gen.ids  # the first token comes from the prefill


def grammar_ms(backend, grammar, ids: list[int]) -> float:
    """ms/token of the grammar's own work (mask the logits, accept the token) along `ids`, without the model."""
    constraint = backend.grammars.constraint(grammar)
    logits = torch.zeros(backend.grammars.vocab_size)
    start = time.perf_counter()
    for token in ids:
        constraint.mask(logits)
        constraint.accept(token)
    return 1000 * (time.perf_counter() - start) / max(1, len(ids))


def compare(name: str, backend, prompts: list[list[int]], params, grammar, repeats: int) -> None:
    """Print median ms/token free and constrained, their ratio, and the grammar's own share."""
    free, constrained, own = [], [], []
    for _ in range(repeats):
        for prompt in prompts:
            free.append(decode(backend, prompt, params, None)[0])
            ms, ids = decode(backend, prompt, params, grammar)
            constrained.append(ms)
            own.append(grammar_ms(backend, grammar, ids))
    ratio = median(constrained) / median(free)
    print(f"{name:<34} {median(free):9.2f} {median(constrained):9.2f} {ratio:7.3f} {median(own):9.3f}"
          f" {1 + median(own) / median(free):10.4f}", flush=True)


def nano_workload(replies: int):
    from loopcoder.agent.prompting import system_prompt, system_template, task_prompt
    from loopcoder.agent.session import make_backend
    from nano.evaluate import eval_config
    from nano.tasks import generate_task
    from loopcoder.tools import default_tools

    config = eval_config(ROOT / "checkpoints" / "loopcoder-nano")
    backend = make_backend(config)
    tools = [tool.schema() for tool in default_tools()]
    system = system_prompt(system_template(None, config.backend.model), "/repo")
    prompts = []
    for seed in range(replies):
        task = generate_task("heldout", seed)
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": task_prompt("interactive", text=task.text)}]
        prompts.append(backend.prompt_ids(messages, tools))
    return backend, tools, prompts


def scaled_workload(replies: int):
    from benchmarks.decode import build, plt_config
    from loopcoder.model.modeling_plt import IQuestPLTCoderForCausalLM
    from nano.tiny_tokenizer import build_test_tokenizer
    from loopcoder.runtime.backends.inprocess import InProcessBackend
    from loopcoder.tools import default_tools

    config = plt_config("scaled", torch.float32)
    texts = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("[a-z]*/**/*.py"))]
    tokenizer = build_test_tokenizer(texts, vocab_size=config.vocab_size)
    torch.manual_seed(0)
    model = build(IQuestPLTCoderForCausalLM, config, "cpu", torch.float32)
    stop_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("</s>", "<|im_end|>")]
    backend = InProcessBackend("plt", model, tokenizer, stop_ids, context_window=4096)
    tools = [tool.schema() for tool in default_tools()]
    asks = ["Fix the failing test in tests/test_app.py", "Rename helper() to assist() everywhere",
            "Why does load() crash on an empty file?", "Add a --verbose flag to the CLI"]
    # Short prompts (no schemas in them): random weights do not read the prompt, and decode is what is timed.
    prompts = [backend.prompt_ids([{"role": "user", "content": asks[i % len(asks)] + f" (case {i})"}])
               for i in range(replies)]
    return backend, tools, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replies", type=int, default=4, help="prompts per workload")
    parser.add_argument("--repeats", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--workloads", default="nano,scaled", help="comma-separated: nano, scaled")
    parser.add_argument("--tokens", type=int, default=32, help="max new tokens per reply (scaled model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from loopcoder.runtime.backends.base import GenerationParams

    print(f"{'workload (ms/token)':<34} {'free':>9} {'grammar':>9} {'ratio':>7} {'mask+accept':>9}"
          f" {'1+mask/free':>10}", flush=True)
    workloads = args.workloads.split(",")
    if "nano" in workloads:
        backend, tools, prompts = nano_workload(args.replies)
        greedy = GenerationParams(max_new_tokens=256)
        compare("nano, first turns (greedy)", backend, prompts, greedy, backend.grammars.tool_calls(tools),
                args.repeats)
    if "scaled" in workloads:
        backend, tools, prompts = scaled_workload(args.replies)
        params = GenerationParams(max_new_tokens=args.tokens)
        for choice in ("required", "auto"):
            compare(f"scaled PLT, tool_choice {choice}", backend, prompts, params,
                    backend.grammars.tool_calls(tools, choice), args.repeats)


if __name__ == "__main__":
    main()
