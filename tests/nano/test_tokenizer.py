"""nano's tokenizer: no piece crosses a word's edge, so names copy token for token; any text round-trips."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from nano.data import build_tokenizer
from nano.tasks import generate_task
from nano.tiny_tokenizer import build_test_tokenizer, save_test_tokenizer

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
    build_tokenizer([generate_task("train", s).text for s in range(20)], 400, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert "Ġ" in loaded.tokenize("def polish")  # the space stands alone


def test_a_saved_tokenizer_config_is_one_both_transformers_majors_read(tmp_path):
    """transformers 5 writes `TokenizersBackend` and a list of extra special tokens, which 4.x cannot load:
    the saved config is the 4.x form, which 5.x reads as well (the suite runs under both)."""
    save_test_tokenizer(tmp_path, ["Rename `polish_almond` to `carve_maple`."] * 4, 300)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and "backend" not in config
    assert config["additional_special_tokens"] == ["<|im_start|>", "<|im_end|>"] and config.get("extra_special_tokens", {}) == {}
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded("<|im_start|>user<|im_end|>", add_special_tokens=False)["input_ids"]
    assert ids[0] == loaded.convert_tokens_to_ids("<|im_start|>") and ids[-1] == loaded.convert_tokens_to_ids("<|im_end|>")
    assert loaded.chat_template
