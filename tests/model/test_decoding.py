"""Issue 7, model side: cross-loop-parallel decode steps and batches of different lengths."""
from __future__ import annotations

import pytest
import torch

from .conftest import tiny_model

GEN = torch.Generator().manual_seed(0)
IDS = torch.randint(3, 97, (2, 34), generator=GEN)


def _decode(model, ids, prefix=5):
    """Prefill `prefix` tokens, then one token per call: the logits of every call [B, T-prefix, V]."""
    cache = model.new_cache(ids.shape[0])
    with torch.no_grad():
        model(ids[:, :prefix], past_key_values=cache)
        return torch.cat([model(ids[:, i:i + 1], past_key_values=cache).logits for i in range(prefix, ids.shape[1])], 1)


@pytest.mark.parametrize("loops, gate_on_hidden, per_loop_norm", [(2, True, True), (2, False, True), (3, True, False), (4, False, True)])
def test_cross_loop_decode_equals_loop_after_loop(loops, gate_on_hidden, per_loop_norm):
    model = tiny_model(loops, torch.float64, plt_num_loops=loops, plt_gate_use_hidden_states=gate_on_hidden,
                       plt_normalize_per_loop=per_loop_norm)
    assert model.model.cross_loop_decode  # the default for single-token steps
    parallel = _decode(model, IDS)
    model.model.cross_loop_decode = False
    sequential = _decode(model, IDS)
    with torch.no_grad():
        full = model(IDS).logits[:, 5:]
    torch.testing.assert_close(parallel, sequential, rtol=0, atol=1e-12)
    torch.testing.assert_close(parallel, full, rtol=0, atol=1e-12)


def test_cross_loop_decode_runs_each_layer_once_per_token():
    model = tiny_model(1, plt_num_loops=3)
    calls = []
    for layer in model.model.layers:
        layer.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[1]))
    cache = model.new_cache()
    with torch.no_grad():
        model(IDS[:1, :6], past_key_values=cache)
        assert calls == [6] * 6  # prefill: 3 loops x 2 layers, 6 tokens each
        calls.clear()
        model(IDS[:1, 6:7], past_key_values=cache)
    assert calls == [3, 3]  # decode: 2 layers once, one row per loop


def _left_padded(prompts, pad=0):
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = prompt
        mask[row, width - len(prompt):] = 1
    return ids, mask


def test_batched_generate_with_left_padding_equals_each_sequence_alone():
    model = tiny_model(2)
    prompts = [torch.randint(3, 97, (n,), generator=GEN) for n in (7, 15, 11)]
    ids, mask = _left_padded(prompts)
    kwargs = dict(max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0,
                  output_logits=True, return_dict_in_generate=True)
    batch = model.generate(ids, attention_mask=mask, **kwargs)
    for row, prompt in enumerate(prompts):
        alone = model.generate(prompt[None], **kwargs)
        assert batch.sequences[row, ids.shape[1]:].tolist() == alone.sequences[0, len(prompt):].tolist()
        for step_batch, step_alone in zip(batch.logits, alone.logits):
            torch.testing.assert_close(step_batch[row], step_alone[0], rtol=1e-5, atol=1e-5)


def test_batch_runner_style_forward_with_a_growing_mask():
    """Prefill a padded batch in chunks, then feed each row's next token with the mask extended."""
    model = tiny_model(3, torch.float64, plt_num_loops=3)
    prompts = [IDS[0, :9], IDS[1, :22]]
    ids, mask = _left_padded(prompts)
    cache = model.new_cache(2)
    with torch.no_grad():
        model(ids[:, :10], attention_mask=mask[:, :10], past_key_values=cache)
        last = model(ids[:, 10:], attention_mask=mask, past_key_values=cache).logits[:, -1]
        steps = [last]
        for i in range(12):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
            nxt = torch.stack([IDS[0, 9 + i], IDS[1, 22 + i]])[:, None]
            steps.append(model(nxt, attention_mask=mask, past_key_values=cache).logits[:, -1])
        for row, (prompt, start) in enumerate(zip(prompts, (9, 22))):
            alone = model(IDS[row:row + 1, : start + 12]).logits[0, start - 1:]
            torch.testing.assert_close(torch.stack([s[row] for s in steps]), alone, rtol=0, atol=1e-12)


def test_right_padding_is_refused():
    model = tiny_model(4)
    with pytest.raises(ValueError, match="only pad on the left"):
        model(IDS[:, :4], attention_mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"attention_mask must be \[batch, cached \+ new tokens\]"):
        model(IDS[:, :4], attention_mask=torch.ones(2, 3))
