"""The size check refuses only prompts that cannot fit: no text tokenizes to fewer than
len(text) / max_token_chars tokens, whatever the text: any Unicode, or runs of the vocabulary's
own longest pieces (the text that packs the most characters into each token)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.runtime.backends import create_backend

NANO = Path(__file__).resolve().parents[2] / "checkpoints" / "loopcoder-nano"


@pytest.fixture(scope="module", params=["tiny", "nano"])
def backend(request, tiny_checkpoint):
    loaded = create_backend("plt", model_path=tiny_checkpoint if request.param == "tiny" else NANO, device="cpu")
    tokenizer = loaded.tokenizer
    pieces = sorted({tokenizer.decode([i]) for i in range(len(tokenizer))}, key=len)[-200:]
    loaded.texts = st.text(max_size=300) | st.lists(st.sampled_from(pieces), max_size=40).map("".join)
    yield loaded
    loaded.close()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_no_text_takes_fewer_tokens_than_its_bound(backend, data):
    text = data.draw(backend.texts)
    tokens = backend.count_tokens([{"role": "user", "content": text}])
    assert tokens * backend.max_token_chars >= len(text)
