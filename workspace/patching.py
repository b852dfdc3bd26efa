"""Patches in and out of a working copy, the same way on the host and in a container.

The diff is one bash script (so it runs unchanged inside a Docker image) that
follows SWE-bench patch hygiene: `git diff --binary` against the base commit
with a/ and b/ prefixes whatever the user's git config says, new files
included through a throw-away index and object store (the real ones are
never written), junk
files left out. Applying tries `git apply`, then `git apply --3way`, then
`patch --fuzz`, and puts the files back after a try that failed half-way.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from loopcoder.workspace.sandbox import Sandbox, SandboxError

# Files an agent's commands leave behind that never belong in a patch.
JUNK_GLOBS = (
    "**/__pycache__/**", "**/*.pyc", "**/*.pyo", "**/*.orig", "**/*.rej", "**/.pytest_cache/**",
    "**/*.egg-info/**", "**/.mypy_cache/**", "**/.hypothesis/**", "**/.DS_Store", "**/*.swp",
    ".loopcoder-apply.patch",
)
_EXCLUDES = " ".join(shlex.quote(f":(exclude,glob){g}") for g in JUNK_GLOBS)

# $1 = base commit. Prints the patch on stdout.
DIFF_SCRIPT = f"""set -euo pipefail
export GIT_OPTIONAL_LOCKS=0
cd "$(git rev-parse --show-toplevel)"
real=$(git rev-parse --git-path index)
objects=$(cd "$(git rev-parse --git-path objects)" && pwd)
idx=$(mktemp); rm -f "$idx"; tmp_objects=$(mktemp -d); trap 'rm -rf "$idx" "$idx.lock" "$tmp_objects"' EXIT
if [ -f "$real" ]; then cp -p "$real" "$idx"; fi
# a throw-away index and object store: the repository's own may be read-only (in-place runs)
export GIT_INDEX_FILE="$idx" GIT_OBJECT_DIRECTORY="$tmp_objects" GIT_ALTERNATE_OBJECT_DIRECTORIES="$objects"
# untracked, not ignored, not junk; a trailing / marks a nested repository, left out
git ls-files -z --others --exclude-standard -- . {_EXCLUDES} | {{ grep -zv '/$' || true; }} \\
  | xargs -0 -r git add --intent-to-add --
git -c diff.noprefix=false -c diff.mnemonicPrefix=false -c diff.relative=false -c core.quotePath=true \\
  diff --binary --no-color --no-ext-diff --no-textconv --no-renames --src-prefix=a/ --dst-prefix=b/ \\
  "$1" -- . {_EXCLUDES}
"""


def diff_command(base_commit: str) -> list[str]:
    """argv that prints the working copy's patch against base_commit (run it in the working copy)."""
    return ["bash", "-c", DIFF_SCRIPT, "loopcoder-diff", base_commit]


def diff_shell(base_commit: str) -> str:
    """diff_command as one shell command line, for a sandbox's run()."""
    return shlex.join(diff_command(base_commit))


def finish_patch(raw: bytes) -> str:
    """Decode and make sure a non-empty patch ends with a newline (`git apply` calls it corrupt otherwise)."""
    text = raw.decode("utf-8", errors="replace")
    return text + "\n" if text and not text.endswith("\n") else text


@dataclass
class ApplyResult:
    applied: bool
    method: str | None  # the first method that worked: "git apply", "git apply --3way" or "patch --fuzz=5"
    log: list[str] = field(default_factory=list)  # what each try printed

    def summary(self) -> str:
        if self.applied:
            return f"Patch applied with {self.method}."
        return "Patch did not apply:\n" + "\n".join(self.log)


PATCH_FILE = ".loopcoder-apply.patch"
METHODS = (
    ("git apply", f"git apply --verbose --binary --whitespace=nowarn {PATCH_FILE}"),
    ("git apply --3way", f"git apply --verbose --binary --3way --whitespace=nowarn {PATCH_FILE}"),
    # --unified: never read the patch as an ed script (ed can run commands)
    ("patch --fuzz=5", f"patch --batch --unified --fuzz=5 -p1 --no-backup-if-mismatch --reject-file=- --dry-run -i "
                       f"{PATCH_FILE} >/dev/null && patch --batch --unified --fuzz=5 -p1 --no-backup-if-mismatch "
                       f"--reject-file=- -i {PATCH_FILE}"),
)
# A file header naming a path with a .git component (any case): git's own files, such as hooks and config.
_GIT_DIR_PATH = re.compile(r"^(?:diff --git |--- |\+\+\+ |\*\*\* |Index: |rename to |copy to |rename from |copy from )"
                           r"(?:.*/)?\.git(?:/|\s|$)", re.IGNORECASE | re.MULTILINE)


def apply_patch(sandbox: Sandbox, patch: str, timeout: float = 120.0) -> ApplyResult:
    """Apply a unified diff at the root of the sandbox's working copy; never raises for a bad patch."""
    if not patch.strip():
        return ApplyResult(False, None, ["the patch is empty"])
    if not patch.endswith("\n"):
        patch += "\n"
    if _GIT_DIR_PATH.search(patch):
        return ApplyResult(False, None, ["the patch writes into a .git directory (hooks, config); it was not applied"])
    sandbox.write_file(PATCH_FILE, patch.encode("utf-8", errors="surrogateescape"))
    result = ApplyResult(False, None)
    try:
        touched = _touched_paths(sandbox, timeout)
        for name, command in METHODS:
            before = _snapshot(sandbox, touched)
            r = sandbox.run(command, timeout=timeout)
            if r.exit_code == 0:
                result.applied, result.method = True, name
                result.log.append(f"{name}: ok")
                break
            result.log.append(f"{name} failed (exit {r.exit_code}):\n{r.output.strip()}")
            _restore(sandbox, before)
    finally:
        sandbox.run(f"rm -f {PATCH_FILE}", timeout=timeout)
    return result


def _touched_paths(sandbox: Sandbox, timeout: float) -> list[str]:
    """Paths the patch names (from `git apply --numstat -z`), plus the index when there is one."""
    r = sandbox.run(f"git apply --numstat -z {PATCH_FILE} 2>/dev/null; printf '\\0'; "
                    "git rev-parse --git-path index 2>/dev/null", timeout=timeout)
    *numstat, index = r.output.split("\0")
    paths = []
    for token in numstat:
        fields = token.split("\t")
        name = fields[2] if len(fields) == 3 else token  # renames: "a\td\t" then old and new as tokens
        if name:
            paths.append(name)
    if index.strip():
        paths.append(index.strip())
    return paths


def _snapshot(sandbox: Sandbox, paths: list[str]) -> dict[str, bytes | None]:
    saved: dict[str, bytes | None] = {}
    for path in paths:
        try:
            saved[path] = sandbox.read_file(path) if sandbox.exists(path) else None
        except SandboxError:  # outside the copy or not a file: never written back either
            continue
    return saved


def _restore(sandbox: Sandbox, saved: dict[str, bytes | None]) -> None:
    """Undo a try that failed half-way (`--3way` leaves conflict markers and an index with stages)."""
    gone = []
    for path, data in saved.items():
        if data is None:
            gone.append(path)
        elif not sandbox.exists(path) or sandbox.read_file(path) != data:
            sandbox.write_file(path, data)
    if gone:
        sandbox.run("rm -f -- " + " ".join(shlex.quote(sandbox.resolve(p)) for p in gone), timeout=60)


# -- reading a git diff ----------------------------------------------------------------

_DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


def _file_blocks(patch: str) -> list[tuple[str, str, str]]:
    """(old path, new path, header block) per file of a git diff."""
    heads = list(_DIFF_HEADER.finditer(patch))
    out = []
    for n, m in enumerate(heads):
        end = heads[n + 1].start() if n + 1 < len(heads) else len(patch)
        hunk = patch.find("\n@@", m.end(), end)
        out.append((m.group(1), m.group(2), patch[m.end():hunk if hunk >= 0 else end]))
    return out


def patch_files(patch: str) -> list[str]:
    """Paths a unified git diff touches (new side, and old side for renames/deletes), in order."""
    seen: dict[str, None] = {}
    for old, new, _ in _file_blocks(patch):
        seen.setdefault(old)
        seen.setdefault(new)
    return list(seen)


def deleted_files(patch: str) -> set[str]:
    """Paths a git diff deletes (and the old side of renames): they do not exist once it is applied."""
    gone = set()
    for old, new, header in _file_blocks(patch):
        if "\ndeleted file mode" in header:
            gone.add(old)
        elif old != new:
            gone.add(old)
    return gone


def looks_like_test(path: str) -> bool:
    """Test code or test configuration, which a fix has no business changing."""
    name = path.rsplit("/", 1)[-1]
    parts = path.split("/")[:-1]
    return (name.startswith("test_") or name.endswith(("_test.py", "_tests.py")) or name == "tests.py"
            or name in ("conftest.py", "pytest.ini", "tox.ini") or any(p in ("test", "tests", "testing") for p in parts))
