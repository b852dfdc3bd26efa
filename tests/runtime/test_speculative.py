"""Prompt-lookup speculation in a Session: the same tokens as one-token decoding (greedy), for the
PLT and a transformers Llama, with stops, limits, KV reuse across turns, and sampling."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.runtime.session import Session
from tests.model.conftest import tiny_model

WINDOW = 4096


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=WINDOW)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # unit-scale weights: logits far apart, so the model repeats itself (drafts get accepted)
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0, 1.0 if param is model.model.embed_tokens.weight else 1 / param.shape[1] ** 0.5)
    return model.double().eval()


def _dynamic_cache():
    from transformers import DynamicCache

    return DynamicCache()


MODELS = {"plt": (tiny_model(10, torch.float64), None), "hf": (tiny_llama(), _dynamic_cache)}  # both fall into cycles


def session(kind: str) -> Session:
    model, new_cache = MODELS[kind]
    return Session(model, WINDOW, new_cache or model.new_cache)


def repeats(draw) -> list[int]:
    """A prompt that repeats pieces of itself (what an agent's context looks like), or a random one."""
    pieces = draw(st.lists(st.lists(st.integers(3, 96), min_size=1, max_size=12), min_size=1, max_size=4))
    order = draw(st.lists(st.integers(0, len(pieces) - 1), min_size=1, max_size=8))
    return [token for i in order for token in pieces[i]]


prompts = st.one_of(st.composite(lambda draw: repeats(draw))(), st.lists(st.integers(3, 96), min_size=1, max_size=50))


def generate(kind, prompt, speculative, k=8, max_new=40, stop_id=None, stop_after=None, reuse=None):
    """Generation with a stop id and a stop after `stop_after` tokens (as a stop string stops); what on_token saw."""
    s = reuse or session(kind)
    seen: list[int] = []
    params = GenerationParams(max_new_tokens=max_new, speculative=speculative, speculative_tokens=k)
    gen = s.generate(prompt, params, {2} if stop_id is None else {2, stop_id},
                     lambda token: seen.append(token) or len(seen) == stop_after)
    return gen, seen, s


@pytest.mark.parametrize("kind", ["plt", "hf"])
@settings(max_examples=25, deadline=None)
@given(prompt=prompts, max_new=st.integers(1, 40), k=st.integers(1, 16),
       stop_id=st.none() | st.integers(3, 96), stop_after=st.none() | st.integers(1, 40))
def test_greedy_drafts_give_the_same_tokens(kind, prompt, max_new, k, stop_id, stop_after):
    plain, plain_seen, _ = generate(kind, prompt, "off", k, max_new, stop_id, stop_after)
    drafted, seen, s = generate(kind, prompt, "prompt_lookup", k, max_new, stop_id, stop_after)
    assert (drafted.ids, drafted.finish_reason, seen) == (plain.ids, plain.finish_reason, plain_seen)
    assert s.tokens == (prompt + drafted.ids)[: len(s.tokens)] and len(s.tokens) >= len(prompt) + len(drafted.ids) - 1
    assert drafted.accepted_tokens <= drafted.drafted_tokens <= k * drafted.verifications


def test_a_repeating_model_accepts_long_drafts():
    """The Llama here falls into cycles: drafts copied from earlier cycles are accepted, fewer forwards run."""
    prompt = list(range(10, 40))
    plain, _, _ = generate("hf", prompt, "off", max_new=200)
    drafted, _, _ = generate("hf", prompt, "prompt_lookup", max_new=200)
    assert drafted.ids == plain.ids
    assert plain.decode_forwards == len(plain.ids) - (plain.finish_reason == "length")  # the first came from prefill
    assert drafted.accepted_tokens >= 40 and drafted.decode_forwards <= 0.8 * plain.decode_forwards
    # a verifying forward emits its accepted drafts and one token of its own
    assert drafted.decode_forwards == plain.decode_forwards - drafted.accepted_tokens


def test_the_plt_verifies_drafts_in_one_pass_over_its_layers():
    """Pipelined verification (docs/plt.md §4): loop 1 of a draft runs in the pass that runs loop 0 of
    the next one, so the same tokens cost fewer passes over the weights than verifying loop after loop."""
    model = MODELS["plt"][0]
    prompt = list(range(10, 40))
    passes = []
    hook = model.model.layers[0].register_forward_hook(lambda *_: passes.append(1))
    try:
        runs = {}
        for pipelined in (True, False):
            model.model.pipelined_verification = pipelined
            passes.clear()
            gen, _, _ = generate("plt", prompt, "prompt_lookup", max_new=200)
            runs[pipelined] = (gen, len(passes))
        plain, _, _ = generate("plt", prompt, "off", max_new=200)
    finally:
        hook.remove()
        model.model.pipelined_verification = True
    (piped, piped_passes), (chunked, chunked_passes) = runs[True], runs[False]
    assert piped.ids == chunked.ids == plain.ids and piped.accepted_tokens >= 40
    # this model's cycles break often, so most drafts are short; 137 passes against 154 when written
    assert piped_passes < 0.95 * chunked_passes
    prefill = 2  # the prompt, loop after loop; then each pass emits at least one token
    assert piped_passes - prefill <= len(piped.ids) - piped.accepted_tokens // 2


def test_where_rows_are_cheap_the_plt_keeps_drafting_and_needs_fewer_passes():
    """With cheap rows (measured per model, set here) a rejected draft costs no pass, so drafting never stops."""
    model = MODELS["plt"][0]
    prompt = list(range(10, 40))
    passes = []
    hook = model.model.layers[0].register_forward_hook(lambda *_: passes.append(1))
    runs = {}
    try:
        for cheap in (True, False):
            model.pipelined_rows_cheap = cheap
            passes.clear()
            gen, _, _ = generate("plt", prompt, "prompt_lookup", max_new=200)
            runs[cheap] = (gen, len(passes))
    finally:
        hook.remove()
        model.pipelined_rows_cheap = None
    (eager, eager_passes), (careful, careful_passes) = runs[True], runs[False]
    assert eager.ids == careful.ids
    assert eager.drafted_tokens > careful.drafted_tokens and eager_passes < careful_passes


def test_the_row_cost_is_measured_once_per_model():
    model = tiny_model(2, torch.float32)
    assert model.pipelined_rows_cheap is None
    assert model.rows_are_cheap() in (True, False) and model.pipelined_rows_cheap is not None
    model.pipelined_rows_cheap = False
    assert model.rows_are_cheap() is False


def test_the_context_window_cuts_inside_a_draft():
    prompt = list(range(10, 40))
    plain, _, _ = generate("hf", prompt, "off", max_new=200)
    for room in range(60, 200, 13):
        s = session("hf")
        s.context_window = len(prompt) + room
        gen, _, _ = generate("hf", prompt, "prompt_lookup", max_new=200, reuse=s)
        assert (gen.ids, gen.finish_reason) == (plain.ids[:room], "context")


@pytest.mark.parametrize("kind", ["plt", "hf"])
def test_a_kept_cache_across_turns_gives_a_fresh_sessions_tokens(kind):
    kept = session(kind)
    prompt = list(range(10, 40))
    for turn in range(4):
        gen, _, _ = generate(kind, prompt, "prompt_lookup", max_new=30, reuse=kept)
        fresh, _, _ = generate(kind, prompt, "off", max_new=30)
        assert gen.ids == fresh.ids
        assert turn == 0 or gen.reused_tokens >= previous
        previous = len(prompt)
        prompt = prompt + gen.ids[:-3] + [50 + turn, 11, 12, 13]  # the reply kept but its end replaced, then more


def test_sampling_with_drafts_is_seeded_and_both_outcomes_happen():
    """The cycling Llama at a low temperature: drafts get verified, some accepted and some replaced."""
    prompt = list(range(10, 40))
    params = GenerationParams(temperature=0.3, top_k=20, top_p=0.9, seed=3, max_new_tokens=150)
    first = session("hf").generate(prompt, params, set())
    again = session("hf").generate(prompt, params, set())
    assert first.ids == again.ids and len(first.ids) == 150
    assert 0 < first.accepted_tokens < first.drafted_tokens
