"""Running a model's shell command so that its output always fits: capture, cap, save, show head + tail.

The command runs inside a small POSIX-sh wrapper in the sandbox. Its output
goes through a FIFO into a file under $TMPDIR/loopcoder-outputs (/tmp unless
the sandbox says otherwise: private to the sandbox, outside the working copy,
so never part of the diff). The copier is `cat` (it writes as it reads, so
the file is complete even while a background process holds the output) under
`ulimit -f`: past SAVE_CAP bytes it dies and writers get SIGPIPE, so
`yes | head -c 2G` ends at once instead of filling /tmp. The wrapper then
prints only the head and tail of that file, so the sandbox never carries big
output, and the full text stays in the file for the model to grep. A FIFO
rather than a pipe means the wrapper waits for the command only, not for
background processes that inherited its output. On a timeout the sandbox
kills the command; a second short run reads what the file holds so far.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from itertools import count

from loopcoder.tools.base import Observation
from loopcoder.tools.output import OUTPUT_LIMIT, at_lines, elide, printable, truncate
from loopcoder.tools.state import PerSandbox
from loopcoder.workspace.sandbox import Sandbox

OUTPUT_DIR = "${TMPDIR:-/tmp}/loopcoder-outputs"  # expanded by the sandbox shell
SAVE_CAP_KIB = 8192  # output kept (`ulimit -f` blocks: KiB in bash, half that in POSIX sh); writers get SIGPIPE past it
DEFAULT_TIMEOUT = 120.0
MAX_TIMEOUT = 3600.0
TIMEOUTS_TO_STOP = 3  # the default of agent.max_consecutive_timeouts: the observation says so and the agent ends the run
_HALF = OUTPUT_LIMIT // 2
_LINGER_POLLS = 20  # x 0.05 s the wrapper waits for background processes to release the output
_READ_TIMEOUT = 30.0
_SETUP_FAILED = 97

_numbers: PerSandbox[count] = PerSandbox(lambda: count(1))  # output files, numbered per sandbox (its private /tmp)


class TimeoutStreak:
    """Commands in a row that hit their timeout, per sandbox, and the note the model reads after one.

    One per tool set (bash and run_tests count together), told the run's limit
    (agent.max_consecutive_timeouts) so the note says when the run will stop.
    """

    def __init__(self, stop_after: int = TIMEOUTS_TO_STOP):
        self.stop_after = stop_after
        self._counts: PerSandbox[list[int]] = PerSandbox(lambda: [0])

    def record(self, sandbox: Sandbox, timed_out: bool) -> int:
        """Count one finished command; the streak so far (0 after one that did not time out)."""
        streak = self._counts.get(sandbox)
        streak[0] = streak[0] + 1 if timed_out else 0
        return streak[0]

    def note(self, seconds: float, streak: int) -> str:
        """What the model reads after a timeout; at the run's limit, that the run is stuck."""
        note = (
            f"[The command timed out after {seconds:g} seconds and was killed; the output above is what it printed "
            "until then. If it needs longer, pass a larger `timeout`; otherwise make it finish sooner (a smaller test "
            "selection, fewer iterations) or run it in the background with its output in a file.]"
        )
        if streak >= self.stop_after:
            note += f"\n[{streak} commands in a row have timed out: the run looks stuck and will be stopped.]"
        return note


def check_timeout(value: float | None, default: float) -> tuple[float, str | None]:
    """(seconds, error) for a model-given `timeout` (bash, run_tests)."""
    seconds = default if value is None else float(value)
    if not 0 < seconds <= MAX_TIMEOUT:
        return seconds, f"Parameter `timeout` must be between 0 and {MAX_TIMEOUT:g} seconds; got {value}."
    return seconds, None


def effective_timeout(sandbox: Sandbox, value: float | None, default: float) -> float:
    """The model's `timeout` (or the tool's default, or the sandbox's per-call default), capped by the sandbox's."""
    cap = getattr(sandbox, "command_timeout", None)
    seconds = (cap or default) if value is None else float(value)
    return min(seconds, cap) if cap else seconds


@dataclass
class Captured:
    text: str  # what the model sees: the output, or its head + a note + its tail
    exit_code: int
    timed_out: bool
    saved_to: str | None = None  # the full output, when `text` had to be cut
    lingering: bool = False  # a background process still held the output when the command ended


def _show(token: str) -> str:
    """Shell that prints the output file (head + marker + tail when long) and a trailer with its size."""
    return (
        's=$(wc -c 2>/dev/null < "$f" || echo 0); s=$((s + 0))\n'
        f'if [ "$s" -le {OUTPUT_LIMIT} ]; then cat "$f" 2>/dev/null; rm -f "$f"\n'
        f'else head -c {_HALF} "$f"; printf "\\n{token}-cut\\n"; tail -c {_HALF} "$f"; fi\n'
        'k=$(cat "$f.done" 2>/dev/null || echo -)\n'
        f'printf "\\n{token} size=%s done=%s path=%s\\n" "$s" "$k" "$f"\n'
        'rm -f "$f.fifo" "$f.done"'
    )


def _locate(name: str) -> str:
    return f'd="{OUTPUT_DIR}"; f="$d/{name}"'


def _wrapped(command: str, name: str, token: str) -> str:
    # One brace group, so the shell parses the model's command before running any of it; the command starts
    # on line 1, so the line numbers in the shell's error messages are the command's own.
    return (
        f'{{ {_locate(name)}; mkdir -p "$d" && rm -f "$f.fifo" "$f.done" && mkfifo "$f.fifo"'
        f" || {{ echo {token}-setup; exit {_SETUP_FAILED}; }}; "
        f'{{ ulimit -c 0; ulimit -f {SAVE_CAP_KIB}; cat > "$f"; echo $? > "$f.done"; }} >/dev/null 2>&1 < "$f.fifo" & ( :; {command}\n'
        ') > "$f.fifo" 2>&1\n'
        "r=$?\n"
        f'i=0; while [ ! -e "$f.done" ] && [ $i -lt {_LINGER_POLLS} ]; do sleep 0.05; i=$((i + 1)); done\n'
        f"{_show(token)}\n"
        "exit $r\n}"
    )


def _unwrapped(output: str, script: str) -> str:
    """A syntax error message quotes the line it failed on, and line 1 of `script` (the `_wrapped` command)
    holds the wrapper before the command: the model reads its own line only (and never the wrapper's random
    names, so a run repeats exactly)."""
    return output.replace(script[:script.index("( :; ") + len("( :; ")], "")


def _parse(output: str, token: str) -> tuple[str, str | None, bool] | None:
    """(text for the model, saved path or None, lingering) from the wrapper's output; None without a trailer."""
    body, marker, meta = output.rpartition(f"\n{token} size=")
    found = re.match(r"(\d+) done=(\d+|-) path=(.*)\n", meta)
    if not marker or not found:
        return None
    size, copier, path = int(found[1]), found[2], found[3]  # copier: cat's exit status, "-" while still copying
    head, cut, tail = body.partition(f"\n{token}-cut\n")
    if not cut:
        return printable(body), None, copier == "-"
    hint = f"the full output ({size:,} bytes) is saved in {path}; search it with `grep -n PATTERN {path}` or read parts with `sed -n 'START,ENDp' {path}`"
    if copier not in ("0", "-"):
        hint += f"; output past {size // 2**20} MiB was not kept and the command was stopped there (SIGPIPE)"
    head, tail = at_lines(printable(head), printable(tail))
    kept = len(head.encode()) + len(tail.encode())
    text = elide(head, tail, f"{max(size - kept, 0):,} bytes", hint)
    return text, path, copier == "-"


def run_captured(sandbox: Sandbox, command: str, timeout: float, kind: str = "bash") -> Captured:
    """Run `command` in the sandbox; output capped, saved when long, partial output kept on timeout."""
    token = f"@@loopcoder-{secrets.token_hex(6)}"
    name = f"{kind}-{next(_numbers.get(sandbox))}.txt"  # what the model may read back: the same on every run
    script = _wrapped(command, name, token)
    result = sandbox.run(script, timeout=timeout)
    if result.exit_code == _SETUP_FAILED and f"{token}-setup" in result.output:
        result = sandbox.run(command, timeout=timeout)  # no writable /tmp: show what the sandbox caught
        return Captured(truncate(printable(result.output)), result.exit_code, result.timed_out)
    output = result.output
    if result.timed_out:
        output = sandbox.run(f"{{ {_locate(name)}\n{_show(token)}\n}}", timeout=_READ_TIMEOUT).output
    parsed = _parse(output, token)
    if parsed is None:  # the shell rejected the wrapper (a syntax error in the command): show what it said
        return Captured(truncate(printable(_unwrapped(result.output, script))), result.exit_code, result.timed_out)
    text, saved_to, lingering = parsed
    if result.killed:
        text = f"{text.rstrip(chr(10))}\n[{result.killed}]"
    return Captured(text, result.exit_code, result.timed_out, saved_to, lingering and not result.timed_out)


def observation(captured: Captured, parts: list[str], streak: int, **extra) -> Observation:
    """What bash and run_tests return: their text parts, an error on a timeout, and in `extra` the timeout
    streak and where the full output was saved (besides the tool's own `extra`)."""
    extra = {"timed_out": captured.timed_out, "timeouts_in_a_row": streak, **extra}
    if captured.saved_to:
        extra["saved_to"] = captured.saved_to
    return Observation("\n".join(parts), is_error=captured.timed_out, exit_code=captured.exit_code, extra=extra)
