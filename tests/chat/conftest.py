"""Shared fixtures: one small BPE tokenizer for the whole session (training it takes a second or two)."""
from __future__ import annotations

import pytest

from model.tiny_tokenizer import save_test_tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return save_test_tokenizer(tmp_path_factory.mktemp("tokenizer"))
