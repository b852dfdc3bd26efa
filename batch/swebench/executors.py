"""Where a batch's jobs run: threads in this process, or Ray actors across a cluster.

The seam: a batch hands `execute` its jobs and a worker factory. A worker runs
one job, `worker(job.payload, out_dir) -> result`: it writes the job's files
under out_dir and returns a picklable result record; it never raises.

- local: one worker, built here, called from `workers` threads with out_dir
  the job's destination (files appear there as they are written).
- ray: one actor per worker slot, each with the resources asked for, each
  building its worker once (a model loads once per actor and serves every job
  it runs). An actor runs a job in a scratch directory on its node (so the
  sandbox is that node's) and returns the result with the files; this process
  writes them under the destination. Only the driver writes the batch's
  outputs; results stream back as jobs finish.

Faults: an actor that dies mid-job (killed, out of memory, node lost) is
restarted by Ray; its job goes back to the head of the queue for the next free
actor, up to `attempts` runs, after which it comes back as `Lost` (the caller
records an error, so a rerun retries it). A job is never lost silently and a
result is yielded once per job.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator

from loopcoder.workspace.leftovers import owner_suffix, reap_dirs

JOB_PREFIX = "loopcoder-ray-job-"  # an actor's scratch directory for one job, under the node's temp dir
_REVIVALS = 3  # hellos to an actor that died before it counts as gone
INSTALL_HINT = "pip install 'loopcoder[ray]' (on this machine and every node of the cluster)"


class ExecutorError(RuntimeError):
    """The executor cannot run the batch at all (no Ray, no cluster, workers that cannot start)."""


@dataclass
class ExecutorOptions:
    kind: str = "local"  # local | ray
    workers: int = 1  # jobs at the same time: threads, or Ray actors
    address: str = "auto"  # ray: "auto" (RAY_ADDRESS or the cluster this node is in), "ray://HOST:10001", HOST:PORT
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    attempts: int = 3  # runs of a job whose worker died before it is given up as lost


@dataclass
class Job:
    key: str  # instance_id or the like: for messages
    payload: Any  # what the worker is called with (pickled for Ray)
    dest: Path  # where the job's files go on the driver


@dataclass
class Lost:
    """A job the executor could not get a result for."""

    error: str


@dataclass
class _Reply:
    where: str
    result: Any = None
    files: dict[str, bytes] = field(default_factory=dict)
    broken: str | None = None  # the worker could not be built (model, config): every job would fail alike


def where_am_i() -> str:
    """host:pid of this process: which worker ran a job."""
    return f"{socket.gethostname()}:{os.getpid()}"


def execute(jobs: Iterable[Job], make_worker: Callable[[], Callable[[Any, Path], Any]], options: ExecutorOptions,
            on_dispatch: Callable[[Job, int, str], None] | None = None,
            on_retry: Callable[[Job, int, str], None] | None = None) -> Iterator[tuple[Job, Any]]:
    """(job, result or Lost) for every job, as each finishes.

    make_worker: built once here (local) or once in each actor (ray, so it must pickle and should
    load what it needs itself). on_dispatch(job, attempt, where) when a job is handed to a worker;
    on_retry(job, next_attempt, why) when its worker died under it.
    """
    jobs = list(jobs)
    if not jobs:
        return iter(())
    if options.kind == "local":
        return _local(jobs, make_worker, options.workers, on_dispatch)
    if options.kind == "ray":
        return _ray(jobs, make_worker, options, on_dispatch, on_retry)
    raise ExecutorError(f"unknown executor {options.kind!r}; use local or ray")


def _local(jobs: list[Job], make_worker, workers: int, on_dispatch) -> Iterator[tuple[Job, Any]]:
    worker = make_worker()

    def one(job: Job) -> Any:
        if on_dispatch:
            on_dispatch(job, 1, where_am_i())
        try:
            return worker(job.payload, job.dest)
        except Exception as exc:  # workers do not raise; if one does, the job is lost, not the batch
            return Lost(f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def require_ray():
    """The ray module, or an ExecutorError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(f"--executor ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class _RayWorker:
    """The actor: one worker, built once; each job in a scratch directory whose files go back with the result."""

    def __init__(self, make_worker):
        try:
            self._worker, self._broken = make_worker(), None
        except Exception as exc:  # reported to the driver, which stops the batch with it
            self._worker, self._broken = None, f"{type(exc).__name__}: {exc}"

    def hello(self) -> _Reply:
        return _Reply(where_am_i(), broken=self._broken)

    def run(self, payload) -> _Reply:
        if self._broken:
            return _Reply(where_am_i(), broken=self._broken)
        reap_dirs(tempfile.gettempdir(), JOB_PREFIX)  # those of actors killed mid-job
        scratch = Path(tempfile.mkdtemp(prefix=JOB_PREFIX, suffix=owner_suffix()))
        try:
            result = self._worker(payload, scratch)
            files = {p.relative_to(scratch).as_posix(): p.read_bytes() for p in scratch.rglob("*") if p.is_file()}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return _Reply(where_am_i(), result, files)


def _connect(ray, address: str) -> bool:
    """Join the cluster at `address` unless this process already has; True when this call joined."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ExecutorError(f"cannot reach a Ray cluster at {address!r} ({str(exc).splitlines()[0][:200]}); "
                            "start one with `ray start --head` or pass --ray-address HOST:6379 or ray://HOST:10001"
                            ) from None
    return True


def _check_resources(ray, options: ExecutorOptions) -> None:
    total = ray.cluster_resources()
    for name, want, flag in (("CPU", options.cpus_per_worker, "--cpus-per-worker"),
                             ("GPU", options.gpus_per_worker, "--gpus-per-worker")):
        if want > total.get(name, 0):
            raise ExecutorError(f"the Ray cluster has {total.get(name, 0):g} {name}s in all, so a worker asking for "
                                f"{flag} {want:g} can never start; lower {flag} or add nodes")


def _ray(jobs: list[Job], make_worker, options: ExecutorOptions, on_dispatch, on_retry) -> Iterator[tuple[Job, Any]]:
    ray = require_ray()
    from ray.exceptions import RayError, RayTaskError

    joined = _connect(ray, options.address)
    actors = []
    try:
        _check_resources(ray, options)
        actor_class = ray.remote(_RayWorker).options(num_cpus=options.cpus_per_worker,
                                                     num_gpus=options.gpus_per_worker,
                                                     max_restarts=-1, max_task_retries=0)
        actors = [actor_class.remote(make_worker) for _ in range(min(max(1, options.workers), len(jobs)))]
        # An actor joins the pool when its hello comes back: one the cluster cannot place yet never holds a job.
        pending = {actor.hello.remote(): (actor, None, 1) for actor in actors}  # ref -> (actor, job or None, try)
        queue, idle, where = deque((job, 1) for job in jobs), deque(), {}
        while queue or any(job for _, job, _ in pending.values()):
            while queue and idle:
                (job, attempt), actor = queue.popleft(), idle.popleft()
                pending[actor.run.remote(job.payload)] = (actor, job, attempt)
                if on_dispatch:
                    on_dispatch(job, attempt, where[actor])
            if not pending:  # every actor is gone for good
                for job, _ in queue:
                    yield job, Lost("no Ray worker is left (they kept dying); rerun to try again")
                return
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, job, attempt = pending.pop(ref)
            try:
                reply = ray.get(ref)
            except RayTaskError as exc:  # the actor's own code failed (the worker itself never raises)
                idle.append(actor)
                if job is not None:
                    yield job, Lost(f"the Ray worker failed: {str(exc).strip().splitlines()[-1][:300]}")
                continue
            except RayError as exc:  # the actor's process or node died: Ray restarts it; a hello says when it is back
                if job is None:  # (for a hello, `attempt` counts hellos)
                    if attempt < _REVIVALS:
                        pending[actor.hello.remote()] = (actor, None, attempt + 1)
                    continue  # else gone for good: out of the pool
                pending[actor.hello.remote()] = (actor, None, 1)
                why = f"the Ray worker on {where[actor]} died ({type(exc).__name__})"
                if attempt < options.attempts:
                    if on_retry:
                        on_retry(job, attempt + 1, why)
                    queue.appendleft((job, attempt + 1))
                else:
                    yield job, Lost(f"{why}, {attempt} times running it; rerun to try again")
                continue
            where[actor] = reply.where
            if reply.broken:
                raise ExecutorError(f"the Ray worker on {reply.where} could not start: {reply.broken}")
            idle.append(actor)
            if job is None:  # started, or back after a restart
                continue
            land(reply.files, job.dest)
            yield job, reply.result
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if joined:
            ray.shutdown()


def land(files: dict[str, bytes], dest: Path) -> None:
    """Write a job's files (paths relative to its scratch directory) under dest."""
    for name, data in files.items():
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise ExecutorError(f"a Ray worker sent back a file outside its job's directory: {name}")
        path = dest.joinpath(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
