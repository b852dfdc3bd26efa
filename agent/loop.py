"""The ReAct loop: render -> generate -> parse -> run tools -> observe, until an exit.

Model (a Backend), environment (sandbox + tools) and agent are separate; the
agent only holds the conversation and the rules for ending a run. Every exit
is explicit (`Status`), every exit produces the diff against the base commit
(autosubmit), and the trajectory is rewritten after every step.

The conversation is append-only so an in-process backend can keep its KV
cache; the one exception is eliding old observations, which happens only when
the prompt would no longer fit, and then for all but the last N at once, so
the cache is rebuilt rarely.
"""
from __future__ import annotations

import dataclasses
import json
import time
import traceback
from dataclasses import dataclass

from loopcoder.agent.config import Config
from loopcoder.agent.environment import Environment
from loopcoder.agent.interrupts import deferred_interrupts
from loopcoder.agent.outcome import EXIT_CODES, Status, TestTally, edited_tests, outcome_words, submit_status
from loopcoder.agent.trajectory import Trajectory
from loopcoder.runtime.backends.base import Backend, Completion, GenerationParams
from loopcoder.runtime.toolcalls import EXPECTED_FORMAT, ParseResult, ToolCall, parse_tool_calls
from loopcoder.tools.base import Observation
from loopcoder.tools.test_report import from_summary


NO_CALL = ("Your reply contained no tool call. Every reply must call at least one tool, written exactly like "
           "this:\n" + EXPECTED_FORMAT + "\nWhen the task is done, call `submit`.")
CUT_OFF = "Your reply was cut off at the token limit of a turn; write shorter turns and close every call."
STUCK_WARNING = ("Warning: you ran the same action and got the same result {n} times in a row. It will not "
                 "change: try a different approach. Repeating it again ends the run.")


class Listener:
    """What a user interface hears about a run; every method is optional."""

    def on_start(self, workdir: str) -> None: ...

    def on_step(self, index: int) -> None: ...

    def on_text(self, piece: str) -> None: ...

    def on_call(self, call: ToolCall) -> None: ...

    def on_observation(self, call: ToolCall, observation: Observation) -> None: ...

    def on_notice(self, text: str) -> None: ...


@dataclass
class RunResult:
    status: str
    reason: str
    patch: str
    steps: int
    tests: TestTally | None = None  # the last test result the agent saw in this run
    malformed: int = 0  # turns with a malformed call in this run
    edited_tests: tuple[str, ...] = ()  # test files the patch changes (outcome.edited_tests)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def summary(self) -> str:
        """The outcome in one line: 'submitted: the model called submit; tests: 2 passed (4 steps)'."""
        malformed = f", {self.malformed} with malformed calls" if self.malformed else ""
        return f"{outcome_words(self.status, self.reason, self.tests, self.edited_tests)} ({self.steps} steps{malformed})"


class Agent:
    """One conversation with one backend in one environment; `run()` once per user turn."""

    def __init__(self, backend: Backend, env: Environment, config: Config, trajectory: Trajectory,
                 system: str, listener: Listener | None = None, chat: bool = False):
        self.backend, self.env, self.config, self.trajectory = backend, env, config, trajectory
        self.listener = listener or Listener()
        self.chat = chat
        self.tools = env.schemas()
        self.messages: list[dict] = [{"role": "system", "content": system}]
        self.observation_steps: dict[int, int] = {}  # message index -> step whose observation it holds
        self.elided: set[int] = set()
        self.notices: list[str] = []
        s = config.sampling
        self.params = GenerationParams(temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, seed=s.seed,
                                       max_new_tokens=s.max_new_tokens, speculative=s.speculative,
                                       speculative_tokens=s.speculative_tokens,
                                       constrained_tool_calls=s.constrained_tool_calls)
        self.window = config.context.window or backend.context_window
        self.valid_tools = f"The available tools are: {', '.join(t['function']['name'] for t in self.tools)}."

    # -- the loop -----------------------------------------------------------------

    def run(self, user_text: str) -> RunResult:
        """Add a user turn and act until an exit; limits count from this call."""
        self.messages.append({"role": "user", "content": user_text})
        self.trajectory.add_input(user_text)
        self._reset_counters()
        self.listener.on_start(self.env.sandbox.workdir)
        error_traceback = None
        try:
            while (stop := self._limit_reached()) is None:
                if (stop := self._step()) is not None:
                    break
            status, reason = stop
        except KeyboardInterrupt:
            status, reason = Status.INTERRUPTED, "interrupted by the user"
        except Exception as exc:  # a backend failure: end with a status and keep what was done
            status, reason = Status.ERROR, f"{type(exc).__name__}: {exc}"
            error_traceback = traceback.format_exc()
        return self._finish(status, reason, error_traceback)

    def _reset_counters(self) -> None:
        self.started = time.monotonic()
        self.steps = 0
        self.generated = 0
        self.format_errors = 0  # consecutive turns with a malformed call
        self.malformed = 0  # all of them, this run
        self.tests: TestTally | None = None
        self.timeouts = 0
        self.last_signature: str | None = None
        self.repeats = 0

    def _limit_reached(self) -> tuple[str, str] | None:
        a = self.config.agent
        if self.steps >= a.max_steps:
            return Status.STEP_LIMIT, f"reached the step limit ({a.max_steps})"
        if self.generated >= a.max_tokens:
            return Status.TOKEN_LIMIT, f"generated {self.generated} tokens (limit {a.max_tokens})"
        if time.monotonic() - self.started >= a.max_seconds:
            return Status.TIME_LIMIT, f"ran for more than {a.max_seconds:g} s"
        return None

    def _finish(self, status: str, reason: str, error_traceback: str | None) -> RunResult:
        """Autosubmit: the diff and the final trajectory, whatever ended the run; Ctrl-C waits for it."""
        with deferred_interrupts("writing the diff and the trajectory, please wait..."):
            try:
                patch = self.env.diff()
            except Exception as exc:
                patch = ""
                reason = f"{reason}; the diff failed: {type(exc).__name__}: {exc}"
            if status == Status.SUBMITTED:
                status = submit_status(patch)
                if status == Status.NO_CHANGE:
                    reason = "the model called submit without changing any file"
            touched = tuple(edited_tests(patch))
            self.trajectory.finish(status, reason, patch, self.messages, error_traceback,
                                   tests=self.tests.to_dict() if self.tests else None, malformed=self.malformed,
                                   edited_tests=list(touched))
        return RunResult(status, reason, patch, len(self.trajectory.steps), self.tests, self.malformed, touched)

    # -- one step -------------------------------------------------------------------

    def _step(self) -> tuple[str, str] | None:
        """Generate one assistant turn and run its calls; an exit (status, reason) or None to go on."""
        index = len(self.trajectory.steps)
        kept = len(self.messages)
        try:
            return self._act(index)
        except KeyboardInterrupt:
            del self.messages[kept:]  # the conversation stays consistent for a chat that goes on
            for i in [i for i in self.observation_steps if i >= kept]:
                del self.observation_steps[i]
                self.elided.discard(i)
            raise

    def _act(self, index: int) -> tuple[str, str] | None:
        self.notices = []
        if not self._fit_context():
            return Status.CONTEXT_OVERFLOW, f"the conversation no longer fits in {self.window} tokens"
        self.listener.on_step(index)
        params = dataclasses.replace(self.params, max_new_tokens=min(
            self.params.max_new_tokens, self.config.agent.max_tokens - self.generated))
        t0 = time.monotonic()
        completion = self.backend.complete(self.messages, self.tools, params, on_text=self.listener.on_text)
        generate_seconds = time.monotonic() - t0
        self.steps += 1
        self.generated += completion.completion_tokens
        parsed = parse_tool_calls(completion.text, self.tools)
        self.messages.append({"role": "assistant", "content": completion.text})

        t1 = time.monotonic()
        records, submitted = self._run_calls(index, parsed.calls)
        exit_ = self._check_format(index, parsed, completion, records)
        if submitted:
            exit_ = Status.SUBMITTED, "the model called submit"
        if exit_ is None:
            exit_ = self._check_repeats(index, parsed, records)
        self.trajectory.add_step(self._record(index, completion, parsed, records, generate_seconds,
                                              time.monotonic() - t1), self.messages)
        return exit_

    def _run_calls(self, index: int, calls: list[ToolCall]) -> tuple[list[dict], bool]:
        records = []
        for n, call in enumerate(calls):
            call_id = f"call_{index}_{n}"
            self.listener.on_call(call)
            t0 = time.monotonic()
            obs = self.env.execute(call.name, call.arguments)
            self.tests = _tests_seen(call, obs) or self.tests
            self.listener.on_observation(call, obs)
            self.timeouts = self.timeouts + 1 if obs.extra.get("timed_out") else 0
            self._observe({"role": "tool", "tool_call_id": call_id, "name": call.name, "content": obs.text}, index)
            records.append({"id": call_id, "name": call.name, "arguments": call.arguments, "text": obs.text,
                            "is_error": obs.is_error, "exit_code": obs.exit_code, "submitted": obs.submitted,
                            "extra": _jsonable(obs.extra), "seconds": round(time.monotonic() - t0, 3)})
            if obs.submitted:
                return records, True
        return records, False

    def _observe(self, message: dict, index: int) -> None:
        self.observation_steps[len(self.messages)] = index
        self.messages.append(message)

    def _check_format(self, index: int, parsed: ParseResult, completion: Completion,
                      records: list[dict]) -> tuple[str, str] | None:
        """A malformed turn is a format error the model hears about; `max_format_errors` in a row end the run.

        Malformed: a call that could not be read, an unclosed block, an unknown
        tool or arguments that do not fit (those observations already say so),
        or, outside chat, no call at all.
        """
        if completion.finish_reason == "context":
            return Status.CONTEXT_OVERFLOW, "the context window filled up during generation"
        call_errors = [r["text"] for r in records if r["extra"].get("call_error")]
        if parsed.calls and not parsed.errors and not parsed.warnings and not call_errors:
            self.format_errors = 0
            return None
        if not parsed.calls and not parsed.errors and self.chat:
            return Status.REPLIED, "the model answered"
        self.format_errors += 1
        self.malformed += 1
        parts = [*parsed.errors, *parsed.warnings] or ([] if parsed.calls else [NO_CALL])
        if completion.finish_reason == "length":
            parts = [CUT_OFF, *parts]
        if parts:
            text = self._notice("\n\n".join([*parts, self.valid_tools]))
            if parsed.calls:  # the calls that ran have their observations; this one explains the rest
                self._observe({"role": "tool", "tool_call_id": f"call_{index}_errors", "name": "format_error",
                               "content": text}, index)
            else:
                self._observe({"role": "user", "content": text}, index)
        limit = self.config.agent.max_format_errors
        if self.format_errors >= limit:
            last = (parts[-1] if parts else call_errors[-1]).splitlines()[0]
            return Status.FORMAT_ERROR, f"{limit} replies in a row with malformed tool calls (last: {last})"
        return None

    def _notice(self, text: str) -> str:
        self.notices.append(text)
        self.listener.on_notice(text)
        return text

    def _check_repeats(self, index: int, parsed: ParseResult, records: list[dict]) -> tuple[str, str] | None:
        """Stuck: the same action with the same observation again and again; or commands timing out in a row."""
        a = self.config.agent
        if self.timeouts >= a.max_consecutive_timeouts:
            return Status.STUCK, f"{self.timeouts} commands in a row hit their timeout"
        signature = json.dumps([[(c.name, c.arguments) for c in parsed.calls], parsed.errors,
                                [r["text"] for r in records]], sort_keys=True, default=str)
        self.repeats = self.repeats + 1 if signature == self.last_signature else 1
        self.last_signature = signature
        if self.repeats > a.stuck_repeats:
            return Status.STUCK, f"the same action and observation {self.repeats} times in a row"
        if self.repeats == a.stuck_repeats:
            self.messages[-1]["content"] += "\n\n" + self._notice(STUCK_WARNING.format(n=self.repeats))
        return None

    def _record(self, index: int, completion: Completion, parsed: ParseResult, records: list[dict],
                generate_seconds: float, tool_seconds: float) -> dict:
        return {
            "index": index,
            "raw_output": completion.text,
            "content": parsed.content,
            "calls": [{"name": c.name, "arguments": c.arguments} for c in parsed.calls],
            "parse_errors": [*parsed.errors, *parsed.warnings],
            "notices": self.notices,
            "observations": records,
            "finish_reason": completion.finish_reason,
            "tokens": {"prompt": completion.prompt_tokens, "completion": completion.completion_tokens,
                       "prefilled": completion.prefilled_tokens, "reused": completion.reused_tokens},
            "timings": {"generate": round(generate_seconds, 3), "prefill": round(completion.prefill_seconds, 3),
                        "decode": round(completion.decode_seconds, 3), "tools": round(tool_seconds, 3)},
        }

    # -- context --------------------------------------------------------------------

    def _fit_context(self) -> bool:
        """Elide old observations until prompt + one turn's generation fits; False if it never will."""
        budget = self.window - self.params.max_new_tokens
        if self.backend.count_tokens(self.messages, self.tools) <= budget:
            return True
        pending = [i for i in sorted(self.observation_steps) if i not in self.elided]
        keep = self.config.context.keep_last_observations
        while True:
            old, pending = pending[:max(len(pending) - keep, 0)], pending[max(len(pending) - keep, 0):]
            for i in old:
                self.messages[i]["content"] = f"[output of step {self.observation_steps[i] + 1} elided]"
                self.elided.add(i)
            if old:
                self._notice(f"elided {len(old)} old observations to fit the context window")
            if self.backend.count_tokens(self.messages, self.tools) <= budget:
                return True
            if not pending:
                return False
            keep = min(keep, len(pending)) - 1


def _tests_seen(call: ToolCall, obs: Observation) -> TestTally | None:
    """The counts a test run showed the model: run_tests' report, or pytest's summary line in bash output."""
    extra = obs.extra
    if call.name == "run_tests" and ("passed" in extra or extra.get("timed_out")):
        return TestTally(extra.get("passed", 0), extra.get("failed", 0), extra.get("errors", 0),
                         extra.get("skipped", 0), bool(extra.get("timed_out")), str(extra.get("scope", "")))
    command = call.arguments.get("command") if call.name == "bash" else None
    if isinstance(command, str) and "pytest" in command and not obs.extra.get("call_error"):
        report = from_summary(obs.text)
        if report is not None:
            return TestTally(report.passed, report.failed, report.errors, report.skipped, scope=command)
    return None


def _jsonable(value):
    """Tool extras as JSON (anything unusual becomes its repr)."""
    return json.loads(json.dumps(value, default=repr))
