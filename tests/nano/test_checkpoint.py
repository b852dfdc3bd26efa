"""The shipped loopcoder-nano checkpoint: small, loads with the Auto classes, solves held-out tasks for real."""
from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

import loopcoder.model as model  # noqa: F401 - registers the PLT with the Auto classes
from loopcoder.agent.session import make_backend
from nano.evaluate import eval_config, evaluate
from nano.record import gold_calls
from nano.tasks import generate_task

NANO = Path(__file__).resolve().parents[2] / "checkpoints" / "loopcoder-nano"
# Outside the benchmark's default seeds 0-49: two solved tasks of each kind, one a constant whose tests
# pin computed values (69: edit, run the tests, fix the failing assert, run again). Not every seed is
# solved (the README gives the rate); these pin that the shipped checkpoint still solves these for real.
# Greedy decoding on the CPU: the same runs every time.
SEEDS = (60, 63, 64, 67, 69, 73, 78, 82)


def test_checkpoint_is_small_and_loads_with_the_auto_classes():
    size = sum(p.stat().st_size for p in NANO.iterdir())
    assert size <= 30 * 1024 * 1024
    net = AutoModelForCausalLM.from_pretrained(NANO)
    assert type(net).__name__ == "IQuestPLTCoderForCausalLM" and net.config.plt_num_loops == 2
    tokenizer = AutoTokenizer.from_pretrained(NANO)
    assert len(tokenizer) <= net.config.vocab_size and tokenizer.chat_template
    assert (NANO / "loopcoder_system.jinja").is_file()  # nano's own system prompt, used by the agent


@pytest.fixture(scope="module")
def backend():
    lm = make_backend(eval_config(NANO))
    yield lm
    lm.close()


def test_solves_heldout_tasks_end_to_end(backend):
    tasks = [generate_task("heldout", s) for s in SEEDS]
    outcomes = [evaluate(backend, task, eval_config(NANO)) for task in tasks]
    solved = [o for o in outcomes if o.solved]
    assert len(solved) == len(SEEDS), "\n\n".join(f"{o.task_id} ({o.kind}): {o.status}\n{o.detail}" for o in outcomes)
    assert {o.kind for o in solved} == {"rename", "change_constant", "fix_off_by_one", "add_parameter"}
    assert any(t.facts.get("follow") for t in tasks)  # a constant whose tests follow: edit, fail, fix, pass
    assert all(o.status == "submitted" and o.steps <= len(gold_calls(t)) for o, t in zip(outcomes, tasks))
