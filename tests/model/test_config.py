"""IQuestPLTCoderConfig: the vendor defaults, the released values, and clear errors for bad ones."""
from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from loopcoder.model import IQuestPLTCoderConfig
from loopcoder.model.compat import TRANSFORMERS_MAJOR
from loopcoder.model.presets import preset_config

# LoopCoder-V2's config.json as released (docs/plt.md §1: written by transformers 4.57.1)
RELEASED_CONFIG = {
    "architectures": ["IQuestPLTCoderForCausalLM"], "model_type": "iquestpltcoder",
    "auto_map": {"AutoConfig": "configuration_iquestpltcoder.IQuestPLTCoderConfig"},
    "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16",
    "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120, "initializer_range": 0.02,
    "intermediate_size": 27648, "max_position_embeddings": 131072, "mlp_bias": False, "num_attention_heads": 40,
    "num_hidden_layers": 14, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_scaling": None,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "transformers_version": "4.57.1", "use_cache": True,
    "vocab_size": 76800, "plt_num_loops": 2, "plt_window_size": [64, 0], "plt_normalize_per_loop": True,
    "plt_emb_scale": 0.707, "plt_hidden_scale": 0.053, "plt_gate_use_hidden_states": True,
}


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
        (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}), r"rope_parameters.*plain"),
        (dict(rope_theta=0), r"rope_theta.*positive"),
        (dict(tie_word_embeddings=True), r"tie_word_embeddings.*untied"),
        (dict(hidden_act="gelu"), r"hidden_act.*silu"),
        (dict(plt_emb_scale="big"), r"plt_emb_scale.*number"),
    ],
)
def test_invalid_values_are_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        IQuestPLTCoderConfig(**overrides)


def _written(tmp_path, data: dict):
    (tmp_path / "config.json").write_text(json.dumps(data))
    return AutoConfig.from_pretrained(tmp_path)


def test_released_config_json_loads_and_round_trips(tmp_path):
    config = _written(tmp_path, RELEASED_CONFIG)
    assert type(config) is IQuestPLTCoderConfig and config.rope_theta == 500000.0
    config.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["rope_theta"] == 500000.0  # what transformers 4.x reads
    if TRANSFORMERS_MAJOR >= 5:
        assert saved["rope_parameters"] == {"rope_type": "default", "rope_theta": 500000.0}
    again = AutoConfig.from_pretrained(tmp_path / "saved")
    assert again.to_diff_dict() == config.to_diff_dict()


def test_config_json_in_the_transformers_5_form_loads(tmp_path):
    """transformers 5 keeps the base in `rope_parameters` (and may drop `rope_theta`): it wins, on either major."""
    data = {k: v for k, v in RELEASED_CONFIG.items() if k not in ("rope_theta", "rope_scaling")}
    config = _written(tmp_path, {**data, "rope_parameters": {"rope_type": "default", "rope_theta": 250000.0}})
    assert config.rope_theta == 250000.0
    legacy_dict = {**RELEASED_CONFIG, "rope_scaling": {"rope_type": "default", "rope_theta": 125000.0}}
    assert _written(tmp_path, legacy_dict).rope_theta == 125000.0
