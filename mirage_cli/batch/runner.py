"""``mirage batch``: validate the manifest, then dispatch its jobs to a pool of workers.

Semantics (docs/batch.md):

- every row is validated before anything runs (``manifest.load_manifest``);
- a job whose run directory ``DIR/<id>`` holds a finished run is skipped; one holding an
  interrupted or failed run is resumed by the worker (``generate --resume`` machinery);
- a failed attempt (an error, or its worker dying) is retried up to ``retries`` more times, on
  whichever worker is idle next; other jobs go on unless ``fail_fast``;
- Ctrl-C stops dispatch, lets running jobs mark themselves interrupted, records them so, and
  re-raises (the CLI prints the command that resumes the batch);
- ``DIR/batch.json`` is rewritten atomically whenever a job changes state; it keeps each job's
  warnings (those ``mirage generate`` prints), which the CLI prints after the table.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..threads import worker_threads
from .manifest import Job, load_manifest
from .ray_backend import RayPool
from .records import BatchRecord, JobRecord, JobResult, batch_json, now
from .workers import InProcessPool, ProcessPool, finished


@dataclass(frozen=True)
class BatchOptions:
    """The options of ``mirage batch`` besides the manifest."""

    out: str
    workers: int | None = None  # None: 1 locally, the cluster's capacity with Ray
    ray: str | None = None  # None: local; "local": a local Ray instance; "auto" / ADDRESS: a cluster
    gpus_per_worker: float = 0.0
    retries: int = 1
    fail_fast: bool = False
    threads: int | None = None  # --threads / MIRAGE_THREADS (None: each worker gets cores // workers)


def make_pool(opts: BatchOptions):
    """The worker pool the options ask for."""
    if opts.ray is not None:
        return RayPool(opts.workers, None if opts.ray == "local" else opts.ray, opts.gpus_per_worker,
                       threads=opts.threads)
    n = opts.workers or 1
    return InProcessPool() if n == 1 else ProcessPool(n, threads=worker_threads(n, opts.threads))


def describe_pool(opts: BatchOptions, pool) -> str:
    if opts.ray is not None:
        files = getattr(pool, "session_dir", None)  # a local instance this batch started
        return f"ray {opts.ray} x{pool.size}" + (f", Ray's files in {files}" if files else "")
    return "in-process" if pool.size == 1 else f"{pool.size} processes"


def run_batch(manifest: Path | str, opts: BatchOptions, on_update: Callable[[BatchRecord], None] = lambda r: None,
              pool=None) -> BatchRecord:
    """Run every job of ``manifest`` into ``opts.out``; returns the batch record (also in batch.json).

    Args:
        on_update: called with the record whenever a job changes state (the live table).
        pool: a ready pool (tests); default: :func:`make_pool`.
    """
    jobs = load_manifest(manifest, Path(opts.out))  # every row checked before anything runs or is written
    return run_jobs(jobs, opts, str(Path(manifest).resolve()), on_update, pool)


def run_jobs(jobs: list[Job], opts: BatchOptions, manifest: str, on_update: Callable[[BatchRecord], None] = lambda r: None,
             pool=None) -> BatchRecord:
    """Run validated ``jobs`` (each with its own ``config.out``); the record goes to
    ``opts.out/batch.json`` (``manifest``: where the jobs came from, for the record). A job whose
    run and step are done is skipped (:func:`~.workers.finished`)."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    record = BatchRecord(manifest=manifest, out=str(out.resolve()), workers="",
                         command=" ".join(["mirage"] + sys.argv[1:]))
    queue: deque[Job] = deque()
    for job in jobs:
        rec = record.jobs[job.id] = JobRecord(run=job.out if job.config else job.step.output, row=job.row)
        if finished(job):
            rec.status = "skipped"
        else:
            queue.append(job)
    by_id = {j.id: j for j in jobs}
    path = batch_json(out)

    def changed():
        record.write(path)
        on_update(record)

    if pool is None and queue:
        pool = make_pool(opts)
    record.workers = describe_pool(opts, pool) if pool else "none needed"
    changed()
    stop_dispatch = False
    try:
        while queue or _running(record):
            while queue and not stop_dispatch and pool.idle():
                job = queue.popleft()
                rec = record.jobs[job.id]
                rec.status, rec.attempts, rec.error = "running", rec.attempts + 1, None
                pool.submit(job)
                changed()
            if not _running(record):
                break
            for result in pool.wait():
                retry = _apply(record.jobs[result.id], result, opts.retries)
                if retry:
                    queue.append(by_id[result.id])
                elif record.jobs[result.id].status == "failed" and opts.fail_fast:
                    stop_dispatch = True
                changed()
            if stop_dispatch:
                queue.clear()  # --fail-fast: what was not dispatched stays "pending"
    except KeyboardInterrupt:
        for result in pool.stop():
            _apply(record.jobs[result.id], result, retries=0)
        for rec in record.jobs.values():
            if rec.status == "running":  # still running when the workers were ended
                rec.status, rec.error = "interrupted", "KeyboardInterrupt"
        record.status, record.finished_at = "interrupted", now()
        changed()
        raise
    if pool is not None:
        pool.stop()
    c = record.counts()
    record.status = "done" if c["failed"] == 0 and c["pending"] == 0 and c["interrupted"] == 0 else "failed"
    record.finished_at = now()
    changed()
    return record


def _running(record: BatchRecord) -> bool:
    return any(r.status == "running" for r in record.jobs.values())


def _apply(rec: JobRecord, result: JobResult, retries: int) -> bool:
    """Record one attempt's result; True when the job should be queued again."""
    rec.worker, rec.seconds, rec.error, rec.model_loads = result.worker, result.seconds, result.error, result.loads
    rec.warnings += [w for w in result.warnings if w not in rec.warnings]
    if result.status == "done":
        rec.status, rec.frames = "done", result.frames
        return False
    if result.status == "failed" and rec.attempts <= retries:
        rec.status = "pending"
        return True
    rec.status = result.status
    return False
