"""The live table of ``mirage batch``: jobs done / running / failed, and an ETA."""

from __future__ import annotations

from rich.table import Table

from .records import BatchRecord


def batch_table(record: BatchRecord):
    """A rich Table summarising ``record``; the ETA assumes the remaining jobs take as long as the
    finished ones did on average, as many at a time as are running now."""
    c = record.counts()
    done = [j.seconds for j in record.jobs.values() if j.status == "done" and j.seconds]
    left = c["pending"] + c["running"]
    eta = f"{sum(done) / len(done) * left / max(1, c['running']):.0f} s" if done and left else "-"
    t = Table(title=f"mirage batch -> {record.out} ({record.workers})", show_header=True)
    for col in ("jobs", "done", "skipped", "running", "pending", "failed", "interrupted", "ETA"):
        t.add_column(col, justify="right")
    t.add_row(str(len(record.jobs)), str(c["done"]), str(c["skipped"]), str(c["running"]), str(c["pending"]),
              str(c["failed"]), str(c["interrupted"]), eta)
    return t
