"""Training data for loopcoder-nano: rendered transcripts with the assistant spans marked, and their tokenizer.

A transcript is rendered with the same chat template, tool schemas and
prompts the agent uses at inference; the spans are the characters the model
writes itself (each assistant turn and the `<|im_end|>` that ends it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from transformers import PreTrainedTokenizerFast

from model.tiny_tokenizer import build_test_tokenizer
from model.tokenizer import render_chat

END = "<|im_end|>"


def render_transcript(tokenizer, messages: list[dict], tools: list[dict]) -> tuple[str, list[list[int]]]:
    """The whole conversation as the chat template writes it, and the [start, end) spans of the assistant turns."""
    text = render_chat(tokenizer, messages, tools, add_generation_prompt=False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render_chat(tokenizer, messages[:k], tools, add_generation_prompt=True))
        end = start + len(message["content"]) + len(END)
        if text[start:end] != message["content"] + END:
            raise ValueError(f"the chat template did not write assistant turn {k} verbatim after its prompt")
        spans.append([start, end])
    return text, spans


def build_tokenizer(texts: Iterable[str], vocab_size: int, out: Path) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the transcripts (the chat helper's builder, no piece across a word's
    edge: a name is then the same tokens in the task, in a call and in a file), saved to `out` and returned."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_test_tokenizer(texts, vocab_size, isolate_words=True)
    tokenizer.save_pretrained(str(out), save_jinja_files=False)
    return tokenizer


def write_transcripts(path: Path, records: Iterable[dict]) -> int:
    """train.jsonl: one {"text", "spans"[, "group"]} object per line; returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n
