"""IQuestPLTCoderConfig: the vendor defaults, the released values, and clear errors for bad ones."""
from __future__ import annotations

import pytest

from model import IQuestPLTCoderConfig
from model.presets import preset_config


def test_defaults_are_the_vendor_class_defaults():
    config = IQuestPLTCoderConfig()
    assert config.vocab_size == 75904 and config.eos_token_id == [2, 75864, 75869] and config.bos_token_id == 1
    assert config.plt_window_size == [64, 0] and config.plt_num_loops == 2
    assert config.plt_emb_scale is None and config.emb_scale == 1.0 and config.hidden_scale == 1.0
    assert config.plt_gate_use_hidden_states is False and config.tie_word_embeddings is False


def test_released_shape_has_every_config_json_field():
    data = preset_config("7b-shape").to_diff_dict()
    expected = {
        "architectures": ["IQuestPLTCoderForCausalLM"], "model_type": "iquestpltcoder", "dtype": "bfloat16",
        "bos_token_id": 1, "eos_token_id": 2, "vocab_size": 76800, "hidden_size": 5120, "intermediate_size": 27648,
        "num_hidden_layers": 14, "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "rope_scaling": None,
        "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False, "use_cache": True,
        "hidden_act": "silu", "plt_num_loops": 2, "plt_window_size": [64, 0], "plt_normalize_per_loop": True,
        "plt_emb_scale": 0.707, "plt_hidden_scale": 0.053, "plt_gate_use_hidden_states": True,
    }
    assert {k: data.get(k) for k in expected} == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(plt_window_size=[64, 1]), r"plt_window_size.*\[left, 0\]"),
        (dict(plt_window_size=[64]), r"plt_window_size"),
        (dict(plt_window_size=[-1, 0]), r"plt_window_size"),
        (dict(num_attention_heads=40, num_key_value_heads=6), r"num_attention_heads.*divisible.*num_key_value_heads"),
        (dict(plt_num_loops=0), r"plt_num_loops.*>= 1"),
        (dict(plt_num_loops=1.5), r"plt_num_loops"),
        (dict(hidden_size=0), r"hidden_size.*positive"),
        (dict(head_dim=7), r"head_dim.*even"),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), r"rope_scaling.*null"),
        (dict(tie_word_embeddings=True), r"tie_word_embeddings.*untied"),
        (dict(hidden_act="gelu"), r"hidden_act.*silu"),
        (dict(plt_emb_scale="big"), r"plt_emb_scale.*number"),
    ],
)
def test_invalid_values_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        IQuestPLTCoderConfig(**overrides)
