"""Where an instance runs: its own environment (built from its spec) over a working copy at base_commit.

Local: a clone from the repo cache in a LocalSandbox (bubblewrap), shown at
/testbed as in the official images, whose commands see the spec's venv first on PATH: no host site-packages, no user
site-packages, no inherited PYTHONPATH. The venv is shared and read-only; the
spec's `install` runs again at open, offline, into an overlay prefix in the
sandbox's private /tmp, so the repository's package is this working copy's.
Docker: the official instance image when present (repo at /testbed, conda
env `testbed`), else the instance image built from the spec (envbuild.py).
`swebench run` and `swebench eval` both open instances here, so the agent's
run_tests sees exactly the environment its patch is graded in.
"""
from __future__ import annotations

import shlex
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from loopcoder.batch.swebench.checkout import checkout
from loopcoder.batch.swebench.envbuild import (DEFAULT_ENV_CACHE, EXCLUDE_ARTIFACTS, HOST_PYTHON_VARS, EnvBuildError, LocalEnv,
                                     docker_env, effective_spec, local_env)
from loopcoder.batch.swebench.instances import Instance
from loopcoder.batch.swebench.specs import Spec, SpecMap
from loopcoder.workspace.local import LocalSandbox
from loopcoder.workspace.repo import DEFAULT_ROOT, RepoError, WorkingCopy
from loopcoder.workspace.sandbox import Sandbox

OUTPUT_LIMIT = 32 << 20  # test logs are graded whole; the cap only guards against floods
INSTALL_TIMEOUT = 1800.0
# The instance images keep the repo's environment in a conda env named testbed.
CONDA_PREAMBLE = "if [ -f /opt/miniconda3/bin/activate ]; then . /opt/miniconda3/bin/activate && conda activate testbed; fi"
OVERLAY = '"${TMPDIR:-/tmp}/loopcoder-overlay"'  # the sandbox's private /tmp


TESTBED = "/testbed"  # where an instance's repository is, to the model and the tests, in either sandbox
SANDBOXES = ("local", "docker")  # what an instance runs in: bubblewrap over a clone, or a container


@dataclass
class EnvOptions:
    sandbox: str = "local"  # one of SANDBOXES
    repo_cache: Path | None = None
    work_root: Path | None = None  # where local working copies go (default: workspace's); removed after use
    image: str | None = None  # docker: the base image instance images are built from (default: the local base image)
    network: bool = False
    specs: SpecMap = field(default_factory=SpecMap)
    env_cache: Path = DEFAULT_ENV_CACHE  # built venvs and build logs


@dataclass
class InstanceEnv:
    sandbox: Sandbox
    diff: Callable[[], str]  # the patch against the commit the copy started from, SWE-bench hygiene
    where: str  # for logs: "local clone of ...", "image ..."
    spec: Spec


class _Prefixed:
    """A sandbox whose every command starts with `preamble` (an activated environment)."""

    def __init__(self, sandbox: Sandbox, preamble: str):
        self._sandbox, self._preamble, self.workdir = sandbox, preamble, sandbox.workdir

    def run(self, command: str, timeout: float = 120.0, env: dict[str, str] | None = None):
        return self._sandbox.run(f"{self._preamble}\n{command}", timeout, env)

    def __getattr__(self, name: str):  # files, diff and close as the sandbox has them
        return getattr(self._sandbox, name)


def local_preamble(env: LocalEnv) -> str:
    """Shell lines that make the venv (and the overlay holding the repository) the only Python."""
    venv = shlex.quote(str(env.venv))
    return (f"unset {' '.join(HOST_PYTHON_VARS)}; "
            f"export VIRTUAL_ENV={venv} PYTHONNOUSERSITE=1 LOOPCODER_OVERLAY={env.overlay_site(OVERLAY)} "
            f"PATH={OVERLAY}/bin:{venv}/bin:\"$PATH\"")


def _work_root(options: EnvOptions) -> Path:
    return options.work_root or DEFAULT_ROOT


@contextmanager
def open_instance(instance: Instance, options: EnvOptions) -> Iterator[InstanceEnv]:
    """A ready environment for one instance; everything it made is removed on exit."""
    spec = effective_spec(options.specs.for_instance(instance), instance, options.repo_cache)
    with ExitStack() as stack:
        if options.sandbox == "docker":
            yield _docker_env(instance, spec, options, stack)
            return
        if options.sandbox not in SANDBOXES:
            raise ValueError(f"unknown sandbox kind {options.sandbox!r}; use {' or '.join(SANDBOXES)}")
        env = local_env(instance, spec, options.env_cache, options.repo_cache, _work_root(options))
        copy = stack.enter_context(_cache_copy(instance, options))
        sandbox = stack.enter_context(LocalSandbox(copy.path, network=options.network, output_limit=OUTPUT_LIMIT,
                                                   ro_binds=[str(env.venv.parent), env.base_prefix],
                                                   shown_as=TESTBED))  # where the official images have it
        shell = _Prefixed(sandbox, local_preamble(env))
        if spec.install:
            _install_offline(shell, spec, instance)
        # the diff is taken inside the sandbox: host git must never read a .git the model could write
        yield InstanceEnv(shell, lambda: sandbox.diff(copy.base_commit),
                          f"local clone of {copy.source} in environment {env.venv.parent}", spec)


def _install_offline(shell: _Prefixed, spec: Spec, instance: Instance) -> None:
    """The spec's install into the overlay, without the registry (its dependencies are in the venv)."""
    command = (f"export PIP_PREFIX={OVERLAY} PIP_NO_INDEX=1 PIP_NO_BUILD_ISOLATION=0\n"
               f"{spec.install}\n{EXCLUDE_ARTIFACTS}")
    result = shell.run(command, timeout=INSTALL_TIMEOUT)
    if result.exit_code != 0:
        raise EnvBuildError(f"instance {instance.instance_id}: installing the repository in its environment failed "
                            f"(exit {result.exit_code}):\n{result.output.strip()[-3000:]}")


def _cache_copy(instance: Instance, options: EnvOptions) -> WorkingCopy:
    """A fresh clone at base_commit; a context manager that removes it."""
    if options.repo_cache is None:
        raise RepoError(f"instance {instance.instance_id}: no --repo-cache given and no instance image to use; "
                        "pass --repo-cache DIR holding owner__repo clones, or use --sandbox docker with "
                        "the instance's swebench/sweb.eval.x86_64.* image pulled")
    return checkout(options.repo_cache, instance, _work_root(options))


def _docker_env(instance: Instance, spec: Spec, options: EnvOptions, stack: ExitStack) -> InstanceEnv:
    from loopcoder.workspace.docker_sandbox import BASE_IMAGE, DockerSandbox, docker_client, swebench_image

    client = docker_client()
    image = swebench_image(instance.instance_id)
    if client.images.list(name=image):
        # The image holds the repo at /testbed with its setup committed on top of base_commit:
        # diffs are taken against that HEAD, test files are reset to base_commit.
        sandbox = stack.enter_context(DockerSandbox(image, workdir=TESTBED, network=options.network,
                                                    output_limit=OUTPUT_LIMIT, client=client))
        return InstanceEnv(_Prefixed(sandbox, CONDA_PREAMBLE), sandbox.diff, f"image {image}", spec)
    image = docker_env(instance, spec, options.env_cache, options.repo_cache, _work_root(options),
                       options.image or BASE_IMAGE, client)
    sandbox = stack.enter_context(DockerSandbox(image, workdir=TESTBED, base_commit=instance.base_commit,
                                                network=options.network, output_limit=OUTPUT_LIMIT, client=client))
    return InstanceEnv(sandbox, sandbox.diff, f"image {image}", spec)


def build_environment(instance: Instance, options: EnvOptions) -> str:
    """Build (or find cached) the instance's environment ahead of time; returns where it is."""
    spec = effective_spec(options.specs.for_instance(instance), instance, options.repo_cache)
    if options.sandbox == "docker":
        from loopcoder.workspace.docker_sandbox import BASE_IMAGE, docker_client, swebench_image

        client = docker_client()
        if client.images.list(name=swebench_image(instance.instance_id)):
            return swebench_image(instance.instance_id)
        return docker_env(instance, spec, options.env_cache, options.repo_cache, _work_root(options),
                          options.image or BASE_IMAGE, client)
    return str(local_env(instance, spec, options.env_cache, options.repo_cache, _work_root(options)).venv.parent)
