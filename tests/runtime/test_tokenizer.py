"""The test tokenizer, the chat template's exact output, and tokenizer loading rules."""
from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from loopcoder.runtime.tokenizer import TokenizerError, encode, encode_chat, load_tokenizer, render_chat, stop_token_ids
from loopcoder.runtime.toolcalls import parse_tool_calls, render_tool_call

BASH = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Run a command.",
        "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
    },
}
SUBMIT = {"type": "function", "function": {"name": "submit", "description": "Finish.", "parameters": {"type": "object", "properties": {}}}}

EXPECTED_TOOL_CONVERSATION = (
    "<|im_start|>system\n"
    "You fix bugs.\n\n"
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "bash", "description": "Run a command.", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}\n'
    '{"type": "function", "function": {"name": "submit", "description": "Finish.", "parameters": {"type": "object", "properties": {}}}}\n'
    "</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\nFix the test.<|im_end|>\n"
    "<|im_start|>assistant\nLooking.\n"
    '<tool_call>\n{"name": "bash", "arguments": {"command": "ls"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "bash", "arguments": {"command": "cat \\"a b\\".py"}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\na.py\n</tool_response>\n<tool_response>\nprint(1)\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
    '<tool_call>\n{"name": "submit", "arguments": {}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\ndone\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)

CONVERSATION = [
    {"role": "system", "content": "You fix bugs."},
    {"role": "user", "content": "Fix the test."},
    {
        "role": "assistant",
        "content": "Looking.",
        "tool_calls": [
            {"type": "function", "function": {"name": "bash", "arguments": {"command": "ls"}}},
            {"type": "function", "function": {"name": "bash", "arguments": '{"command": "cat \\"a b\\".py"}'}},
        ],
    },
    {"role": "tool", "content": "a.py"},
    {"role": "tool", "content": "print(1)"},
    {"role": "assistant", "content": None, "tool_calls": [{"function": {"name": "submit", "arguments": {}}}]},
    {"role": "tool", "content": "done"},
]


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return load_tokenizer(tokenizer_dir)


def test_loads_with_plain_autotokenizer(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert len(tok) <= 1024
    assert [tok.convert_tokens_to_ids(t) for t in ("<unk>", "<s>", "</s>")] == [0, 1, 2]
    for t in ("<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"):
        assert tok.encode(f"x{t}y", add_special_tokens=False)[1] == tok.convert_tokens_to_ids(t)
    assert tok.chat_template and "# Tools" in tok.chat_template
    names = {p.name for p in tokenizer_dir.iterdir()}  # transformers 5 writes no special_tokens_map.json
    assert {"tokenizer.json", "tokenizer_config.json"} <= names <= {"special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"}


def test_renders_tools_in_the_documented_format(tok):
    assert render_chat(tok, CONVERSATION, [BASH, SUBMIT]) == EXPECTED_TOOL_CONVERSATION
    assert tok.decode(encode_chat(tok, CONVERSATION, [BASH, SUBMIT])) == EXPECTED_TOOL_CONVERSATION


def test_default_system_prompt_and_plain_turns(tok):
    assert render_chat(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], add_generation_prompt=False) == (
        "<|im_start|>system\nYou are LoopCoder, a helpful assistant developed by IQuest.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    )
    without_system = render_chat(tok, [{"role": "user", "content": "hi"}], [BASH])
    assert without_system.startswith("<|im_start|>system\n# Tools\n\n")


def test_template_tool_calls_are_what_the_parser_reads(tok):
    calls = [("bash", {"command": "echo '}</tool_call>'\n"}), ("edit", {"path": "ü.py", "n": [1, 2.5, None]})]
    message = {"role": "assistant", "content": "Two calls.", "tool_calls": [{"function": {"name": n, "arguments": a}} for n, a in calls]}
    text = render_chat(tok, [{"role": "user", "content": "go"}, message], add_generation_prompt=False)
    turn = text.split("<|im_start|>assistant\n")[1].removesuffix("<|im_end|>\n")
    assert turn == "Two calls.\n" + "\n".join(render_tool_call(n, a) for n, a in calls)
    parsed = parse_tool_calls(turn)
    assert parsed.content == "Two calls." and [(c.name, c.arguments) for c in parsed.calls] == calls


def test_each_prompt_is_a_token_prefix_of_the_next(tok):
    """The agent's prompts grow by whole steps; earlier ids never change, which the session's cache reuse relies on."""
    final = encode_chat(tok, CONVERSATION, [BASH])
    starts = [n for n, m in enumerate(CONVERSATION) if m["role"] == "assistant"]
    for n in starts:
        prompt = encode_chat(tok, CONVERSATION[:n], [BASH])
        assert final[: len(prompt)] == prompt


@settings(max_examples=100, deadline=None)
@given(text=st.text())
def test_any_text_round_trips(tok, text):
    assert tok.decode(encode(tok, text)) == text


def test_checkpoint_template_wins(tokenizer_dir, tmp_path):
    shutil.copytree(tokenizer_dir, tmp_path / "tok")
    config_file = tmp_path / "tok" / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["chat_template"] = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    config_file.write_text(json.dumps(config))
    assert render_chat(load_tokenizer(tmp_path / "tok"), [{"role": "user", "content": "hi"}]) == "[user]hi"
    del config["chat_template"]
    config_file.write_text(json.dumps(config))
    assert "You are LoopCoder" in render_chat(load_tokenizer(tmp_path / "tok"), [{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "extra",
    [
        {"auto_map": {"AutoTokenizer": ["tokenization_iquestcoder.IQuestCoderTokenizer", None]}},
        {"tokenizer_class": "IQuestCoderTokenizer"},
    ],
)
def test_custom_tokenizer_code_needs_explicit_trust(tokenizer_dir, tmp_path, extra):
    shutil.copytree(tokenizer_dir, tmp_path / "tok")
    config_file = tmp_path / "tok" / "tokenizer_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **extra}))
    with pytest.raises(TokenizerError, match="IQuestCoderTokenizer.*--trust-remote-code"):
        load_tokenizer(tmp_path / "tok")


def test_missing_or_empty_directory(tmp_path):
    with pytest.raises(TokenizerError, match="is not a directory"):
        load_tokenizer(tmp_path / "nope")
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_tokenizer(tmp_path)


def test_stop_ids(tok, tmp_path):
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tok) == sorted({2, im_end})
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert stop_token_ids(tok, tmp_path) == sorted({2, 7, im_end})
    (tmp_path / "generation_config.json").write_text("{")
    with pytest.raises(TokenizerError, match="generation_config.json is not valid JSON"):
        stop_token_ids(tok, tmp_path)
