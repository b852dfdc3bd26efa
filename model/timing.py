"""Timing and checking a product on its device, for the choices made by measuring (quantized and dense
kernels, draft rows)."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

MEASURE_WEIGHTS = 32 << 20  # time a slice of big layers (the cost is linear in output features) of this many
# weights: a slice of a few MB stays in the CPU's cache between calls, which ranks decode kernels by their
# per-call overhead and by noise rather than by how fast they stream the weight from memory


def best_seconds(run: Callable[[torch.Tensor], Any], x: torch.Tensor, repeats: int = 3) -> float:
    """The fastest of `repeats` calls of run(x) after one warm-up (which also raises if it cannot run),
    synchronized on CUDA: the uncontended cost."""
    run(x)
    best = float("inf")
    for _ in range(repeats):
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        run(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        best = min(best, time.perf_counter() - start)
    return best


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """|got - want| / |want| (Frobenius norms), in want's dtype: how far a kernel's product is from a reference."""
    return ((got.to(want.dtype) - want).norm() / want.norm().clamp(min=1e-30)).item()
