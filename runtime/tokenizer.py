"""Loading a checkpoint's tokenizer, its chat template and its stop ids.

The LoopCoder-V2 tokenizer is a custom SentencePiece class shipped as Python
code in the checkpoint, so running it is an explicit opt-in
(`trust_remote_code`). The checkpoint's own chat template is the ground truth
(docs/plt.md §7); ours (prompts/chat_template.jinja) is used only when it has none.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import transformers

DEFAULT_STOP_IDS = (2, 75864, 75869)  # </s>, <|im_end|>, and the sibling's third stop id (docs/plt.md §7)
STOP_TOKENS = ("</s>", "<|im_end|>")


class TokenizerError(ValueError):
    """A tokenizer that cannot be loaded, with what to do about it."""


def default_chat_template() -> str:
    return resources.files("prompts").joinpath("chat_template.jinja").read_text(encoding="utf-8").rstrip("\n")


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """AutoTokenizer for a checkpoint or tokenizer directory, with a chat template always set."""
    path = Path(path)
    if not path.is_dir():
        raise TokenizerError(f"{path} is not a directory; pass a checkpoint or tokenizer directory.")
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise TokenizerError(
            f"{path} holds no tokenizer (tokenizer.json, tokenizer.model or tokenizer_config.json); "
            "copy the checkpoint's tokenizer files there."
        )
    custom = _custom_tokenizer_class(path)
    if custom and not trust_remote_code:
        raise TokenizerError(
            f"The tokenizer in {path} is {custom}, which runs Python code shipped with the checkpoint. "
            "Read that code, then pass --trust-remote-code (trust_remote_code=True) to load it."
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"Could not load the tokenizer in {path}: {exc}") from exc
    if not tokenizer.chat_template:
        tokenizer.chat_template = default_chat_template()
    return tokenizer


def _custom_tokenizer_class(path: Path) -> str | None:
    """The name of a tokenizer class that only the checkpoint's own code provides, if any."""
    config_file = path / "tokenizer_config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise TokenizerError(f"{config_file} is not valid JSON ({exc}); restore it from the checkpoint.") from exc
    auto_map = config.get("auto_map") or {}
    remote = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else None
    if remote:
        names = [r for r in (remote if isinstance(remote, list) else [remote]) if r]
        return " / ".join(names) or "custom"
    cls = config.get("tokenizer_class")
    if cls and not hasattr(transformers, cls) and not hasattr(transformers, cls.removesuffix("Fast")):
        return cls
    return None


def stop_token_ids(tokenizer, model_dir: str | Path | None = None) -> list[int]:
    """Token ids that end an assistant turn.

    generation_config.json's eos_token_id when the checkpoint has one, else the
    sibling defaults that exist in this vocabulary; always with the tokenizer's
    own </s> and <|im_end|>, since a turn ends at <|im_end|> whatever the config says.
    """
    ids: set[int] = set()
    config_file = Path(model_dir) / "generation_config.json" if model_dir is not None else None
    if config_file is not None and config_file.exists():
        try:
            eos = json.loads(config_file.read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, json.JSONDecodeError) as exc:
            raise TokenizerError(f"{config_file} is not valid JSON ({exc}); fix or delete it.") from exc
        ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if not ids:
        ids.update(i for i in DEFAULT_STOP_IDS if i < len(tokenizer))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def render_chat(tokenizer, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True) -> str:
    """The prompt text of a conversation, as the chat template writes it."""
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode_chat(tokenizer, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True) -> list[int]:
    """Prompt ids of a conversation; the template writes every special token itself."""
    return encode(tokenizer, render_chat(tokenizer, messages, tools, add_generation_prompt))


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]
