"""`loopcoder generate`: streams to stdout, speeds to stderr, clear errors for bad models."""
from __future__ import annotations

from typer.testing import CliRunner

from loopcoder.cli import app
from loopcoder.runtime.backends import create_backend
from loopcoder.runtime.backends.base import GenerationParams


def run(*args: str):
    return CliRunner().invoke(app, ["generate", *args])


def test_streams_the_completion_and_reports_speed(llama_dir):
    result = run("def main():", "--model", str(llama_dir), "--backend", "hf", "--max-new-tokens", "6")
    assert result.exit_code == 0, result.output
    expected = create_backend("hf", model_path=llama_dir).complete_text("def main():", GenerationParams(max_new_tokens=6))
    assert result.stdout == expected.text + "\n"
    assert "prefill: " in result.stderr and "tok/s" in result.stderr and "finish: length" in result.stderr


def test_chat_mode_and_sampling_options(llama_dir):
    args = ["hello", "--model", str(llama_dir), "--backend", "hf", "--chat", "--temperature", "0.8", "--seed", "3",
            "--top-p", "0.9", "--max-new-tokens", "8"]
    first, second = run(*args), run(*args)
    assert first.exit_code == 0 and first.stdout == second.stdout


def error_of(result) -> str:
    assert result.exit_code == 2
    return " ".join(result.stderr.split())  # rich wraps long lines


def test_bad_model_dirs_are_clear_errors(tmp_path, llama_dir):
    assert "missing does not exist; pass a checkpoint directory" in error_of(run("x", "--model", str(tmp_path / "missing")))
    assert "not a LoopCoder-V2 PLT" in error_of(run("x", "--model", str(llama_dir)))
    bad_setting = run("x", "--model", str(llama_dir), "--backend", "hf", "--temperature", "-1")
    assert "temperature must be >= 0" in error_of(bad_setting)


def test_speculative_switch(llama_dir):
    base = ["def main():", "--model", str(llama_dir), "--backend", "hf", "--max-new-tokens", "24"]
    drafted, plain = run(*base), run(*base, "--speculative", "off")
    assert drafted.exit_code == 0 and drafted.stdout == plain.stdout
    assert "speculative must be one of prompt_lookup, off, got 'ngram'" in error_of(run(*base, "--speculative", "ngram"))
    assert "speculative_tokens must be in 1..16" in error_of(run(*base, "--speculative-tokens", "17"))
