"""How torch's thread count changes mirage's speed, idle and under background load.

``python -m mirage_cli.bench.threads [--frames 49] [--points 200000] [--repeats 1] [--json OUT.json]``
measures, in fresh processes
(the thread count is a per-process setting), the quickstart's preview example (docs/quickstart.md)
(``mirage generate examples/room.png --traj presets/orbit_left.json``) and
``mirage bench --memory-only`` at 1 thread, 2 threads and the default (no ``--threads``), first
with no load of its own and then next to a CPU burner it starts and stops itself: one busy-looping
process per usable CPU, each of which exits on its own after ``--burn-limit`` seconds even if this
script is killed. Every figure comes with ``/proc/loadavg`` read just before it, because on a
shared machine "idle" only means "no load from this script". Prints a Markdown table (the one in docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..threads import ENV_VAR, default_threads, usable_cpus
from .measure import loadavg

ROOT = Path(__file__).resolve().parents[2]  # the repository (examples/ and presets/ live there)
BURN_CODE = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def burner(procs: int, limit_s: float) -> Iterator[list[subprocess.Popen]]:
    """``procs`` busy-looping processes for at most ``limit_s`` seconds each; stopped on exit."""
    ps = [subprocess.Popen([sys.executable, "-c", BURN_CODE, str(limit_s)]) for _ in range(procs)]
    try:
        time.sleep(3.0)  # let the load average see them before the first figure
        yield ps
    finally:
        for p in ps:
            p.terminate()
        for p in ps:
            p.wait(timeout=10)


def _env() -> dict:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)  # "default" must mean no setting at all
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _mirage(threads: int | None, args: list[str]) -> float:
    """Run ``python -m mirage_cli [--threads N] ARGS`` and return its wall seconds."""
    cmd = [sys.executable, "-m", "mirage_cli"] + (["--threads", str(threads)] if threads else []) + args
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def measure_once(threads: int | None, work: Path, frames: int = 49, points: int = 200_000) -> dict:
    """One generate (the example, ``frames`` frames) and one memory-only bench (``points``) at
    ``threads`` (None: the default)."""
    tag = threads or "default"
    row: dict[str, Any] = {"threads": tag, "loadavg": loadavg()}  # one JSON row of the threads table
    out = work / f"gen-{tag}-{time.monotonic_ns()}"
    row["generate_wall_s"] = round(_mirage(threads, ["generate", "examples/room.png", "--traj", "presets/orbit_left.json",
                                                     "--frames", str(frames), "--out", str(out), "--quiet"]), 2)
    rec = json.loads((out / "run.json").read_text())
    row["generate_run_s"] = rec["totals"]["wall_seconds"]
    row["generate_threads_recorded"] = rec.get("threads")
    report = work / f"mem-{tag}.json"
    row["loadavg_bench"] = loadavg()
    _mirage(threads, ["bench", "--memory-only", "--points", str(points), "--json", str(report)])
    mem = json.loads(report.read_text())
    row["read_ms_per_frame"] = round(mem["read_ms_per_frame"], 2)
    row["write_ms_per_frame"] = round(mem["write_ms_per_frame"], 2)
    return row


def run(repeats: int = 1, burn_limit: float = 900.0, frames: int = 49, points: int = 200_000) -> dict:
    """Every setting idle, then under the burner; ``repeats`` runs of each (the median is reported)."""
    settings = [1, 2, None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="mirage-threads-") as tmp:
        for load in ("idle", "burner"):
            ctx = burner(usable_cpus(), burn_limit) if load == "burner" else _nothing()
            with ctx:
                for t in settings:
                    runs = [measure_once(t, Path(tmp), frames, points) for _ in range(repeats)]
                    runs.sort(key=lambda r: r["generate_wall_s"])
                    row = runs[len(runs) // 2] | {"load": load}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    return {"cpus": usable_cpus(), "default_threads": default_threads(), "burner_procs": usable_cpus(), "rows": rows,
            "frames": frames, "points": points}


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def table(result: dict) -> str:
    """The Markdown table of :func:`run`'s result."""
    lines = [
        "| load | threads | `generate` (wall s) | run.json wall s | `bench --memory-only` read / write ms per frame "
        "| /proc/loadavg before (generate; bench) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        t = r["threads"] if r["threads"] != "default" else f"default ({r['generate_threads_recorded']})"
        la = " ".join(f"{x:.2f}" for x in r["loadavg"] or []) + "; " + " ".join(f"{x:.2f}" for x in r["loadavg_bench"] or [])
        lines.append(f"| {r['load']} | {t} | {r['generate_wall_s']:.1f} | {r['generate_run_s']:.1f} | "
                     f"{r['read_ms_per_frame']:.1f} / {r['write_ms_per_frame']:.1f} | {la} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mirage_cli.bench.threads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting (median reported)")
    ap.add_argument("--frames", type=int, default=49, help="frames of the generate example (49 = the quickstart's)")
    ap.add_argument("--points", type=int, default=200_000, help="points of bench --memory-only")
    ap.add_argument("--burn-limit", type=float, default=900.0, help="seconds after which each burner process exits by itself")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw rows here")
    a = ap.parse_args(argv)
    result = run(a.repeats, a.burn_limit, a.frames, a.points)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    print(f"{result['cpus']} usable CPUs, default cap {result['default_threads']} threads, burner {result['burner_procs']} "
          f"processes; generate {result['frames']} frames, bench --memory-only {result['points']:,} points")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
