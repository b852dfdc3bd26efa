"""The nano data builder: copy drills, first turns, the tokenizer corpus and the workdir pool."""
from __future__ import annotations

import re

from agent.nano.build import copy_drills, first_turns, tokenizer_corpus, workdir_pool, with_workdir
from agent.nano.record import gold_script
from agent.nano.tasks import generate_task
from agent.toolcalls import parse_tool_calls
from model.tiny_tokenizer import build_test_tokenizer

RENDERER = build_test_tokenizer()


def _turns(row: dict) -> tuple[str, str]:
    user = row["text"].split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    (start, end), = row["spans"]
    return user, row["text"][start:end].removesuffix("<|im_end|>")


def test_drills_search_for_every_name_of_the_request_in_order():
    for row in copy_drills(RENDERER, ["ab", "cde", "fo"], 30, seed=3):
        user, reply = _turns(row)
        names = re.findall(r"`([^`]+)`", user)
        patterns = [c.arguments["pattern"] for c in parse_tool_calls(reply).calls]
        prefix = "def " if user.startswith("Find the definitions") else ""
        assert patterns == [prefix + n for n in names] and names


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
