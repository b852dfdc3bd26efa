"""Config presets and random checkpoints (`loopcoder model init-random`).

A random checkpoint has the released layout (config.json with every field of
LoopCoder-V2's, safetensors shards with an index when large) so tests and
benchmarks exercise the real loading path without the 15 GB download. Tensors
are generated and written one shard at a time: the 7B shape needs a few GB of
RAM, not 30.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GenerationConfig

from .configuration_plt import IQuestPLTCoderConfig
from .loading import INDEX_FILE, SINGLE_FILE, expected_shapes

# The released LoopCoder-V2 config.json (docs/plt.md §1); presets change only the sizes.
RELEASED = dict(
    architectures=["IQuestPLTCoderForCausalLM"],
    vocab_size=76800,
    hidden_size=5120,
    intermediate_size=27648,
    num_hidden_layers=14,
    num_attention_heads=40,
    num_key_value_heads=8,
    head_dim=128,
    hidden_act="silu",
    max_position_embeddings=131072,
    initializer_range=0.02,
    rms_norm_eps=1e-5,
    use_cache=True,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
    rope_theta=500000.0,
    rope_scaling=None,
    attention_bias=False,
    attention_dropout=0.0,
    mlp_bias=False,
    plt_num_loops=2,
    plt_window_size=[64, 0],
    plt_normalize_per_loop=True,
    plt_emb_scale=0.707,
    plt_hidden_scale=0.053,
    plt_gate_use_hidden_states=True,
)

PRESETS: dict[str, dict] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=1024, plt_window_size=[8, 0],
                 max_position_embeddings=4096, dtype="float32"),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=32, vocab_size=4096, max_position_embeddings=8192,
                  dtype="float32"),
    "7b-shape": dict(dtype="bfloat16"),
    # loopcoder-nano (nano/train.py). Small on purpose: what it must learn (the plans, copying names and
    # lines) needs steps more than width, and at 256 wide the loss fell no faster per step while each step
    # cost 2.3x. The context holds the longest transcript plus a whole reply budget. Loop 1's window spans a
    # whole transcript: loop 1 sees the previous token's state (the CLP), so its window attention is where a
    # copy head forms first, and with 64 tokens it copied from no further back than that (measured); a 1024
    # window costs ~1.7x per phase-1 step.
    "nano": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, head_dim=32,
                 num_key_value_heads=2, vocab_size=64, plt_window_size=[1024, 0], rope_theta=10000.0,
                 max_position_embeddings=8192, dtype="float32"),
}

SHARD_BYTES = 2 * 1024**3
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
                   "loopcoder_system.jinja", "loopcoder_task_refactor.jinja")  # the last two: a checkpoint's own
# agent prompts (loopcoder-nano: its system prompt, and the bare request for refactor tasks)


def preset_config(name: str, **overrides) -> IQuestPLTCoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return IQuestPLTCoderConfig(**{**RELEASED, **PRESETS[name], **overrides})


def init_random_checkpoint(path: Path, preset: str, seed: int = 0, tokenizer: Path | None = None,
                           weights: bool = True, shard_bytes: int = SHARD_BYTES,
                           overrides: dict | None = None) -> tuple[IQuestPLTCoderConfig, list[str]]:
    """Write config.json, random weights (unless weights=False) and, from `tokenizer`, the tokenizer
    files plus generation_config.json; return the config and the file names written. `overrides`
    change config fields of the preset (benchmarks/big.py's scaled-down 7B shapes)."""
    config = preset_config(preset, **(overrides or {}))
    path.mkdir(parents=True, exist_ok=True)
    written = []
    if tokenizer is not None:
        generation, copied = copy_tokenizer(tokenizer, path, config)
        written += copied
        if generation:
            GenerationConfig(**generation).save_pretrained(path)
            written.append("generation_config.json")
    config.save_pretrained(path)
    written.append("config.json")
    if weights:
        written += _write_random_weights(path, config, seed, shard_bytes)
    return config, written


def _write_random_weights(path: Path, config: IQuestPLTCoderConfig, seed: int, shard_bytes: int) -> list[str]:
    """Normal(0, initializer_range) matrices, unit norms, zero biases; sharded like transformers."""
    dtype = getattr(torch, str(config.dtype).removeprefix("torch."))
    shapes = expected_shapes(config)
    item = torch.empty((), dtype=dtype).element_size()
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * item
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    generator = torch.Generator().manual_seed(seed)
    files = [SINGLE_FILE] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    for file, names in zip(files, shards):
        tensors = {name: _random_tensor(name, shapes[name], config, generator).to(dtype) for name in names}
        save_file(tensors, path / file, metadata={"format": "pt"})
    if len(files) > 1:
        index = {
            "metadata": {"total_size": sum(math.prod(s) for s in shapes.values()) * item},
            "weight_map": {name: file for file, names in zip(files, shards) for name in names},
        }
        (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        files.append(INDEX_FILE)
    return files


def _random_tensor(name: str, shape: tuple[int, ...], config, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape)
    if name.endswith(".bias"):
        return torch.zeros(shape)
    return torch.empty(shape).normal_(0.0, config.initializer_range, generator=generator)


def copy_tokenizer(source: Path, target: Path, config: IQuestPLTCoderConfig) -> tuple[dict, list[str]]:
    """Copy the tokenizer files and align the config's vocab and special ids.

    Returns the generation_config fields (empty without `<|im_end|>`) and the files copied.

    The vocabulary grows (to a multiple of 64) when the tokenizer has more ids
    than the preset. With `<|im_end|>` the generation config stops on it too.
    """
    names = [n for n in TOKENIZER_FILES if (source / n).is_file()]
    names += sorted(p.name for p in source.glob("tokenization_*.py"))
    if not names:
        raise ValueError(f"{source} holds no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    for name in names:
        shutil.copy2(source / name, target / name)
    vocab = _token_ids(source)
    if vocab:
        config.vocab_size = max(config.vocab_size, -(-(max(vocab.values()) + 1) // 64) * 64)
    special = _special_tokens(source)
    bos, eos = vocab.get(special.get("bos_token")), vocab.get(special.get("eos_token"))
    generation = {}
    if bos is not None:
        config.bos_token_id = generation["bos_token_id"] = bos
    if eos is not None:
        config.eos_token_id = eos
        stops = [eos] + [vocab[t] for t in ("<|im_end|>",) if t in vocab and vocab[t] != eos]
        generation["eos_token_id"] = stops if len(stops) > 1 else eos
    return (generation if "<|im_end|>" in vocab else {}), names


def _token_ids(source: Path) -> dict[str, int]:
    """Every token -> id the tokenizer files state (tokenizer.json, vocab.json, added tokens)."""
    ids: dict[str, int] = {}
    fast = _read_json(source / "tokenizer.json")
    if fast:
        vocab = (fast.get("model") or {}).get("vocab") or {}
        if isinstance(vocab, dict):
            ids.update(vocab)
        else:  # Unigram: [[piece, score], ...]
            ids.update({piece: i for i, (piece, _score) in enumerate(vocab)})
        ids.update({t["content"]: t["id"] for t in fast.get("added_tokens", [])})
    ids.update(_read_json(source / "vocab.json") or {})
    ids.update(_read_json(source / "added_tokens.json") or {})
    decoder = (_read_json(source / "tokenizer_config.json") or {}).get("added_tokens_decoder") or {}
    ids.update({entry["content"]: int(i) for i, entry in decoder.items()})
    return ids


def _special_tokens(source: Path) -> dict[str, str]:
    found = {}
    for file in ("special_tokens_map.json", "tokenizer_config.json"):
        for key in ("bos_token", "eos_token"):
            value = (_read_json(source / file) or {}).get(key)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                found.setdefault(key, value)
    return found


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
