"""A small byte-level BPE tokenizer with LoopCoder's special tokens, for tests and tiny models.

The real tokenizer is 76k SentencePiece pieces behind custom code; tests need
something that loads with plain `AutoTokenizer.from_pretrained`, covers every
byte (so any text round-trips), fits a 1024-row embedding, and has the chat
and tool tokens as single ids.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from loopcoder.runtime.tokenizer import default_chat_template

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")  # ids 0..4
TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")  # kept in decoded text
# isolate_words: letter runs, single digits, runs of spaces, newlines, tabs, JSON escapes and punctuation
# (with single inner spaces, as in `": "`) are pieces of their own, so a name is the same tokens wherever it stands.
WORD_PIECES = r'\\[nrt"\\]|[A-Za-z]+|[0-9]| +|\n|\t|[^A-Za-z0-9\s\\]+(?: [^A-Za-z0-9\s\\]+)*|\\|\s'

_CORPUS = r'''
def fibonacci(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from an empty stack")
        return self.items.pop()


import os
import sys
from pathlib import Path

for path in sorted(Path(".").glob("**/*.py")):
    print(path, os.path.getsize(path), file=sys.stderr)

if __name__ == "__main__":
    main()

$ git diff --stat
 src/app.py | 4 ++--
 1 file changed, 2 insertions(+), 2 deletions(-)
$ python -m pytest tests/test_app.py -q
..F.                                                                     [100%]
FAILED tests/test_app.py::test_parse - AssertionError: assert 3 == 4

Let me look at the failing test first, then fix the parser and run the tests again.
The function returns the wrong value when the list is empty; I will add a check.
You are LoopCoder, a helpful assistant developed by IQuest.
# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
{"type": "function", "function": {"name": "bash", "description": "Run a shell command in the repository.", "parameters": {"type": "object", "properties": {"command": {"type": "string", "description": "The command to run."}}, "required": ["command"]}}}
{"type": "function", "function": {"name": "str_replace_editor", "description": "View, create and edit files.", "parameters": {"type": "object", "properties": {"command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "undo_edit"]}, "path": {"type": "string"}, "old_str": {"type": "string"}, "new_str": {"type": "string"}}, "required": ["command", "path"]}}}

For each function call, return a json object with function name and arguments within XML tags:
{"name": <function-name>, "arguments": <args-json-object>}
{"name": "bash", "arguments": {"command": "ls -la"}}
{"name": "str_replace_editor", "arguments": {"command": "view", "path": "src/app.py"}}
{"name": "submit", "arguments": {}}
The file src/app.py has been edited. Here's the result of running `cat -n` on a snippet:
     1	import json
     2	
     3	def load(path):
     4	    with open(path, encoding="utf-8") as f:
     5	        return json.load(f)
Review the changes and make sure they are as expected. Edit the file again if necessary.
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000 and symbols ( ) [ ] { } < > = + - * / % ! ? : ; , . " ' ` ~ @ # $ ^ & | \ _
Ünïcödé: naïve café, 日本語のテキスト, Ελληνικά, русский текст, emoji 🙂 ✓
'''


def build_test_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 1024,
                         isolate_words: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of at most `vocab_size` ids (special and tool tokens included).

    isolate_words: no piece crosses a word's edge (see WORD_PIECES). A plain
    byte-level BPE writes `name` after a space as " name"'s pieces and after a
    quote as "name"'s, which a small model copying names has to learn to map.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS) + len(TOOL_TOKENS):
        raise ValueError(f"vocab_size {vocab_size} cannot hold the 256 bytes and the special tokens")
    corpus = list(texts) if texts is not None else [_CORPUS] * 4
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(WORD_PIECES), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ]) if isolate_words else pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(TOOL_TOKENS),
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    # Added after training because the trainer marks its tokens special, and special tokens vanish from decoded text.
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = default_chat_template()
    return tokenizer


def save_test_tokenizer(out_dir: str | Path, texts: Iterable[str] | None = None, vocab_size: int = 1024) -> Path:
    """Write tokenizer.json, tokenizer_config.json (with the chat template) and special_tokens_map.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_portable(build_test_tokenizer(texts, vocab_size), out)
    return out


def save_portable(tokenizer, out: str | Path) -> None:
    """save_pretrained, with tokenizer_config.json written the way transformers 4 and 5 both read it.

    The chat template goes inside tokenizer_config.json, where checkpoints (and
    transformers 4) keep it. transformers 5 writes `TokenizersBackend` as the
    class and the extra special tokens as a list; 4.x cannot load either, and
    5.x reads the 4.x form (PreTrainedTokenizerFast, additional_special_tokens).
    """
    tokenizer.save_pretrained(str(out), save_jinja_files=False)
    path = Path(out) / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    if isinstance(config.get("extra_special_tokens"), list):
        config["additional_special_tokens"] = config["extra_special_tokens"]
        config["extra_special_tokens"] = {}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

