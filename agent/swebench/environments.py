"""Where an instance runs: a sandbox over a working copy of its repo at base_commit.

Local: a clone from the repo cache inside a LocalSandbox (bubblewrap).
Docker: the official instance image when it is present (repo at /testbed,
its conda env `testbed`), else a clone from the repo cache inside the local
base image. Evaluation and batch runs both start here, so an agent's patch is
produced and graded in the same kind of place.
"""
from __future__ import annotations

import shlex
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from agent.swebench.checkout import checkout
from agent.swebench.instances import Instance
from agent.swebench.specs import CONDA_PREAMBLE
from workspace.local import LocalSandbox
from workspace.patching import diff_command, finish_patch
from workspace.repo import RepoError
from workspace.sandbox import Sandbox

OUTPUT_LIMIT = 32 << 20  # test logs are graded whole; the cap only guards against floods


def instance_image(instance_id: str) -> str:
    """The official harness's image name: `__` becomes `_1776_` (Docker forbids `__`), lower case."""
    return f"swebench/sweb.eval.x86_64.{instance_id.replace('__', '_1776_').lower()}:latest"


@dataclass
class EnvOptions:
    sandbox: str = "local"  # "local" or "docker"
    repo_cache: Path | None = None
    work_root: Path | None = None  # where local working copies go (removed after each instance)
    image: str | None = None  # docker: the image for cache clones (default: the local base image)
    network: bool = False


@dataclass
class InstanceEnv:
    sandbox: Sandbox
    base_commit: str
    preamble: str  # shell prefix that activates the repo's environment ("" when none)
    where: str  # for logs: "local clone of ...", "image ..."

    def diff(self) -> str:
        """The working copy's patch against base_commit, SWE-bench hygiene (workspace.patching)."""
        result = self.sandbox.run(shlex.join(diff_command(self.base_commit)), timeout=300)
        if result.exit_code != 0:
            raise RepoError(f"git diff failed in {self.where}: {result.output.strip()[-2000:]}")
        return finish_patch(result.output.encode("utf-8", errors="surrogateescape"))


@contextmanager
def open_instance(instance: Instance, options: EnvOptions) -> Iterator[InstanceEnv]:
    """A ready environment for one instance; everything it made is removed on exit."""
    with ExitStack() as stack:
        if options.sandbox == "docker":
            yield _docker_env(instance, options, stack)
            return
        if options.sandbox != "local":
            raise ValueError(f"unknown sandbox kind {options.sandbox!r}; use local or docker")
        copy = stack.enter_context(_cache_copy(instance, options))
        sandbox = stack.enter_context(LocalSandbox(copy.path, network=options.network, output_limit=OUTPUT_LIMIT))
        yield InstanceEnv(sandbox, copy.base_commit, "", f"local clone of {copy.source}")


@contextmanager
def _cache_copy(instance: Instance, options: EnvOptions):
    if options.repo_cache is None:
        raise RepoError(f"instance {instance.instance_id}: no --repo-cache given and no instance image to use; "
                        "pass --repo-cache DIR holding owner__repo clones, or use --sandbox docker with "
                        f"the image {instance_image(instance.instance_id)} pulled")
    root = options.work_root or options.repo_cache.parent / ".loopcoder-work"
    copy = checkout(options.repo_cache, instance, root)
    try:
        yield copy
    finally:
        copy.close()


def _docker_env(instance: Instance, options: EnvOptions, stack: ExitStack) -> InstanceEnv:
    from workspace.docker_sandbox import BASE_IMAGE, DockerSandbox, image_exists

    image = instance_image(instance.instance_id)
    if image_exists(image):
        sandbox = stack.enter_context(DockerSandbox(image, workdir="/testbed", network=options.network,
                                                    output_limit=OUTPUT_LIMIT))
        head = sandbox.run("git rev-parse HEAD", timeout=60).output.strip()
        # The image commits its setup on top of base_commit; diffs are taken against what it checked out.
        return InstanceEnv(sandbox, head or instance.base_commit, CONDA_PREAMBLE, f"image {image}")
    copy = stack.enter_context(_cache_copy(instance, options))
    sandbox = stack.enter_context(DockerSandbox(options.image or BASE_IMAGE, mount=copy.path,
                                                network=options.network, output_limit=OUTPUT_LIMIT))
    return InstanceEnv(sandbox, copy.base_commit, "", f"{options.image or BASE_IMAGE} over a clone of {copy.source}")
