"""Token choice and streamed detokenization (multi-byte characters, stop strings)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.runtime.sampling import TextStream, check_params, make_generator, sample_next
from loopcoder.runtime.tokenizer import encode, load_tokenizer

LOGITS = torch.tensor([0.0, 3.0, 2.9, -1.0, 1.0])


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def draws(params: GenerationParams, n: int = 300) -> list[int]:
    generator = make_generator(params.seed)
    return [sample_next(LOGITS, params, generator) for _ in range(n)]


def test_greedy_and_degenerate_filters_pick_the_argmax():
    assert set(draws(GenerationParams(temperature=0.0), 5)) == {1}
    assert set(draws(GenerationParams(temperature=5.0, top_k=1, seed=0))) == {1}
    assert set(draws(GenerationParams(temperature=5.0, top_p=0.01, seed=0))) == {1}


def test_top_k_and_top_p_limit_the_candidates():
    assert set(draws(GenerationParams(temperature=1.0, top_k=2, seed=0))) == {1, 2}
    # softmax(LOGITS): p1 = .45, p2 = .41, p4 = .06, p0 = .02: top_p .8 keeps ids 1 and 2 only
    assert set(draws(GenerationParams(temperature=1.0, top_p=0.8, seed=0))) == {1, 2}
    assert set(draws(GenerationParams(temperature=1.0, seed=0), 2000)) == {0, 1, 2, 3, 4}


def test_seed_reproduces_draws():
    params = GenerationParams(temperature=1.3, top_p=0.9, seed=7)
    assert draws(params) == draws(params)
    assert draws(params) != draws(GenerationParams(temperature=1.3, top_p=0.9, seed=8))


@pytest.mark.parametrize("field,value,message", [
    ("temperature", -0.1, "temperature must be >= 0"),
    ("top_p", 1.5, "top_p must be in"),
    ("top_k", -1, "top_k must be >= 0"),
    ("max_new_tokens", 0, "max_new_tokens must be >= 1"),
    ("stop", [""], "stop strings must not be empty"),
])
def test_bad_params_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        check_params(GenerationParams(**{field: value}))


def stream(tok, ids, stop=None):
    pieces: list[str] = []
    s = TextStream(tok, stop, pieces.append)
    for token in ids:
        if s.push(token):
            break
    return s.finish(), pieces, s


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1))
def test_pieces_concatenate_and_never_split_a_character(tok, text):
    assume("\ufffd" not in text)
    ids = encode(tok, text)
    final, pieces, _ = stream(tok, ids)
    assert final == text and "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_byte_tokens_of_one_character_stream_as_one_piece(tok):
    ids = encode(tok, "a🙂b")
    assert len(ids) >= 4  # the emoji is several byte tokens in this small vocabulary
    final, pieces, _ = stream(tok, ids)
    assert final == "a🙂b" and "🙂" in pieces[1] and all("\ufffd" not in p for p in pieces)


@settings(max_examples=150, deadline=None)
@given(before=st.text(), stop=st.text(min_size=1, max_size=6), after=st.text(), other=st.text(min_size=1, max_size=6))
def test_stop_strings_cut_the_text_and_never_stream(tok, before, stop, after, other):
    text = before + stop + after
    # When one stop string contains the other, the one completed first wins
    # (test_the_first_completed_stop_string_wins); here the earliest start does.
    assume("\ufffd" not in text and other not in stop and stop not in other)
    final, pieces, s = stream(tok, encode(tok, text), [other, stop])
    first = min(i for i in (text.find(stop), text.find(other)) if i >= 0)
    assert s.stopped and final == text[:first] == "".join(pieces)


def test_the_first_completed_stop_string_wins(tok):
    """Generation stops as soon as any stop string is complete, as servers do: "1" ends "01" before "010"."""
    ids = [tid for ch in "0101" for tid in encode(tok, ch)]
    final, pieces, s = stream(tok, ids, ["010", "1"])
    assert s.stopped and final == "0" == "".join(pieces)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_incremental_decoding_gives_the_whole_decode(tok, data):
    """Any id sequence (broken UTF-8 included): the streamed text is what decoding all ids at once gives."""
    ids = data.draw(st.lists(st.integers(0, len(tok) - 1), max_size=40))
    final, pieces, _ = stream(tok, ids)
    assert final == tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert "".join(pieces) == final


def test_each_token_decodes_a_short_window(tok):
    """The cost of a streamed token does not grow with the reply: every decode is a few ids long."""
    sizes: list[int] = []

    class Counted:  # the real tokenizer, its decode calls measured
        def decode(self, ids, **options):
            sizes.append(len(ids))
            return tok.decode(ids, **options)

    text = "def f(x):\n    return x + 1  # ünïcode 🙂\n" * 30
    s = TextStream(Counted(), ["never"], None)
    for token in encode(tok, text):
        s.push(token)
    assert s.finish() == text and len(sizes) > 300 and max(sizes) <= 12
