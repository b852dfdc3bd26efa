"""Tiny PLT configs and models with weights large enough that every path shows in the logits."""
from __future__ import annotations

import pytest
import torch

from loopcoder.model import IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM, native

TINY = dict(
    vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, plt_window_size=[8, 0], plt_num_loops=2, plt_emb_scale=0.7,
    plt_hidden_scale=0.6, plt_gate_use_hidden_states=True, bos_token_id=1, eos_token_id=2,
)


def tiny_config(**overrides) -> IQuestPLTCoderConfig:
    return IQuestPLTCoderConfig(**{**TINY, **overrides})


def tiny_model(seed: int = 0, dtype=torch.float32, **overrides) -> IQuestPLTCoderForCausalLM:
    """Random weights of unit-scale activations (the default 0.02 init makes every logit ~0)."""
    torch.manual_seed(seed)
    model = IQuestPLTCoderForCausalLM(tiny_config(**overrides))
    return unit_scale(model).to(dtype).eval()


def unit_scale(model: IQuestPLTCoderForCausalLM) -> IQuestPLTCoderForCausalLM:
    """Weights redrawn (from torch's global generator) so activations are unit-scale: logits far apart."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn_like(param))
            elif name.endswith("bias"):
                param.normal_()
            elif param.dim() == 2:
                param.normal_(0, 1 / param.shape[1] ** 0.5 if "embed" not in name else 1.0)
    return model


@pytest.fixture
def model32():
    return tiny_model()


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """The native kernels built anew into an empty cache directory (returned), forgotten again afterwards."""
    monkeypatch.setattr(native, "CACHE_DIR", tmp_path / "kernels")
    native._library.cache_clear()
    yield tmp_path / "kernels"
    native._library.cache_clear()
