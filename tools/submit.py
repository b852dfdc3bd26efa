"""submit: the model says it is done; the agent ends the run and computes the diff itself."""
from __future__ import annotations

from loopcoder.tools.base import Observation, Tool, define
from loopcoder.workspace.sandbox import Sandbox

NAME = "submit"
DESCRIPTION = (
    "Finish: submit your changes to the repository as they are now, ending the task. Call it once, after you have "
    "checked your changes (for example with run_tests). `message`: an optional short summary of what you changed."
)
PARAMETERS = {
    "type": "object",
    "properties": {"message": {"type": "string", "description": "A short summary of the change (optional)."}},
}


def _run(args: dict, sandbox: Sandbox) -> Observation:
    message = (args.get("message") or "").strip()
    return Observation("Submitted." + (f" {message}" if message else ""), submitted=True, extra={"message": message})


def make() -> Tool:
    return define(NAME, DESCRIPTION, PARAMETERS, _run)
