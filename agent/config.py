"""Configuration: the defaults below, the user file, a --config file, --set overrides.

Merged in that order. The pydantic models below are the schema and the
defaults: one line per key (type, limit, default, what it means), so adding a
key is one line here. Every source is checked against them, so a typo, a wrong
type or a limit of 0 is one line naming the key and the source instead of a
surprise deep inside a run. `Config.to_dict()` is what a trajectory records
as the effective configuration; `loopcoder config` prints it.
"""
from __future__ import annotations

import os
import re
import types
from pathlib import Path
from typing import Annotated, Literal, Union, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

DEFAULTS_SOURCE = "the defaults in agent/config.py"
Positive = Annotated[int, Field(gt=0)]  # a count or limit where 0 or less makes no sense
Seconds = Annotated[float, Field(gt=0)]


def _size(text: str) -> str:
    from loopcoder.workspace.limits import parse_size
    from loopcoder.workspace.sandbox import SandboxError

    try:
        parse_size(text)
    except SandboxError:
        raise ValueError("must be a positive size such as 4g, 512m or 1073741824") from None
    return text


Size = Annotated[str, AfterValidator(_size)]  # bytes as text: '4g', '512m', '1.5G', '1073741824'


class ConfigError(ValueError):
    """A configuration problem, worded for the user."""


class Section(BaseModel):
    """Strict (no "30" for 30, no true for 1) and closed (unknown keys are errors)."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=True)


class BackendConfig(Section):
    name: Literal["plt", "hf", "openai", "replay"] = "plt"  # runtime.backends.BACKENDS: plt (in process), hf (any causal LM), openai (a server), replay (scripted outputs)
    model: str | None = None  # checkpoint directory (plt, hf); model name (openai)
    base_url: str | None = None  # openai: the server, e.g. http://localhost:8000/v1 (or $OPENAI_BASE_URL)
    device: str | None = None  # null = cuda when available, else cpu; or cpu, cuda, cuda:1, ...
    dtype: str | None = None  # null = bfloat16 on GPU, float32 on CPU (bfloat16 when quantized); or bfloat16, float16, float32
    quantize: str | None = None  # plt: null = as the checkpoint is; int8 or int4 = weight-only quantized while loading
    compile: bool = False  # plt: decode through torch.compile (CUDA graphs on a GPU); the first tokens wait for the compile
    script: str | None = None  # replay: JSON list / JSONL of raw outputs, or a trajectory file


class SamplingConfig(Section):
    temperature: Annotated[float, Field(ge=0)] = 0.0  # 0 = greedy
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0  # 0 = off
    seed: int | None = None
    max_new_tokens: Positive = 2048  # per assistant turn; also the room kept free in the context window
    speculative: Literal["prompt_lookup", "off"] = "prompt_lookup"  # plt/hf: draft tokens copied from the context, verified in one forward; or off
    speculative_tokens: Annotated[int, Field(gt=0, le=16)] = 8  # the most tokens drafted at once; the draft adapts below it (16 = runtime.sampling.MAX_DRAFT_TOKENS)
    constrained_tool_calls: bool = True  # plt, hf: a <tool_call> must follow the tools' JSON schemas (grammar-masked sampling)


class AgentConfig(Section):
    max_steps: Positive = 50  # assistant turns
    max_tokens: Positive = 200000  # generated tokens over the whole run
    max_seconds: Seconds = 3600  # wall time of the run
    max_format_errors: Positive = 3  # consecutive turns without a valid call
    stuck_repeats: Positive = 3  # same action and observation this many times: warn, then stop
    max_consecutive_timeouts: Positive = 3  # commands in a row that hit their timeout


class ContextConfig(Section):
    window: Positive | None = None  # tokens; null = the backend's context window
    keep_last_observations: Positive = 8  # observations kept in full when older ones must be elided


class SandboxConfig(Section):
    kind: Literal["local", "docker", "none"] = "local"  # local (bubblewrap), docker, or none (no isolation at all: commands run on this machine)
    image: str | None = None  # docker image; null = the sandbox's default
    command_timeout: Seconds = 120  # seconds: a command's default timeout, and the most the model may ask for
    network: bool = False
    env: list[str] = []  # names of host environment variables commands may see (all others never enter)
    memory: Size | None = "4g"  # memory of a command and everything it starts; null = no limit
    pids: Positive | None = 1024  # processes and threads at once; null = no limit
    cpus: Annotated[float, Field(gt=0)] | None = None  # CPU time as a number of cores, e.g. 2; null = no limit
    file_size: Size | None = "8g"  # the largest file a command may write; null = no limit


class WorkspaceConfig(Section):
    in_place: bool = False  # edit the repository directly instead of a separate worktree


class PromptsConfig(Section):
    system: str | None = None  # null = the checkpoint's loopcoder_system.jinja if it ships one, else system.jinja
    task: str = "task_interactive.jinja"


class RunConfig(Section):
    output_dir: str = "~/.cache/loopcoder/runs"  # trajectories and patches when no path is given


class Config(Section):
    backend: BackendConfig = BackendConfig()
    sampling: SamplingConfig = SamplingConfig()
    agent: AgentConfig = AgentConfig()
    context: ContextConfig = ContextConfig()
    sandbox: SandboxConfig = SandboxConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()
    prompts: PromptsConfig = PromptsConfig()
    run: RunConfig = RunConfig()

    def to_dict(self) -> dict:
        return self.model_dump()


def user_config_path() -> Path:
    env = os.environ.get("LOOPCODER_CONFIG")
    return Path(env).expanduser() if env else Path("~/.config/loopcoder/config.yaml").expanduser()


def load_config(config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                user_file: bool = True) -> Config:
    """Defaults <- user file (if present) <- config_file <- `key.sub=value` overrides."""
    layers = _Layers()
    if user_file and (path := user_config_path()).is_file():
        layers.add(_read_yaml(path), str(path))
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        layers.add(_read_yaml(path), str(path))
    for item in overrides:
        key, value = parse_override(item)
        layers.add(_nest(key, value), f"--set {item}")
    return layers.build()


def from_dict(data: dict) -> Config:
    """A Config from a recorded `to_dict()` (a trajectory's), checked like any other source."""
    layers = _Layers()
    layers.add(data, "the recorded config")
    return layers.build()


def parse_override(item: str) -> tuple[str, object]:
    """`agent.max_steps=30` -> ("agent.max_steps", 30); values are YAML scalars, except that a
    text key keeps the text as written (`--set sandbox.image=3.11` is "3.11", not 3.11)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key.sub=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if value is not None and not isinstance(value, str) and _takes_text(key):
        value = raw
    return key, value


def _takes_text(dotted: str) -> bool:
    """Whether the key's type is text (str, str | None, or a choice of strings)."""
    annotation = Config
    for part in dotted.split("."):
        fields = annotation.model_fields if isinstance(annotation, type) and issubclass(annotation, BaseModel) else {}
        if part not in fields:
            return False
        annotation = fields[part].annotation
    kinds = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    kinds = [get_args(k)[0] if get_origin(k) is Annotated else k for k in kinds]
    return any(k is str or get_origin(k) is Literal for k in kinds)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(data).__name__}")
    return data


def _nest(key: str, value: object) -> dict:
    out: dict = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


class _Layers:
    """Sources merged key by key, remembering which source set each key, for the error messages."""

    def __init__(self):
        self.data: dict = {}
        self.sources: dict[str, str] = {}

    def add(self, new: dict, source: str) -> None:
        self._merge(self.data, new, Config, source, "")

    def _merge(self, base: dict, new: dict, model: type[BaseModel], source: str, prefix: str) -> None:
        for key, value in new.items():
            dotted = f"{prefix}{key}"
            field = model.model_fields.get(key) if isinstance(key, str) else None
            if field is None:
                known = ", ".join(model.model_fields)
                raise ConfigError(f"unknown config key {dotted!r} (from {source}); known keys here: {known}")
            section = field.annotation
            if isinstance(section, type) and issubclass(section, BaseModel):
                if not isinstance(value, dict):
                    raise ConfigError(f"config key {dotted!r} (from {source}) is a section; set its keys, e.g. {dotted}.<key>")
                self._merge(base.setdefault(key, {}), value, section, source, f"{dotted}.")
            else:
                base[key] = value
                self.sources[dotted] = source

    def build(self) -> Config:
        try:
            return Config.model_validate(self.data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            dotted = ".".join(str(part) for part in error["loc"])
            source = self.sources.get(dotted, DEFAULTS_SOURCE)
            raise ConfigError(f"config key {dotted!r} (from {source}) {_problem(error)}, got {error['input']!r}") from None


def _problem(error: dict) -> str:
    """pydantic's words, shorter where there are shorter ones: "must be positive", "must be one of a, b"."""
    ctx = error.get("ctx", {})
    if error["type"] == "greater_than" and ctx.get("gt") == 0:
        return "must be positive"
    if error["type"] == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if error["type"] == "value_error":
        return str(ctx["error"])
    if error["type"] == "literal_error":
        return "must be one of " + ", ".join(re.findall(r"'([^']*)'", ctx["expected"]))
    return error["msg"].replace("Input should be", "must be")
