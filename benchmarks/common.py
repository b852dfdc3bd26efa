"""Shared pieces of the benchmarks: timing, bandwidth probe, byte counts."""
from __future__ import annotations

import time
from typing import Callable

import torch


def sync(device: str | torch.device) -> None:
    """Wait for queued device work, so a host clock reads finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: str | torch.device) -> float:
    """Wall seconds of one fn() call, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(samples: list[float]) -> float:
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def timed(fn, repeats: int, warmup: int = 1, device: str = "cuda" if torch.cuda.is_available() else "cpu") -> float:
    """Median seconds of fn() over repeats, after warmup calls."""
    for _ in range(warmup):
        fn()
    return median([seconds(fn, device) for _ in range(repeats)])


def as_loaded(*models: torch.nn.Module, torch_kernels: bool = False) -> dict[str, str]:
    """Each model's linears as the in-process backends load them (model/dense.py's measured choice on a
    CPU, `runtime/backends/inprocess._load`); with `torch_kernels` left on F.linear, for the comparison.
    Returns the shapes that run on the native kernel."""
    if torch_kernels:
        return {}
    from loopcoder.model.dense import use_native_linears

    report = {}
    for model in models:
        report.update(use_native_linears(model))
    return report


def matvec_probe(device: str, dtype: torch.dtype, megabytes: int = 512, rows: int = 1,
                 native: bool = False) -> tuple[Callable[[], object], int]:
    """A `rows`-row matmul streaming a weight far larger than cache, and the weight's bytes.

    rows=1 is the ceiling of memory-bound decoding on this machine: every decode
    step is a chain of such products over the weights. rows=2 is what a
    cross-loop-parallel PLT step does (two loops share each weight read); on a
    good BLAS it costs the same as rows=1. `native`: through model/dense.py's measured kernel choice,
    as the models' own linears are.
    """
    cols = 8192
    out_features = megabytes * 2**20 // (cols * torch.finfo(dtype).bits // 8)
    with torch.device(device):
        linear = torch.nn.Linear(cols, out_features, bias=False, dtype=dtype).requires_grad_(False)
    torch.nn.init.normal_(linear.weight)
    as_loaded(linear, torch_kernels=not native)
    x = torch.randn(rows, cols, device=device, dtype=dtype)
    return (lambda: linear(x)), linear.weight.numel() * linear.weight.element_size()


def matvec_bandwidth(device: str, dtype: torch.dtype, megabytes: int = 512, rows: int = 1) -> float:
    """Bytes/s of `matvec_probe` (median of 9 after 2 warmups)."""
    fn, nbytes = matvec_probe(device, dtype, megabytes, rows)
    return nbytes / timed(fn, repeats=9, warmup=2, device=device)


def module_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def weight_bytes(model: torch.nn.Module, skip_embedding: bool = True) -> int:
    """Bytes of parameters read per decode step (the embedding is a gather, not a read)."""
    total = module_bytes(model)
    if skip_embedding:
        embedding = model.get_input_embeddings().weight
        total -= embedding.numel() * embedding.element_size()
    return total


def cache_bytes(cache) -> int:
    """Bytes a KV cache's tensors hold for its tokens: a transformers cache's layers, or our
    PLTCache's `nbytes` less the spare columns its loop-0 buffers keep for growth (they grow
    by a quarter at a time, so allocated bytes alone would not be linear in the tokens)."""
    if hasattr(cache, "nbytes"):
        length = cache.get_seq_length()
        spare = sum((t.shape[2] - length) * t[:, :, :1].numel() * t.element_size()
                    for t in (*cache._k0, *cache._v0) if t is not None)
        return int(cache.nbytes) - spare
    total = 0
    for layer in cache.layers:
        for tensor in (layer.keys, layer.values):
            if tensor is not None:
                total += tensor.numel() * tensor.element_size()
    return total
