"""PLTCache: rollback (crop) exactness and limits, constant loop>=1 memory."""
from __future__ import annotations

import pytest
import torch

from loopcoder.model import PLTCache

from .conftest import tiny_config, tiny_model

IDS = torch.randint(3, 97, (1, 60), generator=torch.Generator().manual_seed(0))


def _prefill(model, ids, cache):
    with torch.no_grad():
        return model(ids, past_key_values=cache, use_cache=True).logits


@pytest.mark.parametrize("loops", [2, 3])
def test_crop_within_slack_is_exact(loops):
    """Prefill 50, roll back to 33 (17 = slack + 1), continue: logits as if never rolled back."""
    model = tiny_model(loops, torch.float64, plt_num_loops=loops)
    with torch.no_grad():
        full = model(IDS).logits
    cache = model.new_cache()
    _prefill(model, IDS[:, :50], cache)
    assert cache.can_crop(33) and not cache.can_crop(32)
    cache.crop(33)
    assert cache.get_seq_length() == 33
    after = torch.cat([_prefill(model, IDS[:, i:i + 1], cache) for i in range(33, 60)], 1)
    torch.testing.assert_close(after, full[:, 33:], rtol=0, atol=1e-12)


def test_crop_twice_and_a_different_continuation():
    model = tiny_model(1, torch.float64)
    other = torch.randint(3, 97, (1, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(torch.cat([IDS[:, :40], other], 1)).logits[:, 40:]
    cache = model.new_cache()
    _prefill(model, IDS[:, :45], cache)
    cache.crop(43)
    _prefill(model, IDS[:, 43:44], cache)
    cache.crop(-4)  # negative: drop from the end -> 40
    assert cache.get_seq_length() == 40
    torch.testing.assert_close(_prefill(model, other, cache), expected, rtol=0, atol=1e-12)


def test_crop_beyond_the_slack_is_a_clear_error():
    model = tiny_model(2)
    cache = model.new_cache(slack=4)
    _prefill(model, IDS[:, :30], cache)
    assert cache.can_crop(25) and not cache.can_crop(24) and not cache.can_crop(31)
    with pytest.raises(ValueError, match=r"from 30 to 24 tokens.*back to 25 tokens at the least.*re-prefill"):
        cache.crop(24)
    assert cache.get_seq_length() == 30  # unchanged by the refused crop
    assert cache.can_crop(0)
    cache.crop(0)
    torch.testing.assert_close(_prefill(model, IDS[:, :5], cache), model(IDS[:, :5]).logits.detach())


def test_short_sequences_crop_anywhere():
    cache = PLTCache(tiny_config(), slack=16)
    cache.advance(20)  # nothing has left the 25-slot ring yet
    assert all(cache.can_crop(n) for n in range(21))


def test_only_loop0_memory_grows_with_length():
    model = tiny_model(3, plt_num_loops=3)
    cache = model.new_cache()
    _prefill(model, IDS[:, :10], cache)
    rings = [t.numel() for t in cache._ring_k + cache._ring_v] + [cache._carry.numel()]
    _prefill(model, IDS[:, 10:], cache)
    assert [t.numel() for t in cache._ring_k + cache._ring_v] + [cache._carry.numel()] == rings
    config = model.config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
    ring_elements = per_token * cache.ring_size * 2 + config.hidden_size * cache.ring_size * 2  # 2 extra loops
    assert sum(rings) == ring_elements
    loop0 = sum(t.shape[2] for t in cache._k0 + cache._v0) // 2 * per_token // config.num_hidden_layers
    assert cache.nbytes == (loop0 + ring_elements) * 4


def test_batch_rows_are_independent_in_the_cache():
    model = tiny_model(4)
    ids = torch.randint(3, 97, (3, 25), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache(batch_size=3)
    batched = torch.cat([_prefill(model, ids[:, i:i + 5], cache) for i in range(0, 25, 5)], 1)
    for row in range(3):
        torch.testing.assert_close(batched[row], model(ids[row:row + 1]).logits[0].detach(), rtol=1e-5, atol=1e-5)
    cache.reorder_cache(torch.tensor([2, 2]))
    step = _prefill(model, ids[2:, :1].repeat(2, 1), cache)
    alone = model(torch.cat([ids[2:], ids[2:, :1]], 1)).logits[0, -1].detach()
    torch.testing.assert_close(step[:, -1], alone.expand(2, -1), rtol=1e-5, atol=1e-5)


def test_static_cache_is_allocated_once_gives_the_same_logits_and_crops():
    model = tiny_model(5, torch.float64)
    with torch.no_grad():
        full = model(IDS).logits
    cache = model.new_cache(max_length=60)
    _prefill(model, IDS[:, :20], cache)
    buffers = [t.data_ptr() for t in cache._k0]
    assert all(t.shape[2] == 60 for t in cache._k0)
    steps = [_prefill(model, IDS[:, i:i + 1], cache) for i in range(20, 50)]
    torch.testing.assert_close(torch.cat(steps, 1), full[:, 20:50], rtol=0, atol=1e-12)
    cache.crop(40)  # rollback for speculative decoding: same buffers
    again = torch.cat([_prefill(model, IDS[:, i:i + 1], cache) for i in range(40, 60)], 1)
    torch.testing.assert_close(again, full[:, 40:], rtol=0, atol=1e-12)
    assert [t.data_ptr() for t in cache._k0] == buffers
    with pytest.raises(ValueError, match="preallocated for 60 tokens and this call would hold 61"):
        _prefill(model, IDS[:, :1], cache)
