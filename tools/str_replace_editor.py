"""str_replace_editor: view, create and edit files, with the messages models were trained on (SWE-agent).

Every message a model may have seen in training keeps SWE-agent's exact
wording; what is new here (binary files, huge files, encodings)
says plainly what happened and what to do instead.
"""
from __future__ import annotations

import posixpath
import shlex
from collections import deque

from loopcoder.tools.base import Observation, Tool, define
from loopcoder.tools.output import truncate
from loopcoder.tools.state import PerSandbox
from loopcoder.tools.text import TextFile, decode, is_binary, numbered, split_lines
from loopcoder.workspace.sandbox import Sandbox

NAME = "str_replace_editor"
COMMANDS = ["view", "create", "str_replace", "insert", "undo_edit"]
SNIPPET_LINES = 4
UNDO_LEVELS = 10  # per file
VIEW_LIMIT = 16_000  # characters of a `view` shown at once
HUGE_FILE_BYTES = 5 * 1024 * 1024  # `view` of a bigger file needs a view_range
REVIEW = "Review the changes and make sure they are as expected. Edit the file again if necessary."
REVIEW_INSERT = ("Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). "
                 "Edit the file again if necessary.")
DESCRIPTION = (
    "View, create and edit files.\n"
    "* `view` on a file shows it with line numbers (`cat -n` style); `view_range` [start, end] shows part of it "
    "(1-based, end -1 = end of file). On a directory it lists files up to 2 levels deep, hidden ones skipped.\n"
    "* `create` writes a new file with `file_text`; it cannot overwrite an existing file.\n"
    "* `str_replace` replaces `old_str`, which must occur exactly once in the file (include enough context "
    "lines to make it unique, and match whitespace exactly), with `new_str` (empty or omitted: delete).\n"
    "* `insert` inserts `new_str` after line `insert_line` (0 = at the top).\n"
    "* `undo_edit` reverts the last edit made to the file by this tool.\n"
    "Paths are relative to the repository root, or absolute inside it."
)
PARAMETERS = {
    "type": "object",
    "properties": {
        "command": {"type": "string", "enum": COMMANDS, "description": "The command to run."},
        "path": {"type": "string", "description": "File or directory, relative to the repository root or absolute inside it."},
        "file_text": {"type": "string", "description": "For `create`: the content of the new file."},
        "old_str": {"type": "string", "description": "For `str_replace`: the exact text to replace (must occur once)."},
        "new_str": {"type": "string", "description": "For `str_replace`: the replacement; for `insert`: the text to insert."},
        "insert_line": {"type": "integer", "description": "For `insert`: the line after which `new_str` goes (0 = top)."},
        "insert_text": {"type": "string", "description": "For `insert`: same as `new_str`."},
        "view_range": {"type": "array", "items": {"type": "integer"},
                       "description": "For `view` on a file: [start, end] lines, 1-based; end -1 means end of file."},
    },
    "required": ["command", "path"],
}


def _error(text: str) -> Observation:
    return Observation(text, is_error=True)


def _cat_n(lines: list[str], described: str, first: int = 1) -> str:
    """SWE-agent's `_make_output`: a header naming what is shown, then the numbered lines."""
    body = truncate(numbered(lines, first), VIEW_LIMIT,
                    "view the hidden lines with `view_range` [start, end], or find them with the search tool or `grep -n`")
    return f"Here's the result of running `cat -n` on {described}:\n{body}\n"


def _occurrences(text: str, old: str) -> list[int]:
    """Start offsets of `old` in `text`, overlapping ones included (they make the match just as ambiguous)."""
    starts: list[int] = []
    index = text.find(old)
    while index != -1:
        starts.append(index)
        index = text.find(old, index + 1)
    return starts


class Editor:
    """The tool's state: a few levels of undo per file, per sandbox."""

    def __init__(self) -> None:
        self._history: PerSandbox[dict[str, deque[bytes | None]]] = PerSandbox(dict)

    def run(self, args: dict, sandbox: Sandbox) -> Observation:
        command = args["command"]
        rel = sandbox.resolve(args["path"])
        shown = sandbox.workdir if rel == "." else posixpath.join(sandbox.workdir, rel)
        if command == "create":
            return self._create(sandbox, rel, shown, args)
        if not sandbox.exists(rel):
            return _error(f"The path {shown} does not exist. Please provide a valid path.")
        if sandbox.is_dir(rel):
            if command != "view":
                return _error(f"The path {shown} is a directory and only the `view` command can be used on directories")
            return self._view_dir(sandbox, rel, shown, args)
        if command == "undo_edit":
            return self._undo(sandbox, rel, shown)
        data = sandbox.read_file(rel)
        if is_binary(data):
            return _error(f"The file {shown} is binary ({len(data):,} bytes); this tool only shows and edits text. "
                          "Inspect it with the bash tool instead (e.g. `file`, `xxd | head`).")
        if command == "view":
            return self._view_file(data, shown, args.get("view_range"))
        if command == "str_replace":
            return self._str_replace(sandbox, rel, shown, data, args)
        return self._insert(sandbox, rel, shown, data, args)

    # -- view ---------------------------------------------------------------------

    def _view_dir(self, sandbox: Sandbox, rel: str, shown: str, args: dict) -> Observation:
        if args.get("view_range") is not None:
            return _error("The `view_range` parameter is not allowed when `path` points to a directory.")
        entries = [posixpath.join(sandbox.workdir, entry) for entry in sandbox.list_dir(rel, depth=2)]
        listing = truncate("\n".join([shown, *entries]), VIEW_LIMIT, "view a subdirectory to see more")
        return Observation(f"Here's the files and directories up to 2 levels deep in {shown}, excluding hidden items:\n{listing}\n")

    def _view_file(self, data: bytes, shown: str, view_range: list[int] | None) -> Observation:
        if view_range is None and len(data) > HUGE_FILE_BYTES:
            newlines = data.count(b"\n")
            return Observation(
                f"The file {shown} is too large to show whole ({len(data):,} bytes, {newlines:,} lines). "
                "View a part of it with `view_range` [start, end], or find the lines you need with the search "
                "tool or `grep -n` first.")
        lines = split_lines(decode(data).text)
        if view_range is None:
            if not lines:
                return Observation(f"The file {shown} is empty.")
            return Observation(_cat_n(lines, shown))
        if len(view_range) != 2:
            return _error("Invalid `view_range`. It should be a list of two integers.")
        start, end = view_range
        if start < 1 or start > len(lines):
            return _error(f"Invalid `view_range`: {view_range}. Its first element `{start}` should be within the "
                          f"range of lines of the file: {[1, len(lines)]}")
        if end != -1 and end < start:
            return _error(f"Invalid `view_range`: {view_range}. Its second element `{end}` should be larger or "
                          f"equal than its first `{start}`")
        note = ""
        if end > len(lines):
            note = f"[The file has {len(lines)} lines; showing lines {start}-{len(lines)}.]\n"
        stop = len(lines) if end == -1 or end > len(lines) else end
        return Observation(_cat_n(lines[start - 1 : stop], shown, start) + note)

    # -- edits --------------------------------------------------------------------

    def _save(self, sandbox: Sandbox, rel: str, new: bytes, old: bytes | None) -> None:
        sandbox.write_file(rel, new)
        history = self._history.get(sandbox).setdefault(rel, deque(maxlen=UNDO_LEVELS))
        history.append(old)

    def _create(self, sandbox: Sandbox, rel: str, shown: str, args: dict) -> Observation:
        if args.get("file_text") is None:
            return _error("Parameter `file_text` is required for command: create")
        if sandbox.exists(rel):
            return _error(f"File already exists at: {shown}. Cannot overwrite files using command `create`.")
        self._save(sandbox, rel, args["file_text"].encode("utf-8"), None)
        return Observation(f"File created successfully at: {shown}")

    def _encode(self, file: TextFile, text: str, shown: str) -> bytes | Observation:
        try:
            return file.encode(text)
        except UnicodeEncodeError:
            return _error(f"No change was made: {shown} is not UTF-8 (it was read as {file.encoding}) and the new text "
                          f"has characters {file.encoding} cannot hold. Keep to characters the file already uses.")

    def _str_replace(self, sandbox: Sandbox, rel: str, shown: str, data: bytes, args: dict) -> Observation:
        if args.get("old_str") is None:
            return _error("Parameter `old_str` is required for command: str_replace")
        file = decode(data)
        old, new = file.normalise(args["old_str"]), file.normalise(args.get("new_str") or "")
        if not old:
            return _error("No replacement was performed, `old_str` is empty. Give the exact text to replace, "
                          "or use `insert` to add lines.")
        starts = _occurrences(file.text, old)
        if not starts:
            return _error(f"No replacement was performed, old_str `{args['old_str']}` did not appear verbatim in {shown}.")
        if len(starts) > 1:
            lines = list(dict.fromkeys(file.text.count("\n", 0, i) + 1 for i in starts))
            return _error(f"No replacement was performed. Multiple occurrences of old_str `{args['old_str']}` in lines "
                          f"{lines}. Please ensure it is unique")
        if old == new:
            return _error(f"No replacement was performed, old_str `{args['old_str']}` is the same as new_str `{args.get('new_str') or ''}`.")
        text = file.text[: starts[0]] + new + file.text[starts[0] + len(old) :]
        encoded = self._encode(file, text, shown)
        if isinstance(encoded, Observation):
            return encoded
        self._save(sandbox, rel, encoded, data)
        edited = file.text.count("\n", 0, starts[0])  # 0-based line where the edit starts
        first = max(0, edited - SNIPPET_LINES)
        snippet = split_lines(text)[first : edited + SNIPPET_LINES + new.count("\n") + 1]
        return Observation(f"The file {shown} has been edited. " + _cat_n(snippet, f"a snippet of {shown}", first + 1) + REVIEW)

    def _insert(self, sandbox: Sandbox, rel: str, shown: str, data: bytes, args: dict) -> Observation:
        if args.get("insert_line") is None:
            return _error("Parameter `insert_line` is required for command: insert")
        given = [args[key] for key in ("new_str", "insert_text") if args.get(key) is not None]
        if not given:
            return _error("Parameter `new_str` is required for command: insert")
        if len(given) == 2 and given[0] != given[1]:
            return _error("Parameters `new_str` and `insert_text` differ; give the text to insert in one of them.")
        file = decode(data)
        lines, at = split_lines(file.text), args["insert_line"]
        if not 0 <= at <= len(lines):
            return _error(f"Invalid `insert_line` parameter: {at}. It should be within the range of lines of the file: "
                          f"{[0, len(lines)]}")
        inserted = split_lines(file.normalise(given[0])) or [""]
        result = lines[:at] + inserted + lines[at:]
        final_newline = not file.text or file.text.endswith("\n")  # a file without one stays without
        text = "\n".join(result) + ("\n" if final_newline else "")
        encoded = self._encode(file, text, shown)
        if isinstance(encoded, Observation):
            return encoded
        self._save(sandbox, rel, encoded, data)
        first = max(0, at - SNIPPET_LINES)
        snippet = result[first : at + len(inserted) + SNIPPET_LINES]
        return Observation(f"The file {shown} has been edited. " + _cat_n(snippet, "a snippet of the edited file", first + 1)
                           + REVIEW_INSERT)

    def _undo(self, sandbox: Sandbox, rel: str, shown: str) -> Observation:
        history = self._history.get(sandbox).get(rel)
        if not history:
            return _error(f"No edit history found for {shown}.")
        previous = history.pop()
        if previous is None:  # the last edit created the file
            sandbox.run(f"rm -f -- {shlex.quote(rel)}", timeout=30)
            return Observation(f"Last edit to {shown} undone successfully. The file did not exist before it, so it was removed.")
        sandbox.write_file(rel, previous)
        if is_binary(previous):
            return Observation(f"Last edit to {shown} undone successfully.")
        return Observation(f"Last edit to {shown} undone successfully. " + _cat_n(split_lines(decode(previous).text), shown))


def make() -> Tool:
    return define(NAME, DESCRIPTION, PARAMETERS, Editor().run)
