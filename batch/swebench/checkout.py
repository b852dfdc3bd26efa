"""Working copies of an instance's repository at its base commit, from a local repo cache.

A repo cache is a directory of `owner__name` (or `owner__name.git`) git
repositories, working or bare mirrors. The copy is a `git clone --shared`
(objects borrowed, read-only) checked out detached at base_commit, so the
cache is never written and many instances of one repo share its objects.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import git

from loopcoder.batch.swebench.cleanup import tracked_tempdir, untrack
from loopcoder.batch.swebench.instances import Instance
from loopcoder.workspace.leftovers import owner_suffix, reap_dirs
from loopcoder.workspace.repo import RepoError, WorkingCopy


def cached_repo(cache: Path, instance: Instance) -> Path:
    for name in (instance.repo_dirname, instance.repo_dirname + ".git"):
        if (cache / name).is_dir():
            return (cache / name).resolve()
    raise RepoError(
        f"instance {instance.instance_id}: the repo cache {cache} has no {instance.repo_dirname} "
        f"(or {instance.repo_dirname}.git); add it with "
        f"`git clone --mirror https://github.com/{instance.repo} {cache / (instance.repo_dirname + '.git')}`"
    )


def checkout(cache: Path, instance: Instance, root: Path) -> WorkingCopy:
    """A fresh working copy of the instance's repo at base_commit under `root`; close() removes it."""
    source = cached_repo(cache, instance)
    root.mkdir(parents=True, exist_ok=True)
    reap_dirs(root)
    dest = tracked_tempdir(f"{instance.instance_id}-", root, suffix=owner_suffix())  # the signal handler removes it too
    try:
        with git.Repo.clone_from(str(source), dest, shared=True, no_checkout=True, quiet=True) as repo:
            try:
                repo.git.checkout("--quiet", "--detach", instance.base_commit)
            except git.GitCommandError:
                raise RepoError(f"instance {instance.instance_id}: base_commit {instance.base_commit} is not in "
                                f"{source}; fetch it there (git -C {source} fetch --all)") from None
            repo.delete_remote("origin")  # nothing can be pushed back by accident
            commit = repo.head.commit.hexsha
    except git.GitCommandError as exc:
        _remove(dest)
        raise RepoError(f"instance {instance.instance_id}: cannot clone {source}: {exc.stderr.strip()}") from None
    except BaseException:
        _remove(dest)
        raise
    return _TrackedCopy(dest, commit, source)


class _TrackedCopy(WorkingCopy):
    def close(self) -> None:
        super().close()
        untrack(self.path)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    untrack(path)
