"""In-process generation that keeps one conversation's KV cache between calls.

An agent's prompts grow by whole steps, so each call only runs the tokens
past the longest common prefix with what the cache holds. When the prompt
departs from the cache (the last reply re-tokenized differently, or history
was elided) the cache rolls back to the common prefix: exactly, while the
model's cache can crop that far (`cache.can_crop(n)`: a PLT keeps its loop-1
keys in a ring with a little slack), else by a fresh prefill. At temperature
0 the tokens are the same as with a fresh prefill every call.

Works with any transformers causal LM whose forward takes
`past_key_values=cache, use_cache=True` and whose cache has `crop(n)`
(our PLTCache, transformers' DynamicCache).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from model.backends.base import GenerationParams
from model.constrained import TokenConstraint
from model.sampling import check_params, make_generator, sample_next

DEFAULT_PREFILL_CHUNK = 512


@dataclass
class Generation:
    ids: list[int]  # generated ids, the stop id excluded
    finish_reason: str  # "stop", "length" or "context" (see Completion)
    prompt_tokens: int
    prefilled_tokens: int
    reused_tokens: int
    prefill_seconds: float
    decode_seconds: float


class Session:
    """One sequence's KV cache and the ids it holds."""

    def __init__(self, model, context_window: int, new_cache: Callable[[], Any],
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK):
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.model = model
        self.context_window = context_window
        self.new_cache = new_cache
        self.prefill_chunk = prefill_chunk
        self.device = next(model.parameters()).device
        self.cache = None
        self.tokens: list[int] = []  # what the cache holds, in order
        self._keep_one = "logits_to_keep" in inspect.signature(model.forward).parameters

    def reset(self) -> None:
        """Drop the cache (frees its memory)."""
        self.cache, self.tokens = None, []

    @torch.inference_mode()
    def generate(self, prompt: list[int], params: GenerationParams, stop_ids: set[int] | frozenset[int],
                 on_token: Callable[[int], bool] | None = None,
                 constraint: TokenConstraint | None = None) -> Generation:
        """Continue `prompt`; `on_token` sees each generated id and returns True to stop (a stop string).
        `constraint` (fresh, at the grammar's start) limits every generated token to what its grammar allows."""
        check_params(params)
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) >= self.context_window:  # not even one new token would fit
            return Generation([], "context", len(prompt), 0, 0, 0.0, 0.0)
        generator = make_generator(params.seed)
        try:
            start = time.perf_counter()
            reused = self._rewind(prompt)
            logits = self._prefill(prompt[reused:])
            prefill_seconds = self._elapsed(start)
            start = time.perf_counter()
            out: list[int] = []
            finish = "length"
            while len(out) < params.max_new_tokens:
                if len(prompt) + len(out) >= self.context_window:  # the next token would sit past the window
                    finish = "context"
                    break
                token = _choose(logits, params, generator, constraint)
                if token in stop_ids:
                    finish = "stop"
                    break
                out.append(token)
                if on_token is not None and on_token(token):
                    finish = "stop"
                    break
                if len(out) < params.max_new_tokens:
                    logits = self._forward([token])
        except BaseException:  # a half-written cache cannot be trusted
            self.reset()
            raise
        return Generation(out, finish, len(prompt), len(prompt) - reused, reused, prefill_seconds, self._elapsed(start))

    def _rewind(self, prompt: list[int]) -> int:
        """Roll the cache back to its common prefix with `prompt`; how many prompt tokens it then holds."""
        n = 0
        limit = min(len(self.tokens), len(prompt) - 1)  # the last prompt token always runs: its logits are needed
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        if self.cache is not None and n < len(self.tokens):
            can_crop = getattr(self.cache, "can_crop", None)
            if n > 0 and (can_crop(n) if can_crop is not None else hasattr(self.cache, "crop")):
                self.cache.crop(n)
                del self.tokens[n:]
            else:
                self.reset()
                n = 0
        if self.cache is None:
            self.cache = self.new_cache()
        return n

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        """Run `ids` in chunks (bounded activation memory); the logits [V] after the last one."""
        for i in range(0, len(ids), self.prefill_chunk):
            logits = self._forward(ids[i : i + self.prefill_chunk])
        return logits

    def _forward(self, ids: list[int]) -> torch.Tensor:
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, n]
        extra = {"logits_to_keep": 1} if self._keep_one else {}
        out = self.model(input_ids=input_ids, past_key_values=self.cache, use_cache=True, **extra)
        self.cache = out.past_key_values
        self.tokens.extend(ids)
        return out.logits[0, -1]  # [V]

    def _elapsed(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def _choose(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator,
            constraint: TokenConstraint | None) -> int:
    """The next token: sampled from `logits` [V], among the tokens the grammar allows when there is one."""
    if constraint is None:
        return sample_next(logits, params, generator)
    token = sample_next(constraint.mask(logits), params, generator)
    if not constraint.accept(token):  # the mask allowed it, so the grammar must take it
        raise RuntimeError(f"the grammar refused token {token} that its own mask allowed")
    return token
