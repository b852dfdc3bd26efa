"""Choosing the next token, and turning generated ids into streamed text.

Sampling runs on the CPU in float32 with a seeded `torch.Generator`, so a seed
gives the same tokens on any device. Streaming decodes the whole generated id
list each step and emits the new suffix: a token may end in the middle of a
UTF-8 character, which decodes to U+FFFD until the next token completes it, so
a trailing U+FFFD is held back. Text that could be the start of a stop string
is held back too, so a stop string never reaches the stream.
"""
from __future__ import annotations

from typing import Callable

import torch

from runtime.backends.base import GenerationParams

REPLACEMENT = "\ufffd"
SPECULATIVE = ("prompt_lookup", "off")
MAX_DRAFT_TOKENS = 16  # model.cache.DEFAULT_SLACK + 1: the most a PLT cache can drop after a forward


def check_params(params: GenerationParams) -> None:
    """Raise ValueError, saying which setting is wrong, before any work is done."""
    if params.temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 turns it off), got {params.top_k}")
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if any(not s for s in params.stop):
        raise ValueError("stop strings must not be empty")
    if params.speculative not in SPECULATIVE:
        raise ValueError(f"speculative must be one of {', '.join(SPECULATIVE)}, got {params.speculative!r}")
    if not 1 <= params.speculative_tokens <= MAX_DRAFT_TOKENS:
        raise ValueError(f"speculative_tokens must be in 1..{MAX_DRAFT_TOKENS} (the PLT cache rolls back that "
                         f"many tokens exactly), got {params.speculative_tokens}")


def make_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def sample_next(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator) -> int:
    """The next token id from `logits` [V]: argmax at temperature 0, else a draw from `probabilities`."""
    if params.temperature == 0:
        return int(logits.argmax())
    return int(torch.multinomial(probabilities(logits, params), 1, generator=generator))


def probabilities(logits: torch.Tensor, params: GenerationParams) -> torch.Tensor:
    """The distribution [V] (float32, CPU) a draw at temperature > 0 takes: top-k, then top-p, then softmax."""
    scores = logits.detach().float().cpu() / params.temperature  # [V]
    if 0 < params.top_k < scores.numel():
        kth = torch.topk(scores, params.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of the better tokens
        drop = before > params.top_p  # the best token always stays (its `before` is 0)
        scores = scores.scatter(0, order[drop], float("-inf"))
    return torch.softmax(scores, dim=-1)


class TextStream:
    """Generated ids -> text, streamed to `on_text` in pieces that concatenate to `text`."""

    def __init__(self, tokenizer, stop: list[str] | None = None, on_text: Callable[[str], None] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0  # characters of `text` already sent to on_text
        self.stopped = False  # a stop string was found; `text` ends just before it

    def push(self, token_id: int) -> bool:
        """Add one generated id; True when the text now holds a stop string."""
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        cut = min((i for i in (self.text.find(s, self.emitted) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            self._emit(cut)
            return True
        safe = len(self.text.rstrip(REPLACEMENT))
        self._emit(safe - self._stop_prefix_len(self.text[:safe]))
        return False

    def finish(self) -> str:
        """Flush what was held back; the final text."""
        self._emit(len(self.text))
        return self.text

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest end of `text` that is the start of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            piece, self.emitted = self.text[self.emitted : upto], upto
            if self.on_text is not None:
                self.on_text(piece)
