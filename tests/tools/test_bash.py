"""The bash tool in a real sandbox: timeouts, background processes, floods, binary output, refusals."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from loopcoder.tools import default_tools, get_tool
from loopcoder.tools.bash import NO_OUTPUT
from loopcoder.tools.interactive import refusal
from loopcoder.tools.shell import TIMEOUTS_TO_STOP


def bash(call, command, **more):
    return call("bash", command=command, **more)


def test_output_and_exit_code(call):
    obs = bash(call, "echo out; echo err >&2; exit 3")
    assert obs.text == "out\nerr\n[exit code: 3]" and obs.exit_code == 3 and not obs.is_error
    assert bash(call, "true").text == NO_OUTPUT


def test_timeout_kills_and_keeps_partial_output(call):
    obs = bash(call, "echo before; sleep 1000; echo after", timeout=1)
    assert obs.is_error and obs.extra["timed_out"] and obs.exit_code == -1
    assert obs.text.startswith("before\n[The command timed out after 1 seconds")
    assert "after" not in obs.text.replace("after 1 seconds", "")


def test_consecutive_timeouts_are_called_out_and_reset(call):
    texts = [bash(call, "sleep 1000", timeout=0.3).text for _ in range(TIMEOUTS_TO_STOP)]
    assert "in a row" not in texts[0]
    assert f"{TIMEOUTS_TO_STOP} commands in a row have timed out" in texts[-1]
    assert bash(call, "true").extra["timeouts_in_a_row"] == 0


def test_the_streak_is_the_tool_sets_own_with_the_runs_limit(sandbox):
    """bash and run_tests of one set count one streak up to its limit; another set starts from zero."""
    tools = default_tools(timeouts_to_stop=2)
    first = get_tool("bash", tools).run({"command": "sleep 1000", "timeout": 0.3}, sandbox)
    second = get_tool("run_tests", tools).run({"command": "sleep 1000", "timeout": 0.3}, sandbox)
    assert first.extra["timeouts_in_a_row"] == 1 and "in a row" not in first.text
    assert second.extra["timeouts_in_a_row"] == 2 and "2 commands in a row have timed out" in second.text
    other = get_tool("bash", default_tools()).run({"command": "sleep 1000", "timeout": 0.3}, sandbox)
    assert other.extra["timeouts_in_a_row"] == 1


def test_background_process_does_not_block(call):
    obs = bash(call, "sleep 1000 & echo started", timeout=60)
    assert not obs.extra["timed_out"] and obs.exit_code == 0
    assert obs.text.startswith("started\n") and "background process" in obs.text
    quiet = bash(call, "sleep 1000 > /dev/null 2>&1 & echo started", timeout=60)
    assert quiet.text == "started"


def test_flood_is_capped_and_saved(call, repo):
    obs = bash(call, "yes | head -c 2G", timeout=120)
    assert not obs.extra["timed_out"] and len(obs.text) < 11_000
    saved = obs.extra["saved_to"]
    assert saved.startswith("/tmp/loopcoder-outputs/") and saved in obs.text and "SIGPIPE" in obs.text
    assert obs.text.startswith("y\ny\n") and obs.text.endswith("y\ny\n[exit code: 141]")  # stopped by SIGPIPE
    assert bash(call, f"wc -c < {saved}").text == "8388608"
    assert "loopcoder-outputs" not in bash(call, "git status --porcelain --ignored").text  # nothing in the working copy


def test_long_output_keeps_head_and_tail_and_the_file_can_be_grepped(call):
    obs = bash(call, "seq 1 100000")
    head, note, tail = obs.text.partition("\n[... ")
    assert head.startswith("1\n2\n3\n") and tail.endswith("\n99999\n100000")
    assert "cut from the middle; the full output (588,895 bytes) is saved in" in obs.text
    assert bash(call, f"grep -n '^54321$' {obs.extra['saved_to']}").text == "54321:54321"


def test_binary_output_is_safe_text(call):
    obs = bash(call, "head -c 5000 /dev/urandom; printf '\\000\\033[31mred\\033[0m\\n'")
    assert not obs.is_error and obs.text.endswith("red")
    assert not any(ord(c) < 32 and c not in "\n\t\r" for c in obs.text)


def test_syntax_error_is_reported(call):
    obs = bash(call, "echo 'unterminated")
    assert obs.exit_code == 2 and "unexpected EOF" in obs.text


def test_a_syntax_error_quotes_the_models_line_not_the_wrapper(call):
    """The quoted line is the command's own: none of the wrapper's random names, so a run repeats exactly."""
    obs = bash(call, "echo a; if then")
    assert obs.exit_code == 2 and obs.text.splitlines()[-2] == "bash: -c: line 1: `echo a; if then'"
    assert "@@loopcoder" not in obs.text and "loopcoder-outputs" not in obs.text


def test_each_call_starts_in_the_repository_root(call, sandbox):
    assert bash(call, "cd pkg && pwd").text == f"{sandbox.workdir}/pkg"
    assert bash(call, "pwd").text == sandbox.workdir


@pytest.mark.parametrize("command, word", [
    ("vim a.py", "str_replace_editor"), ("nano a.py", "str_replace_editor"), ("git log | less", "cat"),
    ("more a.py", "cat"), ("top", "ps aux"), ("htop", "ps aux"), ("man ls", "--help"), ("tail -f log.txt", "timeout"),
    ("tail -n 5 -F log.txt", "timeout"), ("watch ls", "timeout"), ("python", "-c"), ("python3 -u", "-c"),
    ("ipython", "-c"), ("cd pkg && FOO=1 /usr/bin/vim x", "str_replace_editor"), ("python -i script.py", "-c"),
    ("for f in *.py; do emacs $f; done", "str_replace_editor"),
])
def test_interactive_programs_are_refused_and_not_run(call, repo, command, word):
    obs = bash(call, f"touch ran; {command}")
    assert obs.is_error and obs.text.startswith("Command not run: ") and word in obs.text
    assert not (repo / "ran").exists()


@pytest.mark.parametrize("command", [
    "timeout 1 tail -f a.py", "tail -n 2 a.py", "python -c 'print(1)'", "echo vim less top", "grep -n less a.py",
    "python - <<'EOF'\nprint(2)\nEOF", "cat <<EOF > notes.txt\nvim\nless\nEOF", "echo print | python", "top -b -n 1 | head -1",
    "python a.py",
])
def test_non_interactive_uses_are_allowed(command):
    assert refusal(command) is None


@given(st.text())
def test_refusal_never_raises(command):
    assert refusal(command) is None or isinstance(refusal(command), str)


@pytest.mark.parametrize("timeout", [0, -1, 99999])
def test_bad_timeout(call, timeout):
    obs = bash(call, "true", timeout=timeout)
    assert obs.is_error and "`timeout`" in obs.text


def test_wrong_argument_types_name_the_parameter(call):
    assert call("bash").text == "Missing required parameter `command` (string) for tool `bash`."
    assert call("bash", command=["ls"]).text == 'Parameter `command` must be a string, got ["ls"].'
    assert call("bash", command="true", timeout="soon").text == 'Parameter `timeout` must be a number, got "soon".'
    assert call("bash", command="true", cmd="x").text.startswith("Unknown parameter `cmd` for tool `bash`")
    assert bash(call, "echo ok", timeout="5").text == "ok"  # numbers sent as JSON text are accepted
