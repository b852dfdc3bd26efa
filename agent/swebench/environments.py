"""Where an instance runs: a sandbox over a working copy of its repo at base_commit.

Local: a clone from the repo cache inside a LocalSandbox (bubblewrap).
Docker: the official instance image when it is present (repo at /testbed,
its conda env `testbed`), else a clone from the repo cache copied into a
container of the local base image (copied, not mounted, so nothing the
container writes lands on the host as root). Evaluation and batch runs both start here, so an agent's patch is
produced and graded in the same kind of place.
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from agent.swebench.checkout import checkout
from agent.swebench.instances import Instance
from workspace.local import LocalSandbox
from workspace.repo import DEFAULT_ROOT, RepoError, WorkingCopy
from workspace.sandbox import Sandbox

OUTPUT_LIMIT = 32 << 20  # test logs are graded whole; the cap only guards against floods
# The instance images keep the repo's environment in a conda env named testbed.
CONDA_PREAMBLE = "if [ -f /opt/miniconda3/bin/activate ]; then . /opt/miniconda3/bin/activate && conda activate testbed; fi"


@dataclass
class EnvOptions:
    sandbox: str = "local"  # "local" or "docker"
    repo_cache: Path | None = None
    work_root: Path | None = None  # where local working copies go (default: workspace's); removed after use
    image: str | None = None  # docker: the image for cache clones (default: the local base image)
    network: bool = False


@dataclass
class InstanceEnv:
    sandbox: Sandbox
    diff: Callable[[], str]  # the patch against the commit the copy started from, SWE-bench hygiene
    where: str  # for logs: "local clone of ...", "image ..."


class _Activated:
    """An instance image's sandbox with the testbed env active in every command, as the harness's scripts have it."""

    def __init__(self, sandbox: Sandbox):
        self._sandbox, self.workdir = sandbox, sandbox.workdir

    def run(self, command: str, timeout: float = 120.0, env: dict[str, str] | None = None):
        return self._sandbox.run(f"{CONDA_PREAMBLE}\n{command}", timeout, env)

    def __getattr__(self, name: str):  # files, diff and close as the sandbox has them
        return getattr(self._sandbox, name)


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
        # the diff is taken inside the sandbox: host git must never read a .git the model could write
        yield InstanceEnv(sandbox, lambda: sandbox.diff(copy.base_commit), f"local clone of {copy.source}")


def _cache_copy(instance: Instance, options: EnvOptions) -> WorkingCopy:
    """A fresh clone at base_commit; a context manager that removes it."""
    if options.repo_cache is None:
        raise RepoError(f"instance {instance.instance_id}: no --repo-cache given and no instance image to use; "
                        "pass --repo-cache DIR holding owner__repo clones, or use --sandbox docker with "
                        "the instance's swebench/sweb.eval.x86_64.* image pulled")
    return checkout(options.repo_cache, instance, options.work_root or DEFAULT_ROOT)


def _docker_env(instance: Instance, options: EnvOptions, stack: ExitStack) -> InstanceEnv:
    from workspace.docker_sandbox import BASE_IMAGE, DockerSandbox, docker_client, swebench_image

    client = docker_client()
    image = swebench_image(instance.instance_id)
    if client.images.list(name=image):
        # The image holds the repo at /testbed with its setup committed on top of base_commit:
        # diffs are taken against that HEAD, test files are reset to base_commit.
        sandbox = stack.enter_context(DockerSandbox(image, workdir="/testbed", network=options.network,
                                                    output_limit=OUTPUT_LIMIT, client=client))
        return InstanceEnv(_Activated(sandbox), sandbox.diff, f"image {image}")
    copy = stack.enter_context(_cache_copy(instance, options))
    image = options.image or BASE_IMAGE
    sandbox = stack.enter_context(DockerSandbox(image, copy_from=copy.path, base_commit=copy.base_commit,
                                                network=options.network, output_limit=OUTPUT_LIMIT, client=client))
    return InstanceEnv(sandbox, sandbox.diff, f"{image} over a clone of {copy.source}")
