"""The nano data builder: copy drills, first turns, the tokenizer corpus and the workdir pool."""
from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from nano import words
from nano.build import FIXED_WORDS, copy_drills, first_turns, tokenizer_corpus, workdir_pool, with_workdir
from nano.record import gold_script
from nano.tasks import generate_task
from nano.tiny_tokenizer import build_test_tokenizer
from loopcoder.runtime.toolcalls import parse_tool_calls, render_tool_call

RENDERER = build_test_tokenizer()


def _turns(row: dict) -> tuple[str, str]:
    user = row["text"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    (start, end), = row["spans"]
    return user, row["text"][start:end].removesuffix("<|im_end|>")


def test_drills_search_for_every_name_of_the_request_in_order():
    lengths = []
    for row in copy_drills(RENDERER, ["ab", "cde", "fo"], 30, seed=3, longest=24):
        user, reply = _turns(row)
        names = re.findall(r"`([^`]+)`", user)
        patterns = [c.arguments["pattern"] for c in parse_tool_calls(reply).calls]
        prefix = "def " if user.startswith("Find the definitions") else ""
        assert patterns == [prefix + n for n in names] and names
        lengths.append(len(names))
    assert min(lengths) <= 4 and max(lengths) > 10  # short requests and long lists (copies from far back)


def test_first_turns_are_the_gold_plan_opening():
    row, = first_turns(RENDERER, 1, 500)
    task = generate_task("train", 500)
    user, reply = _turns(row)
    assert user.strip() == task.text and reply == gold_script(task)[0]


def test_tokenizer_corpus_scrubs_training_names_only_outside_the_system_turn():
    text = ("<|im_start|>system\nledger<|im_end|>\n<|im_start|>user\nRename `parse_ledger` in ledgerkit/coin.py "
            "to `polish_walnut`; update the test.")
    scrubbed, = tokenizer_corpus([text])
    assert scrubbed.startswith("<|im_start|>system\nledger<|im_end|>")
    conversation = scrubbed.split("<|im_start|>user")[1]
    assert not re.search(r"parse|ledger|coin", conversation)
    assert "polish_walnut" in conversation and "update the test" in conversation  # held-out and fixed words stay
    assert re.search(r"`[a-z]{5}_[a-z]{6}`", conversation) and re.search(r"[a-z]{6}kit/[a-z]{4}\.py", conversation)


def test_workdirs_look_like_working_copies_and_replace_everywhere():
    pool = workdir_pool()
    assert pool == workdir_pool() and len(set(pool)) == len(pool)
    assert all(re.fullmatch(r"/(root|home/\w+)/\.cache/loopcoder/worktrees/\w+-[0-9a-f]{10}-\w{8}", p) for p in pool)
    messages = [{"role": "system", "content": "at /tmp/x."}, {"role": "tool", "content": "/tmp/x/a.py edited"}]
    assert [m["content"] for m in with_workdir(messages, "/tmp/x", pool[0])] == [f"at {pool[0]}.", f"{pool[0]}/a.py edited"]


PIECES = ["ab", "cde", "fo", "gul", "ix", "mon", "zel"]


from nano.phrasing import fixed_words  # noqa: E402


def _scrambled_recording(seed: int) -> tuple[list[dict], list[dict]]:
    from nano.build import scramble

    task = generate_task("train", seed)
    listing = "\n".join(f"{path}:1:{body.splitlines()[0]}" for path, body in sorted(task.files.items()))
    messages = [{"role": "system", "content": "You work on parse_ledger."},
                {"role": "user", "content": task.text},
                {"role": "assistant", "content": gold_script(task)[0]},
                {"role": "tool", "content": listing},
                {"role": "assistant", "content": render_tool_call("bash", {"command": "sed -i 's/\\bparse\\b/x/' a.py"})}]
    return messages, scramble(messages, PIECES, random.Random(seed))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_scrambled_conversations_name_no_training_word_and_stay_consistent(seed):
    original, scrambled = _scrambled_recording(seed)
    assert scrambled[0] == original[0]  # the system turn is nano's, untouched
    train = (set(words.TRAIN_VERBS) | set(words.TRAIN_NOUNS)) - FIXED_WORDS
    kept = re.compile(r'"[a-z_]+":|\.cache|LIMIT|\bAdd |\\b')  # argument names, fixed wording, escapes
    for before, after in zip(original[1:], scrambled[1:]):
        words_after = {w.lower() for w in re.findall(r"[A-Za-z]+", kept.sub(" ", after["content"]))}
        assert not any(w in train for w in words_after), after["content"]
        # same shape: only letters of names changed, every other character kept in place
        assert re.sub(r"[A-Za-z]+", "w", before["content"].replace("\\b", " ")) == \
            re.sub(r"[A-Za-z]+", "w", after["content"].replace("\\b", " "))
    call, = parse_tool_calls(scrambled[2]["content"]).calls  # a call stays a valid call with the same arguments
    original_call, = parse_tool_calls(original[2]["content"]).calls
    assert call.name == original_call.name and call.arguments.keys() == original_call.arguments.keys()
    task_names = [w for w in re.findall(r"\w{3,}", scrambled[1]["content"]) if w.lower() not in fixed_words()]
    assert any(name in scrambled[2]["content"] for name in task_names)  # the first call still names the task's name
    assert "\\b" in scrambled[4]["content"]  # escapes are not taken for words


def test_scrambling_is_the_same_word_for_the_same_word_within_a_conversation():
    from nano.build import scramble

    messages = [{"role": "user", "content": "Rename `parse_ledger` in ledgerkit/ledger.py; LEDGER_LIMIT, ParseLedger."}]
    text = scramble(messages, PIECES, random.Random(1))[0]["content"]
    [(a, b)], [c] = re.findall(r"`(\w+)_(\w+)`", text), re.findall(r"in (\w+)kit/", text)
    assert b == c and f"{b}kit/{b}.py" in text and f"{b.upper()}_LIMIT" in text
    assert f"{a.capitalize()}{b.capitalize()}" in text


def test_plan_openings_end_at_the_last_edit_with_names_made_up():
    from nano.build import plan_openings
    from nano.data import nano_renderer

    tools = [{"type": "function", "function": {"name": n, "description": "", "parameters": {"type": "object"}}}
             for n in ("bash", "search", "str_replace_editor", "run_tests", "submit")]
    rows = plan_openings(nano_renderer(), 4, 700, tools, PIECES)  # one task of each kind
    for seed, row in enumerate(rows, 700):
        task, text = generate_task("train", seed), row["text"]
        replies = [text[start:end].removesuffix("<|im_end|>") for start, end in row["spans"]]
        script = gold_script(task)  # up to the last edit before the tests first run
        plan = script[:next(i for i, r in enumerate(script) if '"run_tests"' in r)]
        assert [c.name for r in replies for c in parse_tool_calls(r).calls] == \
            [c.name for r in plan for c in parse_tool_calls(r).calls]
        assert row["group"] == seed % len(workdir_pool())
        names = [task.facts[key] for key in ("old", "new", "name", "function", "package") if key in task.facts]
        names = [n for n in names if set(re.findall("[a-z]+", n.lower())) & (set(words.TRAIN_VERBS) | set(words.TRAIN_NOUNS))]
        assert names and not any(name in text for name in names)  # made up anew in the whole conversation
    assert "<tool_response>\ndef " in rows[2]["text"]  # the off-by-one's function, as the real sed printed it


def test_follow_ups_send_a_second_request_after_the_first_ones_submit():
    """A chat: one recording, then another's request and plan in the same conversation and working copy."""
    from nano.build import follow_ups, with_nano_system
    from nano.data import nano_renderer
    from nano.record import record

    pool = workdir_pool()
    recorded = []
    for seed in (3, 6):
        rec = record(generate_task("train", seed))
        assert rec.ok
        recorded.append((seed, seed % len(pool), with_nano_system(with_workdir(rec.messages, rec.workdir, pool[seed % len(pool)]))))
    [row] = follow_ups(nano_renderer(), recorded, pool, rec.tools, PIECES, 1)
    text = row["text"]
    turns = text.split("<|im_start|>user\n")[1:]  # tool responses are user turns of <tool_response> blocks
    requests = [i for i, turn in enumerate(turns) if not turn.startswith("<tool_response>")]
    assert len(requests) == 2
    first, second = "".join(turns[:requests[1]]), "".join(turns[requests[1]:])
    assert '"submit"' in first and '"run_tests"' in second  # the second request comes after the first's submit
    groups = {row["group"]}
    assert groups <= {3 % len(pool), 6 % len(pool)} and sum(p in text for p in pool) == 1  # one working copy
    assert len(row["spans"]) == sum(m["role"] == "assistant" for _, _, ms in recorded for m in ms)
