"""Build loopcoder-nano's training directory: record gold trajectories, render them, train the tokenizer.

Recordings are appended to `recordings.jsonl` as they finish, so an
interrupted build resumes where it stopped. Each transcript's working-copy
path is then replaced by one of a few dozen plausible paths: the model meets
many paths (it must ignore them), and transcripts of a group share their
opening, which the trainer runs once per batch. Rows are rendered as nano sees
them (its chat template and system prompt, data.py) with their names made up
anew (`scramble`), so that names are copied, not remembered. Three phases:
short copy drills and first turns, then copies from far back (long drills,
plan openings: openings.py), then the recordings.
"""
from __future__ import annotations

import builtins
import json
import keyword
import random
import re
import shutil
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

from nano import words
from nano.data import (build_tokenizer, nano_renderer, nano_system_message, render_transcript,
                             write_transcripts)
from nano.openings import opening
from nano.record import gold_script, record
from loopcoder.agent.prompting import task_prompt
from loopcoder.runtime.toolcalls import render_tool_call
from nano.tasks import PACKAGE_SUFFIXES, generate_task
from nano.tiny_tokenizer import build_test_tokenizer

RECORDINGS = "recordings.jsonl"
SHORT = "short"  # phase 1: short rows dense in copying (drills, first turns): a copy head forms
LONG = "long"  # phase 2: copies from far back (long drills, plan openings); rows of both made without the agent
DRILLS, FIRST_TURNS, FIRST_TURN_SEEDS = 8000, 6000, 100_000  # first-turn seeds far from the recorded ones
SYSTEM_FIRST_TURNS, SYSTEM_FIRST_TURN_SEEDS = 6000, 200_000  # first turns behind nano's system turn
OPENINGS, OPENING_SEEDS = 6000, 300_000  # plan openings (openings.py)
SCRAMBLES = 5  # phase 3: copies of each recording, each with other made-up names
LONGEST_FOLLOW_UP = 8000  # characters: well inside phase 3's 4096-token batches
FOLLOW_UPS = 400  # phase 3: chats of two recordings, the second request sent after the first one's submit
FIXED_WORDS = frozenset({"test", "update"})  # name words that are also words of the fixed texts (test_*, task wording)
_NAME_WORDS = frozenset(words.TRAIN_VERBS) | frozenset(words.TRAIN_NOUNS)
RESERVED_WORDS = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | _NAME_WORDS  # never a made-up word
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # the words of snake_case, CamelCase and UPPER_CASE names
_JSON_KEY_HEAD, _JSON_KEY_TAIL = re.compile(r'"[a-z_]*$'), re.compile(r'[a-z_]*":')
_LONGEST_KEY = 64  # how far back a tool argument name can start
_WORD_AFTER_ESCAPES = re.compile(r"\\+[a-z]|" + _WORD.pattern)  # the same, an escape's letter not taken for one
WORKDIR_POOL = 32
LONGEST_DRILL = 24  # names in phase 2's longest copy drills: the last call copies from ~600 tokens back


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


def replace_names(text: str, new_word: Callable[[str], str], pattern: re.Pattern = _WORD,
                  keep: Callable[[re.Match], bool] = lambda match: False) -> str:
    """`text` with every training word-list word (alone, in a name, or before a package suffix; not one of
    FIXED_WORDS nor one that `keep`s) replaced by `new_word(word)`, written in the original's case."""
    names = _NAME_WORDS - FIXED_WORDS

    def replace(match: re.Match) -> str:
        word = match.group(0)
        if word.startswith("\\") or keep(match):
            return word  # an escape (\b in a sed command, \n in a JSON string) is not the start of a word
        stem = word.lower()
        suffix = next((s for s in PACKAGE_SUFFIXES if stem.endswith(s) and stem[:-len(s)] in names), "")
        base = stem[:len(stem) - len(suffix)]
        if base not in names:
            return word
        letters = new_word(base)
        return (letters.upper() if word.isupper() else letters.capitalize() if word[0].isupper() else letters) + suffix

    return pattern.sub(replace, text)


def tokenizer_corpus(texts: Iterable[str], seed: int = 0) -> Iterator[str]:
    """The transcripts with every word-list word in the conversation replaced by random letters.

    Without this the training words become single tokens while held-out names
    fall apart into pieces: the model would learn to copy names it knows. With
    it, names of both splits are split into the same kind of generic pieces.
    The system turn is kept: it is the same in every transcript and should be short.
    """
    rng = random.Random(f"nano-scrub:{seed}")

    def letters(word: str) -> str:
        return "".join(rng.choices(string.ascii_lowercase, k=len(word)))

    for text in texts:
        head, sep, conversation = text.partition("<|im_start|>user")
        yield head + sep + replace_names(conversation, letters)


def scramble(messages: list[dict], pieces: list[str], rng: random.Random) -> list[dict]:
    """The conversation with each training word replaced by one made-up word, the same everywhere in it.

    Measured: a model trained on the recorded names wrote every first call of
    40 training-split tasks exactly but only 23 of 40 held-out ones; it had
    learned the few hundred training words, not to copy. With each transcript's
    words made up anew, a name can only be written by copying it. The made-up
    words are glued from vocabulary pieces, as held-out words are tokenized.
    """
    mapping: dict[str, str] = {}
    used: set[str] = set()

    def made_up(word: str) -> str:
        if word not in mapping:
            new = ""
            while not 3 <= len(new) <= 10 or new in RESERVED_WORDS or new in used:
                new = "".join(rng.choice(pieces) for _ in range(rng.randint(2, 4)))
            mapping[word] = new
            used.add(new)
        return mapping[word]

    return [m if m["role"] == "system" else
            {**m, "content": replace_names(m["content"], made_up, _WORD_AFTER_ESCAPES, fixed_where_it_stands)}
            for m in messages]


def fixed_where_it_stands(match: re.Match) -> bool:
    """A training word that is a word of the fixed texts where it stands: the LIMIT_ of constants and the
    "Add" of "Add a parameter" (held-out tasks have them too), the working copy's `.cache/`, and tool
    argument names (`"path":`, `"insert_line":`). Anywhere else it is a name and is scrambled; kept
    everywhere, it would be the one name word the model sees in every transcript."""
    word, text, start, end = match.group(0), match.string, match.start(), match.end()
    return (word in ("LIMIT", "Add") or (word == "cache" and text[start - 1:start] == ".")
            or (_JSON_KEY_TAIL.match(text, end) is not None
                and _JSON_KEY_HEAD.search(text, max(0, start - _LONGEST_KEY), start) is not None))


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
    package = word() + (rng.choice(PACKAGE_SUFFIXES) if rng.random() < 0.6 else "")
    return rng.choice((f"{package}/{word()}.py", f"src/{package}/{word()}.py", f"{word()}.py"))


def name_pieces(tokenizer) -> list[str]:
    """The vocabulary's lowercase letter pieces: drills built from them make every piece a copy target.

    A piece that is never a target gets its logit pushed down at every step, until
    no amount of attention can copy it: a held-out name made of such pieces
    could not be written.
    """
    return sorted(t for t in tokenizer.get_vocab() if t.isascii() and t.isalpha() and t.islower())


def copy_drills(renderer, pieces: list[str], count: int, seed: int = 0, longest: int = 4) -> list[dict]:
    """Turns that search for each of several made-up names, in order: copying, and nothing else.

    A model meets copying everywhere in the gold plans (names from the task into
    calls, lines from views into edits) but learns it slowly from them; these
    drills, with names from neither word list, teach it first. With `longest`
    above 4, half the drills are lists of 5 to `longest` names whose later
    calls copy from hundreds of tokens back: with only short ones, nano learned
    to copy from the last ~65 tokens and no further, while an edit's path
    stands a whole file above it.
    """
    rng = random.Random(f"nano-drills:{seed}")
    rows = []
    for _ in range(count):
        definitions = rng.random() < 0.4
        length = rng.randint(1, 4) if longest <= 4 or rng.random() < 0.5 else rng.randint(5, longest)
        names = [_made_up_name(rng, pieces, 2 if definitions else 4) for _ in range(length)]
        listed = ", ".join(f"`{n}`" for n in names)
        ask = f"Find the definitions of {listed}." if definitions else f"Search for {listed}."
        calls = "\n".join(render_tool_call("search", {"pattern": f"def {n}" if definitions else n}) for n in names)
        messages = [{"role": "user", "content": ask + "\n"}, {"role": "assistant", "content": calls}]
        text, spans = render_transcript(renderer, messages, [])
        rows.append({"text": text, "spans": spans})
    return rows


def first_turns(renderer, count: int, start: int, tools: list[dict] | None = None,
                pieces: list[str] | None = None) -> list[dict]:
    """Task prompt plus the plan's first call (a search for a name in the task), for many more tasks.

    The first turn needs no observation, so these need no tool run: cheap, short
    rows in which half the trained tokens are copied from the task, which is
    what the model must learn first. With `tools` (the agent's schemas), behind
    nano's system turn as the agent shows it; without, behind the template's
    one-line default. With `pieces`, each row's names are scrambled (made up from them).
    """
    rows = []
    system = [nano_system_message()] if tools else []
    for seed in range(start, start + count):
        task = generate_task("train", seed)
        messages = system + [{"role": "user", "content": task_prompt("interactive", text=task.text)},
                             {"role": "assistant", "content": gold_script(task)[0]}]
        if pieces:
            messages = scramble(messages, pieces, random.Random(f"nano-scramble:first:{seed}"))
        text, spans = render_transcript(renderer, messages, tools or [])
        rows.append({"text": text, "spans": spans})
    return rows


def with_nano_system(messages: list[dict]) -> list[dict]:
    """The recorded conversation with nano's own system prompt in place of the agent's default one."""
    assert messages[0]["role"] == "system", "a recording starts with the agent's system turn"
    return [nano_system_message()] + messages[1:]


def plan_openings(renderer, count: int, start: int, tools: list[dict], pieces: list[str]) -> list[dict]:
    """Openings (openings.py) of `count` tasks from seed `start`, behind nano's system turn, names
    scrambled; each in the group of its working-copy path, as the recordings."""
    pool, rows = workdir_pool(), []
    for seed in range(start, start + count):
        messages = [nano_system_message()] + opening(generate_task("train", seed), pool[seed % len(pool)])
        messages = scramble(messages, pieces, random.Random(f"nano-scramble:opening:{seed}"))
        text, spans = render_transcript(renderer, messages, tools)
        rows.append({"text": text, "spans": spans, "group": seed % len(pool)})
    return rows


def follow_ups(renderer, recorded: list[tuple[int, int, list[dict]]], pool: list[str], tools: list[dict],
               pieces: list[str], count: int) -> list[dict]:
    """Chat transcripts: one recording, then a second one's request and plan in the same conversation.

    `loopcoder chat` sends a user's next request after the last one's submit;
    without such rows nano had only seen a request open a conversation and
    submitted at once. The second recording's working copy is shown as the
    first's (one working copy per chat), and one scramble covers both."""
    rng, rows = random.Random("nano-follow-ups"), []
    for n in range(min(count, len(recorded) // 2)):
        (seed, group, first), (other, other_group, second) = rng.sample(recorded, 2)
        messages = first + with_workdir(second[1:], pool[other_group], pool[group])
        messages = scramble(messages, pieces, random.Random(f"nano-scramble:follow-up:{seed}:{other}"))
        text, spans = render_transcript(renderer, messages, tools)
        if len(text) <= LONGEST_FOLLOW_UP:
            rows.append({"text": text, "spans": spans, "group": group})
    return rows


def write_training_dir(out: Path, vocab_size: int) -> dict:
    """The three phases of training: short/ (copy drills and first turns), long/ (long drills, plan
    openings and first turns), train.jsonl (the good recordings plus the rows of both); tokenizer/
    for all. Returns counts.

    The tokenizer is trained on the transcripts as the agent writes them for
    any model (default template and system prompt); the rows are rendered as
    nano sees them (its own template and system prompt). Every row but the
    drills has its names made up anew (`scramble`). Measured: from scratch on
    long/'s rows the loss stalled at 1.7 for 1600 steps with no copying at all,
    while short rows grow a copy head in ~1300 steps; so short/ comes first."""
    pool = workdir_pool()
    agent_renderer, renderer = build_test_tokenizer(), nano_renderer()
    corpus, recorded, failed, tools = [], [], 0, []
    for line in (out / RECORDINGS).read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if not rec["ok"]:
            failed += 1
            continue
        group = rec["seed"] % len(pool)
        messages = with_workdir(rec["messages"], rec["workdir"], pool[group])
        corpus.append(render_transcript(agent_renderer, messages, rec["tools"])[0])
        recorded.append((rec["seed"], group, with_nano_system(messages)))
        tools = rec["tools"]
    if not recorded:
        raise ValueError(f"no successful recordings in {out / RECORDINGS}")
    pieces = name_pieces(build_tokenizer(tokenizer_corpus(corpus), vocab_size, out / "tokenizer"))
    # Groups: drills and first turns behind the one-line default system turn, first turns behind nano's,
    # and plan openings and recordings in the groups of their working-copy paths.
    first = [{**row, "group": len(pool)} for row in first_turns(renderer, FIRST_TURNS, FIRST_TURN_SEEDS, pieces=pieces)]
    behind_system = [{**row, "group": len(pool) + 1}
                     for row in first_turns(renderer, SYSTEM_FIRST_TURNS, SYSTEM_FIRST_TURN_SEEDS, tools, pieces)]
    short = [{**row, "group": len(pool)} for row in copy_drills(renderer, pieces, DRILLS)] + first + behind_system
    long = ([{**row, "group": len(pool)} for row in copy_drills(renderer, pieces, DRILLS, seed=1, longest=LONGEST_DRILL)]
            + first + behind_system + plan_openings(renderer, OPENINGS, OPENING_SEEDS, tools, pieces))
    # The recordings: each SCRAMBLES times with its names made up anew (a name can only be copied).
    full = []
    for seed, group, messages in recorded:
        for k in range(SCRAMBLES):
            text, spans = render_transcript(renderer, scramble(messages, pieces, random.Random(f"nano-scramble:{seed}:{k}")), tools)
            full.append({"text": text, "spans": spans, "group": group})
    full += follow_ups(renderer, recorded, pool, tools, pieces, FOLLOW_UPS)
    for phase, rows in ((SHORT, short), (LONG, long)):
        write_transcripts(out / phase / "train.jsonl", rows)
        shutil.copytree(out / "tokenizer", out / phase / "tokenizer", dirs_exist_ok=True)
    write_transcripts(out / "train.jsonl", full + long)
    return {"transcripts": len(recorded), "failed": failed}
