"""`IQuestPLTCoderConfig`: the LoopCoder-V2 config (`model_type="iquestpltcoder"`).

Field names and defaults follow the vendor's `IQuestPLTCoderConfig` (docs/plt.md §1), so
the released `config.json` loads as is; the values the model cannot run with are
rejected here, once, with a message that names the field.
"""
from __future__ import annotations

from transformers import PretrainedConfig

from .compat import plain_rope_theta, rope_fields
from .quantize import QuantSpec


class IQuestPLTCoderConfig(PretrainedConfig):
    """A Parallel Loop Transformer: `num_hidden_layers` shared layers run `plt_num_loops` times.

    Loop 0 is a plain causal decoder. Loop r >= 1 takes `a*E_t + b*H_{t-1}` (the
    previous loop's output shifted by one token) and mixes, per head, global
    attention over loop 0's keys with a `plt_window_size[0]`-token sliding window
    over its own keys. `plt_emb_scale`/`plt_hidden_scale` None mean 1.0 (vendor).
    """

    model_type = "iquestpltcoder"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 75904,
        hidden_size: int = 5120,
        intermediate_size: int = 27648,
        num_hidden_layers: int = 14,
        num_attention_heads: int = 40,
        num_key_value_heads: int = 8,
        head_dim: int | None = 128,
        hidden_act: str = "silu",
        max_position_embeddings: int = 131072,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = None,
        tie_word_embeddings: bool = False,
        rope_theta: float = 500000.0,
        rope_scaling: dict | None = None,
        rope_parameters: dict | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        mlp_bias: bool = False,
        plt_num_loops: int = 2,
        plt_window_size: list[int] | None = None,
        plt_normalize_per_loop: bool = True,
        plt_emb_scale: float | None = None,
        plt_hidden_scale: float | None = None,
        plt_gate_use_hidden_states: bool = False,
        plt_quantization: dict | str | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // max(num_attention_heads, 1)
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = plain_rope_theta(rope_theta, rope_scaling, rope_parameters)
        for name, value in rope_fields(self.rope_theta).items():  # transformers 5: rope_parameters; 4.x: rope_scaling
            setattr(self, name, value)
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.mlp_bias = mlp_bias
        self.plt_num_loops = plt_num_loops
        self.plt_window_size = list(plt_window_size) if plt_window_size is not None else [64, 0]
        self.plt_normalize_per_loop = plt_normalize_per_loop
        self.plt_emb_scale = plt_emb_scale
        self.plt_hidden_scale = plt_hidden_scale
        self.plt_gate_use_hidden_states = plt_gate_use_hidden_states
        self.plt_quantization = plt_quantization  # weight-only int8/int4 (model/quantize.py); None = dense
        if tie_word_embeddings:
            raise ValueError("config field `tie_word_embeddings` must be false: the PLT lm_head is untied")
        self._validate()  # before transformers 5's own validators, whose messages do not name our fields
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id if eos_token_id is not None else [2, 75864, 75869],
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @property
    def plt_window(self) -> int:
        """Left context of the local branch: it sees `plt_window + 1` keys, the current one included."""
        return self.plt_window_size[0]

    @property
    def emb_scale(self) -> float:
        return 1.0 if self.plt_emb_scale is None else float(self.plt_emb_scale)

    @property
    def hidden_scale(self) -> float:
        return 1.0 if self.plt_hidden_scale is None else float(self.plt_hidden_scale)

    def _validate(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"config field `{name}` must be a positive integer, got {value!r}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings"):
            positive_int(name)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"config field `num_attention_heads` ({self.num_attention_heads}) must be divisible by "
                f"`num_key_value_heads` ({self.num_key_value_heads}) for grouped-query attention"
            )
        if self.head_dim % 2:
            raise ValueError(f"config field `head_dim` must be even for rotary embeddings, got {self.head_dim}")
        if isinstance(self.plt_num_loops, bool) or not isinstance(self.plt_num_loops, int) or self.plt_num_loops < 1:
            raise ValueError(f"config field `plt_num_loops` must be an integer >= 1, got {self.plt_num_loops!r}")
        window = self.plt_window_size
        if (len(window) != 2 or not all(isinstance(w, int) and not isinstance(w, bool) for w in window)
                or window[0] < 0 or window[1] != 0):
            raise ValueError(
                f"config field `plt_window_size` must be [left, 0] with an integer left >= 0 "
                f"(a causal sliding window), got {window!r}"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"config field `hidden_act` must be 'silu' (SwiGLU), got {self.hidden_act!r}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"config field `rms_norm_eps` must be positive, got {self.rms_norm_eps!r}")
        try:
            spec = QuantSpec.parse(self.plt_quantization)
        except (TypeError, ValueError) as error:
            raise ValueError(f"config field `plt_quantization`: {error}") from None
        self.plt_quantization = None if spec is None else spec.to_dict()
        for name in ("plt_emb_scale", "plt_hidden_scale"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"config field `{name}` must be a number or null, got {value!r}")


__all__ = ["IQuestPLTCoderConfig"]
