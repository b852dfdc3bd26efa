"""System and task prompts from the Jinja files in prompts/ (or a user's own file).

Templates are strict: a field the template needs but the caller did not give
is an error naming the field, not an empty hole in the prompt.
"""
from __future__ import annotations

from pathlib import Path

import jinja2

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TASK_TEMPLATES = {"interactive": "task_interactive.jinja", "swebench": "task_swebench.jinja",
                  "refactor": "task_refactor.jinja"}


class PromptError(ValueError):
    """A template that is missing or needs fields it was not given."""


def render(template: str, **fields) -> str:
    """Render `template`: a file name in prompts/ or a path to a file of one's own."""
    path = Path(template).expanduser()
    if not path.is_absolute() and not path.exists():
        path = PROMPTS_DIR / template
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PromptError(f"prompt template {template!r} not found ({exc.strerror}); give a file in {PROMPTS_DIR} or a path") from exc
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=False, autoescape=False)
    try:
        return env.from_string(source).render(**fields).strip() + "\n"
    except jinja2.UndefinedError as exc:
        raise PromptError(f"prompt template {template!r}: {exc.message}; pass it as a task field") from exc
    except jinja2.TemplateError as exc:
        raise PromptError(f"prompt template {template!r} is not valid Jinja: {exc}") from exc


DEFAULT_SYSTEM = "system.jinja"
MODEL_SYSTEM = "loopcoder_system.jinja"  # a checkpoint's own system prompt, the one it was trained with


def system_template(template: str | None, model: str | None) -> str:
    """`prompts.system` when set; otherwise the checkpoint's own `loopcoder_system.jinja` when the model
    directory ships one (loopcoder-nano: a small model is trained on a short prompt), else system.jinja."""
    if template:
        return template
    if model and (own := Path(model).expanduser() / MODEL_SYSTEM).is_file():
        return str(own)
    return DEFAULT_SYSTEM


def task_template(kind: str, model: str | None) -> str:
    """The checkpoint's own `loopcoder_task_<kind>.jinja` when the model directory ships one, else
    the kind's template in prompts/. A small model trained on requests as users type them (nano)
    ships one that passes the request through, instead of a wrapper it never saw."""
    if model and (own := Path(model).expanduser() / f"loopcoder_task_{kind}.jinja").is_file():
        return str(own)
    return TASK_TEMPLATES.get(kind, kind)


def system_prompt(template: str, workdir: str, chat: bool = False) -> str:
    return render(template, workdir=workdir, chat=chat)


def task_prompt(kind_or_template: str, **fields) -> str:
    """A task prompt by kind ("interactive", "swebench", "refactor") or template name."""
    return render(TASK_TEMPLATES.get(kind_or_template, kind_or_template), **fields)
