"""Grammar-constrained decoding: tool calls and JSON replies that cannot be malformed.

A model that runs in process owns its sampler, so a tool call's format need
not be left to luck. Once the model writes `<tool_call>`, the tokens that
follow must spell `\\n{"name": "<one of the tools>", "arguments": <that tool's
JSON schema>}\\n</tool_call>`; text outside calls stays free and a reply may
hold several calls. The grammar is xgrammar's structural tag for the
Qwen-3/Hermes call format (the one our chat template writes), compiled from
the tools' schemas for this tokenizer's vocabulary.

`TokenConstraint` walks one sequence through a grammar: `mask` sets the
logits of tokens the grammar forbids to -inf before sampling, `accept`
advances by the chosen token. A draft token can be checked with `accept`
(False leaves the state as it was) and undone with `rollback(n)`, which is
what speculative decoding needs. `logits_processor` does the same per row for
transformers' batched `generate()`.
"""
from __future__ import annotations

import json
from typing import Any

import torch

# Longest run of whitespace between JSON tokens inside a call: room for pretty-printed arguments
# (depth 7 at indent 4), while a model cannot pad a call with whitespace forever.
MAX_JSON_WHITESPACE = 32


class GrammarError(ValueError):
    """Tools, a tool_choice or a schema that no grammar can be built from, worded for the user."""


def _xgrammar():
    """Imported on first use: the import takes a while and only constrained decoding needs it."""
    import xgrammar

    return xgrammar


class TokenConstraint:
    """One sequence's position in a grammar."""

    def __init__(self, grammar, vocab_size: int):
        xgr = _xgrammar()
        self.matcher = xgr.GrammarMatcher(grammar)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)  # [1, ceil(V / 32)] int32, on the CPU
        self._apply = xgr.apply_token_bitmask_inplace

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """`logits` [V] with every token the grammar forbids next set to -inf (in place)."""
        if self.matcher.fill_next_token_bitmask(self.bitmask):  # False: every token is allowed
            self._apply(logits.view(1, -1), self.bitmask.to(logits.device, non_blocking=True))
        return logits

    def accept(self, token: int) -> bool:
        """Advance by `token` if the grammar allows it; False (state unchanged) if it does not."""
        return self.matcher.accept_token(token)

    def rollback(self, n: int) -> None:
        """Undo the last `n` accepted tokens."""
        self.matcher.rollback(n)

    @property
    def terminated(self) -> bool:
        """The grammar ended (a stop token was accepted, or a forced call is complete and stopped)."""
        return self.matcher.is_terminated()


class Grammars:
    """Grammars over one tokenizer's vocabulary; xgrammar's compiler caches each one it compiles."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids):
        xgr = _xgrammar()
        self.vocab_size = vocab_size
        try:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
        except Exception as exc:  # a tokenizer xgrammar cannot read: say how to go on without the grammar
            raise GrammarError(f"constrained decoding cannot read this tokenizer's vocabulary ({_first_line(exc)}); "
                               "turn it off with --set sampling.constrained_tool_calls=false") from exc
        self.compiler = xgr.GrammarCompiler(info)

    def tool_calls(self, tools: list[dict] | None, tool_choice: str | dict = "auto"):
        """The grammar for a reply that may (auto), must (required) or must only (a named function)
        call the tools; None when nothing is constrained (no tools, or tool_choice "none")."""
        if not tools or tool_choice == "none":
            return None
        xgr = _xgrammar()
        try:
            tag = xgr.get_model_structural_tag(
                "qwen_3", tools=tools, tool_choice=tool_choice, reasoning="disabled",
                exclude_special_tokens=False, max_whitespace_cnt=MAX_JSON_WHITESPACE,
            )
            return self.compiler.compile_structural_tag(tag)
        except Exception as exc:  # pydantic, ValueError and xgrammar's own errors alike: the input is at fault
            raise GrammarError(f"the tools cannot be turned into a grammar: {_first_line(exc)}") from exc

    def json_reply(self, schema: dict | bool | None = None):
        """The grammar for a reply that is one JSON value following `schema` (None: any JSON object)."""
        strict = schema is not None  # a given schema allows no properties it does not list
        try:
            return self.compiler.compile_json_schema(json.dumps({"type": "object"} if schema is None else schema),
                                                     strict_mode=strict, max_whitespace_cnt=MAX_JSON_WHITESPACE)
        except Exception as exc:
            raise GrammarError(f"the JSON schema cannot be turned into a grammar: {_first_line(exc)}") from exc

    def constraint(self, grammar) -> TokenConstraint:
        return TokenConstraint(grammar, self.vocab_size)

    def logits_processor(self, grammar) -> Any:
        """A transformers LogitsProcessor applying `grammar` to every row of one `generate()` call."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(grammar)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
