"""``DIR/batch.json``: the batch's record, rewritten atomically whenever a job changes state.

Per job id: ``status`` (pending / running / done / failed / interrupted / skipped), ``attempts``,
``worker`` (who ran the last attempt), ``seconds`` (wall time of the last attempt), ``frames`` (of
the finished video), ``error`` (one line, the last failure), ``run`` (the run directory), ``model_loads`` (how many models the
worker had loaded by then: it stays at one per backend/model/dtype/device however many jobs ran) and
``warnings`` (what ``mirage generate`` would have printed for the job, each once, over its attempts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..io import write_json
from ..pipeline.records import now

BATCH_FORMAT = "mirage.batch"
STATUSES = ("pending", "running", "done", "failed", "interrupted", "skipped")


@dataclass
class JobRecord:
    """One job's state in batch.json."""

    run: str
    row: int
    status: str = "pending"
    attempts: int = 0
    worker: str | None = None
    seconds: float | None = None
    frames: int | None = None
    error: str | None = None
    model_loads: int | None = None  # models its worker had loaded after the last attempt (1 per backend kind)
    warnings: list[str] = field(default_factory=list)  # generate's warnings, each once, over all attempts


@dataclass
class JobResult:
    """What a worker reports after one attempt of one job (plain data: it crosses processes)."""

    id: str
    status: str  # done / failed / interrupted
    worker: str
    seconds: float
    frames: int | None = None
    error: str | None = None
    loads: int = 0  # models the worker has loaded so far (a worker never reloads per job)
    warnings: list[str] = field(default_factory=list)  # the attempt's warnings, each once, in order


@dataclass
class BatchRecord:
    """The whole batch.json."""

    manifest: str
    out: str
    workers: str  # "in-process", "2 processes", "ray auto x2", ...
    command: str
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    status: str = "running"
    jobs: dict[str, JobRecord] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Jobs per status (every status present, zeros included)."""
        c = {s: 0 for s in STATUSES}
        for j in self.jobs.values():
            c[j.status] += 1
        return c

    def to_json(self) -> dict:
        d = asdict(self)
        d = {"format": BATCH_FORMAT, **d, "counts": self.counts()}
        return d

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())


def batch_json(out: Path) -> Path:
    return Path(out) / "batch.json"
