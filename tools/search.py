"""search: find text in files, or files by name, in the working copy; capped, sorted, without .git or binaries.

ripgrep when the sandbox has it (fast, respects .gitignore), else grep -rn
(PCRE when that grep supports it, so `\\d` and friends work either way); for
names, `rg --files` or `find`. Results are cut to MAX_RESULTS lines of at most
LINE_WIDTH characters inside the sandbox, so a search of a huge tree costs
the model a few kilobytes.
"""
from __future__ import annotations

import re
import secrets
import shlex

from loopcoder.tools.base import Observation, Tool, define
from loopcoder.tools.output import printable, truncate
from loopcoder.workspace.sandbox import Sandbox

NAME = "search"
MAX_RESULTS = 100
LINE_WIDTH = 300
TIMEOUT = 60.0
DESCRIPTION = (
    "Search the repository. mode `content` (default): lines matching `pattern` (a regular expression, or plain "
    "text with `literal`), shown as path:line:text. mode `files`: files whose name matches `pattern` (a glob such "
    f"as `test_*.py`, or part of the name). Skips .git, binary files and (with ripgrep) files .gitignore excludes; "
    f"at most {MAX_RESULTS} results."
)
PARAMETERS = {
    "type": "object",
    "properties": {
        "pattern": {"type": "string", "description": "What to look for: a regex, plain text (with `literal`), or a file-name glob in `files` mode."},
        "path": {"type": "string", "description": "Directory or file to search in (default: the repository root)."},
        "glob": {"type": "string", "description": "Only search files whose name matches this glob, e.g. `*.py` (content mode)."},
        "mode": {"type": "string", "enum": ["content", "files"], "description": "`content` (default) or `files`."},
        "literal": {"type": "boolean", "description": "Treat `pattern` as plain text, not a regex (default false)."},
        "ignore_case": {"type": "boolean", "description": "Match regardless of case (default false)."},
    },
    "required": ["pattern"],
}
_GLOB_CHARS = re.compile(r"[*?\[]")


def _content_command(pattern: str, where: str, glob: str | None, literal: bool, ignore_case: bool) -> str:
    q = shlex.quote
    rg = ["rg", "--line-number", "--with-filename", "--no-heading", "--color=never", "--hidden", "--glob", q("!.git"), "--sort", "path"]
    grep = ["grep", "-rnIH", "--exclude-dir=.git", '"$m"']
    if literal:
        rg.append("--fixed-strings")
    if ignore_case:
        rg.append("--ignore-case")
        grep.append("-i")
    if glob:
        rg += ["--glob", q(glob)]
        grep.append(f"--include={q(glob)}")
    tail = f"-e {q(pattern)} -- {q(where)}"
    mode = "m=-F" if literal else "m=-E; echo x | grep -qP x 2>/dev/null && m=-P"
    return f"if command -v rg >/dev/null 2>&1; then {' '.join(rg)} {tail}; else {mode}; {' '.join(grep)} {tail}; fi"


def _files_command(pattern: str, where: str) -> str:
    name = shlex.quote(pattern if _GLOB_CHARS.search(pattern) else f"*{pattern}*")
    return (f"if command -v rg >/dev/null 2>&1; then rg --files --hidden --glob '!.git' --sort path --iglob {name} -- {shlex.quote(where)}; "
            f"else find {shlex.quote(where)} -name .git -prune -o -type f -iname {name} -print | sort; fi")


def _capped(search: str, token: str) -> str:
    """The search, its results cut to MAX_RESULTS short lines, then a trailer with the total and its errors."""
    return (
        f'e="${{TMPDIR:-/tmp}}/loopcoder-search-{token}.err"\n'
        f'{{ {search}; }} 2>"$e" | awk -v max={MAX_RESULTS} -v width={LINE_WIDTH} '
        '\'NR <= max { if (length($0) > width) print substr($0, 1, width) " [... line cut]"; else print } '
        f'END {{ printf "@@{token} total=%d\\n", NR }}\'\n'
        'head -c 2000 "$e"; rm -f "$e"'
    )


def _run(args: dict, sandbox: Sandbox) -> Observation:
    pattern, mode = args["pattern"], args.get("mode", "content")
    if not pattern:
        return Observation("Parameter `pattern` is empty; give the text, regex or file name to look for.", is_error=True)
    if mode == "files" and args.get("glob"):
        return Observation("`glob` only applies to content search; in `files` mode put the name glob in `pattern`.", is_error=True)
    rel = sandbox.resolve(args.get("path") or ".")
    where = "the repository" if rel == "." else rel
    if not sandbox.exists(rel):
        shown = sandbox.workdir if rel == "." else f"{sandbox.workdir}/{rel}"
        return Observation(f"The path {shown} does not exist. Please provide a valid path.", is_error=True)
    if mode == "files":
        search = _files_command(pattern, rel)
    else:
        search = _content_command(pattern, rel, args.get("glob"), bool(args.get("literal")), bool(args.get("ignore_case")))
    token = secrets.token_hex(6)
    result = sandbox.run(_capped(search, token), timeout=TIMEOUT)
    if result.timed_out:
        return Observation(f"The search timed out after {TIMEOUT:g} seconds; narrow it with `path` or `glob`.", is_error=True)
    results, marker, rest = result.output.partition(f"@@{token} total=")
    total_text, _, errors = rest.partition("\n")
    if not marker or not total_text.isdigit():
        return Observation(f"The search failed:\n{truncate(printable(result.output))}", is_error=True)
    total = int(total_text)
    lines = [line.removeprefix("./").rstrip("\r") for line in printable(results).splitlines()]
    errors = printable(errors).strip()
    if not total:
        if errors:
            return Observation(f'The search for "{pattern}" failed: {errors}', is_error=True)
        return Observation(f'No {"files matching" if mode == "files" else "matches found for"} "{pattern}" in {where}.')
    noun = ("file" if total == 1 else "files") if mode == "files" else ("match" if total == 1 else "matches")
    parts = [f'Found {total:,} {noun} {"matching" if mode == "files" else "for"} "{pattern}" in {where}:', *lines]
    if total > MAX_RESULTS:
        parts.append(f"[Showing the first {MAX_RESULTS} of {total:,}; narrow the search with `path`, `glob` or a more specific pattern.]")
    if errors:
        parts.append(f"[Some files could not be searched: {errors}]")
    return Observation("\n".join(parts))


def make() -> Tool:
    return define(NAME, DESCRIPTION, PARAMETERS, _run)
