"""Prompt-lookup speculation: drafts copied from the context, and how many to try.

An agent's replies copy from its context (the code it just viewed, paths from
a search), and a decode step costs about the same for a few tokens as for one
(it reads every weight once either way). So after each step the session looks
for the last few tokens earlier in the context and drafts the tokens that
followed them there; one forward verifies them all and keeps the longest
prefix the model agrees with (transformers' `prompt_lookup_num_tokens`,
vLLM's `ngram` speculator).

`PromptLookup` keeps, for every n-gram of 1..MAX_NGRAM tokens, where its most
recent earlier occurrence ended (and, to roll back, the one before): O(1) per
token, so a 100k-token context costs nothing per step. `DraftLength` adapts how many tokens to draft: it doubles
while drafts are accepted and drops to 0 on a rejection; at 0 it watches for
free whether the lookup's first token would have been right, and starts again
when it was twice in a row, or at once when the context's last MAX_NGRAM tokens
occurred before (a copy resuming), so turns that copy nothing run almost no
verification.
`accept_sampled` is the speculative acceptance rule for a deterministic draft,
which keeps the sampled distribution exactly.
"""
from __future__ import annotations

import torch

MAX_NGRAM = 4  # the longest context suffix looked up; longer matches are preferred


class PromptLookup:
    """The context's tokens and where each n-gram last occurred; drafts what followed it."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self._after: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token that followed it last
        self._before: list[list[int]] = []  # [i][n-1]: what _after held for the n-gram before token i (-1: none)

    def sync(self, context: list[int]) -> None:
        """Make the index hold exactly `context`: cut back to the common prefix, then extend."""
        if context[: len(self.tokens)] != self.tokens:
            shorter = min(len(self.tokens), len(context))
            self.truncate(next((i for i in range(shorter) if self.tokens[i] != context[i]), shorter))
        self.extend(context[len(self.tokens):])

    def extend(self, ids: list[int]) -> None:
        """Append tokens; each n-gram ending just before a new token now has a continuation."""
        tokens, after = self.tokens, self._after
        for token in ids:
            end = len(tokens)
            before = []
            for n in range(1, min(MAX_NGRAM, end) + 1):
                key = tuple(tokens[end - n:end])
                before.append(after.get(key, -1))
                after[key] = end
            self._before.append(before)
            tokens.append(token)

    def truncate(self, length: int) -> None:
        """Forget the tokens from `length` on, restoring each n-gram's earlier occurrence."""
        for end in range(len(self.tokens) - 1, length - 1, -1):
            for n, previous in enumerate(self._before[end], start=1):
                key = tuple(self.tokens[end - n:end])
                if previous < 0:
                    del self._after[key]
                else:
                    self._after[key] = previous
        del self.tokens[length:], self._before[length:]

    def draft(self, k: int, match: tuple[int, int] | None = None) -> list[int]:
        """Up to k tokens that followed the longest context suffix (<= MAX_NGRAM tokens) last time;
        `match`: `longest_match()` of the context as it is, when the caller has it already."""
        matched, start = match or self.longest_match()
        return self.tokens[start:start + k] if matched and k > 0 else []

    def matched(self) -> int:
        """How long the longest context suffix (<= MAX_NGRAM tokens) that occurred earlier is; 0: none."""
        return self.longest_match()[0]

    def longest_match(self) -> tuple[int, int]:
        """(n, where what followed its latest earlier occurrence starts) for the longest suffix; (0, 0): none."""
        tokens = self.tokens
        for n in range(min(MAX_NGRAM, len(tokens)), 0, -1):
            start = self._after.get(tuple(tokens[-n:]))
            if start is not None:
                return n, start
        return 0, 0


class DraftLength:
    """How many tokens to draft next: doubles on full acceptance, else the number accepted.

    At 0 no draft is verified; drafting restarts at RESTART tokens once the
    lookup's guess was the token the model chose CONFIRM times in a row. One
    lucky guess is not enough: in text that copies nothing it happens often,
    and a rejected draft costs a forward. It restarts at once, at
    SURE_RESTART tokens, when the context's last SURE tokens occurred before:
    a copy resuming after a few tokens of its own (the next line of an
    `old_str`, a name after `def `), where waiting for two right guesses
    would leave most of a short copy undrafted. On benchmarks/speculative.py's
    recorded turns it cut nano's forwards on copying turns by 11% (its own
    runs) and 4% (editing), and by 1-2% on the others.

    With `floor` > 0 the length never drops below it: for a PLT's pipelined
    verification on a device where a few more rows cost about nothing, a
    rejected draft costs no extra forward (each pass still emits a token), so
    drafting whenever the lookup has a guess only gains.
    """

    RESTART = 2
    CONFIRM = 2
    SURE = MAX_NGRAM
    SURE_RESTART = 4

    def __init__(self, most: int, floor: int = 0):
        self.most = most
        self.floor = min(floor, most)
        self.k = self.floor
        self._hits = 0  # consecutive right guesses while k == 0

    def size(self, matched: int) -> int:
        """The tokens to draft now, given `matched` = the length of PromptLookup.longest_match() now."""
        if self.k == 0 and matched >= self.SURE:
            self.k, self._hits = min(self.SURE_RESTART, self.most), 0
        return self.k

    def verified(self, drafted: int, accepted: int) -> None:
        self.k = min(self.most, 2 * self.k) if accepted == drafted else max(accepted, self.floor)

    def observe(self, guess: int | None, chosen: int) -> None:
        if self.k:
            return
        self._hits = self._hits + 1 if guess == chosen else 0
        if self._hits >= self.CONFIRM:
            self.k, self._hits = min(self.RESTART, self.most), 0


def accept_sampled(probs: torch.Tensor, draft: int, generator: torch.Generator) -> int:
    """The token to emit given the target distribution `probs` [V] and a drafted token.

    The draft is accepted with probability probs[draft]; otherwise a token is
    drawn from probs without the draft, renormalized. Each token x then comes
    out with probability probs[x], exactly as a plain draw (the speculative
    sampling rule of Leviathan et al. and Chen et al. for a draft that puts all
    its mass on one token).
    """
    p_draft = float(probs[draft])
    residual = probs.clone()
    residual[draft] = 0.0
    if float(torch.rand((), generator=generator)) < p_draft or not bool(residual.any()):
        return draft
    return int(torch.multinomial(residual, 1, generator=generator))  # multinomial renormalizes
