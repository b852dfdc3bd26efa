"""Working copies of an instance's repository at its base commit, from a local repo cache.

A repo cache is a directory of `owner__name` (or `owner__name.git`) git
repositories, working or bare mirrors. The copy is a `git clone --shared`
(objects borrowed, read-only) checked out detached at base_commit, so the
cache is never written and many instances of one repo share its objects.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from loopcoder.batch.swebench.cleanup import tracked_tempdir, untrack
from loopcoder.batch.swebench.instances import Instance
from loopcoder.workspace.leftovers import owner_suffix, reap_dirs
from loopcoder.workspace.repo import RepoError, WorkingCopy, clone_at


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
        commit = clone_at(source, dest, instance.base_commit, what="base_commit")
    except RepoError as exc:
        _remove(dest)
        raise RepoError(f"instance {instance.instance_id}: {exc}") from None
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
