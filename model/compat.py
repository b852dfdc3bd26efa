"""What differs between transformers 4.57+ and 5.x, in one place.

transformers 5 folds `rope_theta` into `rope_parameters` (`rope_scaling` became a
deprecated alias of it, so a plain-RoPE config reads back as
`{"rope_type": "default", "rope_theta": ...}`); 4.x keeps `rope_theta` and a
`rope_scaling` that is null for plain RoPE. The PLT only runs plain RoPE, so a
config reduces all three fields to one theta here and writes each major's form.
"""
from __future__ import annotations

import transformers

TRANSFORMERS_MAJOR = int(transformers.__version__.split(".", 1)[0])
PLAIN_ROPE_KEYS = {"rope_type", "type", "rope_theta"}


def plain_rope_theta(rope_theta, rope_scaling, rope_parameters) -> float:
    """The one RoPE base a config names, from 4.x fields (`rope_theta`, `rope_scaling`) or 5.x's
    `rope_parameters`; raises ValueError for any scaled RoPE (LoopCoder-V2 uses plain RoPE)."""
    for name, value in (("rope_parameters", rope_parameters), ("rope_scaling", rope_scaling)):
        if value is None:
            continue
        plain = (isinstance(value, dict) and set(value) <= PLAIN_ROPE_KEYS
                 and value.get("rope_type", value.get("type", "default")) == "default")
        if not plain:
            raise ValueError(
                f"config field `{name}` must be null or plain {{'rope_type': 'default', 'rope_theta': ...}}: "
                f"LoopCoder-V2 uses plain RoPE, got {value!r}"
            )
        if "rope_theta" in value:
            rope_theta = value["rope_theta"]  # 5.x's place for it wins, as in transformers 5
    if isinstance(rope_theta, bool) or not isinstance(rope_theta, (int, float)) or rope_theta <= 0:
        raise ValueError(f"config field `rope_theta` must be a positive number, got {rope_theta!r}")
    return float(rope_theta)


def rope_fields(theta: float) -> dict:
    """The attributes a plain-RoPE config sets on this major (besides `rope_theta` itself)."""
    if TRANSFORMERS_MAJOR >= 5:
        return {"rope_parameters": {"rope_type": "default", "rope_theta": theta}}
    return {"rope_scaling": None}


def _cache_kwarg() -> str:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


CACHE_KWARG = _cache_kwarg()  # transformers >= 5.24 names the KV cache `cache` in forward, generate and outputs
