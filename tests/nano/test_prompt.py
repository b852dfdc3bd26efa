"""nano's own prompt: a compact chat template and a short system prompt, shipped in the checkpoint and used by the agent."""
from __future__ import annotations

from transformers import AutoTokenizer

from loopcoder.agent.config import load_config
from loopcoder.agent.prompting import MODEL_SYSTEM, system_template, task_prompt, task_template
from loopcoder.model.presets import copy_tokenizer, preset_config
from nano.build import first_turns, with_nano_system
from nano.data import REFACTOR_PROMPT, SYSTEM_PROMPT, build_tokenizer, compact_chat_template, nano_renderer, render_transcript
from nano.tiny_tokenizer import build_test_tokenizer
from loopcoder.runtime.tokenizer import render_chat

TOOLS = [{"type": "function", "function": {"name": n, "description": f"The {n} tool.", "parameters": {
    "type": "object", "properties": {"x": {"type": "string"}}}}} for n in ("bash", "search", "submit")]
CALL = '<tool_call>\n{"name": "search", "arguments": {"pattern": "def polish_almond"}}\n</tool_call>'
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fix `polish_almond`.\n"},
                {"role": "assistant", "content": CALL}, {"role": "tool", "content": "Found 1 match."},
                {"role": "assistant", "content": '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call>'}]


def test_compact_template_lists_tool_names_instead_of_schemas():
    text = render_chat(nano_renderer(), CONVERSATION, TOOLS, add_generation_prompt=False)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\nTools: bash, search, submit.\nCall one as <tool_call>")
    assert "description" not in text and "The bash tool" not in text


def test_compact_template_writes_turns_as_the_agents_template_does():
    compact, default = nano_renderer(), build_test_tokenizer()
    body = lambda text: text.split("<|im_end|>\n", 1)[1]  # noqa: E731 - everything after the system turn
    assert body(render_chat(compact, CONVERSATION, TOOLS, False)) == body(render_chat(default, CONVERSATION, TOOLS, False))
    no_tools = CONVERSATION[1:3]
    assert render_chat(compact, no_tools, [], False) == render_chat(default, no_tools, [], False)
    text, spans = render_transcript(compact, CONVERSATION, TOOLS)  # raises unless assistant turns are verbatim
    assert [text[s:e] for s, e in spans][0] == CALL + "<|im_end|>"


def test_nano_rows_start_with_nanos_system_turn():
    system = SYSTEM_PROMPT.read_text().strip()
    assert with_nano_system(CONVERSATION)[0] == {"role": "system", "content": system + "\n"}
    assert with_nano_system(CONVERSATION)[1:] == CONVERSATION[1:]
    row, = first_turns(nano_renderer(), 1, 500, TOOLS)
    assert row["text"].startswith(f"<|im_start|>system\n{system}\n\n\nTools: bash, search, submit.")
    plain, = first_turns(nano_renderer(), 1, 500)
    assert plain["text"].startswith("<|im_start|>system\nYou are LoopCoder, a helpful assistant")


def test_saved_tokenizer_carries_the_template_and_the_system_prompt(tmp_path):
    build_tokenizer([render_chat(nano_renderer(), CONVERSATION, TOOLS, False)] * 4, 400, tmp_path)
    assert AutoTokenizer.from_pretrained(str(tmp_path)).chat_template == compact_chat_template()
    assert (tmp_path / MODEL_SYSTEM).read_text() == SYSTEM_PROMPT.read_text()
    assert (tmp_path / "loopcoder_task_refactor.jinja").read_text() == REFACTOR_PROMPT.read_text()


def test_agent_uses_the_checkpoints_system_prompt_unless_one_is_set(tmp_path):
    assert system_template(None, None) == "system.jinja"
    assert system_template(None, str(tmp_path)) == "system.jinja"
    (tmp_path / MODEL_SYSTEM).write_text("Short.\n")
    assert system_template(None, str(tmp_path)) == str(tmp_path / MODEL_SYSTEM)
    assert system_template("mine.jinja", str(tmp_path)) == "mine.jinja"
    assert load_config(user_file=False).prompts.system is None


def test_a_checkpoint_that_ships_a_task_template_gets_the_bare_request(tmp_path):
    assert task_template("refactor", None) == task_template("refactor", str(tmp_path)) == "task_refactor.jinja"
    (tmp_path / "loopcoder_task_refactor.jinja").write_text(REFACTOR_PROMPT.read_text())
    fields = {"workdir": "/repo", "instructions": "Rename `f` to `g`.\n", "repo": "r", "paths": [], "test_command": None}
    assert task_prompt(task_template("refactor", str(tmp_path)), **fields) == "Rename `f` to `g`.\n"
    assert "Rename `f` to `g`." in task_prompt(task_template("refactor", None), **fields) != "Rename `f` to `g`.\n"


def test_the_system_prompt_travels_with_the_tokenizer_files_into_a_checkpoint(tmp_path):
    build_tokenizer([render_chat(nano_renderer(), CONVERSATION, TOOLS, False)] * 4, 400, tmp_path / "tokenizer")
    (tmp_path / "ckpt").mkdir()
    _, copied = copy_tokenizer(tmp_path / "tokenizer", tmp_path / "ckpt", preset_config("tiny"))
    assert MODEL_SYSTEM in copied and (tmp_path / "ckpt" / MODEL_SYSTEM).read_text() == SYSTEM_PROMPT.read_text()
