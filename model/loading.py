"""Strict checkpoint reading: every tensor the model has, nothing else, right shapes.

transformers only warns about missing or unexpected weights and then runs with a
random init; for a 7B checkpoint that means plausible-looking garbage. Here the
safetensors headers (single file or `model.safetensors.index.json` shards) are
compared with the model built on the meta device before any weight is read,
and `raise_on_loading_problems` turns transformers' loading report into an error.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from .configuration_plt import IQuestPLTCoderConfig

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
GATE_ALIAS, GATE_NAME = ".self_attn.loop_gate_proj.", ".self_attn.plt_gate."
IGNORED_SUFFIX = "rotary_emb.inv_freq"


class CheckpointError(ValueError):
    """A checkpoint that does not match its config; the message names the tensors."""


def canonical_key(key: str) -> str:
    """The model's name for a checkpoint tensor (the gate also ships as `loop_gate_proj`)."""
    return key.replace(GATE_ALIAS, GATE_NAME)


def gate_key_mapping(path) -> dict[str, str] | None:
    """`from_pretrained(key_mapping=...)` renaming a local checkpoint's `loop_gate_proj` tensors, else None.

    Only when the checkpoint uses that name: transformers 5 reverses a load's
    key mapping when the model is saved, so a plt_gate checkpoint saves as it came.
    """
    if not os.path.isdir(path) or not any(GATE_ALIAS in key for key in read_headers(path)):
        return None
    return {GATE_ALIAS: GATE_NAME}  # a regex: its dots also match themselves, and it reverses exactly


@dataclass
class TensorHeader:
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "BF16"
    file: str


def read_headers(path: str | os.PathLike) -> dict[str, TensorHeader]:
    """Name -> shape/dtype/file of every tensor in a checkpoint directory, reading headers only.

    Returns {} when the directory holds no safetensors weights (a config-only checkpoint).
    """
    path = Path(path)
    index = path / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"{index} is not a safetensors index (needs a \"weight_map\"): {error}") from None
        files = sorted(set(weight_map.values()))
    elif (path / SINGLE_FILE).is_file():
        weight_map, files = None, [SINGLE_FILE]
    else:
        return {}
    headers: dict[str, TensorHeader] = {}
    for name in files:
        if not (path / name).is_file():
            listed = sorted(k for k, f in weight_map.items() if f == name)
            raise CheckpointError(f"{INDEX_FILE} lists shard {name}, which is missing from {path} (holds {listed[:3]}...)")
        headers.update(_file_headers(path / name, name))
    if weight_map is not None:
        unlisted = sorted(k for k, h in headers.items() if weight_map.get(k) != h.file)
        absent = sorted(k for k in weight_map if k not in headers)
        if unlisted or absent:
            raise CheckpointError(
                f"{INDEX_FILE} does not match its shards: "
                + "; ".join(filter(None, [
                    unlisted and f"tensors not listed under their shard: {unlisted}",
                    absent and f"listed tensors not found in their shard: {absent}",
                ]))
            )
    return headers


def _file_headers(file: Path, name: str) -> dict[str, TensorHeader]:
    """One safetensors file's headers; a truncated or corrupt file is a CheckpointError naming it."""
    try:
        with safe_open(file, framework="pt") as handle:
            return {key: TensorHeader(tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype(), name)
                    for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        reason = str(error).removeprefix("Error while deserializing header: ")
        raise CheckpointError(f"{file} is not a readable safetensors file ({reason}): it is truncated or corrupt; "
                              "copy or download it again") from None


def expected_shapes(config: IQuestPLTCoderConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a checkpoint of `config` holds (the model built on the meta device;
    a quantized config's linears as their stored tensors)."""
    from .modeling_plt import IQuestPLTCoderForCausalLM

    with torch.device("meta"):
        model = IQuestPLTCoderForCausalLM(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    if config.plt_quantization is None:
        return shapes
    from .quantized_loading import stored_model_shapes

    return stored_model_shapes(shapes, config)


def parameter_count(shapes: dict[str, tuple[int, ...]]) -> int:
    """Parameters of a model given `expected_shapes(config)`."""
    return sum(math.prod(shape) for shape in shapes.values())


def format_count(count: int) -> str:
    """7615749680 -> '7.616 B'."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.3f} {unit}"
    return str(count)


def check_checkpoint(headers: dict[str, TensorHeader], expected: dict[str, tuple[int, ...]], where: str) -> None:
    """Raise CheckpointError naming every missing, unexpected, duplicated or misshapen tensor.

    `expected` is `expected_shapes(config)`.
    """
    found: dict[str, str] = {}  # model name -> checkpoint name
    duplicated, unexpected, wrong_shape = [], [], []
    for key, header in headers.items():
        if key.endswith(IGNORED_SUFFIX):
            continue
        name = canonical_key(key)
        if name in found:
            duplicated.append(f"{found[name]} and {key}")
        found[name] = key
        if name not in expected:
            unexpected.append(key)
        elif header.shape != expected[name]:
            wrong_shape.append(f"{key}: checkpoint {list(header.shape)}, config expects {list(expected[name])}")
    missing = sorted(name for name in expected if name not in found)
    problems = [
        missing and f"missing tensors: {_listing(missing)}",
        unexpected and f"unexpected tensors: {_listing(sorted(unexpected))}",
        duplicated and f"tensors given twice: {_listing(duplicated)}",
        wrong_shape and f"wrong shapes: {_listing(wrong_shape)}",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"checkpoint {where} does not match its config.json: " + "; ".join(problems))


def check_checkpoint_dir(path, config: IQuestPLTCoderConfig | None = None) -> None:
    """Before loading: a local directory's weights must match its config exactly (others are checked after)."""
    if not os.path.isdir(path):
        return
    headers = read_headers(path)
    if not headers:
        raise CheckpointError(f"{path} has no {SINGLE_FILE} or {INDEX_FILE}: nothing to load the weights from")
    if not isinstance(config, IQuestPLTCoderConfig):
        config = IQuestPLTCoderConfig.from_pretrained(path)
    check_checkpoint(headers, expected_shapes(config), str(path))


def raise_on_loading_problems(info: dict, where) -> None:
    """transformers' loading report (output_loading_info) -> CheckpointError instead of a random init."""
    problems = [
        info.get("missing_keys") and f"missing tensors: {_listing(sorted(info['missing_keys']))}",
        info.get("unexpected_keys") and f"unexpected tensors: {_listing(sorted(info['unexpected_keys']))}",
        info.get("mismatched_keys") and f"wrong shapes: {_listing(sorted(map(str, info['mismatched_keys'])))}",
        info.get("error_msgs") and f"errors: {_listing(info['error_msgs'])}",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise CheckpointError(f"checkpoint {where} does not match the model: " + "; ".join(problems))


def _listing(items: list[str], most: int = 8) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" (+{len(items) - most} more)" if len(items) > most else "")
