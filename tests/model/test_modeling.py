"""The PLT against the naive spec implementation: full forward, chunked prefill, generate()."""
from __future__ import annotations

import pytest
import torch

from loopcoder.model import PLTCache
from loopcoder.model.compat import CACHE_KWARG

from .conftest import tiny_config, tiny_model
from .reference import naive_logits


def _ids(n: int, seed: int = 0) -> list[int]:
    return torch.randint(3, 97, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("loops", [1, 2, 3])
@pytest.mark.parametrize("gate_on_hidden", [True, False])
def test_full_forward_matches_naive_spec(loops, gate_on_hidden):
    model = tiny_model(loops, torch.float64, plt_num_loops=loops, plt_gate_use_hidden_states=gate_on_hidden)
    ids = _ids(30, loops)  # > 3x the 8-token window
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(logits, naive_logits(model.state_dict(), model.config, ids), rtol=0, atol=1e-10)


def test_four_loops_without_per_loop_norm_match_naive_spec():
    model = tiny_model(4, torch.float64, plt_num_loops=4, plt_normalize_per_loop=False, plt_emb_scale=None)
    ids = _ids(27, 4)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(logits, naive_logits(model.state_dict(), model.config, ids), rtol=0, atol=1e-10)


def test_naive_reference_tells_a_65_key_window_from_a_64_key_one():
    """The comparison above can fail: one key less in the local window changes the logits."""
    model = tiny_model(0, torch.float64)
    ids = _ids(30)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    narrower = naive_logits(model.state_dict(), tiny_config(plt_window_size=[7, 0]), ids)
    assert torch.allclose(logits[:8], narrower[:8], atol=1e-10)  # identical while t <= 7 ...
    assert (logits[9:] - narrower[9:]).abs().max() > 1e-3  # ... then the window matters


@pytest.mark.parametrize("chunk", [1, 3, 8, 13, 45])
def test_chunked_prefill_equals_full_forward(chunk):
    model = tiny_model(1, torch.float64, plt_num_loops=3)
    ids = torch.tensor([_ids(45, 1)])
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        parts = [model(ids[:, i:i + chunk], past_key_values=cache, use_cache=True).logits for i in range(0, 45, chunk)]
    assert cache.get_seq_length() == 45
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-12)


def test_generate_logits_match_naive_spec_for_200_tokens():
    model = tiny_model(2)  # float32, window 8
    prompt = torch.tensor([_ids(10, 2)])
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=190, min_new_tokens=190, do_sample=False,
        output_logits=True, return_dict_in_generate=True, pad_token_id=0,
    )
    sequence = out.sequences[0]
    assert len(sequence) == 200
    assert isinstance(out.past_key_values, PLTCache) and out.past_key_values.get_seq_length() == 199
    reference = naive_logits(model.state_dict(), model.config, sequence.tolist()).float()  # [200, V]
    steps = torch.stack(out.logits, 1)[0]  # [190, V]: logits of positions 9..198
    torch.testing.assert_close(steps, reference[9:199], rtol=0, atol=1e-4)
    with torch.no_grad():
        full = model(sequence[None]).logits[0]
    torch.testing.assert_close(full, reference, rtol=0, atol=1e-4)


def test_greedy_and_beam_generate_with_cache_equal_recomputation_without():
    model = tiny_model(3)
    prompt = torch.tensor([_ids(12, 3)])
    kwargs = dict(max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    cached = model.generate(prompt, **kwargs)
    recomputed = model.generate(prompt, use_cache=False, **kwargs)
    assert cached.shape == (1, 32)
    assert torch.equal(cached, recomputed)
    beams = dict(num_beams=3, max_new_tokens=5, do_sample=False, pad_token_id=0)  # reorders the cache rows
    assert torch.equal(model.generate(prompt, **beams), model.generate(prompt, use_cache=False, **beams))


def test_generate_stops_at_eos_and_samples_with_a_seed():
    model = tiny_model(4)
    prompt = torch.tensor([_ids(6, 4)])
    greedy = model.generate(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)[0, 6:]
    eos = int(greedy[4])
    first = int((greedy == eos).nonzero()[0])
    stopped = model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=eos, pad_token_id=0)[0, 6:]
    assert stopped.tolist() == greedy[: first + 1].tolist()
    samples = []
    for _ in range(2):
        torch.manual_seed(7)
        samples.append(model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=20, temperature=1.0, pad_token_id=0))
    assert torch.equal(samples[0], samples[1]) and samples[0].shape[1] <= 14


def test_generate_reuses_a_cache_that_holds_the_whole_prompt():
    """A chat turn: the cache already holds every prompt token; generate rolls back one to get its logits."""
    model = tiny_model(5)
    prompt = torch.tensor([_ids(20, 5)])
    fresh = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    cache = model.new_cache()
    with torch.no_grad():
        model(prompt, past_key_values=cache, use_cache=True)
    reused = model.generate(prompt, **{CACHE_KWARG: cache}, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(fresh, reused)
    assert cache.get_seq_length() == 25  # the prompt and five generated tokens (the sixth is never fed)


def test_generate_from_inputs_embeds_continues_like_input_ids():
    model = tiny_model(7)
    prompt = torch.tensor([_ids(9, 7)])
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    from_ids = model.generate(prompt, **kwargs)[:, 9:]
    from_embeds = model.generate(inputs_embeds=model.get_input_embeddings()(prompt).detach(), **kwargs)
    assert torch.equal(from_embeds, from_ids)


def test_generate_rejects_foreign_caches():
    from transformers import DynamicCache

    model = tiny_model(6)
    prompt = torch.tensor([_ids(4)])
    with pytest.raises(TypeError, match="PLTCache"):
        model.generate(prompt, **{CACHE_KWARG: DynamicCache()}, max_new_tokens=2, pad_token_id=0)
    with pytest.raises(ValueError, match="cache_implementation"):
        model.generate(prompt, cache_implementation="static", max_new_tokens=2, pad_token_id=0)
    with pytest.raises(ValueError, match=r"cache holds 2 sequences but the input has 1 rows"):
        model(prompt, past_key_values=model.new_cache(batch_size=2))


def test_rotary_table_gives_the_fresh_tables_bit_for_bit_and_grows():
    from loopcoder.model.modeling_plt import RotaryTable, rotary_cos_sin

    table = RotaryTable(16, 5e5)
    for dtype in (torch.float32, torch.bfloat16):
        for limit in (3, 300, 1500):  # 1500 grows the 512-row table
            positions = torch.randint(0, limit, (2, 7))
            for got, want in zip(table(positions, dtype, limit), rotary_cos_sin(positions, 16, 5e5, dtype)):
                assert torch.equal(got, want)



@pytest.mark.parametrize("queries, mask_rows", [(1, None), (2, 1), (7, 7), (3, None)])
def test_grouped_attention_equals_sdpa_with_repeated_keys(queries, mask_rows):
    """`attend` runs the query heads that share a key head as rows of it (from GROUPED_MIN_KEYS keys on):
    the same result as SDPA repeating k and v, with or without a mask, one or many rows."""
    import torch.nn.functional as F

    from loopcoder.model.modeling_plt import GROUPED_MIN_KEYS, attend

    generator = torch.Generator().manual_seed(queries)
    keys = GROUPED_MIN_KEYS + 44
    q = torch.randn(2, 10, queries, 16, generator=generator, dtype=torch.float64)
    k, v = (torch.randn(2, 2, keys, 16, generator=generator, dtype=torch.float64) for _ in "kv")
    mask = None if mask_rows is None else torch.rand(2, 1, mask_rows, keys, generator=generator) > 0.3
    if mask is not None:
        mask[..., 0] = True  # no empty row
    expected = F.scaled_dot_product_attention(q, k.repeat_interleave(5, 1), v.repeat_interleave(5, 1), attn_mask=mask)
    torch.testing.assert_close(attend(q, k, v, mask), expected, rtol=0, atol=1e-12)
