"""Model backends: plt (in process), hf, openai, replay.

`create_backend(name, **options)` imports a backend only when it is asked
for, so e.g. the replay backend never loads torch.

- plt / hf: model_path (required), device ("cuda" when available, else "cpu"),
  dtype ("bfloat16" on GPU, "float32" on CPU by default), trust_remote_code,
  context_window (default: the config's max_position_embeddings),
  prefill_chunk (512); plt only: quantize (None, "int8", "int4"), compile (False:
  True runs one-token decode steps through torch.compile, model/compiled.py).
- openai: base_url, model, api_key, context_window, timeout, max_retries
  (see OpenAIBackend).
"""
from __future__ import annotations

import importlib

from loopcoder.runtime.backends.base import Backend, BackendError

BACKENDS = {
    "plt": "loopcoder.runtime.backends.inprocess:load_plt",
    "hf": "loopcoder.runtime.backends.inprocess:load_hf",
    "openai": "loopcoder.runtime.backends.openai_backend:OpenAIBackend",
    "replay": "loopcoder.runtime.backends.replay:ReplayBackend",
}
IN_PROCESS = ("plt", "hf")  # the backends that load a checkpoint into this process (what generate and serve need)


def create_backend(name: str, **options) -> Backend:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(sorted(BACKENDS))}.")
    module, attr = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), attr)(**options)
