"""A naive LoopCoder-V2 forward written straight from docs/plt.md §1-§2, for the tests.

Independent of model/: full sequence only, float64, a Python loop over tokens
and heads, nothing cached. It reads the weights by their checkpoint names.
"""
from __future__ import annotations

import math

import torch


def naive_logits(weights: dict[str, torch.Tensor], config, ids: list[int]) -> torch.Tensor:
    """[T, V] logits of the whole sequence `ids`."""
    w = {name: tensor.double() for name, tensor in weights.items()}
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    group, window, length = heads // kv_heads, config.plt_window_size[0], len(ids)
    a = 1.0 if config.plt_emb_scale is None else config.plt_emb_scale
    b = 1.0 if config.plt_hidden_scale is None else config.plt_hidden_scale

    def rms(x, weight):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + config.rms_norm_eps) * weight

    def rope(x, t):  # x [heads, dim] at position t
        i = torch.arange(dim // 2, dtype=torch.float64)
        angle = t * config.rope_theta ** (-2 * i / dim)
        x1, x2 = x[:, : dim // 2], x[:, dim // 2 :]
        return torch.cat([x1 * angle.cos() - x2 * angle.sin(), x2 * angle.cos() + x1 * angle.sin()], -1)

    def softmax_attention(q, keys, values):  # q [dim], keys/values [S, dim]
        scores = keys @ q / math.sqrt(dim)
        return torch.softmax(scores, 0) @ values

    loop0_kv = {}

    def run_layers(h, loop):
        for layer in range(config.num_hidden_layers):
            p = f"model.layers.{layer}."
            attn = p + "self_attn."
            residual = h
            u = rms(h, w[p + "input_layernorm.weight"])
            q = (u @ w[attn + "q_proj.weight"].T).view(length, heads, dim)
            k = (u @ w[attn + "k_proj.weight"].T).view(length, kv_heads, dim)
            v = (u @ w[attn + "v_proj.weight"].T).view(length, kv_heads, dim)
            q = torch.stack([rope(q[t], t) for t in range(length)])
            k = torch.stack([rope(k[t], t) for t in range(length)])
            if loop == 0:
                loop0_kv[layer] = (k, v)
            k0, v0 = loop0_kv[layer]
            out = torch.zeros(length, heads, dim, dtype=torch.float64)
            for t in range(length):
                for head in range(heads):
                    kv = head // group
                    glob = softmax_attention(q[t, head], k0[: t + 1, kv], v0[: t + 1, kv])
                    if loop == 0:
                        out[t, head] = glob
                        continue
                    lo = max(0, t - window)
                    local = softmax_attention(q[t, head], k[lo : t + 1, kv], v[lo : t + 1, kv])
                    if config.plt_gate_use_hidden_states:
                        x = rms(residual[t], w[attn + "plt_gate.gate_norm.weight"])
                    else:
                        x = q[t, head]
                    g = torch.sigmoid(x @ w[attn + "plt_gate.weight"][head] + w[attn + "plt_gate.bias"][head])
                    out[t, head] = g * glob + (1 - g) * local
            h = residual + out.reshape(length, heads * dim) @ w[attn + "o_proj.weight"].T
            m = rms(h, w[p + "post_attention_layernorm.weight"])
            gate = torch.nn.functional.silu(m @ w[p + "mlp.gate_proj.weight"].T)
            h = h + (gate * (m @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        return h

    embeds = w["model.embed_tokens.weight"][ids]  # [T, d]
    h = embeds
    for loop in range(config.plt_num_loops):
        if loop > 0:
            shifted = torch.zeros_like(previous)
            shifted[1:] = previous[:-1]
            h = a * embeds + b * shifted
        h = run_layers(h, loop)
        last = loop == config.plt_num_loops - 1
        previous = rms(h, w["model.norm.weight"]) if last or config.plt_normalize_per_loop else h
    return previous @ w["lm_head.weight"].T
