"""In-process generation that keeps one conversation's KV cache between calls.

An agent's prompts grow by whole steps, so each call only runs the tokens
past the longest common prefix with what the cache holds. When the prompt
departs from the cache (the last reply re-tokenized differently, or history
was elided) the cache rolls back to the common prefix: exactly, while the
model's cache can crop that far (`cache.can_crop(n)`: a PLT keeps its loop-1
keys in a ring with a little slack), else by a fresh prefill. At temperature
0 the tokens are the same as with a fresh prefill every call.

With `compile_decode` (PLT only) one-token steps run the compiled step of
model/compiled.py; prefill and draft verification stay eager on the same
cache: the same tokens.

Works with any transformers causal LM whose forward takes
`cache=cache, use_cache=True` (`past_key_values` before transformers 5.24)
and whose cache has `crop(-k)` (our PLTCache, transformers' DynamicCache).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from loopcoder.model.compat import CACHE_KWARG
from loopcoder.runtime.constrained import TokenConstraint
from loopcoder.runtime.params import GenerationParams
from loopcoder.runtime.sampling import check_params, make_generator, probabilities, sample_next
from loopcoder.runtime.speculative import DraftLength, PromptLookup, accept_sampled

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
    drafted_tokens: int = 0  # prompt-lookup drafts verified
    accepted_tokens: int = 0  # of those, the ones the model agreed with
    verifications: int = 0  # forwards that verified a draft
    compile_seconds: float = 0.0  # of decode_seconds, the compiled step's warm-up (compiling, capturing graphs)
    decode_forwards: int = 0  # forwards after the prefill: one-token steps and draft-verifying passes


class Session:
    """One sequence's KV cache and the ids it holds."""

    def __init__(self, model, context_window: int, new_cache: Callable[[], Any],
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, compile_decode: bool | None = None):
        """`compile_decode`: True compiles the one-token step (a PLT's `enable_compiled_decode`), False
        keeps it eager, None does what the model was loaded with (`from_pretrained(compile_decode=...)`)."""
        if prefill_chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
        self.model = model
        self.context_window = context_window
        self.decoder = None if compile_decode is False else getattr(model, "compiled_decode", None)
        if compile_decode and self.decoder is None:
            if not hasattr(model, "enable_compiled_decode"):
                raise ValueError(f"compiled decode needs a LoopCoder-V2 PLT (the plt backend), not "
                                 f"{type(model).__name__}: run without --compile")
            self.decoder = model.enable_compiled_decode()
        self.new_cache = new_cache
        self.prefill_chunk = prefill_chunk
        self.device = next(model.parameters()).device
        self.cache = None
        self.tokens: list[int] = []  # what the cache holds through every loop, in order
        self.ahead: list[int] = []  # after those, what a PLT's loop 0 ran ahead of loop 1 (pipelined drafts)
        self.lookup = PromptLookup()  # the context (prompt and generated ids) drafts are copied from
        self._keep_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    def reset(self) -> None:
        """Drop the cache (frees its memory)."""
        self.cache, self.tokens, self.ahead = None, [], []

    @torch.inference_mode()
    def generate(self, prompt: list[int], params: GenerationParams, stop_ids: set[int] | frozenset[int],
                 on_token: Callable[[int], bool] | None = None,
                 constraint: TokenConstraint | None = None) -> Generation:
        """Continue `prompt`; `on_token` sees each generated id and returns True to stop (a stop string).

        With `params.speculative == "prompt_lookup"` each forward after the first
        also runs a draft copied from the context (`runtime.speculative`) and emits
        the drafted tokens the model agrees with plus its own next token.
        `constraint` (fresh, at the grammar's start) limits every generated token, drafts
        included, to what its grammar allows.
        """
        check_params(params)
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) >= self.context_window:  # not even one new token would fit
            return Generation([], "context", len(prompt), 0, 0, 0.0, 0.0)
        generator = make_generator(params.seed)
        warmed = self.decoder.warmup_seconds if self.decoder is not None else 0.0
        try:
            start = time.perf_counter()
            reused = self._rewind(prompt)
            logits = self._prefill(prompt[reused:])  # [1, V]
            prefill_seconds = self._elapsed(start)
            start = time.perf_counter()
            drafting = params.speculative == "prompt_lookup" and hasattr(self.cache, "crop")
            pipelined = drafting and getattr(self.model, "supports_pipelined", lambda cache: False)(self.cache)
            if drafting:
                self.lookup.sync(prompt)
            length = DraftLength(params.speculative_tokens, floor=2 if pipelined and self.model.rows_are_cheap() else 0)
            out: list[int] = []
            unverified: list[int] = []  # drafts after `out`, in the cache (the lookup holds them too)
            checked: list[int] = []  # what the rows of `logits` are checked against: the next unverified drafts
            guess = None
            drafted = accepted = verifications = forwards = 0
            finish = None
            while True:
                emitted = _choose(logits, checked, params, generator, constraint)  # agreed drafts, then maybe one more token
                agreed = _agreed(emitted, checked)
                if checked:
                    length.verified(len(checked), agreed)
                    drafted, accepted, verifications = drafted + len(checked), accepted + agreed, verifications + 1
                else:
                    length.observe(guess, emitted[0])
                if len(emitted) > agreed or agreed < len(checked):  # the drafts after the agreed ones are wrong
                    self._cut(len(prompt) + len(out) + agreed)
                    if drafting:
                        self.lookup.truncate(len(prompt) + len(out) + agreed)
                    unverified = []
                else:
                    unverified = unverified[agreed:]
                for index, token in enumerate(emitted):
                    finish = self._finished(len(prompt) + len(out), token, stop_ids)
                    if finish:
                        break
                    out.append(token)
                    if drafting and index >= agreed:
                        self.lookup.extend([token])
                    if on_token is not None and on_token(token):
                        finish = "stop"
                    elif len(out) >= params.max_new_tokens:
                        finish = "length"
                    if finish:
                        break
                if finish:
                    break
                known = len(prompt) + len(out) + len(unverified)
                if known == len(self.tokens) and not self.ahead:  # the last token's logits were not used (a grammar's end)
                    self._cut(known - 1)
                feed = out[len(self.tokens) + len(self.ahead) - len(prompt):]  # [] or the token after the cache
                room = min(params.max_new_tokens - len(out) - 1, self.context_window - len(prompt) - len(out))
                room -= len(unverified)
                if pipelined:  # loop 0 may run at most slack + 1 tokens ahead of loop 1's frontier
                    room = min(room, self.cache.slack + 1 - len(self.ahead) - len(feed))
                match = self.lookup.longest_match() if drafting else (0, 0)  # one index lookup per step
                size = length.size(match[0]) if drafting else 0
                proposal = self.lookup.draft(min(max(size, 1), room), match) if drafting else []
                drafts = proposal if size else []
                guess = proposal[0] if proposal else None
                if drafts:
                    self.lookup.extend(drafts)
                unverified += drafts
                feed += drafts
                if pipelined and (self.ahead or len(feed) > 1):
                    logits = self._pipelined(feed)
                else:
                    logits = self._forward(feed)
                forwards += 1
                checked = unverified[:len(logits)]
            self._truncate(min(len(prompt) + len(out), len(self.tokens)))  # drafts past a stop leave, and loop 0's lead
        except BaseException:  # a half-written cache cannot be trusted
            self.reset()
            raise
        compiling = self.decoder.warmup_seconds - warmed if self.decoder is not None else 0.0
        return Generation(out, finish, len(prompt), len(prompt) - reused, reused, prefill_seconds, self._elapsed(start),
                          drafted, accepted, verifications, compiling, forwards)

    def _finished(self, position: int, token: int, stop_ids) -> str | None:
        """Why `token` at `position` ends the reply instead of joining it (None: it joins)."""
        if position >= self.context_window:
            return "context"
        return "stop" if token in stop_ids else None

    def _rewind(self, prompt: list[int]) -> int:
        """Roll the cache back to its common prefix with `prompt`; how many prompt tokens it then holds."""
        n = 0
        limit = min(len(self.tokens), len(prompt) - 1)  # the last prompt token always runs: its logits are needed
        while n < limit and self.tokens[n] == prompt[n]:
            n += 1
        if self.cache is not None:
            self._truncate(n)
        if self.cache is None:
            self.cache = self.new_cache()
        return len(self.tokens)

    def _truncate(self, n: int) -> None:
        """Keep the cache's first `n` tokens: exactly while the cache can crop that far, else drop it all."""
        if n >= len(self.tokens):
            self._cut(n)
            return
        can_crop = getattr(self.cache, "can_crop", None)
        if n > 0 and (can_crop(n) if can_crop is not None else hasattr(self.cache, "crop")):
            self._cut(n)
        else:
            self.reset()

    def _cut(self, n: int) -> None:
        """Keep the first `n` tokens the cache holds (loop 0's ahead ones counted after the others). Always
        exact for a draft's rollback (a PLT cache's ring slack covers MAX_DRAFT_TOKENS, and loop 0 runs at
        most slack + 1 tokens ahead), so a cache that cannot is an error rather than a silent re-prefill."""
        if n >= len(self.tokens) + len(self.ahead):
            return
        if n < len(self.tokens):
            self.cache.crop(n - len(self.tokens))  # a count to drop: transformers 5 takes no absolute length
            del self.tokens[n:]
        else:
            self.cache.crop(len(self.tokens))  # only loop 0's lead goes (a PLTCache)
        self.ahead = []

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        """Run `ids` in chunks (bounded activation memory); the logits [1, V] after the last one."""
        for i in range(0, len(ids), self.prefill_chunk):
            logits = self._forward(ids[i : i + self.prefill_chunk], keep=1)
        return logits

    def _forward(self, ids: list[int], keep: int | None = None) -> torch.Tensor:
        """Append `ids` to the cache; the logits [keep, V] after each of the last `keep` (default: all)."""
        keep = keep or len(ids)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, n]
        if self.decoder is not None and self.decoder.accepts(self.cache, len(ids)):
            logits = self.decoder(input_ids, self.cache)  # [1, V]
            self.tokens.extend(ids)
            return logits
        extra = {"logits_to_keep": keep} if self._keep_logits else {}
        out = self.model(input_ids=input_ids, use_cache=True, **{CACHE_KWARG: self.cache}, **extra)
        self.cache = getattr(out, CACHE_KWARG)
        self.tokens.extend(ids)
        return out.logits[0, -keep:]  # [keep, V]

    def _pipelined(self, ids: list[int]) -> torch.Tensor:
        """A PLT's pipelined pass (docs/plt.md §4): loop 0 over `ids`, loop 1 over the ahead tokens and
        the first of `ids`; the logits [n1, V] after each token loop 1 ran."""
        run = self.ahead + ids
        logits = self.model.pipelined_forward(torch.tensor([run], dtype=torch.long, device=self.device), self.cache)
        self.tokens += run[:len(logits)]
        self.ahead = run[len(logits):]
        return logits

    def _elapsed(self, start: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start


def _agreed(emitted: list[int], drafts: list[int]) -> int:
    """How many of the emitted tokens are the drafts they were checked against."""
    count = 0
    while count < min(len(emitted), len(drafts)) and emitted[count] == drafts[count]:
        count += 1
    return count


def _choose(logits: torch.Tensor, drafts: list[int], params: GenerationParams, generator: torch.Generator,
            constraint: TokenConstraint | None = None) -> list[int]:
    """Tokens from the logits [n, V] after a pending token and n-1 drafts: the drafts the model
    agrees with, then its own choice at the first disagreement (or after the last draft).

    Greedy: a draft is accepted when it is the argmax, so the output is the
    same as without drafts. Sampling: `accept_sampled`, so each emitted token
    has the distribution a plain draw would give it. Rows are taken in order,
    each in the state after the tokens emitted before it, so a grammar masks
    row i and then accepts the token chosen there.
    """
    greedy = logits.argmax(-1).tolist() if params.temperature == 0 and constraint is None else None
    emitted = []
    for i, row in enumerate(logits):
        draft = drafts[i] if i < len(drafts) else None
        if constraint is not None:
            row = constraint.mask(row)
        if greedy is not None:
            token = greedy[i]
        elif params.temperature == 0:
            token = int(row.argmax())
        elif draft is None:
            token = sample_next(row, params, generator)
        else:
            token = accept_sampled(probabilities(row, params), draft, generator)
        if constraint is not None and not constraint.accept(token):  # the mask allowed it, so the grammar must take it
            raise RuntimeError(f"the grammar refused token {token} that its own mask allowed")
        emitted.append(token)
        if token != draft or (constraint is not None and constraint.terminated):  # nothing follows the grammar's end
            break
    return emitted
