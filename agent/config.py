"""Configuration: shipped defaults, user file, --config file, --set overrides.

Merged in that order. The dataclasses below are the schema: every key has a
type, so a typo or a wrong type is an error that names the key and the source
instead of a surprise deep inside a run. `Config.to_dict()` is what a
trajectory records as the effective configuration.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULTS = Path(__file__).with_name("defaults.yaml")


class ConfigError(ValueError):
    """A configuration problem, worded for the user."""


@dataclass
class BackendConfig:
    name: str
    model: str | None
    base_url: str | None
    device: str | None
    dtype: str | None
    quantize: str | None
    script: str | None


@dataclass
class SamplingConfig:
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    max_new_tokens: int
    constrained_tool_calls: bool


@dataclass
class AgentConfig:
    max_steps: int
    max_tokens: int
    max_seconds: float
    max_format_errors: int
    stuck_repeats: int
    max_consecutive_timeouts: int


@dataclass
class ContextConfig:
    window: int | None
    keep_last_observations: int


@dataclass
class SandboxConfig:
    kind: str
    image: str | None
    command_timeout: float
    network: bool
    env: list[str]
    memory: str | None
    pids: int | None
    cpus: float | None
    file_size: str | None


@dataclass
class WorkspaceConfig:
    in_place: bool


@dataclass
class PromptsConfig:
    system: str | None
    task: str


@dataclass
class RunConfig:
    output_dir: str


@dataclass
class Config:
    backend: BackendConfig
    sampling: SamplingConfig
    agent: AgentConfig
    context: ContextConfig
    sandbox: SandboxConfig
    workspace: WorkspaceConfig
    prompts: PromptsConfig
    run: RunConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CHOICES = {
    "backend.name": ("plt", "hf", "openai", "replay"),
    "sandbox.kind": ("local", "docker", "none"),
}
_SIZES = {"sandbox.memory", "sandbox.file_size"}
_POSITIVE = {"agent.max_steps", "agent.max_tokens", "agent.max_seconds", "agent.max_format_errors",
             "agent.stuck_repeats", "agent.max_consecutive_timeouts", "context.keep_last_observations",
             "context.window", "sampling.max_new_tokens", "sandbox.command_timeout", "sandbox.pids", "sandbox.cpus"}


def user_config_path() -> Path:
    env = os.environ.get("LOOPCODER_CONFIG")
    return Path(env).expanduser() if env else Path("~/.config/loopcoder/config.yaml").expanduser()


def load_config(config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                user_file: bool = True) -> Config:
    """Defaults <- user file (if present) <- config_file <- `key.sub=value` overrides."""
    data = _read_yaml(DEFAULTS)
    if user_file and (path := user_config_path()).is_file():
        _merge(data, _read_yaml(path), source=str(path))
    if config_file is not None:
        path = Path(config_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        _merge(data, _read_yaml(path), source=str(path))
    for item in overrides:
        key, value = parse_override(item)
        _merge(data, _nest(key, value), source=f"--set {item}")
    return _build(Config, data, prefix="")


def from_dict(data: dict) -> Config:
    """A Config from a recorded `to_dict()` (a trajectory's), checked like any other source."""
    merged = _read_yaml(DEFAULTS)
    _merge(merged, data, source="the recorded config")
    return _build(Config, merged, prefix="")


def parse_override(item: str) -> tuple[str, object]:
    """`agent.max_steps=30` -> ("agent.max_steps", 30); values are YAML scalars."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key.sub=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), _RawString(raw, value)


class _RawString:
    """A --set value with its original text, so `--set sandbox.image=3.11` can stay a string."""

    def __init__(self, raw: str, value: object):
        self.raw, self.value = raw, value


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
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


def _merge(base: dict, new: dict, source: str, prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key {dotted!r} (from {source}); known keys here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {dotted!r} (from {source}) is a section; set its keys, e.g. {dotted}.<key>")
            _merge(base[key], value, source, prefix=f"{dotted}.")
        else:
            base[key] = (value, source)


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        value = data[f.name]
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], value, prefix=f"{dotted}.")
        else:
            value, source = value if isinstance(value, tuple) else (value, "agent/defaults.yaml")
            kwargs[f.name] = _check(dotted, hints[f.name], value, source)
    return cls(**kwargs)


def _check(key: str, hint, value, source: str):
    raw = None
    if isinstance(value, _RawString):
        raw, value = value.raw, value.value
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    base = next(t for t in allowed if t is not type(None))
    if typing.get_origin(base) is list:  # a list of names, e.g. sandbox.env
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"config key {key!r} (from {source}) must be a list of strings, got {value!r}")
        return value
    if base is str and raw is not None and not isinstance(value, str) and value is not None:
        value = raw  # `--set sandbox.image=3.11` means the string "3.11"
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        nullable = " or null" if type(None) in allowed else ""
        raise ConfigError(f"config key {key!r} (from {source}) must be {base.__name__}{nullable}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"config key {key!r} (from {source}) must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"config key {key!r} (from {source}) must be positive, got {value!r}")
    if key in _SIZES:
        from workspace.limits import parse_size
        from workspace.sandbox import SandboxError

        try:
            parse_size(value, key)
        except SandboxError as error:
            raise ConfigError(f"config key {key!r} (from {source}): {error}") from None
    return value
