"""OpenAI response shapes: a chat.completion, its streamed chunks, usage with KV-reuse counts."""
from __future__ import annotations

import time
import uuid

from loopcoder.runtime.backends.base import Completion

FINISH = {"stop": "stop", "length": "length", "context": "length"}


def new_id(prefix: str) -> str:
    """`new_id("chatcmpl-")`, `new_id("call_")`: the id styles OpenAI clients expect."""
    return prefix + uuid.uuid4().hex[:24]


def usage(done: Completion) -> dict:
    """Standard usage plus how much of the prompt ran through the model versus came from its cache."""
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": done.reused_tokens},
        "prefilled_tokens": done.prefilled_tokens,
        "reused_tokens": done.reused_tokens,
    }


def finish_reason(done: Completion, message: dict) -> str:
    if message.get("tool_calls") and done.finish_reason == "stop":
        return "tool_calls"
    return FINISH.get(done.finish_reason, "stop")


def completion_body(cid: str, model: str, done: Completion, message: dict) -> dict:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason(done, message), "logprobs": None}],
        "usage": usage(done),
    }


def chunk(cid: str, model: str, delta: dict | None, finish: str | None = None, usage_: dict | None = None) -> dict:
    """One `chat.completion.chunk`; the usage-only chunk has no choices, as in the OpenAI API."""
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    if usage_ is not None:
        body["usage"] = usage_
    return body


def models_body(names: list[str], context_window: int) -> dict:
    """`/v1/models`; `max_model_len` is where vLLM reports the window, so clients can size prompts."""
    now = int(time.time())
    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": now, "owned_by": "loopcoder", "max_model_len": context_window}
            for n in names
        ],
    }
