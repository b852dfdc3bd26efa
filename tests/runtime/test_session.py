"""In-process backends and sessions on tiny random checkpoints: cache reuse, exactness, sampling, stops."""
from __future__ import annotations

import pytest

from loopcoder.runtime.backends import BackendError, create_backend, inprocess
from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.runtime.tokenizer import render_chat
from loopcoder.runtime.toolcalls import render_tool_call

TOOLS = [{"type": "function", "function": {"name": "bash", "description": "Run a shell command.",
          "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]
GREEDY = GenerationParams(max_new_tokens=6)  # a replaced reply rolls back <= 5 tokens: inside the PLT ring's slack


@pytest.fixture(scope="module", params=["plt", "hf"])
def backend(request):
    """A fresh backend per test module and kind; tests that need a clean cache call close()."""
    path = request.getfixturevalue({"hf": "llama_dir", "plt": "plt_dir"}[request.param])
    backend = create_backend(request.param, model_path=path, device="cpu")
    yield backend
    backend.close()


def fresh_text(backend, prompt_ids, params=GREEDY, tools=None) -> str:
    """What a new session (nothing cached) generates from exactly these ids, under the same grammar."""
    other = backend.spawn()
    grammar = other.grammar(tools, params)
    gen = other.session.generate(prompt_ids, params, backend.stop_ids,
                                 constraint=None if grammar is None else other.grammars.constraint(grammar))
    return backend.tokenizer.decode(gen.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_ten_turn_tool_conversation_prefills_each_token_about_once(backend):
    backend.close()
    messages = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "Make the tests pass."}]
    prefilled = 0
    for turn in range(10):
        ids = backend.prompt_ids(messages, TOOLS)
        done = backend.complete(messages, TOOLS, GREEDY)
        assert done.prompt_tokens == len(ids)
        assert done.prefilled_tokens + done.reused_tokens == len(ids)
        assert done.text == fresh_text(backend, ids, tools=TOOLS)
        prefilled += done.prefilled_tokens
        if turn % 2:  # the reply kept verbatim, as the agent does
            reply = done.text
        else:  # a reply that is not what the cache holds: the session rolls back to the common prefix
            reply = "Running it.\n" + render_tool_call("bash", {"command": f"ls dir{turn}"})
        messages.append({"role": "assistant", "content": reply})
        messages.append({"role": "tool", "content": f"file_{turn}.py\nok {turn}"})
        if turn:
            assert done.reused_tokens > 0
    final = done.prompt_tokens + done.completion_tokens
    assert prefilled <= 1.05 * final


def test_a_step_tokenizes_only_its_new_text_once(backend, monkeypatch):
    """count_tokens then complete, as an agent step does: one tokenizer call, over the new messages only."""
    backend.close()
    messages = [{"role": "system", "content": "You fix bugs."}, {"role": "user", "content": "Make the tests pass."}]
    done = backend.complete(messages, TOOLS, GREEDY)
    messages += [{"role": "assistant", "content": done.text}, {"role": "tool", "content": "file.py\nok"}]
    seen = []
    real = inprocess.encode
    monkeypatch.setattr(inprocess, "encode", lambda tokenizer, text: seen.append(text) or real(tokenizer, text))
    counted = backend.count_tokens(messages, TOOLS)
    done = backend.complete(messages, TOOLS, GREEDY)
    prompt = render_chat(backend.tokenizer, messages, TOOLS)
    assert done.prompt_tokens == counted and len(seen) == 1
    assert prompt.endswith(seen[0]) and len(seen[0]) < len(prompt) // 4


def test_early_edit_falls_back_to_an_exact_prefill(backend):
    backend.close()
    messages = [{"role": "user", "content": "first question " * 10}]
    backend.complete(messages, TOOLS, GREEDY)
    messages = [{"role": "user", "content": "other question " * 10}]
    ids = backend.prompt_ids(messages, TOOLS)
    cached = backend.session.tokens
    common = next(i for i, (a, b) in enumerate(zip(cached, ids)) if a != b)
    done = backend.complete(messages, TOOLS, GREEDY)
    # the PLT's rings keep only the last window+slack positions: this far back means a fresh prefill
    assert done.reused_tokens == (0 if backend.name == "plt" else common)
    assert done.prefilled_tokens + done.reused_tokens == len(ids)
    assert done.text == fresh_text(backend, ids, tools=TOOLS)


def test_chunked_prefill_matches(backend):
    ids = backend.prompt_ids([{"role": "user", "content": "chunk me " * 30}])
    chunked = backend.spawn()
    chunked.session.prefill_chunk = 16
    gen = chunked.session.generate(ids, GREEDY, backend.stop_ids)
    assert backend.tokenizer.decode(gen.ids) == fresh_text(backend, ids)


def test_seeded_sampling_is_reproducible(backend):
    messages = [{"role": "user", "content": "say something"}]
    params = GenerationParams(temperature=1.0, top_p=0.95, top_k=50, seed=1234, max_new_tokens=24)
    first = backend.complete(messages, None, params).text
    again = backend.spawn().complete(messages, None, params).text
    other = backend.complete(messages, None, GenerationParams(temperature=1.0, seed=99, max_new_tokens=24)).text
    assert first == again
    assert first != other


def test_stop_string_truncates_and_never_streams(backend):
    messages = [{"role": "user", "content": "stop test"}]
    full = backend.complete(messages, None, GenerationParams(max_new_tokens=24)).text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert len(stop) == 3
    pieces: list[str] = []
    done = backend.complete(messages, None, GenerationParams(max_new_tokens=24, stop=[stop]), on_text=pieces.append)
    assert done.finish_reason == "stop"
    assert done.text == full[: full.index(stop)]
    assert "".join(pieces) == done.text


def test_streamed_pieces_concatenate_to_the_text(backend):
    pieces: list[str] = []
    done = backend.complete([{"role": "user", "content": "stream"}], None,
                            GenerationParams(temperature=1.0, seed=5, max_new_tokens=40), on_text=pieces.append)
    assert done.finish_reason == "length" and done.completion_tokens == 40
    assert "".join(pieces) == done.text and all(pieces)


def test_context_window_stops_instead_of_overflowing(backend):
    messages = [{"role": "user", "content": "a long enough prompt"}]
    n = backend.count_tokens(messages)
    small = backend.spawn()
    small.context_window = small.session.context_window = n + 3
    done = small.complete(messages, None, GenerationParams(max_new_tokens=10))
    assert done.finish_reason == "context" and done.completion_tokens == 3
    small.context_window = small.session.context_window = n
    done = small.complete(messages, None, GenerationParams(max_new_tokens=10))
    assert (done.finish_reason, done.completion_tokens, done.prefilled_tokens) == ("context", 0, 0)


def test_bad_params_and_dirs_are_clear_errors(backend, tmp_path):
    with pytest.raises(ValueError, match="top_p must be in"):
        backend.complete([{"role": "user", "content": "x"}], None, GenerationParams(top_p=0))
    with pytest.raises(BackendError, match="does not exist"):
        create_backend("hf", model_path=tmp_path / "missing")
    with pytest.raises(BackendError, match="no config.json"):
        create_backend("hf", model_path=tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(BackendError, match="no weights"):
        create_backend("hf", model_path=tmp_path)
    with pytest.raises(BackendError, match="unknown backend"):
        create_backend("nope")
