"""Lexical checks on model-given paths and commands, shared by every sandbox.

Model output is untrusted: a path may try `..`, an absolute path elsewhere,
or a NUL byte. These checks need no filesystem; each sandbox adds its own
symlink check where the files live.
"""
from __future__ import annotations

import os
import posixpath

from loopcoder.workspace.sandbox import SandboxError


def relative_inside(path: str, workdir: str) -> str:
    """`path` (relative to workdir, or absolute under it) as a normalised workdir-relative path ("." for the root)."""
    if not isinstance(path, str) or not path.strip():
        raise SandboxError("Empty path. Please provide a path relative to the repository root.")
    if "\0" in path or not _encodable(path):
        raise SandboxError(f"The path {path!r} contains a NUL byte or an invalid character. Please provide a valid path.")
    workdir = posixpath.normpath(workdir)
    if posixpath.isabs(path):
        norm = posixpath.normpath(path)
        if norm == workdir:
            return "."
        if not norm.startswith(workdir.rstrip("/") + "/"):
            raise SandboxError(
                f"The path {path} is outside the repository {workdir}. "
                f"Please use a path relative to the repository root or an absolute path under {workdir}."
            )
        return posixpath.relpath(norm, workdir)
    rel = posixpath.normpath(path)
    if rel == ".." or rel.startswith("../"):
        raise SandboxError(
            f"The path {path} leaves the repository {workdir}. Please use a path inside the repository."
        )
    return rel


def outside_message(path: str, target: str, workdir: str) -> str:
    return (
        f"The path {path} resolves to {target}, outside the repository {workdir} "
        f"(through a symbolic link). Please use a path inside the repository."
    )


def check_command(command: str, env: dict[str, str] | None) -> None:
    """Refuse what no exec call can carry (a NUL byte) before it becomes an exception deep in the OS layer."""
    if "\0" in command or not _encodable(command):
        raise SandboxError("The command contains a NUL byte or an invalid character, which a shell command "
                           "cannot hold; remove it.")
    for key, value in (env or {}).items():
        if "\0" in f"{key}{value}" or "=" in key or not key or not _encodable(f"{key}{value}"):
            raise SandboxError(f"Invalid environment variable {key!r}: names need no '=' and neither may hold a NUL byte.")


def _encodable(text: str) -> bool:
    """False for lone surrogates (JSON can carry them) that no file name or argv can hold."""
    try:
        os.fsencode(text)
        return True
    except UnicodeEncodeError:
        return False
