"""Shared fixtures: one small BPE tokenizer and tiny random checkpoints, built once per session."""
from __future__ import annotations

import shutil

import pytest
import torch

from nano.tiny_tokenizer import save_test_tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run far faster on one thread than on several competing ones (and CI machines are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    return save_test_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer_dir):
    """A tiny random Llama (for the `hf` backend) with the test tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("llama")
    shutil.copytree(tokenizer_dir, out, dirs_exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def plt_dir(tmp_path_factory, tokenizer_dir):
    """A tiny random LoopCoder-V2 style checkpoint (the model helper's `tiny` preset) with the test tokenizer."""
    from loopcoder.model.presets import init_random_checkpoint

    out = tmp_path_factory.mktemp("plt")
    init_random_checkpoint(out, "tiny", seed=0, tokenizer=tokenizer_dir)
    return out
