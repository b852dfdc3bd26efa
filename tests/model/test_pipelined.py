"""Pipelined draft verification (docs/plt.md §4): loop 0 runs ahead of loop 1, and every logit a pass
returns equals a fresh forward's over the same tokens, through crops and any schedule of passes."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.model.conftest import tiny_model

MODEL = tiny_model(3, torch.float64, plt_window_size=[4, 0])  # a small window: the rings wrap often
SLACK = 6  # a small slack: rollbacks reach the ring's and the carry's limits
TOKENS = 90


def fresh_logits(ids: list[int]) -> torch.Tensor:
    """[n, V] from one forward over `ids` on an empty cache (loop after loop)."""
    return MODEL(torch.tensor([ids]), cache=MODEL.new_cache(), use_cache=True).logits[0]


@st.composite
def schedules(draw):
    """A token sequence, a prefill length, then passes: how many new tokens, and whether a draft was
    rejected after it (the cache then keeps the first `kept` + 1 of the tokens loop 1 ran)."""
    ids = draw(st.lists(st.integers(3, 96), min_size=TOKENS, max_size=TOKENS))
    prefill = draw(st.integers(1, 40))
    steps = draw(st.lists(st.tuples(st.integers(0, SLACK + 1), st.none() | st.integers(0, SLACK)),
                          min_size=1, max_size=25))
    return ids, prefill, steps


@settings(max_examples=40, deadline=None)
@given(schedules())
def test_every_pipelined_logit_equals_a_fresh_forward(schedule):
    ids, prefill, steps = schedule
    reference = fresh_logits(ids)
    cache = MODEL.new_cache(slack=SLACK)
    MODEL(torch.tensor([ids[:prefill]]), cache=cache, use_cache=True)
    for new, kept in steps:
        held, ahead = cache.get_seq_length(), cache.ahead
        new = min(new, SLACK + 1 - ahead, TOKENS - held - ahead)  # the session's bound: loop 0 leads by <= slack + 1
        if ahead + new == 0:
            continue
        logits = MODEL.pipelined_forward(torch.tensor([ids[held:held + ahead + new]]), cache)
        through = ahead + (1 if new else 0)
        assert logits.shape[0] == through
        assert cache.get_seq_length() == held + through and cache.ahead == ahead + new - through
        torch.testing.assert_close(logits, reference[held:held + through], rtol=0, atol=1e-9)
        if kept is not None:  # a rejected draft: back into what loop 1 ran (drops loop 0's lead)
            cache.crop(held + 1 + min(kept, through - 1))


def test_a_regular_forward_refuses_a_cache_with_loop0_ahead_until_cropped():
    ids = list(range(10, 30))
    cache = MODEL.new_cache()
    MODEL(torch.tensor([ids[:10]]), cache=cache, use_cache=True)
    MODEL.pipelined_forward(torch.tensor([ids[10:14]]), cache)  # loop 1 runs 1 token, loop 0 three ahead
    assert (cache.get_seq_length(), cache.ahead) == (11, 3)
    with pytest.raises(ValueError, match="through loop 0 only"):
        MODEL(torch.tensor([[ids[14]]]), cache=cache, use_cache=True)
    cache.crop(cache.get_seq_length())  # drops loop 0's lead only
    logits = MODEL(torch.tensor([ids[11:15]]), cache=cache, use_cache=True).logits[0]
    torch.testing.assert_close(logits, fresh_logits(ids[:15])[11:], rtol=0, atol=1e-9)


def test_loop0_running_ahead_limits_how_far_a_crop_can_go():
    """The carry ring holds loop 0's output at the last ring_size positions: when loop 0 ran far ahead,
    rolling loop 1 back past it is refused instead of giving wrong logits."""
    cache = MODEL.new_cache(slack=SLACK)  # ring_size = window 4 + 1 + 6 = 11
    ids = list(range(10, 80))
    MODEL(torch.tensor([ids[:30]]), cache=cache, use_cache=True)
    MODEL.pipelined_forward(torch.tensor([ids[30:40]]), cache)  # loop 0 through position 39, loop 1 through 30
    assert cache.can_crop(31) and not cache.can_crop(29)  # position 28's carry slot now holds position 39's
    with pytest.raises(ValueError, match="re-prefill"):
        cache.crop(29)


def test_pipelined_verification_needs_two_loops():
    three = tiny_model(1, torch.float64, plt_num_loops=3)
    cache = three.new_cache()
    three(torch.tensor([[5, 6, 7]]), cache=cache, use_cache=True)
    assert not three.supports_pipelined(cache)
    with pytest.raises(ValueError, match="2-loop PLT"):
        three.pipelined_forward(torch.tensor([[8, 9]]), cache)
