"""Outputs of ``mirage eval``: ``eval.json``, ``eval.csv``, the rich tables, and ``eval compare``.

``eval.csv`` has one row per clip and frame with every per-frame field (empty where a region is empty), and
the clip's loop-closure fields on its last frame. ``eval compare`` lines up the aggregates of several
``eval.json`` files against the first; a difference is paired over the clips both runs share (same clip
names; a note says when the clip sets differ) and "exceeds the spread" when its 95 % interval excludes 0;
with no clip in common it is the difference of the means, exceeding when the two runs' 95 % intervals do not
overlap.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from ..errors import MirageError
from ..io import atomic_path, write_json
from .metrics import interval

TABLE_FIELDS = ("psnr_all", "ssim_all", "psnr_memory", "ssim_memory", "psnr_revisit", "ssim_revisit", "lpips_all",
                "lpips_memory", "lpips_revisit", "read_psnr_known", "known_fraction", "memory_fraction", "follow_psnr",
                "follow_psnr_truth", "capped_frames", "loop_psnr", "loop_memory_psnr", "loop_memory_changed")
"""Fields shown in tables (those present), in this order."""
CSV_LOOP_FIELDS = ("loop_closed", "loop_psnr", "loop_memory_psnr", "loop_memory_changed")
"""A clip's loop-closure fields in ``eval.csv`` (on its last frame's row)."""


def write_outputs(doc: dict, out: Path) -> None:
    """``eval.json`` and ``eval.csv`` in ``out`` (atomically)."""
    write_json(out / "eval.json", doc)
    with atomic_path(out / "eval.csv") as tmp:
        tmp.write_text(csv_text(doc))


def csv_text(doc: dict) -> str:
    """One row per (clip, frame) with every per-frame field, then the loop-closure fields
    (:data:`CSV_LOOP_FIELDS`, a clip's ``loop``) on the clip's last frame, the one they score."""
    fields: list[str] = []
    for c in doc["clips"]:
        fields += [k for k in c["per_frame"] if k not in fields]
    loop_fields = [k for k in CSV_LOOP_FIELDS if any(k in c.get("loop", {}) for c in doc["clips"])]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["clip"] + fields + loop_fields)
    for c in doc["clips"]:
        pf, loop = c["per_frame"], c.get("loop", {})
        for t in range(c["frames"]):
            last = [_csv_value(loop.get(k)) if t == c["frames"] - 1 else "" for k in loop_fields]
            w.writerow([c["name"]] + ["" if k not in pf or pf[k][t] is None else pf[k][t] for k in fields] + last)
    return buf.getvalue()


def _csv_value(v):
    """A CSV cell: None empty, a bool 1 / 0."""
    return "" if v is None else int(v) if isinstance(v, bool) else v


def shown_fields(keys) -> list[str]:
    return [f for f in TABLE_FIELDS if f in keys]


def _fmt(v, field: str = "") -> str:
    """A table cell: None as "-", counts (``*_frames``) without trailing zeros, fractions to 4 places, dB to 2."""
    if v is None:
        return "-"
    if field.endswith("_frames"):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    return f"{v:.4f}" if abs(v) < 1.5 else f"{v:.2f}"


def recon_table(doc: dict):
    """A rich Table: one row per metric (per region), one column per clip (means over frames 1..),
    and the aggregate over clips with its 95 % interval (metrics as rows so it fits a terminal)."""
    fields = shown_fields(doc["aggregate"])
    t = Table(title="mirage eval recon: means over frames 1..N-1, then over clips")
    t.add_column("metric", no_wrap=True)
    for c in doc["clips"]:
        # a narrow terminal folds a clip's name over lines (split at '-' first) rather than cutting
        # it to "room-o…": clips named alike must stay apart
        t.add_column(escape(c["name"]).replace("-", "-\n"), justify="right", overflow="fold")
    t.add_column("mean", justify="right")
    t.add_column("95 % interval", justify="right", no_wrap=True)
    agg = doc["aggregate"]
    t.add_row("seconds", *[f"{c['seconds']:.1f}" for c in doc["clips"]], f"{sum(c['seconds'] for c in doc['clips']):.1f}", "")
    for f in fields:
        ci = agg[f]["ci95"]
        t.add_row(f, *[_fmt(c["means"].get(f), f) for c in doc["clips"]], _fmt(agg[f]["mean"], f),
                  "-" if ci is None else f"{_fmt(ci[0], f)} .. {_fmt(ci[1], f)}")
    return t


def loop_table(scores):
    """A rich Table of :class:`~mirage_cli.eval.loop.LoopScore` records: one row per field, one
    column per run (fields as rows so that it fits a terminal, as :func:`recon_table`)."""
    t = Table(title="mirage eval loop: last frame vs first; final memory vs input-only memory (input camera)")
    t.add_column("", no_wrap=True)
    for s in scores:
        t.add_column(escape(s.run_dir).replace("/", "/\n"), justify="right", overflow="fold")
    rows = (("closed", lambda s: "yes" if s.loop_closed else "no"),
            ("rotation gap (deg)", lambda s: f"{s.rotation_deg:.3f}"),
            ("translation gap (ref. depths)", lambda s: f"{s.translation:.4f}"),
            ("loop_psnr", lambda s: _fmt(s.loop_psnr)),
            ("loop_memory_psnr", lambda s: _fmt(s.loop_memory_psnr)),
            ("loop_memory_changed", lambda s: _fmt(s.loop_memory_changed)),
            ("input covered", lambda s: _fmt(s.input_covered)),
            ("frames from", lambda s: s.frames_from),
            ("colours", lambda s: s.colours))
    for name, cell in rows:
        t.add_row(name, *[cell(s) for s in scores])
    return t


def _agg_cell(a: dict) -> str:
    if a["ci95"] is None:
        return _fmt(a["mean"])
    return f"{_fmt(a['mean'])} [{_fmt(a['ci95'][0])}, {_fmt(a['ci95'][1])}]"


def markdown_table(doc: dict, fields: tuple[str, ...] = ("psnr_all", "ssim_all", "psnr_memory", "ssim_memory",
                                                         "psnr_revisit", "read_psnr_known", "follow_psnr", "loop_psnr",
                                                         "loop_memory_psnr", "loop_memory_changed")) -> str:
    """The docs' table (docs/eval.md): one row per clip plus the aggregate (seconds and metrics)."""
    fields = tuple(f for f in fields if f in doc["aggregate"])
    lines = ["| clip | frames | seconds | " + " | ".join(fields) + " |", "|---" * (3 + len(fields)) + "|"]
    for c in doc["clips"]:
        lines.append(f"| {c['name']} | {c['frames']} | {c['seconds']:.1f} | "
                     + " | ".join(_fmt(c["means"].get(f)) for f in fields) + " |")
    agg = doc["aggregate"]
    lines.append(f"| **mean [95 % CI]** | | {sum(c['seconds'] for c in doc['clips']):.1f} | "
                 + " | ".join(_agg_cell(agg[f]) for f in fields) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ compare
def read_eval(path: Path) -> dict:
    """An ``eval.json`` (one line on anything else)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise MirageError(f"{path}: not a readable eval.json ({e.__class__.__name__})") from e
    if not isinstance(doc, dict) or doc.get("format") != "mirage.eval":
        raise MirageError(f"{path}: not a mirage eval.json (format is not 'mirage.eval')")
    return doc


def compare(docs: list[dict], labels: list[str]) -> dict:
    """Differences of each run's aggregates from the first run's, paired over shared clips.

    A difference is the mean over the clips both runs scored (same name) of the per-clip
    difference, so runs over different clip sets are compared on what they share; only with no
    clip in common is it the difference of the two aggregates. It exceeds the spread when its 95 %
    interval excludes 0 (two or more shared clips), or with no clip in common when the two runs'
    intervals do not overlap; else ``exceeds`` is None (no spread to judge by).

    Returns ``{"labels", "fields", "rows": [{field, values: [mean per run], diffs: [None, d1, ...],
    exceeds: [None, bool or None, ...], paired: [None, shared clips]}], "notes": [line, ...]}``.
    """
    if len(docs) < 2:
        raise MirageError("eval compare: give at least two eval.json files")
    keys = set(docs[0]["aggregate"])
    for d in docs[1:]:
        keys &= set(d["aggregate"])
    rows = []
    for f in shown_fields(keys):
        base = docs[0]["aggregate"][f]
        row: dict[str, Any] = {"field": f, "values": [d["aggregate"][f]["mean"] for d in docs], "diffs": [None],
                               "exceeds": [None], "paired": [None]}  # JSON: a list per key, one entry per run
        for d in docs[1:]:
            other = d["aggregate"][f]
            pairs = _paired(docs[0], d, f)
            if pairs:
                diffs = [b - a for a, b in pairs]
                diff = sum(diffs) / len(diffs)
                ci = interval(diffs)["ci95"]
                exceeds = None if ci is None else (ci[0] > 0 or ci[1] < 0)
            else:
                diff = other["mean"] - base["mean"]
                exceeds = (other["ci95"][0] > base["ci95"][1] or other["ci95"][1] < base["ci95"][0]
                           if base["ci95"] and other["ci95"] else None)
            row["diffs"].append(round(diff, 6))
            row["exceeds"].append(exceeds)
            row["paired"].append(len(pairs))
        rows.append(row)
    return {"labels": labels, "fields": [r["field"] for r in rows], "rows": rows, "notes": _compare_notes(docs, labels, rows)}


def _compare_notes(docs: list[dict], labels: list[str], rows: list[dict]) -> list[str]:
    """One line per later run whose clips differ from the first run's, and one where no difference
    could be judged against a spread (so no ``*`` can appear in its column)."""
    first = {c["name"] for c in docs[0]["clips"]}
    notes = []
    for i, (d, label) in enumerate(zip(docs[1:], labels[1:]), start=1):
        names = {c["name"] for c in d["clips"]}
        shared = len(first & names)
        if names != first:
            what = (f"differences are over the {shared} shared clip{'s' if shared != 1 else ''}" if shared
                    else "no clip in common: differences are of the two means over different clips")
            notes.append(f"{label} has {len(names)} clips, {labels[0]} {len(first)}; {what} "
                         "(the value columns are each run's mean over its own clips)")
        if rows and all(r["exceeds"][i] is None for r in rows):
            notes.append(f"{label}: too few clips for a spread (2 needed), so no difference is marked *")
    return notes


def _paired(a: dict, b: dict, field: str) -> list[tuple[float, float]]:
    """Per-clip means of ``field`` for the clips both runs scored (by name)."""
    bm = {c["name"]: c["means"].get(field) for c in b["clips"]}
    return [(c["means"][field], bm[c["name"]]) for c in a["clips"]
            if c["means"].get(field) is not None and bm.get(c["name"]) is not None]


def compare_table(result: dict):
    """A rich Table of :func:`compare`: value per run, and per later run its difference (bold when
    it exceeds the clip-to-clip spread)."""
    labels = result["labels"]
    t = Table(title=f"mirage eval compare (differences from {escape(labels[0])}; * = exceeds the clip-to-clip spread)")
    t.add_column("metric")
    for i, lab in enumerate(labels):
        t.add_column(escape(lab), justify="right")
        if i:
            t.add_column("diff", justify="right")
    for r in result["rows"]:
        cells = [r["field"], _fmt(r["values"][0])]
        for i in range(1, len(labels)):
            mark = " *" if r["exceeds"][i] else ""
            cells += [_fmt(r["values"][i]), f"{r['diffs'][i]:+.4f}{mark}"]
        t.add_row(*cells)
    return t
