"""Build loopcoder-nano's training directory: record gold trajectories, render them, train the tokenizer.

Recordings are appended to `recordings.jsonl` as they finish, so an
interrupted build resumes where it stopped. Each transcript's working-copy
path is then replaced by one of a few dozen plausible paths: the model meets
many paths (it must ignore them), and transcripts that share a path share
their whole system turn, which the trainer runs once per batch (`group`).
"""
from __future__ import annotations

import json
import random
import re
import shutil
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

from agent.nano import words
from agent.nano.data import SYSTEM_PROMPT, build_tokenizer, nano_renderer, render_transcript, write_transcripts
from agent.nano.record import gold_script, record
from agent.prompting import render, task_prompt
from agent.toolcalls import render_tool_call
from agent.nano.tasks import PACKAGE_SUFFIXES, generate_task
from model.tiny_tokenizer import build_test_tokenizer

RECORDINGS = "recordings.jsonl"
SHORT = "short"  # phase 1: short rows, dense in copying (drills and first turns), without the agent's system turn
DRILLS, FIRST_TURNS, FIRST_TURN_SEEDS = 8000, 6000, 100_000  # first-turn seeds far from the recorded ones
SYSTEM_FIRST_TURNS, SYSTEM_FIRST_TURN_SEEDS = 3000, 200_000  # phase 2: first turns behind nano's system turn
FIXED_WORDS = {"test", "update"}  # name words that are also words of the fixed texts (test_*, task wording)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # the words of snake_case, CamelCase and UPPER_CASE names
WORKDIR_POOL = 32


def workdir_pool(n: int = WORKDIR_POOL, seed: int = 0) -> list[str]:
    """Working-copy paths as `loopcoder run` makes them: <home>/.cache/loopcoder/worktrees/<repo>-<commit>-<random>."""
    rng = random.Random(f"nano-workdirs:{seed}")
    homes = ["/root", "/home/dev", "/home/user", "/home/alice", "/home/ci", "/home/sam"]
    repos = ["repo", "project", "app", "example", "service", "core", "utils", "mylib", "backend", "toolkit"]
    alphabet = string.ascii_lowercase + string.digits + "_"
    return [
        f"{rng.choice(homes)}/.cache/loopcoder/worktrees/{rng.choice(repos)}-"
        f"{''.join(rng.choices('0123456789abcdef', k=10))}-{''.join(rng.choices(alphabet, k=8))}"
        for _ in range(n)
    ]


def _record_seed(args: tuple[str, int]) -> dict:
    split, seed = args
    rec = record(generate_task(split, seed))
    return {**asdict(rec), "seed": seed, "ok": rec.ok}


def record_all(out: Path, split: str, seeds: Iterable[int], jobs: int = 2,
               on_done: Callable[[dict], None] | None = None) -> Path:
    """Record every seed not yet in out/recordings.jsonl, `jobs` at a time."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECORDINGS
    done = {json.loads(line)["seed"] for line in path.read_text().splitlines()} if path.exists() else set()
    todo = [(split, s) for s in seeds if s not in done]
    with path.open("a", encoding="utf-8") as f, ProcessPoolExecutor(max_workers=jobs) as pool:
        for rec in pool.map(_record_seed, todo, chunksize=1):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            if on_done is not None:
                on_done(rec)
    return path


def tokenizer_corpus(texts: Iterable[str], seed: int = 0) -> Iterator[str]:
    """The transcripts with every word-list word in the conversation replaced by random letters.

    Without this the training words become single tokens while held-out names
    fall apart into pieces: the model would learn to copy names it knows. With
    it, names of both splits are split into the same kind of generic pieces.
    The system turn is kept: it is the same in every transcript and should be short.
    """
    rng = random.Random(f"nano-scrub:{seed}")
    names = (set(words.TRAIN_VERBS) | set(words.TRAIN_NOUNS)) - FIXED_WORDS

    def scrub(match: re.Match) -> str:
        word = match.group(0)
        stem = word.lower()
        suffix = next((s for s in PACKAGE_SUFFIXES if stem.endswith(s) and stem[:-len(s)] in names), "")
        if stem[:len(stem) - len(suffix)] not in names:
            return word
        letters = "".join(rng.choices(string.ascii_lowercase, k=len(word) - len(suffix)))
        return (letters.upper() if word.isupper() else letters.capitalize() if word[0].isupper() else letters) + suffix

    for text in texts:
        head, sep, conversation = text.partition("<|im_start|>user")
        yield head + sep + _WORD.sub(scrub, conversation)


def with_workdir(messages: list[dict], old: str, new: str) -> list[dict]:
    return [{**m, "content": m["content"].replace(old, new)} for m in messages]


def _made_up_name(rng: random.Random, pieces: list[str], shapes: int = 4) -> str:
    """An identifier glued from random vocabulary pieces, in one of the shapes the tasks use."""
    def word() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 3)))

    shape = rng.randrange(shapes)
    if shape == 0:
        return f"{word()}_{word()}"
    if shape == 1:
        return word().capitalize() + word().capitalize()
    if shape == 2:
        return f"{rng.choice(('MAX', 'MIN', 'DEFAULT', 'BASE', 'LIMIT'))}_{word().upper()}"
    return f"{word()}{rng.choice(PACKAGE_SUFFIXES)}/{word()}.py"


def name_pieces(tokenizer) -> list[str]:
    """The vocabulary's lowercase letter pieces: drills built from them make every piece a copy target.

    A piece that is never a target gets its logit pushed down at every step, until
    no amount of attention can copy it: a held-out name made of such pieces
    could not be written.
    """
    return sorted(t for t in tokenizer.get_vocab() if t.isascii() and t.isalpha() and t.islower())


def copy_drills(renderer, pieces: list[str], count: int, seed: int = 0) -> list[dict]:
    """Turns that search for each of several made-up names, in order: copying, and nothing else.

    A model meets copying everywhere in the gold plans (names from the task into
    calls, lines from views into edits) but learns it slowly from them; these
    drills, with names from neither word list, teach it first.
    """
    rng = random.Random(f"nano-drills:{seed}")
    rows = []
    for _ in range(count):
        definitions = rng.random() < 0.4
        names = [_made_up_name(rng, pieces, 2 if definitions else 4) for _ in range(rng.randint(1, 4))]
        listed = ", ".join(f"`{n}`" for n in names)
        ask = f"Find the definitions of {listed}." if definitions else f"Search for {listed}."
        calls = "\n".join(render_tool_call("search", {"pattern": f"def {n}" if definitions else n}) for n in names)
        messages = [{"role": "user", "content": ask + "\n"}, {"role": "assistant", "content": calls}]
        text, spans = render_transcript(renderer, messages, [])
        rows.append({"text": text, "spans": spans})
    return rows


def first_turns(renderer, count: int, start: int, tools: list[dict] | None = None) -> list[dict]:
    """Task prompt plus the plan's first call (a search for a name in the task), for many more tasks.

    The first turn needs no observation, so these need no tool run: cheap, short
    rows in which half the trained tokens are copied from the task, which is
    what the model must learn first. With `tools` (the agent's schemas), behind
    nano's system turn as the agent shows it; without, behind the template's
    one-line default.
    """
    rows = []
    opening = with_nano_system([{"role": "system", "content": ""}]) if tools else []
    for seed in range(start, start + count):
        task = generate_task("train", seed)
        messages = opening + [{"role": "user", "content": task_prompt("interactive", text=task.text)},
                              {"role": "assistant", "content": gold_script(task)[0]}]
        text, spans = render_transcript(renderer, messages, tools or [])
        rows.append({"text": text, "spans": spans})
    return rows


def with_nano_system(messages: list[dict]) -> list[dict]:
    """The recorded conversation with nano's own system prompt in place of the agent's default one."""
    assert messages[0]["role"] == "system", "a recording starts with the agent's system turn"
    return [{"role": "system", "content": render(str(SYSTEM_PROMPT))}] + messages[1:]


def write_training_dir(out: Path, vocab_size: int) -> dict:
    """short/: phase 1 of training (copy drills and first turns); train.jsonl: phase 2, the good
    recordings plus the short rows; tokenizer/ for both. Returns counts.

    The tokenizer is trained on the transcripts as the agent writes them for
    any model (default template and system prompt); the rows are rendered as
    nano sees them (its own template and system prompt)."""
    pool = workdir_pool()
    agent_renderer, renderer = build_test_tokenizer(), nano_renderer()
    corpus, full, failed, tools = [], [], 0, []
    for line in (out / RECORDINGS).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if not rec["ok"]:
            failed += 1
            continue
        group = rec["seed"] % len(pool)
        messages = with_workdir(rec["messages"], rec["workdir"], pool[group])
        corpus.append(render_transcript(agent_renderer, messages, rec["tools"])[0])
        tools = rec["tools"]
        text, spans = render_transcript(renderer, with_nano_system(messages), rec["tools"])
        full.append({"text": text, "spans": spans, "group": group})
    if not full:
        raise ValueError(f"no successful recordings in {out / RECORDINGS}")
    pieces = name_pieces(build_tokenizer(tokenizer_corpus(corpus), vocab_size, out / "tokenizer"))
    short = copy_drills(renderer, pieces, DRILLS) + first_turns(renderer, FIRST_TURNS, FIRST_TURN_SEEDS)
    write_transcripts(out / SHORT / "train.jsonl", short)
    # Phase 2 keeps the short rows (a group of their own) so the copying they taught stays sharp, and
    # learns the first call behind nano's system turn from more tasks than were recorded (another group).
    behind_system = first_turns(renderer, SYSTEM_FIRST_TURNS, SYSTEM_FIRST_TURN_SEEDS, tools)
    write_transcripts(out / "train.jsonl", full + [{**row, "group": len(pool)} for row in short]
                      + [{**row, "group": len(pool) + 1} for row in behind_system])
    shutil.copytree(out / "tokenizer", out / SHORT / "tokenizer", dirs_exist_ok=True)
    return {"transcripts": len(full), "failed": failed}
