"""Spotting interactive programs in a shell command before running it.

The sandbox shell has no terminal and stdin is closed, so editors, pagers,
monitors and bare REPLs either hang until the timeout or do nothing. Telling
the model what to use instead saves it a step and a timeout. Only words in
command position count (`grep less f` is fine); heredoc bodies are skipped;
`tail -f` and `watch` are fine under `timeout N`.
"""
from __future__ import annotations

import posixpath
import re
import shlex

_EDITORS = {"vi", "vim", "nvim", "view", "nano", "pico", "emacs", "joe", "micro", "mcedit"}
_PAGERS = {"less", "more", "most"}
_MONITORS = {"top", "htop", "atop", "btop", "glances", "iotop", "nmon"}
_DOCS = {"man", "info"}
_REPL = re.compile(r"(python|pypy)[\d.]*|i?python3?|bpython|node|irb|ghci")
_REPL_WITH_INPUT = {"-c", "-m", "-"}  # python flags that mean "not a REPL"
_PREFIXES = {"sudo", "exec", "command", "builtin", "nohup", "time", "nice", "stdbuf", "env", "then", "do", "else",
             "elif", "if", "while", "until", "!", "{", "}"}
_SEPARATORS = {";", "&", "&&", "|", "||", "|&", "(", ")", ";;"}
_HEREDOC = re.compile(r"(?<!<)<<(-?)[ \t]*(['\"]?)([A-Za-z_][\w.-]*)\2")
_ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")


def _without_heredocs(command: str) -> str:
    """The command with line continuations joined and heredoc bodies dropped."""
    kept: list[str] = []
    pending: list[tuple[str, bool]] = []
    for line in command.replace("\\\n", " ").split("\n"):
        if pending:
            word, strip_tabs = pending[0]
            if (line.lstrip("\t") if strip_tabs else line) == word:
                pending.pop(0)
            continue
        kept.append(line)
        pending = [(m[3], m[1] == "-") for m in _HEREDOC.finditer(line)]
    return "\n".join(kept)


def _simple_commands(line: str) -> list[tuple[list[str], bool]]:
    """(words, fed by a pipe) for each simple command of one line; [] when the shell quoting is broken."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:
        return []
    commands: list[tuple[list[str], bool]] = []
    words: list[str] = []
    piped = False
    for token in tokens:
        if token in _SEPARATORS:
            if words:
                commands.append((words, piped))
            words, piped = [], token in {"|", "|&"}
        else:
            words.append(token)
    if words:
        commands.append((words, piped))
    return commands


def _program(words: list[str]) -> tuple[str, list[str], bool]:
    """(program basename, its arguments, run under `timeout`) after assignments and wrapper commands."""
    timed = False
    index = 0
    while index < len(words):
        word = words[index]
        if _ASSIGNMENT.match(word) or word in _PREFIXES or (word.startswith("-") and index and words[index - 1] == "env"):
            index += 1
        elif word == "timeout":
            timed = True
            index += 1
            while index < len(words) and words[index].startswith("-"):
                index += 2 if words[index] in {"-s", "-k", "--signal", "--kill-after"} else 1
            index += 1  # the duration
        else:
            return posixpath.basename(word), words[index + 1 :], timed
    return "", [], timed


def _has_flag(args: list[str], letters: str, long: tuple[str, ...] = ()) -> bool:
    return any(
        arg.startswith(long) if long and arg.startswith("--") else (arg[:1] == "-" and arg[1:2] != "-" and any(c in arg[1:] for c in letters))
        for arg in args
    )


def _refusal(program: str, args: list[str], piped: bool, timed: bool) -> str | None:
    if program in _EDITORS:
        return (f"`{program}` is an interactive editor and this shell has no terminal, so it would hang until the timeout. "
                "Use the `str_replace_editor` tool to view and edit files (commands view, create, str_replace, insert).")
    if program in _PAGERS:
        return (f"`{program}` is an interactive pager and this shell has no terminal. Print the text instead: "
                "`cat FILE`, `head -n 50 FILE`, `sed -n '10,40p' FILE`, or drop the `| " + program + "`.")
    if program in _MONITORS and not (program == "top" and _has_flag(args, "b")):
        return f"`{program}` is an interactive full-screen program. For a snapshot use `ps aux` (or `top -b -n 1`)."
    if program in _DOCS:
        return f"`{program}` opens an interactive viewer. Use `COMMAND --help` instead (or `python -m pydoc NAME` for Python)."
    if program == "tail" and not timed and _has_flag(args, "fF", ("--follow",)):
        return "`tail -f` follows the file forever and would only stop at the timeout. Use `tail -n 50 FILE`, or bound it: `timeout 10 tail -f FILE`."
    if program == "watch" and not timed:
        return "`watch` repeats forever and would only stop at the timeout. Run the command once, or bound it: `timeout 10 watch ...`."
    bare = not piped and all(arg.startswith("-") and arg not in _REPL_WITH_INPUT for arg in args)
    if _REPL.fullmatch(program) and (bare or "-i" in args):
        return (f"`{program}` without a script starts an interactive interpreter, but stdin is closed here. "
                f"Run a file (`{program} path/to/script.py`), a one-liner (`{program} -c '...'`), "
                f"or pass code with a heredoc (`{program} - <<'EOF'` ... `EOF`).")
    return None


def refusal(command: str) -> str | None:
    """Why `command` would need a terminal, with what to do instead; None when it can run."""
    for line in _without_heredocs(command).split("\n"):
        for words, piped in _simple_commands(line):
            program, args, timed = _program(words)
            reason = _refusal(program, args, piped, timed)
            if reason:
                return reason
    return None
