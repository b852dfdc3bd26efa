"""Loading and writing weight-only quantized checkpoints, one shard and one tensor at a time.

`from_pretrained(dir, quantize="int8")` on a dense checkpoint quantizes each
linear as its tensor is read, and `loopcoder model quantize SRC DST` writes a
checkpoint whose config.json carries `plt_quantization` and whose shards hold
the stored tensors (model/quantize.py), which then load without any float copy.
Either way the dense model never exists in memory: the model is built on the
meta device and every tensor is read into its own memory (plain reads, not a
memory map: mapped shard pages count in the process's resident size for as
long as any tensor viewing them lives) and materialized once, in its final
form, so the peak stays near the quantized size plus one dense tensor. The strict checks of
model/loading.py apply unchanged: every expected tensor, nothing else, right shapes.
"""
from __future__ import annotations

import copy
import json
import shutil
import struct
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import save_file
from torch import nn

from .configuration_plt import IQuestPLTCoderConfig
from .loading import (IGNORED_SUFFIX, INDEX_FILE, SINGLE_FILE, CheckpointError, canonical_key, check_checkpoint,
                      expected_shapes, read_headers)
from .native import release_free_memory
from .quantize import STORED_TENSORS, QuantSpec, install_placeholders, quantize_weight, stored_shapes, target_modules

CONFIG_FILE = "config.json"


def stored_model_shapes(dense: dict[str, tuple[int, ...]], config: IQuestPLTCoderConfig) -> dict[str, tuple[int, ...]]:
    """The dense model's tensor shapes -> those of its quantized checkpoint (per `config.plt_quantization`)."""
    spec = QuantSpec.parse(config.plt_quantization)
    shapes = dict(dense)
    for name in target_modules(config):
        out_features, in_features = shapes.pop(f"{name}.weight")
        for suffix, shape in stored_shapes(spec.method, out_features, in_features, spec.group_size).items():
            shapes[f"{name}.{suffix}"] = shape
    return shapes


def wants_quantized_loader(path, quantize, config) -> bool:
    """True when from_pretrained must go through `load_quantized`: asked to, or the checkpoint is quantized."""
    if quantize is not None:
        return True
    if isinstance(config, IQuestPLTCoderConfig):
        return config.plt_quantization is not None
    file = Path(path) / CONFIG_FILE
    return file.is_file() and json.loads(file.read_text(encoding="utf-8")).get("plt_quantization") is not None


def load_quantized(cls, path, quantize=None, config: IQuestPLTCoderConfig | None = None,
                   dtype: torch.dtype | str | None = None, device="cpu"):
    """`cls.from_pretrained` for quantization: a local directory, dense or quantized, in `quantize`'s form,
    on one device (`device_map="auto"` means the GPU when there is one)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"quantized loading reads a local checkpoint directory; {path} is not one")
    config = copy.deepcopy(config) if isinstance(config, IQuestPLTCoderConfig) else IQuestPLTCoderConfig.from_pretrained(path)
    stored = QuantSpec.parse(config.plt_quantization)
    wanted = QuantSpec.parse(quantize)
    if stored is not None and wanted is not None and wanted.method != stored.method:
        raise CheckpointError(f"{path} is already quantized to {stored.method}; quantize the dense checkpoint to "
                              f"{wanted.method} instead")
    spec = stored or wanted
    dtype = _torch_dtype(dtype, config)
    if not isinstance(device, (str, torch.device)) or device == "auto":  # a device map: one device here
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    headers = read_headers(path)
    if not headers:
        raise CheckpointError(f"{path} has no {SINGLE_FILE} or {INDEX_FILE}: nothing to load the weights from")
    check_checkpoint(headers, expected_shapes(config), str(path))  # quantized shapes when the checkpoint is

    config.plt_quantization = None
    with torch.device("meta"):
        model = cls(config)
    model.config.plt_quantization = spec.to_dict()
    placed = install_placeholders(model, spec)
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for file in sorted({h.file for h in headers.values()}):
        for key, tensor in read_tensors(path / file):
            if key.endswith(IGNORED_SUFFIX):
                continue
            owner, _, leaf = canonical_key(key).rpartition(".")
            if owner in placed and leaf != "bias":
                if stored is None:
                    placed[owner].load_stored(quantize_weight(tensor, spec), dtype, device)
                    release_free_memory()
                    continue
                parts = pending.setdefault(owner, {})
                parts[leaf] = tensor
                if len(parts) == len(STORED_TENSORS[spec.method]):
                    placed[owner].load_stored(pending.pop(owner), dtype, device)
                    release_free_memory()
                continue
            target = model.get_submodule(owner)
            target._parameters[leaf] = nn.Parameter(tensor.to(device, dtype), requires_grad=False)
            del tensor
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(f"checkpoint {path} left tensors unloaded: {left[:8]}")
    generation = path / "generation_config.json"
    if generation.is_file():
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(path)
    model.config.name_or_path = str(path)
    return model.eval()


SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
                      "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
                      "BOOL": torch.bool}


def read_tensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for each tensor of a safetensors file in file order, each read into memory of its own
    (safe_open's tensors view a memory map that keeps every page read in the resident size while one lives)."""
    with open(file, "rb") as handle:
        header_size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(header_size))
        header.pop("__metadata__", None)
        data = 8 + header_size
        for key, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            start, stop = entry["data_offsets"]
            dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise CheckpointError(f"{file}: tensor {key} has dtype {entry['dtype']}, which a PLT checkpoint "
                                      "does not use; convert it to bfloat16 or float32")
            raw = torch.empty(stop - start, dtype=torch.uint8)
            handle.seek(data + start)
            if handle.readinto(memoryview(raw.numpy())) != stop - start:
                raise CheckpointError(f"{file} ends inside tensor {key}: it is truncated; copy or download it again")
            yield key, raw.view(dtype).view(entry["shape"])


def _torch_dtype(dtype, config) -> torch.dtype:
    """The activations' dtype: as asked, else the checkpoint's (bfloat16 when it is not a float type)."""
    if dtype in (None, "auto"):
        dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.bfloat16
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."))
    return dtype if dtype.is_floating_point else torch.bfloat16


def write_quantized(source: Path, destination: Path, quantize) -> dict:
    """Write `source` (dense) quantized to `destination`, shard by shard; returns a summary."""
    spec = QuantSpec.parse(quantize)
    source, destination = Path(source), Path(destination)
    config = IQuestPLTCoderConfig.from_pretrained(source)
    if config.plt_quantization is not None:
        raise CheckpointError(f"{source} is already quantized ({config.plt_quantization['method']}); "
                              "quantize the dense checkpoint")
    headers = read_headers(source)
    if not headers:
        raise CheckpointError(f"{source} has no {SINGLE_FILE} or {INDEX_FILE}: nothing to quantize")
    check_checkpoint(headers, expected_shapes(config), str(source))
    if destination.exists() and any(destination.iterdir()):
        raise CheckpointError(f"{destination} exists and is not empty; pass a new directory")
    destination.mkdir(parents=True, exist_ok=True)
    config.plt_quantization = spec.to_dict()
    targets = set(target_modules(config))
    files = sorted({h.file for h in headers.values()})
    weight_map, total = {}, 0
    for file in files:
        out: dict[str, torch.Tensor] = {}
        for key, tensor in read_tensors(source / file):
            if key.endswith(IGNORED_SUFFIX):
                continue
            name = canonical_key(key)
            owner, _, leaf = name.rpartition(".")
            if owner in targets and leaf == "weight":
                out.update({f"{owner}.{k}": v for k, v in quantize_weight(tensor, spec).items()})
            else:
                out[name] = tensor
        save_file(out, destination / file, metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in out.values())
        weight_map.update(dict.fromkeys(out, file))
        del out
    if len(files) > 1 or (source / INDEX_FILE).is_file():
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (destination / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    config.save_pretrained(destination)
    for extra in source.iterdir():  # tokenizer, generation config, model card, chat template...
        if extra.is_file() and extra.name not in {CONFIG_FILE, INDEX_FILE, *files}:
            shutil.copy2(extra, destination / extra.name)
    return {"method": spec.method, "group_size": spec.group_size, "files": len(files), "bytes": total}
