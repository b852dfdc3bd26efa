"""LoopCoder-V2 (`IQuestPLTCoderForCausalLM`): a Parallel Loop Transformer in plain PyTorch.

The math is docs/plt.md §1-§2; the names mirror transformers' Llama so the
released checkpoint loads with `from_pretrained`. In one sentence: the same
layers run `R = plt_num_loops` times; loop 0 is a causal decoder over the
embeddings E; loop r >= 1 starts from `a*E_t + b*H^{r-1}_{t-1}` (the previous
loop's normed output, shifted one token: the CLP) and, in every layer, mixes per
head `g * (attention over loop 0's keys) + (1-g) * (attention over its own keys
in a window of plt_window+1)`. Only the last loop reaches lm_head.

Every forward goes through a `PLTCache` (a throwaway one when use_cache=False),
so a full forward and a chunked prefill are one code path: loop after loop over
the chunk. A single-token step instead runs all loops in one pass, one row per
loop (cross-loop-parallel decode, docs/plt.md §4); the logits are the same. Batches
may be left-padded (attention_mask). Shapes: B batch, n tokens in this call, L
tokens already cached, d hidden, H query heads, Hkv key/value heads, Dh head
dim, S ring size, R loops.
"""
from __future__ import annotations


from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .cache import DEFAULT_SLACK, PLTCache
from .compat import CACHE_KWARG
from .configuration_plt import IQuestPLTCoderConfig
from .loading import check_checkpoint_dir, gate_key_mapping, raise_on_loading_problems
from .quantized_loading import load_quantized, wants_quantized_loader
from .timing import best_seconds

MAX_CHUNK = 2048  # longer inputs run as consecutive chunks: masks stay O(chunk * L)
ROW_COST_SECONDS, ROW_COST_MAX_REPEATS = 0.05, 50  # `rows_are_cheap` times each row count this long, at most


class PLTRMSNorm(nn.Module):
    """RMSNorm as the vendor kernel: fp32 statistics, cast back, then times the weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = x.to(torch.promote_types(x.dtype, torch.float32))
        normed = stats * torch.rsqrt(stats.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """NeoX-style RoPE tables for positions [B, n] -> cos, sin [B, 1, n, Dh] (fp32 math, as the vendor)."""
    compute = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=compute) / head_dim)
    freqs = position_ids[..., None].to(compute) * inv_freq  # [B, n, Dh/2]
    angles = torch.cat([freqs, freqs], dim=-1)[:, None]  # [B, 1, n, Dh]
    return angles.cos().to(dtype), angles.sin().to(dtype)


class RotaryTable:
    """`rotary_cos_sin` for positions 0..n-1, computed once per device and dtype and grown by doubling,
    so a decode step only gathers two rows (gpt-fast's precomputed freqs_cis). Same values, bit for bit."""

    def __init__(self, head_dim: int, theta: float):
        self.head_dim, self.theta = head_dim, theta
        self._tables: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, position_ids: torch.Tensor, dtype: torch.dtype, limit: int):
        """position_ids [B, n], all < limit -> cos, sin [B, 1, n, Dh]."""
        cos, sin = self.table(position_ids.device, dtype, limit)
        return cos[position_ids][:, None], sin[position_ids][:, None]

    def table(self, device: torch.device, dtype: torch.dtype, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [size, Dh] for positions 0..size-1, size >= limit."""
        key = (device, dtype)
        table = self._tables.get(key)
        if table is None or table[0].shape[0] < limit:
            size = max(256, 1 << (limit - 1).bit_length())
            positions = torch.arange(size, device=device)[None]
            cos, sin = rotary_cos_sin(positions, self.head_dim, self.theta, dtype)  # [1, 1, size, Dh]
            table = self._tables[key] = (cos[0, 0], sin[0, 0])
        return table


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, n, Dh] rotated by position (rotate-half over all Dh dims)."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


GROUPED_MIN_KEYS = 256  # `attend` groups query heads from this many keys on


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention with GQA: q [B, H, n, Dh], k/v [B, Hkv, S, Dh], mask [B|1, 1, n|1, S] (True = visible).

    The G = H / Hkv query heads that share a key head run as G*n query rows of
    that head, so k and v are read in place (SDPA's enable_gqa repeats them:
    3-4x slower on a CPU for a decode step over a few thousand keys).
    """
    batch, heads, n, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    if mask is not None:
        mask = mask.to(q.device)
    if group == 1 or k.shape[2] < GROUPED_MIN_KEYS:  # the ring's few keys: the reshapes would cost more
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=group > 1)
    if mask is not None:  # the same visibility for each of the G heads: [B|1, 1, G*n, S]
        mask = mask.expand(mask.shape[0], 1, n, mask.shape[-1])[:, :, None].expand(-1, -1, group, -1, -1)
        mask = mask.reshape(mask.shape[0], 1, group * n, mask.shape[-1])
    out = F.scaled_dot_product_attention(q.reshape(batch, kv_heads, group * n, dim), k, v, attn_mask=mask)
    return out.view(batch, heads, n, dim)  # [B, Hkv, G*n, Dh] holds head h = kv * G + g at rows g*n..


@dataclass
class LoopStep:
    """What every layer needs for one pass over the current rows.

    loop = r: the n rows are n tokens, all in loop r (prefill). loop = None: the
    rows are one token in loops 0..R-1 (cross-loop-parallel decode, docs/plt.md §4),
    or, with `loop0_rows` = m, m new tokens in loop 0 then tokens in loop 1
    (pipelined verification, docs/plt.md §4).
    """

    loop: int | None
    cache: PLTCache
    cos: torch.Tensor  # [B|1, 1, n|1, Dh]
    sin: torch.Tensor
    global_mask: torch.Tensor | None  # [B|1, 1, n|1, L+n] over loop 0's keys; None = all visible
    local_mask: torch.Tensor  # prefill [B|1, 1, n, S+n] over ring then new keys; decode [B|1, 1, 1, S] over ring
    position: torch.Tensor | None = None  # [1] the token's column: the compiled (static-cache) decode step
    span: int = 0  # with `position`: loop 0's columns attended (a static bound >= position + 1)
    loop0_rows: int | None = None  # pipelined: the first rows are loop 0's, the rest loop 1's


class PLTGate(nn.Module):
    """Per-head weight g of the global branch in loops >= 1.

    Hidden-state mode (the released model): g = sigmoid(W RMSNorm(r) + b), r the
    layer input before input_layernorm, W [H, d]. Query mode: g_h =
    sigmoid(<q_h after RoPE, W[h]> + b[h]), W [H, Dh].
    """

    def __init__(self, config: IQuestPLTCoderConfig):
        super().__init__()
        self.use_hidden_states = config.plt_gate_use_hidden_states
        if self.use_hidden_states:
            self.gate_norm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        in_features = config.hidden_size if self.use_hidden_states else config.head_dim
        self.weight = nn.Parameter(torch.empty(config.num_attention_heads, in_features))
        self.bias = nn.Parameter(torch.zeros(config.num_attention_heads))

    def forward(self, q: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """q [B, H, n, Dh], residual [B, n, d] -> g [B, H, n, 1]."""
        if self.use_hidden_states:
            logits = F.linear(self.gate_norm(residual), self.weight, self.bias).transpose(1, 2)  # [B, H, n]
        else:
            logits = torch.einsum("bhnd,hd->bhn", q, self.weight) + self.bias[:, None]
        return torch.sigmoid(logits)[..., None]


class PLTAttention(nn.Module):
    def __init__(self, config: IQuestPLTCoderConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        d, heads, kv_heads, bias = config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.attention_bias
        self.q_proj = nn.Linear(d, heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(heads * self.head_dim, d, bias=bias)
        self.plt_gate = PLTGate(config)

    def forward(self, u: torch.Tensor, residual: torch.Tensor, step: LoopStep) -> torch.Tensor:
        """u = input_layernorm(residual), both [B, n, d] -> [B, n, d] (n rows: tokens, or loops when decoding)."""
        batch, n, _ = u.shape
        q = self.q_proj(u).view(batch, n, -1, self.head_dim).transpose(1, 2)  # [B, H, n, Dh]
        k = self.k_proj(u).view(batch, n, -1, self.head_dim).transpose(1, 2)  # [B, Hkv, n, Dh]
        v = self.v_proj(u).view(batch, n, -1, self.head_dim).transpose(1, 2)
        cos, sin = step.cos.to(u.device), step.sin.to(u.device)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if step.loop0_rows is not None:
            out = self._pipelined(q, k, v, residual, step)
        elif step.loop is None:
            out = self._all_loops_one_token(q, k, v, residual, step)
        elif step.loop == 0:
            k0, v0 = step.cache.append_global(self.layer_idx, k, v)  # [B, Hkv, L+n, Dh]
            out = attend(q, k0, v0, step.global_mask)
        else:
            out = self._loop_over_tokens(q, k, v, residual, step)
        return self.o_proj(out.transpose(1, 2).reshape(batch, n, -1))

    def _loop_over_tokens(self, q, k, v, residual, step: LoopStep) -> torch.Tensor:
        """Loop r >= 1 over n tokens: gated global (loop 0's keys) + local (ring, then this call's keys)."""
        cache, loop = step.cache, step.loop
        k0, v0 = cache.global_kv(self.layer_idx, q.shape[2])  # written by loop 0, this call included
        ring_k, ring_v = cache.ring(self.layer_idx, k)  # [R-1, B, Hkv, S, Dh]
        local_k = torch.cat([ring_k[loop - 1], k], dim=2)  # [B, Hkv, S+n, Dh]
        local_v = torch.cat([ring_v[loop - 1], v], dim=2)
        gate = self.plt_gate(q, residual)  # [B, H, n, 1]
        out = attend(q, k0, v0, step.global_mask) * gate + attend(q, local_k, local_v, step.local_mask) * (1 - gate)
        cache.write_ring(self.layer_idx, loop, k, v)  # after attending: the chunk may wrap the ring
        return out

    def _pipelined(self, q, k, v, residual, step: LoopStep) -> torch.Tensor:
        """Rows [:m] = loop 0 over m new tokens, rows [m:] = loop 1 over tokens whose loop-0 output at the
        position before is known. The new k0, v0 enter loop 0's cache first; every row's global branch
        reads it causally by position (one attention); loop 1's rows add their local branch and gate."""
        cache, m = step.cache, step.loop0_rows
        k0, v0 = cache.append_global(self.layer_idx, k[:, :, :m], v[:, :, :m])  # [B, Hkv, F0+m, Dh]
        glob = attend(q, k0, v0, step.global_mask)  # [B, H, m+n1, Dh]
        q1, k1, v1 = q[:, :, m:], k[:, :, m:], v[:, :, m:]
        ring_k, ring_v = cache.ring(self.layer_idx, k1)  # [1, B, Hkv, S, Dh]
        local = attend(q1, torch.cat([ring_k[0], k1], dim=2), torch.cat([ring_v[0], v1], dim=2), step.local_mask)
        gate = self.plt_gate(q1, residual[:, m:])  # [B, H, n1, 1]
        cache.write_ring(self.layer_idx, 1, k1, v1)  # after attending: the rows may wrap the ring
        return torch.cat([glob[:, :, :m], glob[:, :, m:] * gate + local * (1 - gate)], dim=2)

    def _all_loops_one_token(self, q, k, v, residual, step: LoopStep) -> torch.Tensor:
        """Row r = loop r at token t. Row 0's k, v enter loop 0's cache before anyone attends, so
        every row's global branch sees them; rows r >= 1 also attend to their ring, which their own
        key enters first (the slot it takes held position t - S, outside the window): no copy of the ring."""
        cache, loops, static = step.cache, q.shape[2], step.position is not None
        if static:  # [B, Hkv, span, Dh], the columns past position masked
            k0, v0 = cache.write_global_at(self.layer_idx, step.position, step.span, k[:, :, :1], v[:, :, :1])
        else:
            k0, v0 = cache.append_global(self.layer_idx, k[:, :, :1], v[:, :, :1])  # [B, Hkv, L+1, Dh]
        glob = attend(q, k0, v0, step.global_mask)  # [B, H, R, Dh]: all rows share keys and position
        if loops == 1:
            return glob
        batch, heads, _, dim = q.shape
        if static:
            cache.write_ring_at(self.layer_idx, step.position, k[:, :, 1:], v[:, :, 1:])
        for loop in range(1, 1 if static else loops):
            cache.write_ring(self.layer_idx, loop, k[:, :, loop:loop + 1], v[:, :, loop:loop + 1])
        ring_k, ring_v = cache.ring(self.layer_idx, k)  # [R-1, B, Hkv, S, Dh], token t included
        q_local = q[:, :, 1:].permute(2, 0, 1, 3)[:, :, :, None].flatten(0, 1)  # [(R-1)*B, H, 1, Dh]
        local = attend(q_local, ring_k.flatten(0, 1), ring_v.flatten(0, 1), step.local_mask)
        local = local.view(loops - 1, batch, heads, dim).permute(1, 2, 0, 3)  # [B, H, R-1, Dh]
        gate = self.plt_gate(q[:, :, 1:], residual[:, 1:])  # [B, H, R-1, 1]
        return torch.cat([glob[:, :, :1], glob[:, :, 1:] * gate + local * (1 - gate)], dim=2)


class PLTMLP(nn.Module):
    def __init__(self, config: IQuestPLTCoderConfig):
        super().__init__()
        d, ffn, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(d, ffn, bias=bias)
        self.up_proj = nn.Linear(d, ffn, bias=bias)
        self.down_proj = nn.Linear(ffn, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PLTDecoderLayer(nn.Module):
    """Pre-norm block shared by all loops; the gate reads the residual before input_layernorm."""

    def __init__(self, config: IQuestPLTCoderConfig, layer_idx: int):
        super().__init__()
        self.self_attn = PLTAttention(config, layer_idx)
        self.mlp = PLTMLP(config)
        self.input_layernorm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, h: torch.Tensor, step: LoopStep) -> torch.Tensor:
        h = h + self.self_attn(self.input_layernorm(h), h, step)
        return h + self.mlp(self.post_attention_layernorm(h))


class IQuestPLTCoderPreTrainedModel(PreTrainedModel):
    config_class = IQuestPLTCoderConfig
    base_model_prefix = "model"
    _no_split_modules = ["PLTDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, PLTGate):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
            module.bias.data.zero_()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, but a missing, unexpected or misshapen tensor is an error, not a warning.

        `quantize="int8"|"int4"` (or a checkpoint written by `loopcoder model quantize`) loads
        through model/quantized_loading.py instead: weight-only quantized, shard by shard.
        `compile_decode=True` (the causal LM only) compiles its one-token decode step (see
        `enable_compiled_decode`); sessions on the model then use it.
        """
        quantize = kwargs.pop("quantize", None)
        if kwargs.pop("compile_decode", False):
            if cls is not IQuestPLTCoderForCausalLM:
                raise ValueError("compile_decode=True needs IQuestPLTCoderForCausalLM (the model with lm_head)")
            loaded = cls.from_pretrained(pretrained_model_name_or_path, *args, quantize=quantize, **kwargs)
            (loaded[0] if isinstance(loaded, tuple) else loaded).enable_compiled_decode()
            return loaded
        if cls is IQuestPLTCoderForCausalLM and wants_quantized_loader(pretrained_model_name_or_path, quantize,
                                                                        kwargs.get("config")):
            return load_quantized(cls, pretrained_model_name_or_path, quantize, kwargs.get("config"),
                                  kwargs.get("dtype", kwargs.get("torch_dtype")), kwargs.get("device_map") or "cpu")
        if cls is IQuestPLTCoderForCausalLM:
            check_checkpoint_dir(pretrained_model_name_or_path, kwargs.get("config"))
        if kwargs.get("key_mapping") is None:
            kwargs["key_mapping"] = gate_key_mapping(pretrained_model_name_or_path)
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        raise_on_loading_problems(info, pretrained_model_name_or_path)
        return (model, info) if want_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Refused for a quantized model: its kernels' layouts are per device, not a checkpoint format."""
        if self.config.plt_quantization is not None:
            raise ValueError("a quantized model is not saved with save_pretrained; write a quantized checkpoint "
                             "from the dense one with `loopcoder model quantize SRC DST`")
        return super().save_pretrained(save_directory, *args, **kwargs)


class IQuestPLTCoderModel(IQuestPLTCoderPreTrainedModel):
    """Embeddings, the shared layers run plt_num_loops times, and the shared final norm."""

    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq", r"^lm_head\."]  # loads from a CausalLM checkpoint
    cross_loop_decode = True  # single-token steps run all loops in one pass; False: loop after loop
    pipelined_verification = True  # Session verifies drafts with `pipelined_pass`; False: the chunked path

    def __init__(self, config: IQuestPLTCoderConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(PLTDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = PLTRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryTable(config.head_dim, config.rope_theta)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: PLTCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache: PLTCache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """Run the tokens after those in `cache` (transformers < 5.24: `past_key_values`; a new cache when None).

        attention_mask [B, L+n] covers the cached and the new tokens and may only
        pad on the left; position_ids [B, n] default to each row's token index.
        """
        if kwargs.get("output_attentions") or kwargs.get("output_hidden_states"):
            raise ValueError("IQuestPLTCoderModel does not return attentions or per-layer hidden states")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        embeds = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # [B, n, d]
        batch, n, _ = embeds.shape
        use_cache = self.config.use_cache if use_cache is None else use_cache
        cache = cache if cache is not None else past_key_values
        cache = cache if cache is not None else PLTCache(self.config, batch)
        if not isinstance(cache, PLTCache):
            raise TypeError(f"{CACHE_KWARG} must be a PLTCache (model.new_cache()), got {type(cache).__name__}")
        if cache.batch_size != batch:
            raise ValueError(f"the cache holds {cache.batch_size} sequences but the input has {batch} rows: "
                             "use model.new_cache(batch_size) with the input's batch size")
        if cache.ahead:
            raise ValueError(f"the cache has {cache.ahead} tokens through loop 0 only (a pipelined verification): "
                             "crop it to get_seq_length() before a regular forward")
        held = cache.get_seq_length()
        key_valid = _key_validity(attention_mask, batch, held + n)  # [B, L+n] or None
        limit = held + n  # a token's position is at most its column
        if position_ids is None:
            position_ids = _default_positions(key_valid, held, n, embeds.device)
        elif n:
            limit = max(limit, int(position_ids.max()) + 1)
        cos, sin = self.rotary(position_ids, embeds.dtype, limit)  # [B|1, 1, n, Dh]
        run = self._decode_step if n == 1 and self.cross_loop_decode else self._prefill_chunk
        hidden = [
            run(
                embeds[:, start:start + MAX_CHUNK],
                (cos[:, :, start:start + MAX_CHUNK], sin[:, :, start:start + MAX_CHUNK]),
                None if key_valid is None else key_valid[:, : held + start + MAX_CHUNK],
                cache,
            )
            for start in range(0, n, MAX_CHUNK)
        ]
        return BaseModelOutputWithPast(last_hidden_state=torch.cat(hidden, dim=1), **{CACHE_KWARG: cache if use_cache else None})

    def _prefill_chunk(self, embeds, rotary, key_valid, cache: PLTCache) -> torch.Tensor:
        """Loop after loop over one chunk [B, n, d] (docs/plt.md §4, prefill); returns the last loop's normed output."""
        config = self.config
        held, n = cache.get_seq_length(), embeds.shape[1]
        cos, sin = rotary
        global_mask, local_mask = _chunk_masks(cache, n, key_valid, embeds.device)
        h = embeds
        for loop in range(config.plt_num_loops):
            if loop > 0:
                previous = torch.cat([cache.carry(loop - 1, out).to(out.device), out[:, :-1]], dim=1)  # H_{t-1}
                cache.write_carry(loop - 1, out)
                h = self._clp_input(embeds, previous, key_valid, held)
            step = LoopStep(loop, cache, cos, sin, global_mask, local_mask)
            for layer in self.layers:
                h = layer(h, step)
            last = loop == config.plt_num_loops - 1
            out = self.norm(h) if last or config.plt_normalize_per_loop else h  # [B, n, d]
        cache.advance(n)
        return out

    def _decode_step(self, embeds, rotary, key_valid, cache: PLTCache) -> torch.Tensor:
        """One token [B, 1, d], all loops in one pass (docs/plt.md §4): row r runs loop r, so every
        weight is read once per token. Row r >= 1 needs only loop r-1's output at t-1 (the carry)."""
        loops, held = self.config.plt_num_loops, cache.get_seq_length()
        cos, sin = rotary  # [B|1, 1, 1, Dh]
        global_mask, local_mask = _decode_masks(cache, key_valid, embeds.device)
        if local_mask.shape[0] > 1:
            local_mask = local_mask.repeat(loops - 1, 1, 1, 1)  # one row of masks per (loop, sequence)
        previous = [cache.carry(loop, embeds).to(embeds.device) for loop in range(loops - 1)]
        step = LoopStep(None, cache, cos, sin, global_mask, local_mask)
        h, carries = self._all_loops(embeds, previous, key_valid, held, step)
        for loop in range(loops - 1):
            cache.write_carry(loop, carries[:, loop:loop + 1])
        cache.advance(1)
        return h

    def decode_static(self, input_ids: torch.LongTensor, position: torch.Tensor, cache: PLTCache,
                      span: int) -> torch.Tensor:
        """`_decode_step` for one unpadded token [B, 1] at column `position` [1] < `span` of a cache whose
        buffers exist with `span` columns (`cache.allocate`): no Python int of the length, no tensor made per token, so
        `torch.compile(fullgraph=True)` takes it whole. Attends to loop 0's first `span` columns; the
        caller commits the token (`cache.advance(1)`). Returns the last loop's normed output [B, 1, d]."""
        embeds = self.embed_tokens(input_ids)  # [B, 1, d]
        cos, sin = self.rotary(position[None], embeds.dtype, span)  # [1, 1, 1, Dh]
        global_mask = (torch.arange(span, device=position.device) <= position)[None, None, None]  # [1, 1, 1, span]
        local_mask = cache.ring_visible_at(position)[None, None, None]  # [1, 1, 1, S]
        previous = [cache.carry_at(loop, position) for loop in range(self.config.plt_num_loops - 1)]
        step = LoopStep(None, cache, cos, sin, global_mask, local_mask, position, span)
        h, carries = self._all_loops(embeds, previous, None, 0, step)
        if carries.shape[1]:
            cache.write_carry_at(position, carries.transpose(0, 1)[:, :, None])  # [R-1, B, 1, d]
        return h

    def pipelined_pass(self, input_ids: torch.LongTensor, cache: PLTCache) -> torch.Tensor:
        """One pass over the layers for pipelined draft verification (docs/plt.md §4; R = 2, one
        unpadded sequence). input_ids [1, a+m]: the cache's `ahead` tokens a (through loop 0 only),
        then m new ones. Loop 0 runs the m new tokens; loop 1 runs the a ahead ones and the first new
        one, since loop 1 at a token needs loop 0's output at the token before only. Returns loop 1's
        normed output for those n1 = a + (m > 0) tokens [1, n1, d]; afterwards the cache holds n1 more
        tokens through both loops and m - n1 (or 0) ahead."""
        if not self.supports_pipelined(cache):
            raise ValueError("pipelined verification needs a 2-loop PLT and a cache of one sequence")
        ahead, total = cache.ahead, input_ids.shape[1]
        new, through = total - ahead, min(total, ahead + 1)
        if new < 0 or through == 0:
            raise ValueError(f"pass the cache's {ahead} ahead tokens and then the new ones, got {total} ids")
        held = cache.get_seq_length()  # loop 1's frontier F1; loop 0's is F1 + ahead
        embeds = self.embed_tokens(input_ids)  # [1, a+m, d]
        previous = cache.carry_span(held - 1, through, embeds).to(embeds.device)  # loop 0 at t-1 [1, n1, d]
        h = torch.cat([embeds[:, ahead:], self._clp_input(embeds[:, :through], previous, None, held)], dim=1)
        device = embeds.device
        positions = torch.cat([torch.arange(held + ahead, held + total, device=device),
                               torch.arange(held, held + through, device=device)])  # [m+n1]
        cos, sin = self.rotary(positions[None], embeds.dtype, held + total)  # [1, 1, m+n1, Dh]
        global_mask = (torch.arange(held + total, device=device) <= positions[:, None])[None, None]  # [1, 1, m+n1, F0+m]
        local_mask = _local_chunk_mask(cache, through, device)[1][None, None]  # [1, 1, n1, S+n1]
        step = LoopStep(1, cache, cos, sin, global_mask, local_mask, loop0_rows=new)
        for layer in self.layers:
            h = layer(h, step)
        loop0 = h[:, :new]
        cache.write_carry_span(held + ahead, self.norm(loop0) if self.config.plt_normalize_per_loop else loop0)
        cache.advance_pipelined(through, new)
        return self.norm(h[:, new:])

    def supports_pipelined(self, cache: PLTCache) -> bool:
        """Whether `pipelined_pass` runs on this model and cache: 2 loops, one sequence, both switches on."""
        return (self.config.plt_num_loops == 2 and cache.batch_size == 1 and self.cross_loop_decode
                and self.pipelined_verification)

    def _all_loops(self, embeds, previous: list[torch.Tensor], key_valid, held: int, step: LoopStep):
        """Row 0 = E_t, row r = the CLP input from loop r-1's output at t-1 (`previous[r-1]` [B, 1, d]),
        through every layer at once -> (the last loop's normed output [B, 1, d], the carries [B, R-1, d])."""
        rows = [embeds] + [self._clp_input(embeds, p, key_valid, held) for p in previous]
        h = torch.cat(rows, dim=1)  # [B, R, d]
        for layer in self.layers:
            h = layer(h, step)
        carries = self.norm(h[:, :-1]) if self.config.plt_normalize_per_loop else h[:, :-1]  # [B, R-1, d]
        return self.norm(h[:, -1:]), carries

    def _clp_input(self, embeds, previous, key_valid, held: int) -> torch.Tensor:
        """a*E_t + b*H_{t-1} [B, n, d]; H_{t-1} counts as 0 where column t-1 is padding."""
        if key_valid is not None:
            before = F.pad(key_valid, (1, 0))[:, held:held + embeds.shape[1]]  # [B, n]: column t-1 is a token
            previous = previous * before[..., None].to(previous.dtype)
        return self.config.emb_scale * embeds + self.config.hidden_scale * previous


class IQuestPLTCoderForCausalLM(IQuestPLTCoderPreTrainedModel, GenerationMixin):
    """The PLT with its untied lm_head; `generate()` runs on a `PLTCache`."""

    def __init__(self, config: IQuestPLTCoderConfig):
        super().__init__(config)
        self.model = IQuestPLTCoderModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def new_cache(self, batch_size: int = 1, slack: int = DEFAULT_SLACK, max_length: int | None = None) -> PLTCache:
        """An empty cache; `crop` can later drop up to `slack` tokens exactly; `max_length` preallocates it."""
        return PLTCache(self.config, batch_size, slack, max_length)

    compiled_decode = None  # a CompiledDecode once enable_compiled_decode() ran; Session uses it

    def enable_compiled_decode(self, mode: str | None = None):
        """Compile the one-token step (model/compiled.py): CUDA graphs on CUDA, inductor on the CPU
        (`mode` overrides). Compiling happens at the first step, reported on stderr. Returns it."""
        from .compiled import CompiledDecode

        if self.compiled_decode is None or (mode is not None and mode != self.compiled_decode.mode):
            self.compiled_decode = CompiledDecode(self, mode)
        return self.compiled_decode

    def decode_one_token(self, input_ids: torch.LongTensor, position: torch.Tensor, cache: PLTCache,
                         span: int) -> torch.Tensor:
        """gpt-fast's decode_one_token: the logits [B, V] after one unpadded token [B, 1] at column
        `position` [1] of a static cache (see `IQuestPLTCoderModel.decode_static`); what
        model/compiled.py compiles. The caller commits it: `cache.advance(1)`."""
        return self.lm_head(self.model.decode_static(input_ids, position, cache, span)[:, -1])

    def pipelined_forward(self, input_ids: torch.LongTensor, cache: PLTCache) -> torch.Tensor:
        """The logits [n1, V] of a pipelined verification pass (`IQuestPLTCoderModel.pipelined_pass`):
        input_ids [1, a+m] = the cache's `ahead` tokens then m new ones; row i follows input_ids[0, i]."""
        return self.lm_head(self.model.pipelined_pass(input_ids, cache))[0]

    def supports_pipelined(self, cache: PLTCache) -> bool:
        return self.model.supports_pipelined(cache)

    pipelined_rows_cheap: bool | None = None  # None: measured at the first call of `rows_are_cheap`

    def rows_are_cheap(self, rows: int = 8, limit: float = 1.25) -> bool:
        """Whether this model's largest shared linear costs at most `limit` x a 1-row product for `rows`
        rows, on its device and in its dtype (or quantized format): measured once. Then a pipelined pass
        with a rejected draft costs about what a decode step does, and the session keeps drafting (a GPU:
        yes; float32 through MKL's small GEMMs: 3x at 8 rows, no). The limit was 1.5: float32 on
        model/dense.py's kernel passed it on one CPU (8 rows at 1.3-1.45x) and turns that copy nothing
        ran at 0.95x; forced on another CPU (1.66x), drafting always gave 0.92x on those turns and
        nothing on copying ones (1.40x against 1.39x as measured, benchmarks/speculative.py)."""
        if self.pipelined_rows_cheap is None:
            mlp = self.model.layers[0].mlp
            linear = max((mlp.gate_proj, mlp.down_proj), key=lambda m: m.in_features * m.out_features)
            like = self.model.embed_tokens.weight
            inputs = {n: torch.randn(n, linear.in_features, dtype=like.dtype, device=like.device) for n in (1, rows)}
            with torch.inference_mode():
                # best of enough calls to fill ~50 ms: a small layer's microseconds are noisy (best of 3 put
                # nano's 8-row ratio anywhere in 1.5-2.3, so drafting changed from run to run)
                repeats = max(3, min(ROW_COST_MAX_REPEATS, int(ROW_COST_SECONDS / max(best_seconds(linear, inputs[rows], 1), 1e-7))))
                seconds = {n: best_seconds(linear, x, repeats) for n, x in inputs.items()}
            self.pipelined_rows_cheap = seconds[rows] <= limit * seconds[1]
        return self.pipelined_rows_cheap

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: PLTCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        return_dict: bool | None = None,
        cache: PLTCache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Append the tokens to `cache` (or `past_key_values`) and return their logits [B, n, V] (the last `logits_to_keep`)."""
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None if labels is None else self.loss_function(logits, labels, self.config.vocab_size, **kwargs)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_KWARG: getattr(outputs, CACHE_KWARG)})
        return result if return_dict is not False else result.to_tuple()

    # --- generate() plumbing --------------------------------------------------

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # a DynamicCache cannot hold the loop>=1 rings and carries

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, generation_mode, batch_size, max_cache_length):
        """Give generate() a PLTCache where it would build a DynamicCache."""
        if generation_config.cache_implementation is not None:
            raise ValueError(
                f"cache_implementation={generation_config.cache_implementation!r} is not supported: "
                "the PLT decodes with its own PLTCache"
            )
        cache = model_kwargs.get(CACHE_KWARG)
        if cache is not None and not isinstance(cache, PLTCache):
            raise TypeError(f"{CACHE_KWARG} must be a PLTCache (model.new_cache()), got {type(cache).__name__}")
        if cache is None and generation_config.use_cache is not False:
            rows = batch_size * max(generation_config.num_beams, generation_config.num_return_sequences or 1)
            model_kwargs[CACHE_KWARG] = self.new_cache(rows)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        past_key_values: PLTCache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool = True,
        logits_to_keep: int | None = None,
        cache: PLTCache | None = None,
        **kwargs,
    ) -> dict:
        """Feed only the tokens the cache does not hold yet (everything when there is no cache)."""
        past_key_values = cache if cache is not None else past_key_values  # transformers >= 5.24 calls it `cache`
        held = past_key_values.get_seq_length() if past_key_values is not None else 0
        inputs = {CACHE_KWARG: past_key_values, "use_cache": use_cache}
        if inputs_embeds is not None:  # generate(inputs_embeds=...): input_ids holds the generated tokens only
            if held == 0:
                inputs["inputs_embeds"] = inputs_embeds
            else:
                inputs["input_ids"] = input_ids[:, -1:]
        else:
            total = input_ids.shape[1]
            if held >= total:
                if held > total or not past_key_values.can_crop(total - 1):
                    raise ValueError(
                        f"the cache holds {held} tokens but the prompt has {total}: pass a cache that holds a "
                        "prefix of the prompt (or crop it first)"
                    )
                past_key_values.crop(total - 1)  # recompute the last token to get its logits
                held = total - 1
            inputs["input_ids"] = input_ids[:, held:]
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, held:]
        if logits_to_keep is not None:
            inputs["logits_to_keep"] = logits_to_keep
        return inputs


def _key_validity(attention_mask: torch.Tensor | None, batch: int, total: int) -> torch.Tensor | None:
    """attention_mask [B, L+n] -> bool [B, L+n], or None when nothing is padded."""
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, total):
        raise ValueError(
            f"attention_mask must be [batch, cached + new tokens] = [{batch}, {total}], got {tuple(attention_mask.shape)}"
        )
    valid = attention_mask.bool()
    if bool((valid[:, 1:] < valid[:, :-1]).any()):
        raise ValueError("attention_mask may only pad on the left (zeros before ones in every row)")
    return None if bool(valid.all()) else valid


def _default_positions(key_valid, held: int, n: int, device) -> torch.LongTensor:
    """[B|1, n]: the token index of each new token in its row (left padding not counted)."""
    if key_valid is None:
        return torch.arange(held, held + n, device=device)[None]
    return (key_valid.long().cumsum(-1) - 1).clamp(min=0)[:, held:].to(device)


def _decode_masks(cache: PLTCache, key_valid, device):
    """Visibility for one new token at column L -> (global [B, 1, 1, L+1] or None, local [B|1, 1, 1, S]
    over the ring slots once the token's own keys are in them). Without padding the global
    branch sees every column, so only the ring's few slots are compared."""
    held = cache.get_seq_length()
    columns = cache.ring_positions(held + 1, device=device)  # [S], -1: empty slot
    local_mask = (columns >= 0) & (columns >= held - cache.window)
    if key_valid is None:
        return None, local_mask[None, None, None]
    key_valid = key_valid.to(device)
    local_valid = key_valid.gather(1, columns.clamp(min=0).expand(key_valid.shape[0], -1))  # [B, S]
    global_mask = key_valid.clone()
    global_mask[:, held] = True  # a padded column is still its own query's key: no empty row
    return global_mask[:, None, None], ((local_mask & local_valid) | (columns == held))[:, None, None]


def _chunk_masks(cache: PLTCache, n: int, key_valid, device):
    """Visibility for n new tokens at columns L..L+n-1 -> (global [.., n, L+n] or None, local [.., n, S+n]).

    Global: causal over every column. Local: columns t-W..t, read from the ring
    (earlier columns) and from this call's keys. A padded column is never a key,
    except for its own query, so no row is empty (no NaN).
    """
    held = cache.get_seq_length()
    query = torch.arange(held, held + n, device=device)[:, None]  # [n, 1]
    columns = torch.arange(held + n, device=device)  # [L+n]
    local_columns, local_mask = _local_chunk_mask(cache, n, device)
    global_mask = columns <= query  # [n, L+n]
    if key_valid is None:
        return (None if n == 1 else global_mask[None, None]), local_mask[None, None]
    key_valid = key_valid.to(device)
    local_valid = key_valid.gather(1, local_columns.clamp(min=0).expand(key_valid.shape[0], -1))  # [B, S+n]
    global_mask = (global_mask & key_valid[:, None]) | (columns == query)  # [B, n, L+n]
    local_mask = (local_mask & local_valid[:, None]) | (local_columns == query)  # [B, n, S+n]
    return global_mask[:, None], local_mask[:, None]


def _local_chunk_mask(cache: PLTCache, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """For n new tokens at columns L..L+n-1 with no padding: the column each local key holds [S+n] (the
    ring's slots, then the new keys; -1 = empty slot) and which ones each token sees [n, S+n] (t-W..t)."""
    held = cache.get_seq_length()
    query = torch.arange(held, held + n, device=device)[:, None]  # [n, 1]
    local_columns = torch.cat([cache.ring_positions(device=device), query[:, 0]])  # [S+n]
    return local_columns, (local_columns >= 0) & (local_columns <= query) & (local_columns >= query - cache.window)


__all__ = ["IQuestPLTCoderForCausalLM", "IQuestPLTCoderModel", "IQuestPLTCoderPreTrainedModel"]
