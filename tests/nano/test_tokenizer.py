"""nano's tokenizer: no piece crosses a word's edge, so names copy token for token; any text round-trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nano.data import build_tokenizer
from nano.tasks import generate_task
from nano.tiny_tokenizer import build_test_tokenizer

CONTEXTS = ("Rename `{}` to", '"pattern": "{}"', "def {}(x):", "    return {} + 1", "x.{}\n", "\t{}]", "\\n{}")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = [generate_task("train", seed).text for seed in range(40)] * 2
    return build_test_tokenizer(corpus, 600, isolate_words=True)


@pytest.mark.parametrize("name", ["polish_almond", "CarveMaple", "MAX_HERON", "sparrowlib/heron.py", "x1_y22"])
def test_a_name_is_the_same_tokens_in_every_context(tokenizer, name):
    pieces = tokenizer(name, add_special_tokens=False)["input_ids"]
    for context in CONTEXTS:
        ids = tokenizer(context.format(name), add_special_tokens=False)["input_ids"]
        assert any(ids[i:i + len(pieces)] == pieces for i in range(len(ids))), context


def test_a_plain_byte_level_bpe_splits_names_by_context():
    """The reason for isolate_words: without it the piece before a name swallows the space."""
    plain = build_test_tokenizer([f"Rename the function `polish_{w}` to `{w}_polish` in def polish(x)"
                                  for w in ("almond", "maple", "heron", "acorn")] * 20, 600)
    name = plain("polish", add_special_tokens=False)["input_ids"]
    spaced = plain("def polish", add_special_tokens=False)["input_ids"]
    assert spaced[-len(name):] != name


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_build_tokenizer_saves_a_word_isolating_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    build_tokenizer([generate_task("train", s).text for s in range(20)], 400, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert "Ġ" in loaded.tokenize("def polish")  # the space stands alone
