"""Timing a product on its device, for the choices made by measuring (quantized kernels, draft rows)."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


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
