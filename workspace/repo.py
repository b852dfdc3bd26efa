"""Working copies of a user's repository, through GitPython.

A working copy is a `git clone --shared` of the repository checked out
(detached) at the base commit, in a directory outside the repository. The
clone borrows the repository's objects read-only and keeps its own .git, so
commands in a sandbox can use git freely (`git stash`, `git commit`) without
ever writing to the user's repository; removing the directory is the whole
cleanup. The user's uncommitted work (staged, unstaged, untracked and not
ignored) can be carried into the copy; the repository itself is only read.
In-place mode works on the repository directly and takes HEAD as the base.

Once a sandbox has run commands in a copy, its .git is the model's: host git
would obey its config (core.fsmonitor, filter drivers, core.worktree, hooks).
So the host runs git on a copy only before the sandbox opens (the clone,
the carried changes, the snapshot); afterwards the diff is computed inside
the sandbox (`sandbox.diff`), and patches reach the user's repository as data,
through `git apply`, which refuses paths in .git or beyond a symbolic link.
Copies are named ...pid<N> after the process that made them: creating one
removes those whose process is gone (workspace.leftovers).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from loopcoder.workspace.leftovers import owner_suffix, reap_dirs
from loopcoder.workspace.patching import ApplyResult, apply_patch, diff_command, finish_patch

# Where a sandbox shows a copy to commands and the model, wherever the copy really is (stable_name).
SHOWN_ROOT = Path("~/.cache/loopcoder/worktrees").expanduser()
DEFAULT_ROOT = Path(os.environ.get("LOOPCODER_WORKTREES", str(SHOWN_ROOT))).expanduser()  # where copies are
_READ_ONLY_ENV = {"GIT_OPTIONAL_LOCKS": "0"}  # `git status`/`diff` must not refresh the user's index
# Who signs the commits LoopCoder writes itself: start snapshots, task repositories, and refactor
# branches in a repository with no user.name/user.email.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "loopcoder", "GIT_AUTHOR_EMAIL": "loopcoder@localhost",
                "GIT_COMMITTER_NAME": "loopcoder", "GIT_COMMITTER_EMAIL": "loopcoder@localhost"}


class RepoError(Exception):
    """A repository problem the user must fix; the message says what to do."""


def _run(cwd: Path | str, argv: list[str]) -> bytes:
    """Run a git command (or a git-driven script) in cwd: raw stdout, trailing newline kept, RepoError on failure."""
    try:
        return git.Git(str(cwd)).execute(argv, env=_READ_ONLY_ENV, stdout_as_string=False,
                                         strip_newline_in_stdout=False)
    except git.GitCommandError as e:
        stderr = e.stderr.strip() if isinstance(e.stderr, str) else str(e.stderr)
        raise RepoError(f"`{' '.join(argv[:3])}` failed in {cwd}: {stderr}") from None


def _git(cwd: Path | str, *args: str) -> bytes:
    return _run(cwd, ["git", *args])


def open_repo(path: str | os.PathLike) -> git.Repo:
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except git.NoSuchPathError:
        raise RepoError(f"{path} does not exist.") from None
    except git.InvalidGitRepositoryError:
        raise RepoError(f"{path} is not inside a git repository. Run `git init` and commit your files, "
                        "or point at a repository.") from None
    if repo.bare:
        raise RepoError(f"{path} is a bare repository; point at a repository with a working tree.")
    return repo


def resolve_commit(repo: git.Repo, rev: str) -> str:
    try:
        return repo.commit(rev).hexsha
    except (ValueError, git.BadName, git.GitCommandError):
        if rev == "HEAD":
            raise RepoError(f"{repo.working_tree_dir} has no commits yet; commit your files first.") from None
        raise RepoError(f"Unknown commit {rev!r} in {repo.working_tree_dir}. "
                        "Check it with `git log --oneline`, or fetch it first.") from None


def clone_at(source: Path, dest: Path, commit: str, what: str = "commit") -> str:
    """Into the empty `dest`: a `git clone --shared` of `source` (its objects borrowed, read-only), checked out
    detached at `commit`, with no remote (nothing can be pushed back by accident); returns the full commit.
    A RepoError says what failed; the caller removes `dest`. `what` names the commit in that message."""
    _git(dest, "clone", "--quiet", "--shared", "--no-checkout", str(source), ".")
    try:
        _git(dest, "checkout", "--quiet", "--detach", commit)
    except RepoError:
        raise RepoError(f"{what} {commit} is not in {source}; fetch it there (git -C {source} fetch --all)") from None
    _git(dest, "remote", "remove", "origin")
    return _git(dest, "rev-parse", "HEAD").decode().strip()


def check_repository(repo_path: str | os.PathLike) -> None:
    """RepoError unless `repo_path` is in a git repository with a commit: checked before a model loads,
    which for a 7B takes minutes."""
    with open_repo(repo_path) as repo:
        resolve_commit(repo, "HEAD")


def stable_name(source: Path, commit: str) -> str:
    """The name a copy of `source` at `commit` has inside the sandbox: the shape of the copy's own name
    (repository, commit, 8 characters), with a hash of the repository's name and commit in place of the
    random part and the owner pid. The model then reads the same path on every run of a task (greedy
    runs repeat, a prompt cache can reuse the system prompt), and never the host's temporary name;
    concurrent copies do not clash, each sandbox shows only its own."""
    return f"{source.name}-{commit[:10]}-{hashlib.sha256(f'{source.name} {commit}'.encode()).hexdigest()[:8]}"


@dataclass
class UncommittedChanges:
    staged: bytes  # git diff --cached --binary
    unstaged: bytes  # git diff --binary (index -> working tree)
    untracked: list[str]  # repo-relative paths, not ignored


def read_uncommitted(repo_dir: Path) -> UncommittedChanges:
    """The user's uncommitted work, read without writing anything to the repository."""
    unmerged = _git(repo_dir, "ls-files", "--unmerged").decode(errors="replace")
    if unmerged.strip():
        paths = sorted({line.split("\t", 1)[-1] for line in unmerged.splitlines()})
        raise RepoError(f"{repo_dir} has unresolved merge conflicts in {', '.join(paths)}. "
                        "Resolve and stage them (or commit/stash your work), or run without carrying changes.")
    flags = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/", "--dst-prefix=b/")
    staged = _git(repo_dir, "-c", "diff.noprefix=false", "diff", "--cached", *flags)
    unstaged = _git(repo_dir, "-c", "diff.noprefix=false", "diff", *flags)
    listed = _git(repo_dir, "ls-files", "-z", "--others", "--exclude-standard").decode("utf-8", "surrogateescape")
    untracked = [p for p in listed.split("\0") if p and not p.endswith("/")]  # "x/" is a nested repository
    return UncommittedChanges(staged, unstaged, untracked)


@dataclass
class WorkingCopy:
    path: Path  # where the agent works
    base_commit: str  # full hash the diff is taken against
    source: Path  # the user's repository (its top level)
    in_place: bool = False
    shown_as: str | None = None  # where a sandbox shows it to commands (stable_name); None: at `path`

    @classmethod
    def create(cls, repo_path: str | os.PathLike, commit: str | None = None, *, carry_changes: bool = False,
               in_place: bool = False, root: str | os.PathLike | None = None) -> "WorkingCopy":
        """A copy at `commit` (default HEAD); with carry_changes, HEAD plus the uncommitted work."""
        with open_repo(repo_path) as repo:
            top = Path(repo.working_tree_dir).resolve()
            head = resolve_commit(repo, "HEAD")
            base = resolve_commit(repo, commit) if commit else head
        if in_place:
            if base != head:
                raise RepoError(f"In-place mode works on HEAD ({head[:12]}), not {commit}. "
                                "Check the commit out first, or drop in-place mode to get a separate copy.")
            return cls(top, head, top, in_place=True)
        if carry_changes and base != head:
            raise RepoError(f"Uncommitted changes can only be carried onto HEAD ({head[:12]}), not {commit}. "
                            "Commit them, or do not ask to carry them.")
        changes = read_uncommitted(top) if carry_changes else None  # before cloning: fail early on bad state
        parent = Path(root) if root is not None else DEFAULT_ROOT
        parent.mkdir(parents=True, exist_ok=True)
        reap_dirs(parent)
        dest = Path(tempfile.mkdtemp(prefix=f"{top.name}-{base[:10]}-", suffix=owner_suffix(), dir=parent))
        try:
            clone_at(top, dest, base)
            if changes is not None:
                _carry(changes, top, dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return cls(dest, base, top, shown_as=str(SHOWN_ROOT / stable_name(top, base)))

    def diff(self, against: str | None = None) -> str:
        """The patch against base_commit (or `against`), SWE-bench style (binary-safe, new files, no junk,
        final newline).

        Host git: only for a copy no sandbox has touched yet (see the module's docstring).
        """
        return finish_patch(_run(self.path, diff_command(against or self.base_commit)))

    def snapshot(self) -> str:
        """A commit object of the working tree (uncommitted and untracked work included), or base_commit if clean.

        Built through a temporary index: the copy's index, refs and files stay untouched. Host git,
        like diff().
        """
        g = git.Git(str(self.path))
        if not g.execute(["git", "status", "--porcelain", "--untracked-files=all"], env=_READ_ONLY_ENV).strip():
            return self.base_commit
        with tempfile.TemporaryDirectory(prefix="loopcoder-index-") as tmp:
            real = Path(self.path, g.execute(["git", "rev-parse", "--git-path", "index"]).strip())
            index = Path(tmp, "index")
            if real.is_file():
                shutil.copyfile(real, index)
            env = {"GIT_INDEX_FILE": str(index), **GIT_IDENTITY}
            g.execute(["git", "add", "-A", "--", "."], env=env)
            tree = g.execute(["git", "write-tree"], env=env).strip()
            return g.execute(["git", "commit-tree", tree, "-p", self.base_commit, "-m",
                              "loopcoder: the working tree the run started from"], env=env).strip()

    def apply_patch(self, patch: str) -> ApplyResult:
        from loopcoder.workspace.local import LocalSandbox  # our own trusted commands: no isolation needed

        with LocalSandbox(self.path, isolate=False) as sandbox:
            return apply_patch(sandbox, patch)

    def close(self) -> None:
        """Remove the copy (never the user's repository)."""
        if not self.in_place and self.path != self.source:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "WorkingCopy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _carry(changes: UncommittedChanges, source: Path, dest: Path) -> None:
    """Reproduce staged (into the index too), unstaged and untracked work in the copy."""
    for name, patch, extra in (("staged", changes.staged, ("--index",)), ("unstaged", changes.unstaged, ())):
        if not patch.strip():
            continue
        patch_file = dest / ".git" / f"loopcoder-{name}.patch"
        patch_file.write_bytes(patch)
        try:
            _git(dest, "apply", "--binary", "--whitespace=nowarn", *extra, str(patch_file))
        except RepoError as e:
            raise RepoError(f"Could not carry the {name} changes of {source} into the copy: {e}. "
                            "Commit or stash them, or run without carrying changes.") from None
        finally:
            patch_file.unlink()
    for rel in changes.untracked:
        src, dst = source / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_file():
            shutil.copy2(src, dst)
