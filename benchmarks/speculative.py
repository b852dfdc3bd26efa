"""Prompt-lookup speculation on agent turns: decode tokens/s with drafts and without, in one run.

Two workloads of real agent conversations:
- nano's own: loopcoder-nano runs held-out tasks through the real agent and
  tools (`nano.evaluate`) and every call's prompt ids are recorded; its
  replies copy names from the task into a grep or sed, a printed line into an
  edit. After each run one more turn is added whose reply is prose that
  appears nowhere before.
- editing: conversations shaped like a 7B agent's, built with the real tools on
  a copy of this repository's code: search a function named in the task, view
  the file found (the path copied from the search output), explain in prose
  and str_replace a few viewed lines (old_str copied from the view), run the
  tests, close with prose.
A turn counts as copying when at least half its tokens end a 4-gram that
already occurred in its context; the others are "other".

Each model decodes each turn with `speculative` off and on (the same Session
code, greedy, one kept KV cache per conversation; modes interleaved so machine
load hits both alike): nano on its own replies; nano, the scaled 7B-shaped PLT
of `benchmarks/decode.py` (random weights, width 1280, 14 layers x 2 loops,
bf16 by default) and the 14-layer Llama of the same width made to write the recorded
replies (`Scripted`: the real forward runs, then its logits name the recorded
next token, so a forward costs what it costs a model that writes that reply).
The scaled PLT also runs with its drafts verified loop after loop (two passes
over the weights) instead of pipelined (one pass; docs/plt.md §4).
Prints per model and class: tokens/s off and on, their ratio, the acceptance
rate (accepted / drafted), the tokens accepted per verifying forward and the
forwards decoding took off and on (exact under greedy decoding, so a change of
drafting policy shows there without timing noise);
`uptime` before and after.

    .venv/bin/python benchmarks/speculative.py --out speculative.json   # ~25 min on 2 busy cores
    .venv/bin/python benchmarks/speculative.py --tasks 4 --edits 3 --scaled-edits 1 --scaled-own 0 --no-llama
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import as_loaded, median  # noqa: E402
from loopcoder.model.compat import CACHE_KWARG  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NANO = ROOT / "checkpoints" / "loopcoder-nano"
PROSE = (
    "Before changing anything I want to understand why the second form fails while the first one works. "
    "My guess is that whitespace splits the input before units are matched, so each half is parsed alone.",
    "That explains it: spaces were never expected between units. A careful fix should strip them first, "
    "then keep the original error message for anything that still does not parse.",
    "Nothing else depends on this behaviour, so the change stays small; afterwards the full suite should "
    "pass and a new case covering mixed spacing belongs next to the existing ones.",
    "An empty argument reaches the loop unchecked and the index arithmetic underflows there, which is "
    "why the caller sees a confusing message instead of a clean refusal.",
    "Once the guard is in place I will rerun everything, since an early return can hide later side "
    "effects that some callers might rely on without saying so.",
    "I prefer returning early over wrapping the whole body in a condition: the happy path then reads "
    "top to bottom, and reviewers see the edge case handled in one spot.",
)
COPY_NGRAM = 4


@dataclass
class Turn:
    prompt: list[int]
    reply: list[int] = field(default_factory=list)  # what the model wrote (nano) / must write (scaled)
    copying: bool = False
    scripted: bool = False  # a prose turn: nano is made to write it


@dataclass
class Tally:
    tokens: int = 0
    seconds: float = 0.0
    drafted: int = 0
    accepted: int = 0
    verifications: int = 0
    forwards: int = 0

    def add(self, gen, seconds: float) -> None:
        self.tokens += len(gen.ids)
        self.seconds += seconds
        self.drafted += gen.drafted_tokens
        self.accepted += gen.accepted_tokens
        self.verifications += gen.verifications
        self.forwards += gen.decode_forwards


class Recorder:
    """A backend that records the prompt ids of every call before passing it on."""

    def __init__(self, backend):
        self.backend, self.prompts = backend, []

    def complete(self, messages, tools=None, params=None, on_text=None):
        self.prompts.append(self.backend.prompt_ids(messages, tools))
        return self.backend.complete(messages, tools, params, on_text)

    def __getattr__(self, name):
        return getattr(self.backend, name)


class Scripted(torch.nn.Module):
    """A model's real forward, with logits that put all their mass on the scripted next token.

    `script` holds the whole sequence (prompt, reply, stop id); the logits after
    position p name script[p + 1]. Decoding then writes the reply at the cost of
    the wrapped model's forwards. With no script the model's own logits pass.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.script: list[int] | None = None

    def new_cache(self):
        return self.model.new_cache()

    def forward(self, input_ids, use_cache=True, logits_to_keep=1, **cache):  # cache: {CACHE_KWARG: the cache}
        held = cache[CACHE_KWARG].get_seq_length()
        out = self.model(input_ids=input_ids, use_cache=use_cache, logits_to_keep=logits_to_keep, **cache)
        out.logits = self._scripted(out.logits[0], held + input_ids.shape[1])[None]
        return out

    pipelined = True  # False: a PLT verifies drafts loop after loop (the chunked path), to compare

    def supports_pipelined(self, cache) -> bool:
        return self.pipelined and getattr(self.model, "supports_pipelined", lambda cache: False)(cache)

    def rows_are_cheap(self) -> bool:
        return self.model.rows_are_cheap()

    def pipelined_forward(self, input_ids, cache):
        """A PLT's pipelined pass; its rows follow the positions held .. held + rows - 1."""
        held = cache.get_seq_length()
        logits = self.model.pipelined_forward(input_ids, cache)  # [rows, V]
        return self._scripted(logits, held + logits.shape[0])

    def _scripted(self, logits, end: int):
        """logits [rows, V] after positions end-rows .. end-1, replaced by the script's next tokens."""
        if self.script is None:
            return logits
        rows = logits.shape[0]
        last = len(self.script) - 1  # drafts may run past the stop id: those rows are never read
        following = torch.tensor([self.script[min(p + 1, last)] for p in range(end - rows, end)], device=logits.device)
        scripted = torch.full_like(logits, -1e4)
        scripted[torch.arange(rows), following] = 0.0
        return scripted


def copy_fraction(context: list[int], reply: list[int]) -> float:
    """Share of the reply's tokens that end a COPY_NGRAM-gram seen earlier in context + reply."""
    full = context + reply
    seen = {tuple(full[i - COPY_NGRAM:i]) for i in range(COPY_NGRAM, len(context))}
    copied = 0
    for p in range(len(context), len(full)):
        gram = tuple(full[p - COPY_NGRAM + 1:p + 1])
        copied += gram in seen
        seen.add(tuple(full[p - COPY_NGRAM:p]))
    return copied / max(1, len(reply))


def record(tasks: int, seed: int) -> tuple[object, list[list[Turn]]]:
    """nano's agent runs on held-out tasks: the prompts of every call, per conversation."""
    from loopcoder.agent.session import make_backend
    from nano.evaluate import eval_config, evaluate
    from nano.tasks import generate_task

    config = eval_config(NANO, ("sampling.speculative=off",))
    backend = make_backend(config)
    conversations = []
    for task_seed in range(seed, seed + tasks):
        recorder = Recorder(backend)
        outcome = evaluate(recorder, generate_task("heldout", task_seed), config)
        print(f"  recorded {outcome.task_id}: {outcome.steps} calls, {'solved' if outcome.solved else outcome.status}",
              flush=True)
        conversations.append([Turn(prompt) for prompt in recorder.prompts])
    return backend, conversations


def editing_conversations(backend, count: int, seed: int) -> list[list[Turn]]:
    """Conversations shaped like a 7B agent's edits, with the real tools on this repository's code.

    The task names a function; the model searches for it (the name copied from
    the task), views the file the search found (the path copied from its
    output), explains its plan in prose and replaces a few viewed lines with
    str_replace (old_str copied from the view, new_str a one-word edit of it),
    then runs the tests.
    """
    import random
    import re

    from loopcoder.runtime.tokenizer import encode
    from loopcoder.runtime.toolcalls import render_tool_call
    from loopcoder.tools import get_tool
    from loopcoder.workspace.local import LocalSandbox

    rng = random.Random(seed)
    tmp = tempfile.TemporaryDirectory(prefix="speculative-")
    for folder in ("model", "tools", "agent"):  # str_replace really edits: a copy
        shutil.copytree(ROOT / folder, Path(tmp.name) / folder, ignore=shutil.ignore_patterns("__pycache__"))
    sandbox = LocalSandbox(tmp.name)
    sources = sorted(p for d in ("model", "tools", "agent") for p in (ROOT / d).rglob("*.py") if p.stat().st_size > 3000)
    conversations = []
    while len(conversations) < count:
        path = rng.choice(sources)
        lines = path.read_text().splitlines()
        defs = [i for i, line in enumerate(lines) if re.match(r"    def [a-z]\w+\(|def [a-z]\w+\(", line)]
        if not defs:
            continue
        start = rng.choice(defs)
        name = re.search(r"def (\w+)", lines[start]).group(1)
        body = [i for i in range(start + 1, min(start + 30, len(lines))) if lines[i].strip()]
        if len(body) < 8:
            continue
        first = body[rng.randrange(len(body) - 6)]
        old = "\n".join(lines[first:first + rng.randint(3, 6)])
        word = rng.choice(re.findall(r"[a-z_]{4,}", old) or ["value"])
        new = old.replace(word, word + "_checked", 1)
        rel = str(path.relative_to(ROOT))
        plan, check, closing = rng.sample(PROSE, 3)
        calls = [
            ("", "search", {"pattern": f"def {name}(", "path": ".", "glob": "*.py"}),
            ("", "str_replace_editor", {"command": "view", "path": rel, "view_range": [max(1, start - 5), start + 40]}),
            (f"The problem is in `{name}`: {plan}\n\n", "str_replace_editor",
             {"command": "str_replace", "path": rel, "old_str": old, "new_str": new}),
            (check + "\n\n", "run_tests", {"paths": ["tests"]}),
            (closing, None, None),
        ]
        messages = [{"role": "system", "content": "You are a coding agent working in this repository."},
                    {"role": "user", "content": f"`{name}` in our code base misbehaves on empty input; please fix it."}]
        turns = []
        for index, (thought, tool, arguments) in enumerate(calls):
            reply = thought + (render_tool_call(tool, arguments) if tool else "")
            turns.append(Turn(backend.prompt_ids(messages), encode(backend.tokenizer, reply), scripted=True))
            messages.append({"role": "assistant", "content": reply})
            if tool:
                observation = "3 passed" if tool == "run_tests" else get_tool(tool).run(arguments, sandbox).text
                messages.append({"role": "tool", "tool_call_id": f"call_{index}", "name": tool, "content": observation})
            else:
                messages.append({"role": "user", "content": "Thanks. Anything else?"})
        conversations.append(turns)
    tmp.cleanup()
    return conversations


def with_prose_turns(backend, conversations: list[list[Turn]]) -> None:
    """After each conversation, a user question answered by prose that occurs nowhere before."""
    from loopcoder.runtime.tokenizer import encode

    tok = backend.tokenizer
    for i, turns in enumerate(conversations):
        last = turns[-1]
        question = encode(tok, "\nWhy did the first attempt fail? Explain before the next step.\n")
        prompt = last.prompt + last.reply + question
        turns.append(Turn(prompt, encode(tok, PROSE[i % len(PROSE)]), scripted=True))


def decode_turns(make_session, turns: list[Turn], mode: str, stop_ids, max_new: int, before=None):
    """One session through a conversation; per turn the Generation and its decode seconds. `mode`: off,
    prompt_lookup, or chunked (prompt_lookup with a PLT verifying loop after loop, not pipelined)."""
    from loopcoder.runtime.backends.base import GenerationParams

    session = make_session()
    if mode == "chunked":
        session.model.pipelined = False
    params = GenerationParams(max_new_tokens=max_new, speculative="off" if mode == "off" else "prompt_lookup")
    results = []
    for turn in turns:
        if before:
            before(turn)
        gen = session.generate(turn.prompt, params, stop_ids)
        results.append((gen, gen.decode_seconds))
    if mode == "chunked":
        session.model.pipelined = True
    return results


def measure(name: str, make_session, conversations, stop_ids, max_new: int, repeats: int, before=None,
            chunked: bool = False) -> dict:
    """Off and on (and with `chunked` on, verified loop after loop), interleaved per conversation and
    repeat; per-turn median seconds; tallies per class."""
    modes = ("off", "prompt_lookup") + (("chunked",) if chunked else ())
    tallies = {(cls, mode): Tally() for cls in ("copying", "other") for mode in modes}
    mismatched = 0
    for c, turns in enumerate(conversations):
        runs = {mode: [] for mode in modes}
        for r in range(repeats):
            order = modes if (c + r) % 2 == 0 else modes[::-1]
            for mode in order:
                runs[mode].append(decode_turns(make_session, turns, mode, stop_ids, max_new, before))
        for t, turn in enumerate(turns):
            off = runs["off"][0][t][0]
            mismatched += any(runs[mode][0][t][0].ids != off.ids for mode in modes)
            cls = "copying" if turn.copying else "other"
            for mode in runs:
                gen = runs[mode][0][t][0]
                tallies[cls, mode].add(gen, median([run[t][1] for run in runs[mode]]))
    rows = {}
    for cls in ("copying", "other"):
        off, on = tallies[cls, "off"], tallies[cls, "prompt_lookup"]
        if not off.tokens:
            continue
        rows[cls] = {
            "turns": sum(1 for turns in conversations for t in turns if (cls == "copying") == t.copying),
            "tokens": off.tokens,
            "tok_s_off": round(off.tokens / off.seconds, 1),
            "tok_s_on": round(on.tokens / on.seconds, 1),
            "ratio": round((on.tokens / on.seconds) / (off.tokens / off.seconds), 2),
            "acceptance": round(on.accepted / max(1, on.drafted), 2),
            "mean_accepted": round(on.accepted / max(1, on.verifications), 2),
            "forwards_off": off.forwards,  # exact under greedy decoding: the policy's effect without timing noise
            "forwards_on": on.forwards,
        }
        if chunked:
            loop_after_loop = tallies[cls, "chunked"]
            rows[cls]["ratio_chunked"] = round((loop_after_loop.tokens / loop_after_loop.seconds)
                                               / (off.tokens / off.seconds), 2)
    print(f"\n{name}: greedy outputs differing between off and on: {mismatched}")
    print("| turns | n | tokens | tok/s off | tok/s on | on/off | acceptance | accepted per verify | forwards off, on |"
          + (" on/off, verified loop after loop |" if chunked else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|" if chunked else ""))
    for cls, row in rows.items():
        print(f"| {cls} | {row['turns']} | {row['tokens']} | {row['tok_s_off']} | {row['tok_s_on']} | "
              f"**{row['ratio']}** | {row['acceptance']} | {row['mean_accepted']} | "
              f"{row['forwards_off']}, {row['forwards_on']} |" + (f" {row['ratio_chunked']} |" if chunked else ""))
    return {"mismatched": mismatched, **rows}


def run(args) -> dict:
    from benchmarks.decode import build, llama_config, plt_config
    from loopcoder.model import IQuestPLTCoderForCausalLM
    from loopcoder.runtime.session import Session

    torch.set_num_threads(args.threads)
    print("uptime:", uptime(), flush=True)
    backend, own = record(args.tasks, args.seed)
    nano = backend.model
    stop_ids = backend.stop_ids
    nano_session = lambda: Session(nano, backend.context_window, nano.new_cache)  # noqa: E731
    for turns in own:  # nano's replies: what it writes from each prompt
        for turn, (gen, _) in zip(turns, decode_turns(nano_session, turns, "off", stop_ids, args.max_new_tokens)):
            turn.reply = gen.ids
    with_prose_turns(backend, own)
    edits = editing_conversations(backend, args.edits, args.seed)
    for turns in own + edits:
        for turn in turns:
            turn.copying = copy_fraction(turn.prompt, turn.reply) >= 0.5
    results = {"uptime_before": uptime()}
    stop = min(stop_ids)

    scripted_nano = Scripted(nano)

    def nano_before(turn: Turn) -> None:  # nano writes its own replies; the others are scripted
        scripted_nano.script = turn.prompt + turn.reply + [stop] if turn.scripted else None

    make_nano = lambda: Session(scripted_nano, backend.context_window, nano.new_cache)  # noqa: E731
    if args.repeats:
        results["nano"] = measure("loopcoder-nano on its own runs (prose turns scripted)", make_nano, own, stop_ids,
                                  args.max_new_tokens, args.repeats, nano_before)
        results["nano_edits"] = measure("loopcoder-nano scripted on the editing conversations", make_nano, edits,
                                        stop_ids, args.max_new_tokens, args.repeats, nano_before)
    dtype = getattr(torch, args.scaled_dtype)
    config = plt_config("scaled", dtype)
    scaled = {"scaled PLT": Scripted(build(IQuestPLTCoderForCausalLM, config, "cpu", dtype))}
    if args.llama:
        from transformers import DynamicCache, LlamaForCausalLM

        llama = Scripted(build(LlamaForCausalLM, llama_config(config, 14), "cpu", dtype))
        llama.new_cache = DynamicCache
        scaled["scaled Llama-14"] = llama
    results["dense_kernels"] = as_loaded(*(m.model for m in scaled.values()), torch_kernels=args.torch_kernels)
    print("dense kernels:", results["dense_kernels"] or "torch", flush=True)
    plt = scaled["scaled PLT"].model
    if args.cheap_rows != "measured":  # what `rows_are_cheap` would measure on another device
        plt.pipelined_rows_cheap = args.cheap_rows == "yes"
    results["rows_are_cheap"] = f"{plt.rows_are_cheap()} ({args.cheap_rows})"
    print("scaled PLT rows_are_cheap:", results["rows_are_cheap"], flush=True)
    picked = edits[: args.scaled_edits] + own[: args.scaled_own]
    for name, model in scaled.items():
        def before(turn: Turn, model=model) -> None:
            model.script = turn.prompt + turn.reply[: args.scaled_max_new_tokens] + [stop]

        results[name] = measure(f"{name} (random weights, {args.scaled_dtype}) scripted: {args.scaled_edits} editing and "
                                f"{args.scaled_own} nano conversations", lambda model=model: Session(
                                    model, 1 << 20, model.new_cache), picked, stop_ids,
                                args.scaled_max_new_tokens, 1, before, chunked=name == "scaled PLT")
    results["uptime_after"] = uptime()
    print("uptime:", results["uptime_after"])
    return results


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="nano held-out tasks recorded (one conversation each)")
    parser.add_argument("--seed", type=int, default=0, help="first task seed")
    parser.add_argument("--edits", type=int, default=6, help="editing conversations built with the real tools")
    parser.add_argument("--repeats", type=int, default=3, help="nano: runs per mode (median seconds per turn); 0 skips nano")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--scaled-edits", type=int, default=2, help="editing conversations run on the scaled shape")
    parser.add_argument("--scaled-own", type=int, default=1, help="nano conversations run on the scaled shape")
    parser.add_argument("--scaled-max-new-tokens", type=int, default=96, help="replies cut there on the scaled shape")
    parser.add_argument("--llama", action=argparse.BooleanOptionalAction, default=True,
                        help="also the scaled 14-layer Llama (one loop: a verification costs one pass)")
    parser.add_argument("--scaled-dtype", default="bfloat16", choices=("bfloat16", "float32"),
                        help="the scaled models' dtype: bfloat16, the model's own (on a CPU with AMX a 1-32-row "
                             "product costs about what a 1-row one does; float32's small GEMMs cost 3x at 8 rows)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--torch-kernels", action="store_true",
                        help="the scaled models' linears through F.linear (default: model/dense.py's choice, as loaded)")
    parser.add_argument("--cheap-rows", default="measured", choices=("measured", "yes", "no"),
                        help="the scaled PLT's `rows_are_cheap` (a draft floor of 2): as measured here, or set "
                             "as another device would measure it")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    results = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), **results}, indent=1) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
