"""Lexical checks on model-given paths, shared by every sandbox.

Model output is untrusted: a path may try `..`, an absolute path elsewhere,
or a NUL byte. These checks need no filesystem; each sandbox adds its own
symlink check where the files live.
"""
from __future__ import annotations

import posixpath

from workspace.sandbox import SandboxError


def relative_inside(path: str, workdir: str) -> str:
    """`path` (relative to workdir, or absolute under it) as a normalised workdir-relative path ("." for the root)."""
    if not isinstance(path, str) or not path.strip():
        raise SandboxError("Empty path. Please provide a path relative to the repository root.")
    if "\0" in path:
        raise SandboxError(f"The path {path!r} contains a NUL byte. Please provide a valid path.")
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
