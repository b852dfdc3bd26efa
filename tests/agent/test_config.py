"""Config merging: defaults <- user file <- --config <- --set, typed, with errors naming the key."""
from typing import get_args

import pytest

from loopcoder.agent.config import BackendConfig, ConfigError, from_dict, load_config
from loopcoder.runtime.backends import BACKENDS, IN_PROCESS


def test_defaults_load_and_round_trip():
    cfg = load_config(user_file=False)
    assert cfg.agent.max_steps > 0 and cfg.sandbox.kind == "local"
    assert from_dict(cfg.to_dict()) == cfg


def test_the_backend_names_are_the_runtimes():
    """backend.name accepts exactly the backends runtime.backends can create."""
    assert set(get_args(BackendConfig.model_fields["name"].annotation)) == set(BACKENDS) >= set(IN_PROCESS)


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
    ("agent.max_steps=many", ["'agent.max_steps'", "must be a valid integer", "got 'many'"]),
    ("agent.max_steps=true", ["must be a valid integer"]),
    ("agent=3", ["is a section"]),
    ("sandbox.kind=vm", ["must be one of local, docker"]),
    ("agent.max_steps=0", ["(from --set agent.max_steps=0) must be positive"]),
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


LIMITS = ["agent.max_steps", "agent.max_tokens", "agent.max_seconds", "agent.max_format_errors", "agent.stuck_repeats",
          "agent.max_consecutive_timeouts", "context.window", "context.keep_last_observations",
          "sampling.max_new_tokens", "sandbox.command_timeout"]


@pytest.mark.parametrize("key", LIMITS)
@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_limits_are_refused_in_one_line(key, value):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[f"{key}={value}"], user_file=False)
    message = str(info.value)
    assert f"'{key}' (from --set {key}={value}) must be positive" in message and "\n" not in message


def test_a_file_error_names_the_file_that_set_the_key(tmp_path, monkeypatch):
    user = tmp_path / "user.yaml"
    user.write_text("sandbox:\n  command_timeout: 0\n")
    monkeypatch.setenv("LOOPCODER_CONFIG", str(user))
    with pytest.raises(ConfigError, match=f"'sandbox.command_timeout' \\(from {user}\\) must be positive"):
        load_config()
    assert load_config(overrides=["sandbox.command_timeout=5"]).sandbox.command_timeout == 5.0  # a later source wins


def test_every_default_passes_its_own_checks():
    cfg = load_config(user_file=False)
    assert cfg.to_dict()["agent"]["max_steps"] == 50 and cfg.sampling.max_new_tokens == 2048
    assert from_dict({"agent": {"max_steps": 7}}).agent.max_steps == 7
    with pytest.raises(ConfigError, match="the recorded config"):
        from_dict({"agent": {"max_steps": "7"}})


def test_config_command_prints_the_effective_config(tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from loopcoder.cli import app

    monkeypatch.setenv("LOOPCODER_CONFIG", str(tmp_path / "none.yaml"))
    shown = CliRunner().invoke(app, ["config", "--set", "agent.max_steps=7"])
    assert shown.exit_code == 0, shown.output
    printed = tmp_path / "printed.yaml"
    printed.write_text(shown.stdout)
    assert load_config(printed, user_file=False) == load_config(overrides=["agent.max_steps=7"], user_file=False)
    refused = CliRunner().invoke(app, ["config", "--set", "agent.max_steps=0"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "must be positive" in refused.stderr
    assert yaml.safe_load(shown.stdout)["agent"]["max_steps"] == 7


def test_sandbox_limits_are_sizes_counts_and_names():
    cfg = load_config(overrides=["sandbox.memory=1073741824", "sandbox.env=[HOME, PATH]", "sandbox.cpus=1.5"],
                      user_file=False)
    assert (cfg.sandbox.memory, cfg.sandbox.env, cfg.sandbox.cpus) == ("1073741824", ["HOME", "PATH"], 1.5)
    for bad, words in (("sandbox.memory=lots", "must be a positive size"), ("sandbox.pids=0", "must be positive"),
                       ("sandbox.env=HOME", "must be a valid list")):
        with pytest.raises(ConfigError, match=words):
            load_config(overrides=[bad], user_file=False)

def test_speculative_choices_match_the_sampler():
    from loopcoder.agent.config import SamplingConfig
    from loopcoder.runtime.sampling import MAX_DRAFT_TOKENS, SPECULATIVE

    fields = SamplingConfig.model_fields
    assert get_args(fields["speculative"].annotation) == SPECULATIVE
    assert [m.le for m in fields["speculative_tokens"].metadata if getattr(m, "le", None)] == [MAX_DRAFT_TOKENS]
