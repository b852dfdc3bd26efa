"""Checkpoints: round trips, shards, the gate's second name, and each bad checkpoint's error."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from loopcoder.model import CheckpointError, IQuestPLTCoderConfig, IQuestPLTCoderForCausalLM
from loopcoder.model.presets import init_random_checkpoint

from .conftest import tiny_model

IDS = torch.randint(3, 97, (1, 24), generator=torch.Generator().manual_seed(0))


def _logits(model):
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model saved with save_pretrained, and its logits."""
    path = tmp_path_factory.mktemp("ckpt")
    model = tiny_model(1)
    model.save_pretrained(path)
    return path, _logits(model)


def _copy(saved, tmp_path, edit_tensors=None, edit_config=None):
    """The saved checkpoint with its tensors and/or config edited."""
    source, _ = saved
    tensors = load_file(source / "model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    if edit_config:
        edit_config(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_save_pretrained_round_trip_through_auto_classes(saved):
    path, logits = saved
    loaded = AutoModelForCausalLM.from_pretrained(path)
    assert type(loaded) is IQuestPLTCoderForCausalLM
    torch.testing.assert_close(_logits(loaded), logits, rtol=0, atol=0)
    assert set(json.loads((path / "config.json").read_text())) >= {"plt_window_size", "plt_gate_use_hidden_states"}


def test_dtype_and_device_map_are_accepted(saved):
    path, logits = saved
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="auto")
    assert loaded.dtype == torch.bfloat16
    assert (_logits(loaded).float().argmax(-1) == logits.argmax(-1)).float().mean() > 0.8


def test_auto_map_in_config_does_not_need_remote_code(saved, tmp_path):
    """The released config.json names a remote AutoConfig; the registered local class wins."""
    path = _copy(saved, tmp_path, edit_config=lambda c: c.update(
        auto_map={"AutoConfig": "configuration_iquestpltcoder.IQuestPLTCoderConfig"}))
    assert type(AutoConfig.from_pretrained(path)) is IQuestPLTCoderConfig
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(path)), saved[1], rtol=0, atol=0)


def test_loop_gate_proj_names_load(saved, tmp_path):
    def rename(tensors):
        for key in [k for k in tensors if ".plt_gate." in k]:
            tensors[key.replace(".plt_gate.", ".loop_gate_proj.")] = tensors.pop(key)
        tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)  # ignored, as in old checkpoints

    path = _copy(saved, tmp_path, edit_tensors=rename)
    model = AutoModelForCausalLM.from_pretrained(path)
    torch.testing.assert_close(_logits(model), saved[1], rtol=0, atol=0)
    model.save_pretrained(tmp_path / "again")  # transformers 5 saves under the names it loaded
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "again")), saved[1], rtol=0, atol=0)


def test_sharded_random_checkpoint_loads(tmp_path):
    config, files = init_random_checkpoint(tmp_path, "tiny", seed=3, shard_bytes=200_000)
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 2
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    weights = {}
    for file in files:
        if file.endswith(".safetensors"):
            weights.update(load_file(tmp_path / file))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    assert len(weights) == len(model.state_dict())


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), r"missing tensors: model\.layers\.1\.mlp\.up_proj\.weight"),
        (lambda t: t.update({"model.layers.0.extra.weight": torch.zeros(2)}), r"unexpected tensors: model\.layers\.0\.extra\.weight"),
        (lambda t: t.update({"lm_head.weight": torch.zeros(97, 31)}), r"wrong shapes: lm_head\.weight: checkpoint \[97, 31\], config expects \[97, 32\]"),
        (lambda t: t.update({"model.layers.0.self_attn.loop_gate_proj.bias": torch.zeros(4)}),
         r"given twice: model\.layers\.0\.self_attn\.loop_gate_proj\.bias and model\.layers\.0\.self_attn\.plt_gate\.bias"),
    ],
)
def test_bad_tensors_are_errors_naming_the_key(saved, tmp_path, edit, message):
    path = _copy(saved, tmp_path, edit_tensors=edit)
    with pytest.raises(CheckpointError, match=message):
        AutoModelForCausalLM.from_pretrained(path)


def test_missing_tensor_is_an_error_even_past_the_directory_check(saved, tmp_path):
    """transformers' own report is checked too (it only warns and initialises randomly)."""
    from loopcoder.model.modeling_plt import IQuestPLTCoderModel

    path = _copy(saved, tmp_path, edit_tensors=lambda t: t.pop("model.norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing tensors: norm\.weight"):
        IQuestPLTCoderModel.from_pretrained(path)


def test_bad_config_value_is_an_error_naming_the_field(saved, tmp_path):
    path = _copy(saved, tmp_path, edit_config=lambda c: c.update(plt_window_size=[8, 8]))
    with pytest.raises(ValueError, match=r"plt_window_size.*\[left, 0\].*\[8, 8\]"):
        AutoModelForCausalLM.from_pretrained(path)


def test_index_naming_a_missing_shard_is_an_error(tmp_path):
    init_random_checkpoint(tmp_path, "tiny", shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / shard).unlink()
    with pytest.raises(CheckpointError, match=f"lists shard {shard}, which is missing"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
