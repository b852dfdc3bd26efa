"""Prompt-lookup speculation, model side: the draft index, the draft length, the acceptance rule,
and the PLT cache rolled back after a verification forward."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.runtime.sampling import MAX_DRAFT_TOKENS
from loopcoder.runtime.speculative import MAX_NGRAM, DraftLength, PromptLookup, accept_sampled

from tests.model.conftest import tiny_model

MODEL = tiny_model(3, torch.float64)  # window 8: a ring of 25 positions with the default slack of 16
small_ids = st.lists(st.integers(3, 8), max_size=60)  # few distinct ids: many repeats


def expected_draft(tokens: list[int], k: int) -> list[int]:
    """What followed the most recent earlier occurrence of the longest suffix (<= MAX_NGRAM), by brute force."""
    for n in range(min(MAX_NGRAM, len(tokens)), 0, -1):
        suffix = tokens[-n:]
        for end in range(len(tokens) - 1, n - 1, -1):
            if tokens[end - n:end] == suffix:
                return tokens[end:end + k]
    return []


@settings(max_examples=200, deadline=None)
@given(small_ids, small_ids, st.integers(1, 10))
def test_draft_is_what_followed_the_latest_match(first, second, k):
    lookup = PromptLookup()
    lookup.sync(first)
    lookup.sync(second)  # cut back to the common prefix, then extended: as a fresh index over `second`
    assert lookup.tokens == second
    assert lookup.draft(k) == expected_draft(second, k)


def test_draft_prefers_the_longer_match():
    lookup = PromptLookup()
    lookup.extend([5, 6, 7, 1, 9, 6, 7, 2, 3, 6, 7])
    assert lookup.draft(2) == [2, 3]  # "6 7" was last followed by 2
    lookup.extend([5, 6, 7])  # now "5 6 7" matches the start: followed by 1
    assert lookup.draft(3) == [1, 9, 6]
    assert PromptLookup().draft(4) == [] and lookup.draft(0) == []


def test_draft_length_grows_while_accepted_and_restarts_after_two_right_guesses():
    length = DraftLength(most=8)
    assert length.k == 0
    for guess, chosen, k in ((5, 5, 0), (4, 5, 0), (None, 5, 0), (5, 5, 0), (6, 6, 2)):
        length.observe(guess, chosen)
        assert length.k == k
    for expected in (4, 8, 8):
        length.verified(drafted=length.k, accepted=length.k)
        assert length.k == expected
    length.verified(drafted=5, accepted=5)  # a shorter draft (the lookup ran out), all accepted
    assert length.k == 8
    length.verified(drafted=8, accepted=3)
    assert length.k == 3
    length.verified(drafted=3, accepted=0)
    assert length.k == 0


def test_a_long_repeat_restarts_drafting_at_once():
    length = DraftLength(most=8)
    assert length.size(matched=MAX_NGRAM - 1) == 0  # a short match is no evidence: wait for right guesses
    assert length.size(matched=MAX_NGRAM) == DraftLength.SURE_RESTART  # the last MAX_NGRAM tokens occurred before
    length.verified(drafted=4, accepted=4)
    assert length.size(matched=0) == 8  # once drafting, the match no longer matters
    length.verified(drafted=8, accepted=0)
    assert length.size(matched=1) == 0
    assert DraftLength(most=2).size(matched=MAX_NGRAM) == 2


def test_matched_is_the_longest_suffix_seen_before():
    lookup = PromptLookup()
    lookup.extend([1, 2, 3, 4, 5, 9])
    assert lookup.matched() == 0
    lookup.extend([2, 3])
    assert lookup.matched() == 2 and lookup.draft(2) == [4, 5]
    lookup.extend([4, 5, 6])
    assert lookup.matched() == 0
    lookup.extend([1, 2, 3, 4, 5])
    assert lookup.matched() == MAX_NGRAM


def test_a_draft_length_with_a_floor_never_stops_drafting():
    length = DraftLength(most=8, floor=2)
    assert length.k == 2
    length.verified(drafted=2, accepted=0)
    assert length.k == 2  # a rejection costs no extra pass in a pipelined verification: keep drafting
    length.verified(drafted=2, accepted=2)
    assert length.k == 4
    length.verified(drafted=4, accepted=3)
    assert length.k == 3
    assert DraftLength(most=1, floor=2).k == 1


def test_acceptance_rule_keeps_the_distribution():
    """Draft 1 of a 4-token distribution, 10k draws: every token comes out with its probability."""
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    generator = torch.Generator().manual_seed(0)
    for draft in (1, 3):
        counts = torch.bincount(torch.tensor([accept_sampled(probs, draft, generator) for _ in range(10_000)]),
                                minlength=4)
        torch.testing.assert_close(counts / counts.sum(), probs, rtol=0, atol=0.02)  # 4 standard deviations
    certain = torch.tensor([0.0, 1.0, 0.0])
    assert accept_sampled(certain, 1, generator) == 1
    assert accept_sampled(certain, 0, generator) == 1  # a draft of probability 0 is always replaced


def _logits(ids: list[int], cache=None) -> torch.Tensor:
    with torch.no_grad():
        return MODEL(torch.tensor([ids]), past_key_values=cache, use_cache=True).logits[0]  # [n, V]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 60), st.integers(1, MAX_DRAFT_TOKENS), st.data())
def test_rollback_after_a_verification_is_exact(held, k, data):
    """Prefill, verify k drafts in one forward, keep `accepted` of them, continue past a window:
    every logit equals a fresh forward's over the tokens actually kept."""
    accepted = data.draw(st.integers(0, k))
    ids = data.draw(st.lists(st.integers(3, 96), min_size=held + 1 + k + 10, max_size=held + 1 + k + 10))
    cache = MODEL.new_cache()
    _logits(ids[:held], cache)
    verify = _logits(ids[held:held + 1 + k], cache)  # [k+1, V]: the pending token and k drafts
    kept = held + 1 + accepted
    cache.crop(kept)
    later = [_logits([token], cache)[0] for token in ids[held + 1 + k:]]  # one-token steps after the rollback
    sequence = ids[:kept] + ids[held + 1 + k:]
    fresh = _logits(sequence)
    torch.testing.assert_close(verify[:accepted + 1], fresh[held:kept], rtol=0, atol=1e-10)
    torch.testing.assert_close(torch.stack(later), fresh[kept:], rtol=0, atol=1e-10)


def test_transformers_prompt_lookup_runs_on_the_plt_cache():
    """`generate(prompt_lookup_num_tokens=...)` crops our cache too: the same tokens as plain greedy."""
    base = torch.randint(3, 97, (30,), generator=torch.Generator().manual_seed(1))
    ids = torch.cat([base, base[:10]])[None]
    plain = MODEL.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=0, eos_token_id=2)
    drafted = MODEL.generate(ids, max_new_tokens=40, do_sample=False, prompt_lookup_num_tokens=8,
                             pad_token_id=0, eos_token_id=2)
    assert torch.equal(plain, drafted)
