"""Compiled decode for the PLT: gpt-fast's `decode_one_token` on a static cache.

`CompiledDecode(model)` wraps `model.decode_one_token` in `torch.compile(fullgraph=True,
dynamic=False)`: on CUDA with mode="reduce-overhead" (CUDA graphs: one replay per token
instead of hundreds of kernel launches), on the CPU with inductor's default mode (fused C++
kernels; needs a C compiler). It serves one-token steps of unpadded sequences on a `PLTCache`
(growing, or static: `model.new_cache(max_length=N)`); everything else (prefill, speculative
drafts, a grammar's verification forwards) runs the eager forward on the same cache buffers, so
the two interleave and give the same tokens.

Shapes are static: loop 0's attention spans a bucket of columns (a power of two, at least
MIN_SPAN, at most a static cache's max_length), and a growing cache's buffers are grown to the
bucket first, so the graph compiles once per bucket as a conversation grows (8 buckets up to
131072 tokens), never per token. The first call of
each bucket is the warm-up (compile, and on CUDA the graph capture); its seconds are kept in
`warmup_seconds` and printed once on stderr.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from .cache import PLTCache

MIN_SPAN = 1024  # the smallest bucket of loop-0 columns a compiled step attends to
CUDA_WARMUP_CALLS = 3  # reduce-overhead: compile, a warm-up run, then the CUDA graph's capture


def default_mode(device: torch.device) -> str:
    """CUDA graphs on a GPU; inductor's default (C++ kernels) elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


class CompiledDecode:
    """One compiled decode step per model, shared by every session (cache) on it."""

    def __init__(self, model, mode: str | None = None, report: Callable[[str], None] | None = None):
        if not hasattr(model, "decode_one_token"):
            raise ValueError(f"compiled decode needs a LoopCoder-V2 PLT (the plt backend); {type(model).__name__} "
                             "has no decode_one_token: run without --compile")
        self.model = model
        self.device = next(model.parameters()).device
        self.dtype = model.get_input_embeddings().weight.dtype
        self.mode = mode or default_mode(self.device)
        self.report = report or _to_stderr
        self.warmup_seconds = 0.0  # all warm-ups so far (compiles, graph captures)
        self.steps = 0  # tokens decoded through it
        self._warmups_left: dict[int, int] = {}  # span -> calls of it still counted as warm-up
        self._step = torch.compile(model.decode_one_token, fullgraph=True, dynamic=False, mode=self.mode)

    def accepts(self, cache, tokens: int) -> bool:
        """True when this step can run `tokens` new tokens on `cache` (else the caller runs the eager forward)."""
        return (tokens == 1 and isinstance(cache, PLTCache)
                and (cache.max_length is None or cache.get_seq_length() < cache.max_length))

    def __call__(self, input_ids: torch.LongTensor, cache: PLTCache) -> torch.Tensor:
        """Append the one token [B, 1] to `cache` and return its logits [B, V] (a copy the next call keeps)."""
        held = cache.get_seq_length()
        span = max(MIN_SPAN, 1 << held.bit_length())  # > held: the token's own column fits
        span = span if cache.max_length is None else min(span, cache.max_length)
        self._prepare(cache, span)
        position = torch.tensor([held], device=self.device)
        warmups = self._warmups_left.setdefault(span, CUDA_WARMUP_CALLS if self.mode == "reduce-overhead" else 1)
        start = time.perf_counter()
        logits = self._step(input_ids.to(self.device), position, cache, span)
        cache.advance(1)
        self.steps += 1
        if warmups:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed = time.perf_counter() - start
            self.warmup_seconds += elapsed
            self._warmups_left[span] = warmups - 1
            if warmups == 1:
                self.report(f"compiled decode ({self.mode}, {self.device.type}): warm-up done for contexts up to "
                            f"{span} tokens; {self.warmup_seconds:.1f}s of warm-up so far")
        return logits.clone() if self.mode == "reduce-overhead" else logits  # a graph's output is overwritten by the next replay

    def _prepare(self, cache: PLTCache, span: int) -> None:
        """Every buffer of the cache made (loop 0's with `span` columns), the RoPE table that long,
        all marked static (their addresses stay while the bucket does, so CUDA graphs read them
        in place instead of copying them in)."""
        tables = self.model.model.rotary.table(self.device, self.dtype, 2 * span)  # room for eager drafts past span
        for tensor in (*cache.allocate(self.dtype, self.device, span), *tables):
            torch._dynamo.mark_static_address(tensor)  # sets a flag: cheap to repeat


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
