"""`loopcoder model info` and `model init-random`: real files, the 7B count, clear errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from loopcoder.cli import app
from tests.agent.conftest import make_calc_repo

LOOPCODER = str(Path(sys.executable).parent / "loopcoder")


def flat(output: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(output.split())


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LOOPCODER, *args], capture_output=True, text=True, timeout=120)


def test_7b_shape_meta_reports_7_616_b_without_weights(tmp_path):
    out = run("model", "init-random", str(tmp_path / "7b"), "--preset", "7b-shape", "--meta")
    assert out.returncode == 0, out.stderr
    assert "7.616 B (7,615,749,680)" in out.stdout and "bfloat16" in out.stdout
    assert sorted(p.name for p in (tmp_path / "7b").iterdir()) == ["config.json"]
    info = run("model", "info", str(tmp_path / "7b"))
    assert info.returncode == 0, info.stderr
    assert "parameters:   7.616 B" in info.stdout and "none (config only)" in info.stdout
    assert "56 KiB per token" in info.stdout  # docs/plt.md §3: 14*2*8*128*2 bytes


def test_init_random_with_tokenizer_writes_a_loadable_chat_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nano.tiny_tokenizer import save_test_tokenizer

    tokenizer_dir = save_test_tokenizer(tmp_path / "tok")
    target = tmp_path / "tiny"
    result = CliRunner().invoke(app, ["model", "init-random", str(target), "--preset", "tiny", "--seed", "5",
                                      "--tokenizer", str(tokenizer_dir)])
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(target)
    end, eos, bos = tokenizer.convert_tokens_to_ids(["<|im_end|>", "</s>", "<s>"])
    generation = json.loads((target / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [eos, end] and generation["bos_token_id"] == bos
    model = AutoModelForCausalLM.from_pretrained(target)
    assert model.config.vocab_size == 1024 and model.config.plt_window_size == [8, 0]
    assert model.config.hidden_size == 64 and model.config.num_attention_heads == 4
    assert model.config.num_key_value_heads == 2 and model.config.num_hidden_layers == 2
    ids = torch.tensor([tokenizer.encode("<|im_start|>user\nhi<|im_end|>\n")])
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] <= ids.shape[1] + 3
    info = CliRunner().invoke(app, ["model", "info", str(target)])
    assert info.exit_code == 0 and "all match the config" in info.output and "205.768 K" in info.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["model", "info", "{tmp}/nowhere"], "is not a directory"),
        (["model", "info", "{tmp}"], "has no config.json"),
        (["model", "init-random", "{tmp}/x", "--preset", "huge"], "unknown preset 'huge'"),
        (["model", "init-random", "{tmp}/x", "--tokenizer", "{tmp}/nowhere"], "is not a directory"),
    ],
)
def test_bad_paths_are_clear_errors(tmp_path, args, message):
    result = CliRunner().invoke(app, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2 and message in flat(result.output)
    assert "Traceback" not in result.output


def test_info_names_what_is_wrong_with_a_checkpoint(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["model", "init-random", str(tmp_path / "c")]).exit_code == 0
    occupied = runner.invoke(app, ["model", "init-random", str(tmp_path / "c")])
    assert occupied.exit_code == 2 and "already exists" in flat(occupied.output)
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "num_key_value_heads": 3}))
    result = runner.invoke(app, ["model", "info", str(tmp_path / "c")])
    assert result.exit_code == 2 and "num_key_value_heads" in flat(result.output) and "Traceback" not in result.output
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    result = runner.invoke(app, ["model", "info", str(tmp_path / "c")])
    assert result.exit_code == 2 and "wrong shapes" in flat(result.output) and "mlp.up_proj.weight" in flat(result.output)


def _truncated_checkpoint(tmp_path: Path, keep: float) -> tuple[str, Path]:
    """loopcoder-nano (weights and tokenizer) with its weights cut to a fraction."""
    shutil.copytree(Path(__file__).resolve().parents[2] / "checkpoints" / "loopcoder-nano", tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: int(len(data) * keep)])
    return str(tmp_path / "c"), weights


@pytest.mark.parametrize("keep, reason", [(0.001, "invalid header length"),
                                          (0.5, "incomplete metadata, file not fully covered")])
def test_truncated_weights_are_one_line_naming_the_file(tmp_path, keep, reason):
    ckpt, weights = _truncated_checkpoint(tmp_path, keep)
    result = CliRunner().invoke(app, ["model", "info", ckpt])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert flat(result.output).startswith(f"error: {weights} is not a readable safetensors file ({reason})")


@pytest.mark.slow
def test_truncated_weights_are_one_line_in_every_command_that_loads_a_model(tmp_path):
    ckpt, weights = _truncated_checkpoint(tmp_path, 0.5)
    repo = make_calc_repo(tmp_path / "repo")  # a usable repository: the model is what fails
    for args in (["generate", "hi", "--model", ckpt], ["run", "x", "--model", ckpt, "--repo", str(repo)],
                 ["chat", "--model", ckpt, "--repo", str(repo)], ["serve", "--model", ckpt, "--port", "0"]):
        done = subprocess.run([sys.executable, "-m", "loopcoder.cli", *args], capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, cwd=Path(__file__).resolve().parents[2])
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and "Traceback" not in done.stderr, (args, done.stderr)
        assert len(errors) == 1 and f"{weights} is not a readable safetensors file" in errors[0], (args, done.stderr)
