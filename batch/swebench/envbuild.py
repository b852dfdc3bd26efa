"""Building instance environments from specs: a cached venv (local) or an instance image (docker).

Building is the only step with registry access; commands run afterwards in
the sandbox have none. Builds are keyed by Spec.key (the spec, plus repo and
base commit when building reads the repository), cached, and serialised per
key by a file lock so parallel workers build each environment once. A failed
build raises EnvBuildError naming its log; nothing is left half-built.

Local: `python -m venv` (no system site-packages) under the cache root. The
repository's own package is not left in the shared venv: it is installed
again, offline, into a per-sandbox overlay when an instance opens (see
environments.py), so it always points at that instance's working copy.
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import io
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import git

from loopcoder.batch.swebench.checkout import cached_repo, checkout
from loopcoder.batch.swebench.cleanup import track, untrack
from loopcoder.batch.swebench.instances import Instance
from loopcoder.batch.swebench.specs import DEFAULT_INSTALL, PACKAGING_FILES, Spec

DEFAULT_ENV_CACHE = Path("~/.cache/loopcoder/envs").expanduser()
STEP_TIMEOUT = 1800.0
ENV_IMAGE = "loopcoder/swebench-env"  # tagged by spec key
IMAGE_VENV = "/opt/loopcoder-env"
# Never inherited by a build or a test run: they would put the host's Python in.
HOST_PYTHON_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "PIP_PREFIX",
                    "PIP_TARGET", "PIP_USER", "CONDA_PREFIX")
OVERLAY_PTH = "_loopcoder_overlay.pth"
# Lists the distributions installed from the build clone, so they can be removed from the shared venv.
_FROM_CLONE = r"""
import importlib.metadata as md, json, sys
for d in md.distributions():
    url = json.loads(d.read_text("direct_url.json") or "{}").get("url", "")
    if url.rstrip("/") == "file://" + sys.argv[1] or url.startswith("file://" + sys.argv[1] + "/"):
        print(d.metadata["Name"])
"""
# Anything the install built in the repository (C extensions, egg-info) is not part of a patch.
EXCLUDE_ARTIFACTS = "git ls-files --others --exclude-standard | sed 's|^|/|' >> \"$(git rev-parse --git-dir)/info/exclude\""


class EnvBuildError(Exception):
    """An environment could not be built: an infrastructure failure, never a patch's fault."""


@dataclass(frozen=True)
class LocalEnv:
    venv: Path
    base_prefix: str  # the interpreter's installation the venv links to (bound read-only in the sandbox)
    python_version: str  # "3.11"

    def overlay_site(self, prefix: str) -> str:
        return f"{prefix}/lib/python{self.python_version}/site-packages"


def build_steps(spec: Spec, repo: Path | None) -> list[tuple[str, str]]:
    """(name, shell command) in build order; `repo` is the checkout the commands run in (None: none needed)."""
    steps = [("pre_install", c) for c in spec.pre_install]
    packages = spec.packages.strip()
    if packages.endswith((".txt", ".in")):
        steps.append(("packages", f"python -m pip install -r {shlex.quote(packages)}"))
    elif packages:
        steps.append(("packages", "python -m pip install " + " ".join(map(shlex.quote, packages.split()))))
    if spec.pip_packages:
        steps.append(("pip_packages", "python -m pip install " + " ".join(map(shlex.quote, spec.pip_packages))))
    if spec.install:
        steps.append(("install", spec.install))
        if repo is not None and any((repo / f).exists() for f in PACKAGING_FILES):
            requires = " ".join(map(shlex.quote, build_requirements(repo)))
            steps.append(("build requirements", f"python -m pip install {requires}"))
    return steps


def build_requirements(repo: Path) -> list[str]:
    """The repository's build backend requirements, so it can be installed again offline."""
    try:
        data = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
        requires = data.get("build-system", {}).get("requires", [])
    except (OSError, tomllib.TOMLDecodeError):
        requires = []
    requires = list(requires) or ["setuptools"]
    if any(r.startswith("setuptools") for r in requires) and "wheel" not in requires:
        requires.append("wheel")  # setuptools before 70.1 builds no wheel without it
    return requires


def find_python(version: str) -> str:
    """The interpreter for a spec's `python` ("" = the one running loopcoder), never a pyenv shim."""
    if not version:
        return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return find_python("")
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for path in sorted(glob.glob(f"{pyenv}/versions/{version}*/bin/python{version}"), reverse=True):
        return path
    found = shutil.which(f"python{version}")
    if found and "/shims/" not in found:
        return os.path.realpath(found)
    raise EnvBuildError(f"no Python {version} on this machine for the spec's `python`; install it "
                        f"(e.g. pyenv install {version}) or change the spec")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HOST_PYTHON_VARS}
    return {**env, "PYTHONNOUSERSITE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", **(extra or {})}


@contextmanager
def _locked(cache: Path, key: str) -> Iterator[None]:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


class _BuildLog:
    def __init__(self, path: Path):
        self.path, self.lines = path, []

    def add(self, text: str) -> None:
        self.lines.append(text)
        self.path.write_text("\n".join(self.lines) + "\n", encoding="utf-8")

    def fail(self, what: str, instance: Instance) -> EnvBuildError:
        tail = "\n".join("\n".join(self.lines).splitlines()[-15:])
        return EnvBuildError(f"building the environment of {instance.instance_id} failed at {what}; "
                             f"full log: {self.path}\n{tail}")


@contextmanager
def _build_checkout(spec: Spec, instance: Instance, repo_cache: Path | None, work_root: Path) -> Iterator[Path | None]:
    if not spec.depends_on_repo():
        yield None
        return
    if repo_cache is None:
        raise EnvBuildError(f"instance {instance.instance_id}: building its environment reads the repository; "
                            "pass --repo-cache DIR")
    with checkout(repo_cache, instance, work_root) as copy:
        yield copy.path


def effective_spec(spec: Spec, instance: Instance, repo_cache: Path | None) -> Spec:
    """The spec as built: the default install dropped where base_commit has no packaging metadata.

    So instances of an unpackaged repository share one environment instead of one per commit.
    """
    if spec.install != DEFAULT_INSTALL or repo_cache is None:
        return spec
    try:
        with git.Repo(cached_repo(repo_cache, instance)) as repo:
            names = {item.name for item in repo.commit(instance.base_commit).tree}
    except Exception:  # a missing repo or commit is reported by the checkout, with its own message
        return spec
    return spec if names & set(PACKAGING_FILES) else replace(spec, install="")


# -- local venvs ----------------------------------------------------------------------

def local_env(instance: Instance, spec: Spec, cache: Path, repo_cache: Path | None, work_root: Path) -> LocalEnv:
    """The instance's venv, built first when it is not in the cache yet."""
    key = spec.key(instance)
    root = cache / key
    with _locked(cache, key):
        if (root / "env.json").is_file():
            meta = json.loads((root / "env.json").read_text())
            return LocalEnv(root / "venv", meta["base_prefix"], meta["python_version"])
        shutil.rmtree(root, ignore_errors=True)  # a build that was killed half-way
        root.mkdir(parents=True)
        track(root)  # a SIGTERM during the build removes it
        try:
            return _build_local(instance, spec, root, _BuildLog(cache / f"{key}.log"), repo_cache, work_root)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        finally:
            untrack(root)


def _build_local(instance: Instance, spec: Spec, root: Path, log: _BuildLog, repo_cache: Path | None,
                 work_root: Path) -> LocalEnv:
    venv = root / "venv"
    env = clean_env({"VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"})
    log.add(f"environment of {instance.instance_id}: {json.dumps(spec.__dict__)}")

    def step(name: str, argv: list[str] | str, cwd: Path) -> str:
        argv = ["bash", "-c", argv] if isinstance(argv, str) else argv
        log.add(f"+ [{name}] {shlex.join(argv) if argv[0] != 'bash' else argv[2]}")
        try:
            r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.add(f"timed out after {STEP_TIMEOUT:.0f}s")
            raise log.fail(name, instance) from None
        out = r.stdout.decode(errors="replace")
        log.add(out.rstrip())
        if r.returncode != 0:
            raise log.fail(f"{name} (exit {r.returncode})", instance)
        return out

    step("venv", [find_python(spec.python), "-m", "venv", str(venv)], root)
    python = str(venv / "bin" / "python")
    base_prefix, version, site = step("venv", [python, "-c", "import sys, sysconfig; print(sys.base_prefix); "
                                               "print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_paths()['purelib'])"],
                                      root).split()
    with _build_checkout(spec, instance, repo_cache, work_root) as repo:
        cwd = repo or root
        for name, command in build_steps(spec, repo):
            step(name, command, cwd)
        if repo is not None and spec.install:  # the shared venv keeps the dependencies, not the repository
            step("install", f"{shlex.quote(python)} -c {shlex.quote(_FROM_CLONE)} {shlex.quote(str(repo.resolve()))} "
                            f"| xargs -r {shlex.quote(python)} -m pip uninstall -y", cwd)
    overlay = "import os, site; p = os.environ.get('LOOPCODER_OVERLAY'); p and site.addsitedir(p)\n"
    Path(site, OVERLAY_PTH).write_text(overlay)
    (root / "env.json").write_text(json.dumps({"base_prefix": base_prefix, "python_version": version,
                                               "spec": spec.__dict__, "instance": instance.instance_id}, indent=2))
    log.add("built")
    return LocalEnv(venv, base_prefix, version)


# -- docker instance images -----------------------------------------------------------

def image_tag(instance: Instance, spec: Spec) -> str:
    """The instance image's name: the repository at /testbed is always at base_commit."""
    return f"{ENV_IMAGE}:{spec.key(instance, per_commit=True)}"


def docker_env(instance: Instance, spec: Spec, cache: Path, repo_cache: Path | None, work_root: Path,
               base_image: str, client) -> str:
    """The instance image (built first when missing); returns its tag.

    Two layers, as the official harness has them: an environment image per spec
    (python, pre_install, packages by name, pip_packages), shared by every
    instance with that spec, and on top the instance image (repository at
    /testbed, a requirements file from it, install).
    """
    tag = image_tag(instance, spec)
    key = tag.rsplit(":", 1)[1]
    with _locked(cache, f"image-{key}"):
        if client.images.list(name=tag):
            return tag
        if repo_cache is None:
            raise EnvBuildError(f"instance {instance.instance_id}: no image {tag} yet, and building it needs "
                                "the repository; pass --repo-cache DIR")
        env_image = _env_image(instance, spec, cache, base_image, client)
        repo_part = replace(spec, pre_install=(), pip_packages=(),
                            packages=spec.packages if spec.depends_on_repo() else "")
        labels = {"loopcoder.swebench.instance": instance.instance_id, "loopcoder.swebench.repo": instance.repo,
                  "loopcoder.swebench.base_commit": instance.base_commit,
                  "loopcoder.swebench.spec": json.dumps(spec.__dict__, sort_keys=True)}
        with checkout(repo_cache, instance, work_root) as copy:
            steps = build_steps(repo_part, copy.path) + [("artifacts", EXCLUDE_ARTIFACTS)]
            _build_layer(client, env_image, tag, steps, labels, _BuildLog(cache / f"image-{key}.log"), instance,
                         copy.path)
        return tag


def _env_image(instance: Instance, spec: Spec, cache: Path, base_image: str, client) -> str:
    """The environment layer for a spec: everything that does not read the repository."""
    env_part = replace(spec, install="", test_cmd="", eval_commands=(),
                       packages="" if spec.depends_on_repo() else spec.packages)
    key = hashlib.sha256(f"{env_part.key()} {base_image}".encode()).hexdigest()[:16]
    tag = f"{ENV_IMAGE}:env-{key}"
    with _locked(cache, f"image-env-{key}"):
        if client.images.list(name=tag):
            return tag
        python = f"python{spec.python}" if spec.python else "python3"
        setup = [
            ("python", f"command -v {python} >/dev/null || {{ echo '{base_image} has no {python}; use an image that "
                       f"has it (--image) or change the spec'; exit 1; }}; command -v python >/dev/null || "
                       f"ln -s \"$(command -v python3)\" /usr/local/bin/python"),
            ("venv", f"{python} -m venv --without-pip {IMAGE_VENV} && w=$(ls /tmp/loopcoder-build/pip-*.whl) && "
                     f"{IMAGE_VENV}/bin/python \"$w/pip\" install -q --no-index \"$w\""),
        ]
        labels = {"loopcoder.swebench.env": json.dumps(env_part.__dict__, sort_keys=True)}
        _build_layer(client, base_image, tag, setup + build_steps(env_part, None), labels,
                     _BuildLog(cache / f"image-env-{key}.log"), instance, None)
    return tag


def _host_files() -> bytes:
    """A tar of what a build container needs from the host: its CA bundle and pip (the base image has none)."""
    cafile = os.environ.get("PIP_CERT") or ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    wheels = sorted(Path(sysconfig.get_paths()["stdlib"], "ensurepip", "_bundled").glob("pip-*.whl"))
    if not wheels:
        raise EnvBuildError("this Python has no bundled pip wheel (ensurepip) to bootstrap pip in the image")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(cafile, "tmp/loopcoder-build/ca.pem")
        tar.add(str(wheels[-1]), f"tmp/loopcoder-build/{wheels[-1].name}")  # pip checks the file name
    return buf.getvalue()


def _build_layer(client, image: str, tag: str, steps: list[tuple[str, str]], labels: dict[str, str], log: _BuildLog,
                 instance: Instance, repo: Path | None) -> None:
    """Run `steps` (with the registry) in a container of `image`, `repo` copied to /testbed; commit it as `tag`."""
    from loopcoder.workspace.docker_sandbox import LABEL, DockerSandbox

    path = f"{IMAGE_VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ca = "/tmp/loopcoder-build/ca.pem"
    env = {"PATH": path, "VIRTUAL_ENV": IMAGE_VENV, "PYTHONNOUSERSITE": "1", "PIP_CERT": ca, "SSL_CERT_FILE": ca,
           "REQUESTS_CA_BUNDLE": ca, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}
    log.add(f"image {tag} from {image} for {instance.instance_id}")
    with DockerSandbox(image, copy_from=repo, workdir="/testbed" if repo else "/",
                       base_commit=instance.base_commit if repo else None, network=True, output_limit=8 << 20,
                       client=client) as box:
        box.container.put_archive("/", _host_files())
        for name, command in steps:
            log.add(f"+ [{name}] {command}")
            result = box.run(command, timeout=STEP_TIMEOUT, env=env)
            log.add(result.output.rstrip())
            if result.exit_code != 0:
                raise log.fail(f"{name} (exit {result.exit_code})", instance)
        box.run("rm -rf /tmp/loopcoder-build", timeout=60)
        changes = [f"ENV PATH={path}", f"ENV VIRTUAL_ENV={IMAGE_VENV}", "ENV PYTHONNOUSERSITE=1", "WORKDIR /testbed",
                   *(f"LABEL {k}={json.dumps(v)}" for k, v in {**LABEL, **labels}.items())]
        box.container.commit(repository=ENV_IMAGE, tag=tag.rsplit(":", 1)[1], changes=changes)
    log.add("built")
