"""Batch workers: run one job through the same code as ``mirage generate``, keeping models loaded.

:class:`Worker` is what every kind of worker runs (in-process, a local process, a Ray actor): for
each job it starts the run (``pipeline.generate.start``), or resumes it when its directory holds an
interrupted run (``pipeline.generate.resume``), then runs the chunk loop (``run_loop``). Models come
from a :class:`ModelCache` passed as the pipeline's ``Loaders``, so a worker loads a backend (codec,
denoiser, text encoder and its prompt-embedding cache) once per backend/model/dtype/device and a
depth model once per name/device, however many jobs it runs.

Pools (:class:`InProcessPool`, :class:`ProcessPool`, and ``ray_backend.RayPool``) give the batch
runner one interface: ``idle()``, ``submit(job)``, ``wait()`` (results of finished attempts; a
worker that died reports its job failed and is replaced), ``stop()``.

Test-only hooks (environment variables, read by the worker before a job; never set them in use):
``MIRAGE_TEST_FAIL_ONCE=<job id>:<marker file>`` makes that job's first attempt raise (a transient
error) and creates the marker; ``MIRAGE_TEST_DIE_ONCE=<job id>:<marker file>`` makes the worker
process exit abruptly instead (in-process workers raise, so the CLI itself never dies).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import replace
from importlib import import_module
from multiprocessing.connection import wait as mp_wait
from pathlib import Path

import torch

from ..backends.specs import backend_spec
from ..errors import MirageError
from ..pipeline.config import GenerateConfig
from ..pipeline.generate import resume, start
from ..pipeline.inputs import Loaders, load_depth_model, prepare_codec_backend
from ..pipeline.loop import run_loop
from ..pipeline.records import RunRecord
from ..pipeline.rundir import run_json
from ..threads import apply_threads, worker_threads
from .manifest import Job
from .records import JobResult

TEST_HOOKS = ("MIRAGE_TEST_FAIL_ONCE", "MIRAGE_TEST_DIE_ONCE")
GENERATE_HINTS = ("Continue with: mirage generate --resume", "Start it over: the same command with --overwrite")
"""How ``mirage generate`` says to go on after a stopped run: not kept for a batch job, which the
batch itself retries, and resumes or restarts on a rerun (its failure has its own line)."""


class ModelCache:
    """Loaded models of one worker, keyed by what determines their weights and placement.

    ``loads`` counts real loads (cache misses); the batch reports it and a test checks that a
    worker running many jobs of one backend loads it once.
    """

    def __init__(self):
        self._backends: dict[tuple, tuple] = {}
        self._depth: dict[tuple, object] = {}
        self.loads = 0

    def codec_backend(self, cfg: GenerateConfig, show_progress: bool = True):
        """``prepare_codec_backend`` with a cache: key = backend, model, dtype, device, offload,
        shift (the scheduler is built with it) and the preview's downscale (its codec's grid)."""
        key = (cfg.backend, cfg.model, cfg.dtype, cfg.device, cfg.cpu_offload, cfg.shift,
               cfg.downscale if not backend_spec(cfg.backend).codec.spatial_factor else None)
        if key not in self._backends:
            self._backends[key] = prepare_codec_backend(cfg, show_progress=show_progress)
            self.loads += 1
        return self._backends[key]

    def depth_model(self, ref, device="cpu", required=False, **kwargs):
        """``load_depth_model`` with a cache per (model, device); a model that is not available is
        not cached (looking it up again is cheap and it may have been downloaded since)."""
        key = (str(ref), str(device))
        if key not in self._depth:
            model = load_depth_model(ref, device=device, required=required, **kwargs)
            if model is None:
                return None
            self._depth[key] = model
            self.loads += 1
        return self._depth[key]

    def loaders(self) -> Loaders:
        return Loaders(codec_backend=self.codec_backend, depth_model=self.depth_model)


def run_state(out: Path) -> str | None:
    """The state of a job's run directory: None (no run yet), ``done``, or ``partial`` (an earlier
    attempt's run: interrupted, failed or killed while running)."""
    path = Path(out) / "run.json"
    if not path.exists():
        return None
    # a text probe, like prepare_out_dir's: a damaged run.json is simply not done
    return "done" if '"status": "done"' in path.read_text(errors="replace") else "partial"


def finished(job: Job) -> bool:
    """A job a (re)run skips: its run is done, and so is its step (its output file exists)."""
    if job.config is None:  # a step-only job
        return job.then is not None and Path(job.then.output).exists()
    if job.config.overwrite or run_state(Path(str(job.config.out))) != "done":
        return False
    return job.then is None or Path(job.then.output).exists()


def run_step(job: Job, loaders: Loaders) -> None:
    """Call the job's step, ``"module:function"``, with ``(job, loaders)``."""
    assert job.then is not None  # called only for a job with a step
    module, _, name = job.then.call.partition(":")
    getattr(import_module(module), name)(job, loaders)


class Worker:
    """Runs jobs one after another, keeping its models loaded (see the module docstring)."""

    def __init__(self, name: str, in_process: bool = False):
        self.name = name
        self.in_process = in_process
        self.models = ModelCache()
        self.warnings: list[str] = []  # the current (or last) attempt's warnings, each once

    def warn(self, msg: str) -> None:
        """The pipeline's ``warn`` for a job: kept for the job's result (batch.json and the CLI's
        lines after the table), each message once; nothing is printed here (the live table owns
        the terminal, and a worker process has none)."""
        if msg not in self.warnings and not any(h in msg for h in GENERATE_HINTS):
            self.warnings.append(msg)

    def run(self, job: Job) -> JobResult:
        """One attempt of ``job``. Failures become a failed result with one error line; Ctrl-C
        (KeyboardInterrupt) propagates after the run marked itself interrupted."""
        t0 = time.perf_counter()
        self.warnings = []
        try:
            self._test_hooks(job.id)
            record = self._run(job)
            return JobResult(job.id, "done", self.name, round(time.perf_counter() - t0, 3),
                             frames=record.totals.frames if record is not None and record.totals else None,
                             loads=self.models.loads,
                             warnings=list(self.warnings))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one failing job never stops the worker
            line = str(e).splitlines()[0] if str(e) else ""
            return JobResult(job.id, "failed", self.name, round(time.perf_counter() - t0, 3),
                             error=f"{type(e).__name__}: {line}" if not isinstance(e, MirageError) else line,
                             loads=self.models.loads, warnings=list(self.warnings))

    def _run(self, job: Job):
        loaders = self.models.loaders()
        if job.config is None:  # a step-only job (mirage data prepare)
            run_step(job, loaders)
            return None
        out = Path(str(job.config.out))
        state = run_state(out)
        if state == "done" and not job.config.overwrite:  # dispatched only for its step (see finished)
            record = RunRecord.read(run_json(out))
        else:
            run = None
            if state == "partial" and not job.config.overwrite:
                try:
                    run = resume(out, warn=self.warn, quiet=True, loaders=loaders)
                except MirageError as e:
                    if "no finished chunk" not in str(e):
                        raise
                    # interrupted before its first checkpoint: nothing to keep, start it again
            if run is None:
                run = start(replace(job.config, overwrite=job.config.overwrite or state is not None), warn=self.warn,
                            quiet=True, loaders=loaders)
            record = run_loop(run, warn=self.warn)
        if job.then is not None:
            run_step(job, loaders)
        return record

    def _test_hooks(self, job_id: str) -> None:
        """The test-only failure injection (see the module docstring)."""
        for var in TEST_HOOKS:
            spec = os.environ.get(var)
            if not spec:
                continue
            target, _, marker = spec.partition(":")
            if target != job_id or not marker or Path(marker).exists():
                continue
            Path(marker).write_text(self.name)
            if var == "MIRAGE_TEST_DIE_ONCE" and not self.in_process:
                os._exit(17)
            raise RuntimeError(f"injected test failure ({var})")


def test_hook_env() -> dict[str, str]:
    """The test-only hook variables that are set, to hand to workers started elsewhere (Ray)."""
    return {k: os.environ[k] for k in TEST_HOOKS if os.environ.get(k)}


# ------------------------------------------------------------------------------------ pools
class InProcessPool:
    """``--workers 1``: one worker in the CLI's own process (no start-up cost)."""

    size = 1

    def __init__(self):
        self.worker = Worker("local", in_process=True)
        self._job: Job | None = None
        self.interrupted: list[JobResult] = []

    def idle(self) -> int:
        return 0 if self._job else 1

    def submit(self, job: Job) -> None:
        self._job = job

    def wait(self) -> list[JobResult]:
        job, t0 = self._job, time.perf_counter()
        assert job is not None, "wait() after submit()"
        try:
            return [self.worker.run(job)]
        except KeyboardInterrupt:
            self.interrupted = [JobResult(job.id, "interrupted", self.worker.name, round(time.perf_counter() - t0, 3),
                                          error="KeyboardInterrupt", loads=self.worker.models.loads,
                                          warnings=list(self.worker.warnings))]
            raise
        finally:
            self._job = None

    def stop(self) -> list[JobResult]:
        """Results of attempts cut short by Ctrl-C (the run already marked itself interrupted)."""
        return self.interrupted


def _process_main(conn, name: str, env: dict[str, str], threads: int) -> None:
    """A worker process: run the jobs the batch sends until it sends None, with ``threads`` torch threads."""
    os.environ.update(env)  # before anything touches CUDA: the GPU this worker owns
    apply_threads(threads)  # before any torch work: this worker's share of the cores
    worker = Worker(name)
    try:
        while True:
            job = conn.recv()
            if job is None:
                return
            t0 = time.perf_counter()
            try:
                result = worker.run(job)
            except KeyboardInterrupt:
                result = JobResult(job.id, "interrupted", name, round(time.perf_counter() - t0, 3), error="KeyboardInterrupt",
                                   loads=worker.models.loads, warnings=list(worker.warnings))
            conn.send(result)
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return


class ProcessPool:
    """``--workers N``: N long-lived worker processes (spawned, so CUDA is never forked), each
    pinned to one GPU with ``CUDA_VISIBLE_DEVICES`` when GPUs exist. Jobs go to whichever worker
    is idle (dynamic); a worker that dies has its job reported failed and is replaced. Each runs
    torch with ``threads`` threads (default: an equal share of the cores, ``threads.worker_threads``)."""

    def __init__(self, n: int, threads: int | None = None):
        self.size = n
        self.threads = worker_threads(n) if threads is None else threads
        self._ctx = mp.get_context("spawn")
        self._gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        self._workers: dict[int, dict] = {}
        self._started = 0
        for i in range(n):
            self._start(i)

    def _start(self, slot: int) -> None:
        env = {"CUDA_VISIBLE_DEVICES": str(slot % self._gpus)} if self._gpus else {}
        parent, child = self._ctx.Pipe()
        name = f"proc-{self._started}"
        self._started += 1
        proc = self._ctx.Process(target=_process_main, args=(child, name, env, self.threads), name=f"mirage-batch-{name}",
                                 daemon=True)
        proc.start()
        child.close()
        self._workers[slot] = {"proc": proc, "conn": parent, "job": None, "name": name, "t0": 0.0}

    def idle(self) -> int:
        return sum(w["job"] is None for w in self._workers.values())

    def submit(self, job: Job) -> None:
        slot = next(s for s, w in self._workers.items() if w["job"] is None)
        w = self._workers[slot]
        w["job"], w["t0"] = job, time.perf_counter()
        w["conn"].send(job)

    def wait(self, timeout: float | None = None) -> list[JobResult]:
        busy = {s: w for s, w in self._workers.items() if w["job"] is not None}
        handles = {}
        for s, w in busy.items():
            handles[w["conn"]] = s
            handles[w["proc"].sentinel] = s
        ready = mp_wait(list(handles), timeout=timeout)
        results, done = [], set()
        for h in ready:
            s = handles[h]
            if s in done:
                continue
            done.add(s)
            w = self._workers[s]
            try:
                results.append(w["conn"].recv())
            except (EOFError, OSError):  # the process died: its job is failed here and retried elsewhere
                w["proc"].join(timeout=5)
                results.append(JobResult(w["job"].id, "failed", w["name"], round(time.perf_counter() - w["t0"], 3),
                                         error=f"worker {w['name']} died (exit code {w['proc'].exitcode})"))
                w["conn"].close()
                self._start(s)
                continue
            w["job"] = None
        return results

    def stop(self, grace: float = 30.0) -> list[JobResult]:
        """Collect the results of running jobs (after Ctrl-C they mark themselves interrupted),
        then end every worker process."""
        results, deadline = [], time.monotonic() + grace
        while any(w["job"] is not None for w in self._workers.values()) and time.monotonic() < deadline:
            results += self.wait(timeout=max(0.1, deadline - time.monotonic()))
        for w in self._workers.values():
            try:
                w["conn"].send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self._workers.values():
            w["proc"].join(timeout=10)
            if w["proc"].is_alive():
                w["proc"].terminate()
        return results

    def close(self) -> None:
        self.stop(grace=0)
