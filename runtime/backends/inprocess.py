"""The `plt` and `hf` backends: a transformers causal LM in this process, with a kept KV cache.

Both render messages with the checkpoint's chat template, generate through a
`Session` (which prefills only what the cache lacks) and stream through a
`TextStream`. They differ only in what they load: `plt` requires our
LoopCoder-V2 implementation (`import model` registers it with the Auto
classes), `hf` takes any AutoModelForCausalLM.

The backend remembers how the last prompt and reply were tokenized. When the
next prompt extends that text, those exact ids are reused rather than
re-tokenizing the reply, since a model's own tokens need not be the canonical
tokenization of its text, and a mismatch would cost a rollback or a re-prefill.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable

import torch

from loopcoder.runtime.backends.base import BackendError, Completion, GenerationParams, Message, ToolSchema
from loopcoder.runtime.constrained import Grammars
from loopcoder.runtime.sampling import TextStream
from loopcoder.runtime.session import DEFAULT_PREFILL_CHUNK, Session
from loopcoder.runtime.tokenizer import encode, load_tokenizer, render_chat, stop_token_ids

PLT_MODEL_TYPE = "iquestpltcoder"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class InProcessBackend:
    """One model, one tokenizer, one conversation cache."""

    def __init__(self, name: str, model, tokenizer, stop_ids: list[int], context_window: int,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK, grammars: Grammars | None = None,
                 compile_decode: bool = False):
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(stop_ids)
        self.context_window = context_window
        self.prefill_chunk = prefill_chunk
        new_cache = getattr(model, "new_cache", None) or _dynamic_cache
        self.compile_decode = compile_decode
        self.session = Session(model, context_window, new_cache, prefill_chunk, compile_decode)
        self._known: list[tuple[str, list[int]]] = []  # texts and the ids the model saw for them, longest last
        self._prompt: tuple[str, list[int]] | None = None  # the last prompt counted, so `complete` needs no second pass
        self._grammars = grammars

    def spawn(self) -> "InProcessBackend":
        """Another conversation on the same weights (its own cache)."""
        return InProcessBackend(self.name, self.model, self.tokenizer, sorted(self.stop_ids),
                                self.context_window, self.prefill_chunk, self._grammars, self.compile_decode)

    @property
    def grammars(self) -> Grammars:
        """Grammars over this tokenizer, made on first use (and shared with spawned backends)."""
        if self._grammars is None:
            vocab_size = getattr(self.model.config, "vocab_size", None) or len(self.tokenizer)
            self._grammars = Grammars(self.tokenizer, vocab_size, self.stop_ids)
        return self._grammars

    def grammar(self, tools: list[ToolSchema] | None, params: GenerationParams):
        """The grammar a reply to this request must follow, or None: the whole reply is JSON when
        `response_format` asks for it, else calls follow the tools' schemas unless turned off."""
        fmt = params.response_format or {}
        if fmt.get("type") == "json_object":
            return self.grammars.json_reply()
        if fmt.get("type") == "json_schema":
            return self.grammars.json_reply((fmt.get("json_schema") or {}).get("schema", {}))
        if params.constrained_tool_calls:
            return self.grammars.tool_calls(tools, params.tool_choice)
        return None

    def prompt_ids(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> list[int]:
        """The ids the next `complete` with these messages will run (the reply's own ids where reused).

        Only the text past the longest known prefix is tokenized, and the result is kept: an agent step
        counts its prompt, then completes it, and tokenizes its new messages once."""
        prompt = render_chat(self.tokenizer, messages, tools)
        self._prompt = (prompt, self._encode(prompt))
        return self._prompt[1]

    def complete(
        self,
        messages: list[Message],
        tools: list[ToolSchema] | None = None,
        params: GenerationParams | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        params = params or GenerationParams()
        return self.complete_text(render_chat(self.tokenizer, messages, tools), params, on_text,
                                  self.grammar(tools, params))

    def complete_text(self, prompt: str, params: GenerationParams | None = None,
                      on_text: Callable[[str], None] | None = None, grammar=None) -> Completion:
        """Continue a raw prompt (no chat template), following `grammar` (see `grammar()`) if given."""
        params = params or GenerationParams()
        prompt_ids = self._encode(prompt)
        stream = TextStream(self.tokenizer, params.stop, on_text)
        constraint = self.grammars.constraint(grammar) if grammar is not None else None
        gen = self.session.generate(prompt_ids, params, self.stop_ids, stream.push, constraint)
        text = stream.finish()
        self._remember(prompt, prompt_ids, gen.ids, text)
        return Completion(
            text=text,
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=len(gen.ids),
            prefilled_tokens=gen.prefilled_tokens,
            reused_tokens=gen.reused_tokens,
            prefill_seconds=gen.prefill_seconds,
            decode_seconds=gen.decode_seconds,
            compile_seconds=gen.compile_seconds,
        )

    def count_tokens(self, messages: list[Message], tools: list[ToolSchema] | None = None) -> int:
        return len(self.prompt_ids(messages, tools))

    @functools.cached_property
    def max_token_chars(self) -> int:
        """The most characters of text one token can stand for, so a prompt's length bounds its token
        count without tokenizing it: a vocabulary entry spells its text with at least one character
        per character (byte-level BPE: one per byte; SentencePiece: '▁' per space)."""
        return max(map(len, self.tokenizer.get_vocab()), default=1)

    def close(self) -> None:
        self.session.reset()
        self._known, self._prompt = [], None

    def _encode(self, text: str) -> list[int]:
        if self._prompt is not None and self._prompt[0] == text:
            return self._prompt[1]
        for known_text, known_ids in reversed(self._known):
            if text.startswith(known_text):
                return known_ids + encode(self.tokenizer, text[len(known_text):])
        return encode(self.tokenizer, text)

    def _remember(self, prompt: str, prompt_ids: list[int], generated: list[int], text: str) -> None:
        """Remember the prompt, and it with the longest run of generated ids whose text starts the
        reply (all of them unless a stop string cut it): the agent sends the reply back verbatim,
        or replaces it (then the prompt's ids still hold)."""
        lo, hi = 0, len(generated)
        while lo < hi:  # largest k with decode(generated[:k]) a prefix of text
            mid = (lo + hi + 1) // 2
            if text.startswith(self.tokenizer.decode(generated[:mid], skip_special_tokens=False,
                                                     clean_up_tokenization_spaces=False)):
                lo = mid
            else:
                hi = mid - 1
        kept = generated[:lo]
        reply = self.tokenizer.decode(kept, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        self._known = [(prompt, prompt_ids), (prompt + reply, prompt_ids + kept)]


SINGLE_THREAD_WIDTH = 1024  # hidden sizes below this decode on one CPU thread


def _dynamic_cache():
    from transformers import DynamicCache

    return DynamicCache()


def load_plt(model_path: str | Path, **options) -> InProcessBackend:
    """Our PLT implementation of a LoopCoder-V2 style checkpoint."""
    import loopcoder.model as model  # noqa: F401  registers the PLT config and model with the Auto classes

    model_type = _model_type(Path(model_path))
    if model_type != PLT_MODEL_TYPE:
        raise BackendError(
            f"{model_path} holds a {model_type!r} model, not a LoopCoder-V2 PLT ({PLT_MODEL_TYPE!r}); "
            "use the hf backend (--backend hf) for other models."
        )
    return _load("plt", Path(model_path), **options)


def load_hf(model_path: str | Path, **options) -> InProcessBackend:
    """Any transformers causal LM."""
    _model_type(Path(model_path))
    return _load("hf", Path(model_path), **options)


def _model_type(path: Path) -> str:
    if not path.is_dir():
        raise BackendError(f"model directory {path} does not exist; pass a checkpoint directory (config.json + weights).")
    config_file = path / "config.json"
    if not config_file.exists():
        raise BackendError(f"{path} has no config.json; it is not a checkpoint directory.")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"{config_file} is not valid JSON ({exc}); restore it from the checkpoint.") from exc
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
    if not weights:
        raise BackendError(f"{path} has a config.json but no weights (*.safetensors or pytorch_model*.bin).")
    return str(config.get("model_type"))


def _load(name: str, path: Path, device: str | None = None, dtype: str | None = None,
          trust_remote_code: bool = False, context_window: int | None = None,
          prefill_chunk: int = DEFAULT_PREFILL_CHUNK, quantize: str | None = None,
          compile: bool = False) -> InProcessBackend:
    """bfloat16 on a GPU; float32 on the CPU unless `dtype` says otherwise (bfloat16 when quantized:
    the CPU's weight-only kernels are fast with bfloat16 activations only). `compile`: the plt
    backend's one-token step through torch.compile (model/compiled.py)."""
    from transformers import AutoModelForCausalLM

    from loopcoder.model.dense import use_native_linears

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is not None and dtype not in DTYPES:
        raise BackendError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    if quantize is not None and name != "plt":
        raise BackendError("--quantize works with the plt backend only; load a pre-quantized model with hf instead.")
    if compile and name != "plt":
        raise BackendError("--compile works with the plt backend only; run the hf backend without it.")
    on_cpu = device.startswith("cpu")
    quantized = quantize or json.loads((path / "config.json").read_text(encoding="utf-8")).get("plt_quantization")
    torch_dtype = DTYPES[dtype] if dtype else (torch.float32 if on_cpu and not quantized else torch.bfloat16)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code,
            **({} if on_cpu else {"device_map": device}), **({"quantize": quantize} if quantize else {}),
        )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise BackendError(f"could not load the model in {path}: {exc}") from exc
    model.eval()
    if on_cpu and getattr(model.config, "hidden_size", SINGLE_THREAD_WIDTH) < SINGLE_THREAD_WIDTH:
        # Products this narrow gain nothing from a second thread, and OpenMP's waiting threads make decoding
        # ~10x slower whenever another process is busy (loopcoder-nano: 3 tok/s on 2 threads, 40 on one).
        torch.set_num_threads(1)
    if on_cpu:  # few-row products (decode, draft checks) on the native kernel where it was measured faster
        use_native_linears(model)
    window = context_window or getattr(model.config, "max_position_embeddings", None) or 4096
    return InProcessBackend(name, model, tokenizer, stop_token_ids(tokenizer, path), window, prefill_chunk,
                            compile_decode=compile)
