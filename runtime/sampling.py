"""Choosing the next token, and turning generated ids into streamed text.

Sampling runs on the CPU in float32 with a seeded `torch.Generator`, so a seed
gives the same tokens on any device. Streaming decodes incrementally, as vLLM
and TGI do: each token decodes a short window (the ids not yet turned into
text, after the ids of the piece before them, so a tokenizer that treats the
start of a decode specially sees the same context), so a step costs the same
at token 10 and at token 10,000. A token may end in the middle of a UTF-8
character, which decodes to U+FFFD until the next token completes it, so such
a window waits. Text that could be the start of a stop string is held back
too, so a stop string never reaches the stream.
"""
from __future__ import annotations

from typing import Callable

import torch

from loopcoder.runtime.holdback import held_back
from loopcoder.runtime.params import GenerationParams

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
    """Generated ids -> text, streamed to `on_text` in pieces that concatenate to `text`.

    `text` is the decoded text of `ids` so far, less a character still incomplete at the end.
    """

    def __init__(self, tokenizer, stop: list[str] | None = None, on_text: Callable[[str], None] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0  # characters of `text` already sent to on_text
        self.stopped = False  # a stop string was found; `text` ends just before it
        self._context = 0  # ids[_context:_decoded]: the last piece, decoded again as the next window's context
        self._decoded = 0  # ids whose text is in `text`
        self._context_text = ""  # their text, decoded on their own

    def push(self, token_id: int) -> bool:
        """Add one generated id; True when the text now holds a stop string."""
        self.ids.append(token_id)
        window = self._decode(self.ids[self._context:])
        if len(window) <= len(self._context_text) or window.endswith(REPLACEMENT):
            return False  # no new character yet, or one still incomplete
        self.text += window[len(self._context_text):]
        self._context, self._decoded = self._decoded, len(self.ids)
        self._context_text = self._decode(self.ids[self._context : self._decoded])
        cut = min((i for i in (self.text.find(s, self.emitted) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            self._emit(cut)
            return True
        self._emit(len(self.text) - held_back(self.text, self.stop))
        return False

    def finish(self) -> str:
        """Flush what was held back (and a character the ids never completed); the final text."""
        window = self._decode(self.ids[self._context:])
        if not self.stopped and len(window) > len(self._context_text):
            self.text += window[len(self._context_text):]
            self._context, self._decoded = self._decoded, len(self.ids)
            self._context_text = self._decode(self.ids[self._context : self._decoded])
        self._emit(len(self.text))
        return self.text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _emit(self, upto: int) -> None:
        if upto > self.emitted:
            piece, self.emitted = self.text[self.emitted : upto], upto
            if self.on_text is not None:
                self.on_text(piece)
