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
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

from agent.nano import words
from agent.nano.data import build_tokenizer, render_transcript, write_transcripts
from agent.nano.record import record
from agent.nano.tasks import PACKAGE_SUFFIXES, generate_task

RECORDINGS = "recordings.jsonl"
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


def write_training_dir(out: Path, vocab_size: int, renderer) -> dict:
    """train.jsonl and tokenizer/ from the good recordings; returns counts."""
    pool = workdir_pool()
    transcripts, groups, failed = [], [], 0
    for line in (out / RECORDINGS).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if not rec["ok"]:
            failed += 1
            continue
        group = rec["seed"] % len(pool)
        messages = with_workdir(rec["messages"], rec["workdir"], pool[group])
        transcripts.append(render_transcript(renderer, messages, rec["tools"]))
        groups.append(group)
    if not transcripts:
        raise ValueError(f"no successful recordings in {out / RECORDINGS}")
    build_tokenizer(tokenizer_corpus(t for t, _ in transcripts), vocab_size, out / "tokenizer")
    write_transcripts(out / "train.jsonl", ({"text": t, "spans": s, "group": g} for (t, s), g in zip(transcripts, groups)))
    return {"transcripts": len(transcripts), "failed": failed}
