"""``mirage batch --ray``: one Ray actor per worker, each a :class:`~.workers.Worker` that keeps its
models loaded; jobs go to whichever actor is idle (dynamic, not pre-sharded) and results stream
back as they finish. An actor that dies has its job reported failed (retried on another actor)
and is replaced. Ray is an optional extra (``pip install "mirage-cli[ray]"``).
"""

from __future__ import annotations

import logging
import os
import time

from ..errors import MirageError
from ..threads import apply_threads, worker_threads
from .manifest import Job
from .records import JobResult
from .workers import Worker, test_hook_env


def import_ray():
    """The ``ray`` module, or one line saying how to get it."""
    try:
        import ray
    except ImportError:
        raise MirageError('--ray: Ray is not installed; install it with: pip install "mirage-cli[ray]"') from None
    return ray


class _ActorWorker:
    """The body of a Ray actor: a Worker, plus the test-only hook variables of the batch's process
    (a Ray worker process may not inherit them)."""

    def __init__(self, name: str, env: dict[str, str], threads: int):
        os.environ.update(env)
        apply_threads(threads)  # before any torch work in this actor
        self.worker = Worker(name)

    def run(self, job: Job) -> JobResult:
        try:
            return self.worker.run(job)
        except KeyboardInterrupt:
            return JobResult(job.id, "interrupted", self.worker.name, 0.0, error="KeyboardInterrupt",
                             loads=self.worker.models.loads, warnings=list(self.worker.warnings))


class RayPool:
    """``n`` actors on the Ray cluster at ``address`` (None: a local instance; ``auto``: the
    running cluster), each asking for ``gpus`` GPUs (0 on CPU clusters).

    Threads: each actor runs torch with ``threads`` (``--threads``) or, on a local instance, an equal
    share of its CPUs (``threads.worker_threads``), and asks Ray for that many CPUs where all ``n``
    actors fit (more would leave actors pending and their jobs waiting forever). On a cluster the
    driver cannot see the nodes' cores: without ``--threads`` each actor gets 1 thread, Ray's own
    per-actor CPU.
    """

    def __init__(self, n: int | None, address: str | None, gpus: float, num_cpus: int | None = None,
                 threads: int | None = None):
        ray = self.ray = import_ray()
        self._owns = not ray.is_initialized()
        self.session_dir = None  # where the local instance this pool starts keeps its files (logs, sockets)
        if self._owns:
            # Ray's own notices (token authentication, ...) went to stderr through Python's last-resort
            # handler, between mirage's lines; its errors still show, and ours say what failed
            logging.getLogger("ray").setLevel(logging.ERROR)
            try:
                context = ray.init(address=address, num_cpus=num_cpus if address is None else None,
                                   include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as e:  # no cluster at ADDRESS, ...: one line
                raise MirageError(f"--ray: cannot connect to Ray{f' at {address}' if address else ''} "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
            # Ray's own temp dir (/tmp/ray by default, $RAY_TMPDIR), not --out: its socket paths must stay
            # short (AF_UNIX, ~107 bytes), so it is named (batch.json's "workers") rather than moved
            if address is None:  # a cluster's session belongs to the cluster
                self.session_dir = (getattr(context, "address_info", None) or {}).get("session_dir")
        res = ray.cluster_resources()
        if n is None:  # as many workers as the cluster holds
            n = max(1, int(res.get("GPU", 0) // gpus) if gpus else int(res.get("CPU", 1)))
        if gpus and res.get("GPU", 0) < gpus:
            raise MirageError(f"--gpus-per-worker: {gpus} GPUs per worker, but the Ray cluster has {res.get('GPU', 0)}")
        self.size = n
        cpus = int(res.get("CPU", 1))
        self.threads = worker_threads(n, threads, cpus) if address is None else (threads or 1)
        fits = {"num_cpus": self.threads} if n * self.threads <= cpus else {}
        self._cls = ray.remote(num_gpus=gpus, **fits)(_ActorWorker)
        self._env = test_hook_env()
        self._started = 0
        self._actors: dict[int, dict] = {}
        for slot in range(n):
            self._start(slot)

    def _start(self, slot: int) -> None:
        name = f"ray-{self._started}"
        self._started += 1
        self._actors[slot] = {"actor": self._cls.remote(name, self._env, self.threads),
                              "ref": None, "job": None, "name": name, "t0": 0.0}

    def idle(self) -> int:
        return sum(a["job"] is None for a in self._actors.values())

    def submit(self, job: Job) -> None:
        slot = next(s for s, a in self._actors.items() if a["job"] is None)
        a = self._actors[slot]
        a["job"], a["t0"], a["ref"] = job, time.perf_counter(), a["actor"].run.remote(job)

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        ray = self.ray
        by_ref = {a["ref"]: s for s, a in self._actors.items() if a["job"] is not None}
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        results = []
        for ref in ready:
            s = by_ref[ref]
            a = self._actors[s]
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayActorError as e:  # the actor's process died: replace it
                results.append(JobResult(a["job"].id, "failed", a["name"], round(time.perf_counter() - a["t0"], 3),
                                         error=f"worker {a['name']} died ({type(e).__name__})"))
                self._start(s)
                continue
            except ray.exceptions.RayError as e:
                results.append(JobResult(a["job"].id, "failed", a["name"], round(time.perf_counter() - a["t0"], 3),
                                         error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            a["job"], a["ref"] = None, None
        return results

    def stop(self, grace: float = 30.0) -> list[JobResult]:
        """Collect what running actors finish within ``grace`` seconds, then end the actors (and
        the local Ray instance this pool started). Jobs still running are left to the caller to
        mark interrupted; their run directories resume on the next batch run."""
        results, deadline = [], time.monotonic() + grace
        while any(a["job"] is not None for a in self._actors.values()) and time.monotonic() < deadline:
            results += self.wait(timeout=max(0.1, deadline - time.monotonic()))
        for a in self._actors.values():
            self.ray.kill(a["actor"])
        if self._owns:
            self.ray.shutdown()
        return results

    def close(self) -> None:
        self.stop(grace=0)
