"""Training data for loopcoder-nano: rendered transcripts with the assistant spans marked, and their tokenizer.

A transcript is rendered exactly as the agent will show it to nano at
inference: nano's own chat template (the agent's, with the tool schemas cut to
one line of tool names) and nano's own short system prompt, both shipped in
the checkpoint. A 2.3k-token system turn would cost 4x the tokens of every
transcript and, measured, keeps a small model from learning to copy behind it.
The spans are the characters the model writes itself (each assistant turn and
the `<|im_end|>` that ends it).
"""
from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Iterable

from transformers import PreTrainedTokenizerFast

from loopcoder.agent.prompting import MODEL_SYSTEM, PROMPTS_DIR, render
from nano.tiny_tokenizer import build_test_tokenizer, save_portable
from loopcoder.runtime.tokenizer import default_chat_template, render_chat

END = "<|im_end|>"
SYSTEM_PROMPT = PROMPTS_DIR / "system_nano.jinja"  # shipped in the checkpoint as loopcoder_system.jinja
REFACTOR_PROMPT = PROMPTS_DIR / "task_refactor_nano.jinja"  # shipped as loopcoder_task_refactor.jinja: the bare request
_HEADER = ("{#- loopcoder-nano's chat template: the agent's (prompts/chat_template.jinja) with the tool schemas\n"
           "    written as one line of tool names; nano learned the arguments from its training transcripts. -#}")
_TOOLS_BLOCK = ('{{- "# Tools', '{%- else %}')  # the default template's tool schemas: from the first to the second
_COMPACT_TOOLS = (
    "{{- 'Tools: ' }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- (tool.function.name if tool.function is defined else tool.name) + (', ' if not loop.last else '.') }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\nCall one as <tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
)


def compact_chat_template() -> str:
    """The agent's chat template with the tool schemas (1.7k tokens) written as one line of tool names."""
    template = default_chat_template()
    template = _HEADER + template[template.index("-#}") + len("-#}"):]
    start = template.index(_TOOLS_BLOCK[0])
    end = template.index(_TOOLS_BLOCK[1], start)
    return template[:start] + _COMPACT_TOOLS + template[end:]


def nano_renderer():
    """A tokenizer used only to render conversations with nano's chat template."""
    renderer = build_test_tokenizer()
    renderer.chat_template = compact_chat_template()
    return renderer


@functools.cache
def nano_system_message() -> dict:
    """nano's system turn, rendered as the agent renders it (the prompt takes no field it uses)."""
    return {"role": "system", "content": render(str(SYSTEM_PROMPT))}


def save_prompt_files(out: Path) -> None:
    """Put nano's prompts next to its tokenizer files, so `model train` ships them in the checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SYSTEM_PROMPT, out / MODEL_SYSTEM)
    shutil.copyfile(REFACTOR_PROMPT, out / "loopcoder_task_refactor.jinja")


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
    tokenizer.chat_template = compact_chat_template()
    save_portable(tokenizer, out)
    save_prompt_files(out)
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
