"""The text of `loopcoder model info` and `model init-random` (cli.py stays thin).

Both raise ValueError with a user-facing message for a bad path or checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

from .cache import DEFAULT_SLACK
from .configuration_plt import IQuestPLTCoderConfig
from .loading import check_checkpoint, expected_shapes, format_count, parameter_count, read_headers
from .presets import PRESETS, init_random_checkpoint


def load_config(path: Path) -> IQuestPLTCoderConfig:
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory; pass a checkpoint directory (config.json + safetensors)")
    file = path / "config.json"
    if not file.is_file():
        raise ValueError(f"{path} has no config.json; is it a checkpoint directory?")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from None
    if raw.get("model_type") != IQuestPLTCoderConfig.model_type:
        raise ValueError(f"{file} has model_type {raw.get('model_type')!r}, expected 'iquestpltcoder' (LoopCoder-V2)")
    try:
        return IQuestPLTCoderConfig.from_pretrained(path)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{file}: {error}") from None


def describe_checkpoint(path: Path) -> str:
    config = load_config(path)
    headers = read_headers(path)
    shapes = expected_shapes(config)
    quantization = config.plt_quantization
    count = parameter_count(expected_shapes(IQuestPLTCoderConfig.from_dict({**config.to_dict(), "plt_quantization": None})))
    if headers:
        check_checkpoint(headers, shapes, str(path))
        dtypes = sorted({h.dtype for h in headers.values()})
        files = len({h.file for h in headers.values()})
        weights = f"{len(headers)} tensors in {files} file(s), all match the config; stored as {', '.join(dtypes)}"
    else:
        weights = "none (config only)"
    element = 2 if str(config.dtype).endswith(("bfloat16", "float16")) else 4
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * element
    ring = config.plt_window + 1 + DEFAULT_SLACK
    per_sequence = (config.plt_num_loops - 1) * ring * (per_token + config.hidden_size * element)
    lines = [
        f"checkpoint:   {path}",
        f"architecture: {', '.join(config.architectures or ['IQuestPLTCoderForCausalLM'])} (model_type {config.model_type})",
        f"parameters:   {format_count(count)} ({count:,})",
        f"dtype:        {str(config.dtype).removeprefix('torch.')}"
        + (f"; linears weight-only {quantization['method']}" + (f" (groups of {quantization['group_size']})"
           if quantization["method"] == "int4" else "") if quantization else ""),
        f"weights:      {weights}",
        f"layers:       {config.num_hidden_layers} shared x {config.plt_num_loops} loops",
        f"width:        hidden {config.hidden_size}, FFN {config.intermediate_size}, vocab {config.vocab_size}",
        f"attention:    {config.num_attention_heads} heads / {config.num_key_value_heads} KV heads x {config.head_dim}, "
        f"RoPE theta {config.rope_theta:g}, context {config.max_position_embeddings}",
        f"PLT:          window {config.plt_window_size}, CLP a={config.emb_scale:g} b={config.hidden_scale:g}, "
        f"gate on {'hidden states' if config.plt_gate_use_hidden_states else 'queries'}, "
        f"norm per loop {str(config.plt_normalize_per_loop).lower()}",
        f"KV cache:     {per_token / 1024:g} KiB per token + {per_sequence / 1024**2:.2f} MiB per sequence",
    ]
    return "\n".join(lines)


def init_random(path: Path, preset: str, seed: int, tokenizer: Path | None, meta: bool) -> str:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"{path} already exists and is not an empty directory; choose a new path")
    if tokenizer is not None and not tokenizer.is_dir():
        raise ValueError(f"--tokenizer {tokenizer} is not a directory")
    config, files = init_random_checkpoint(path, preset, seed, tokenizer, weights=not meta)
    count = parameter_count(expected_shapes(config))
    return (
        f"wrote {path} ({preset}, seed {seed}): {', '.join(files)}\n"
        f"parameters: {format_count(count)} ({count:,}), dtype {str(config.dtype).removeprefix('torch.')}"
        + ("\nweights: not written (--meta)" if meta else "")
    )
