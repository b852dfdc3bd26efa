"""`nano.train`: span-only loss through the model's own forward, shared-prefix batches, resumable runs."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import loopcoder.model as model  # noqa: F401 - registers the PLT with the Auto classes
from nano.data import build_tokenizer, render_transcript, write_transcripts
from nano.tasks import generate_task
from nano.tiny_tokenizer import build_test_tokenizer
from nano.train import (IGNORE, BatchStream, Example, TrainConfig, TrainError, batch_loss, model_config, shared_prefix,
                         tokenize_example, train)

TOOLS = [{"type": "function", "function": {"name": "search", "description": "Find text.",
                                           "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}}}}]


def _conversation(seed: int) -> list[dict]:
    task = generate_task("train", seed)
    name = task.facts.get("function") or task.facts.get("name") or task.facts["old"]
    call = f'<tool_call>\n{{"name": "search", "arguments": {{"pattern": "{name}"}}}}\n</tool_call>'
    return [
        {"role": "system", "content": "You are LoopCoder."},
        {"role": "user", "content": task.text},
        {"role": "assistant", "content": call},
        {"role": "tool", "content": f"{task.facts['package']}/x.py:3:{name}"},
        {"role": "assistant", "content": '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'},
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano-data")
    renderer = build_test_tokenizer()
    transcripts = [render_transcript(renderer, _conversation(s), TOOLS) for s in range(24)]
    write_transcripts(root / "train.jsonl", ({"text": t, "spans": s, "group": i % 3} for i, (t, s) in enumerate(transcripts)))
    build_tokenizer([t for t, _ in transcripts], 512, root / "tokenizer")
    return root


def test_labels_are_exactly_the_assistant_turns(data_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    record = json.loads((data_dir / "train.jsonl").read_text().splitlines()[0])
    example = tokenize_example(tokenizer, record["text"], record["spans"])
    trained = tokenizer.decode([t for t, label in zip(example.ids, example.labels) if label != IGNORE])
    expected = "".join(record["text"][s:e] for s, e in record["spans"])
    assert trained == expected and expected.count("<|im_end|>") == 2


def test_shared_prefix_batches_give_the_full_forward_loss():
    torch.manual_seed(0)
    config = model_config("tiny", vocab_size=64)
    net = model.IQuestPLTCoderForCausalLM(config).eval()
    head = torch.randint(5, 64, (20,)).tolist()
    rows = []
    for n in (9, 14):
        ids = head + torch.randint(5, 64, (n,)).tolist()
        labels = [IGNORE] * 22 + ids[22:]
        rows.append(Example(ids, labels))
    assert shared_prefix(rows) == 20  # common tokens, and before the first trained label's predictor (21)
    with torch.no_grad():
        split = batch_loss(net, rows)
        full = [net(input_ids=torch.tensor([r.ids]), labels=torch.tensor([r.labels])) for r in rows]
    counts = [sum(label != IGNORE for label in r.labels[1:]) for r in rows]
    expected = sum(o.loss * c for o, c in zip(full, counts)) / sum(counts)
    torch.testing.assert_close(split, expected, rtol=1e-5, atol=1e-5)


def test_training_lowers_the_loss_and_resumes_from_the_saved_step(data_dir, tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(data=data_dir, out=out, preset="tiny", steps=20, batch_tokens=2048, lr=1e-2, warmup=2,
                      save_every=10, threads=1)
    first = train(cfg)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 21))
    assert sum(r["loss"] for r in log[-5:]) < sum(r["loss"] for r in log[:5]) * 0.8
    assert first["resumed_from"] == 0

    resumed = train(TrainConfig(**{**cfg.__dict__, "steps": 25, "resume": True}))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert resumed["resumed_from"] == 20 and [r["step"] for r in log[20:]] == list(range(21, 26))
    assert json.loads((out / "checkpoint" / "trainer_state.json").read_text())["step"] == 25

    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert loaded.config.vocab_size >= len(AutoTokenizer.from_pretrained(out))
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [2, 4]

    phase2 = tmp_path / "phase2"  # --init: the weights carry over, the step count starts again
    train(TrainConfig(**{**cfg.__dict__, "out": phase2, "steps": 0, "init": out}))
    again = AutoModelForCausalLM.from_pretrained(phase2)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), again.state_dict().values()))


def test_batches_are_sized_by_what_runs_after_the_groups_shared_opening():
    opening = list(range(5, 2005))  # a 2000-token system turn every row of the group starts with

    def row(n: int, group: int) -> Example:
        ids = opening + [7] * n if group == 0 else [9] * n
        return Example(ids, [IGNORE] * 2000 + ids[2000:] if group == 0 else ids, group)

    examples = [row(100, 0) for _ in range(20)] + [row(50, 1) for _ in range(40)]
    stream = BatchStream(examples, batch_tokens=1024, seed=0)
    assert sorted(set(stream.lengths)) == [50, 101]  # 2000 - 1: the opening stops before the first label's predictor
    plan = stream._plan_for(0)
    assert sorted(i for batch in plan for i in batch) == list(range(60))
    for batch in plan:
        assert len({examples[i].group for i in batch}) == 1
        assert len(batch) * max(stream.lengths[i] for i in batch) <= 1024
    assert max(len(batch) for batch in plan if examples[batch[0]].group == 0) == 10
    with pytest.raises(TrainError, match="raise --batch-tokens"):
        BatchStream(examples, batch_tokens=64, seed=0)


def test_model_train_without_the_repository_says_where_the_recipe_is(tmp_path):
    """An installed package has no nano/: `model train` says so in one line (a real process, cli.py alone)."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[2] / "cli.py", tmp_path / "cli.py")
    done = subprocess.run([sys.executable, "-c", "import cli; cli.app()", "model", "train", "--data", "d", "--out", "o"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "needs the training recipe in nano/" in done.stderr and "checkout" in done.stderr
