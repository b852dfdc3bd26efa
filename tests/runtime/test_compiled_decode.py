"""Compiled decode (model/compiled.py, `--compile`): the same greedy tokens as eager decoding, with
prompt-lookup drafts, a grammar and a kept cache across turns; one graph, no breaks.

Slow: inductor takes about a minute on 2 shared cores, so the module compiles one model shape
(the `tiny` preset, below) and every test shares it; the CLI's fresh load of the same shape
recompiles from inductor's on-disk graph cache.
"""
from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from loopcoder.cli import app
from loopcoder.model import IQuestPLTCoderForCausalLM
from loopcoder.model.presets import init_random_checkpoint
from loopcoder.runtime.backends import create_backend
from loopcoder.runtime.backends.base import GenerationParams
from loopcoder.runtime.session import Session
from tests.model.conftest import unit_scale

pytestmark = pytest.mark.slow
WINDOW = 4096
PROMPTS = [list(range(10, 40)), [5, 9, 11, 3, 7] * 6 + [5, 9], [300, 17, 999, 4, 4, 4, 81]]


@pytest.fixture(scope="module")
def sharp_dir(tmp_path_factory, tokenizer_dir):
    """The `tiny` preset with unit-scale weights (logits far apart: rounding cannot flip an argmax)."""
    out = tmp_path_factory.mktemp("plt-sharp")
    init_random_checkpoint(out, "tiny", seed=0, tokenizer=tokenizer_dir)
    torch.manual_seed(1)
    unit_scale(IQuestPLTCoderForCausalLM.from_pretrained(out)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(sharp_dir):
    return IQuestPLTCoderForCausalLM.from_pretrained(sharp_dir, compile_decode=True).eval()


def generate(session: Session, prompt: list[int], speculative: str = "off", max_new: int = 24):
    return session.generate(prompt, GenerationParams(max_new_tokens=max_new, speculative=speculative), {2})


def test_the_decode_step_is_one_graph_without_breaks(model):
    cache = model.new_cache(max_length=64)  # static: the span is its max_length
    with torch.inference_mode():
        model(input_ids=torch.tensor([PROMPTS[0]]), past_key_values=cache, use_cache=True)
        model.compiled_decode._prepare(cache, 64)
        explained = torch._dynamo.explain(model.decode_one_token)(torch.tensor([[7]]), torch.tensor([30]), cache, 64)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize("speculative", ["off", "prompt_lookup"])
def test_compiled_greedy_tokens_are_the_eager_ones(model, speculative):
    compiled, eager = Session(model, WINDOW, model.new_cache), Session(model, WINDOW, model.new_cache, compile_decode=False)
    assert compiled.decoder is model.compiled_decode and eager.decoder is None
    for prompt in PROMPTS:
        before = model.compiled_decode.steps
        fast, slow = generate(compiled, prompt, speculative), generate(eager, prompt, speculative)
        assert (fast.ids, fast.finish_reason) == (slow.ids, slow.finish_reason)
        assert model.compiled_decode.steps > before  # the compiled step did run
        assert compiled.cache._k0[0].shape[2] >= 1024  # grown to the step's span (MIN_SPAN)
    assert model.compiled_decode.warmup_seconds > 0


def test_a_kept_cache_across_turns_gives_a_fresh_eager_sessions_tokens(model):
    """Rewinds (crop) and re-prefills on the static cache, drafts in between, compiled steps after."""
    kept = Session(model, WINDOW, model.new_cache)
    prompt = list(range(10, 40))
    for turn in range(3):
        gen = generate(kept, prompt, "prompt_lookup", max_new=20)
        fresh = generate(Session(model, WINDOW, model.new_cache, compile_decode=False), prompt, max_new=20)
        assert gen.ids == fresh.ids
        prompt = prompt + gen.ids[:-3] + [50 + turn, 11, 12, 13]  # the reply kept but its end replaced, then more


def test_a_grammar_gives_the_same_reply_compiled(sharp_dir, model):
    eager = create_backend("plt", model_path=sharp_dir)
    compiled = create_backend("plt", model_path=sharp_dir)
    compiled.model = model
    compiled.session = Session(model, compiled.context_window, model.new_cache)
    params = GenerationParams(max_new_tokens=24, speculative="off")
    replies = [lm.complete_text("a reply:", params, grammar=eager.grammars.json_reply()) for lm in (eager, compiled)]
    assert replies[0].text == replies[1].text and replies[0].completion_tokens > 0


def test_generate_cli_compile_reports_its_warm_up_and_keeps_the_text(sharp_dir):
    args = ["generate", "def main():", "--model", str(sharp_dir), "--max-new-tokens", "12", "--speculative", "off"]
    plain, fast = CliRunner().invoke(app, args), CliRunner().invoke(app, [*args, "--compile"])
    assert plain.exit_code == 0 and fast.exit_code == 0, fast.output
    assert fast.stdout == plain.stdout
    assert "compile warm-up" in fast.stderr and "compiled decode (default, cpu): warm-up done" in fast.stderr
    assert "compile warm-up" not in plain.stderr


def test_compile_with_another_model_is_a_clear_error(llama_dir):
    result = CliRunner().invoke(app, ["generate", "x", "--model", str(llama_dir), "--backend", "hf", "--compile"])
    assert result.exit_code == 2
    assert "--compile works with the plt backend only" in " ".join(result.stderr.split())
    with pytest.raises(ValueError, match="needs a LoopCoder-V2 PLT"):
        Session(create_backend("hf", model_path=llama_dir).model, WINDOW, lambda: None, compile_decode=True)


def test_the_run_flag_and_config_key_reach_every_session(sharp_dir, tmp_path, monkeypatch):
    """`loopcoder run --compile` is `backend.compile=True`; the backend's sessions (spawned ones too) share
    one compiled step. Nothing decodes here, so nothing compiles."""
    from loopcoder.agent.commands import configure
    from loopcoder.agent.session import make_backend

    monkeypatch.setenv("LOOPCODER_CONFIG", str(tmp_path / "none.yaml"))
    assert configure(None, [], model=str(sharp_dir)).backend.compile is False
    config = configure(None, [], model=str(sharp_dir), compile=True)
    assert config.backend.compile is True
    lm = make_backend(config)
    assert lm.session.decoder is not None and lm.session.decoder is lm.model.compiled_decode
    assert lm.spawn().session.decoder is lm.session.decoder
    assert make_backend(configure(None, ["backend.compile=false"], model=str(sharp_dir))).session.decoder is None
