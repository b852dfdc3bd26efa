"""Requests reach the session that holds their conversation; new ones get a free or the stalest session."""
from __future__ import annotations

from loopcoder.server.pool import SessionPool
from tests.server.conftest import ScriptedBackend


def turn(pool: SessionPool, messages: list[dict], reply: str):
    slot = pool.acquire(messages, None)
    pool.record(slot, messages, None, {"role": "assistant", "content": reply})
    return slot


def test_routing_by_conversation():
    pool = SessionPool(lambda: ScriptedBackend(["x"]), size=2)
    system = {"role": "system", "content": "same system prompt for everyone"}
    a1 = [system, {"role": "user", "content": "task A"}]
    b1 = [system, {"role": "user", "content": "task B"}]
    slot_a = turn(pool, a1, "a-reply")
    slot_b = turn(pool, b1, "b-reply")
    assert slot_a is not slot_b  # a shared system prompt is not a continuation

    a2 = a1 + [{"role": "assistant", "content": "a-reply"}, {"role": "user", "content": "more A"}]
    assert turn(pool, a2, "a-reply-2") is slot_a
    b1_again = list(b1)  # the same prompt again (a retry): same session, its cache holds the prompt
    assert turn(pool, b1_again, "b-other") is slot_b

    c1 = [system, {"role": "user", "content": "task C"}]
    assert turn(pool, c1, "c") is slot_a  # pool full: the least recently used session is taken over
    assert len(pool.slots) == 2

    pool.forget(slot_b)
    b2 = b1 + [{"role": "assistant", "content": "b-other"}, {"role": "user", "content": "more B"}]
    assert turn(pool, b2, "b") is slot_b  # a forgotten slot is free again


def test_different_tools_never_continue():
    pool = SessionPool(lambda: ScriptedBackend(["x"]), size=3)
    msgs = [{"role": "user", "content": "hi"}]
    first = pool.acquire(msgs, [{"type": "function", "function": {"name": "a"}}])
    pool.record(first, msgs, [{"type": "function", "function": {"name": "a"}}], {"role": "assistant", "content": "x"})
    assert pool.acquire(msgs, None) is not first
