"""Config merging: defaults <- user file <- --config <- --set, typed, with errors naming the key."""
import pytest

from agent.config import ConfigError, from_dict, load_config


def test_defaults_load_and_round_trip():
    cfg = load_config(user_file=False)
    assert cfg.agent.max_steps > 0 and cfg.sandbox.kind == "local"
    assert from_dict(cfg.to_dict()) == cfg


def test_sources_merge_in_order(tmp_path, monkeypatch):
    user = tmp_path / "user.yaml"
    user.write_text("agent:\n  max_steps: 7\n  max_tokens: 999\nsandbox:\n  kind: docker\n")
    extra = tmp_path / "extra.yaml"
    extra.write_text("agent:\n  max_steps: 9\n")
    monkeypatch.setenv("LOOPCODER_CONFIG", str(user))
    cfg = load_config(extra, ["agent.max_steps=30", "sandbox.image=3.11", "agent.max_seconds=5"])
    assert cfg.agent.max_steps == 30  # --set beats --config beats the user file
    assert cfg.agent.max_tokens == 999  # the user file beats the defaults
    assert cfg.sandbox.kind == "docker"
    assert cfg.sandbox.image == "3.11"  # a str key keeps the text even if it reads as a number
    assert cfg.agent.max_seconds == 5.0 and isinstance(cfg.agent.max_seconds, float)
    assert load_config(user_file=False).agent.max_steps != 7


@pytest.mark.parametrize("override, words", [
    ("agent.max_step=3", ["unknown config key 'agent.max_step'", "max_steps"]),
    ("agnt.max_steps=3", ["unknown config key 'agnt'"]),
    ("agent.max_steps=many", ["'agent.max_steps'", "must be int"]),
    ("agent.max_steps=true", ["must be int"]),
    ("agent=3", ["is a section"]),
    ("sandbox.kind=vm", ["must be one of local, docker"]),
    ("agent.max_steps=0", ["must be positive"]),
    ("agent.max_steps", ["key.sub=value"]),
    ("sampling.speculative=ngram", ["must be one of prompt_lookup, off"]),
    ("sampling.speculative_tokens=17", ["must be at most 16"]),
])
def test_bad_overrides_say_what_is_wrong(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override], user_file=False)
    for word in words:
        assert word in str(info.value)


def test_bad_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  temperature: hot\n")
    with pytest.raises(ConfigError, match="sampling.temperature.*bad.yaml"):
        load_config(bad, user_file=False)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", user_file=False)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad, user_file=False)


def test_nullable_keys_accept_null():
    cfg = load_config(overrides=["sampling.seed=null", "backend.model=/ckpt", "context.window=4096"], user_file=False)
    assert cfg.sampling.seed is None and cfg.backend.model == "/ckpt" and cfg.context.window == 4096


def test_speculative_choices_match_the_sampler():
    from agent.config import _AT_MOST, _CHOICES
    from model.sampling import MAX_DRAFT_TOKENS, SPECULATIVE

    assert _CHOICES["sampling.speculative"] == SPECULATIVE
    assert _AT_MOST["sampling.speculative_tokens"] == MAX_DRAFT_TOKENS
