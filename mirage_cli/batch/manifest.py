"""Batch manifests: one ``mirage generate`` run per row, JSONL or CSV (detected by content).

A row has ``image`` and ``traj`` (a file or a preset name), optionally ``id``, and any other
``mirage generate`` option by its long name (``frames``, ``seed``, ``negative-prompt`` or
``negative_prompt``, ...). Relative paths (``image``, ``traj`` when such a file exists, ``depth``
when it is a file, ``memory``) are relative to the manifest's directory. A row without ``id`` gets
``<image stem>-<traj stem>``.

Every row is validated before anything runs (:func:`load_manifest`): all problems are collected,
one line per bad row (``manifest: row N, field F: problem``), and raised as one MirageError.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..errors import MirageError
from ..pipeline.config import GenerateConfig, check_config, traj_stem

# Options a row may not set: the batch decides where each run goes and never overwrites silently.
BATCH_OWNED = ("out", "overwrite")
PATH_FIELDS = ("image", "depth", "memory")  # relative to the manifest (depth: unless prior/model)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a safe directory name
_TYPES = {f.name: f.type for f in fields(GenerateConfig)}


@dataclass(frozen=True)
class Job:
    """One manifest row, validated: its id (the run directory's name), row number (1-based, data
    rows), and the generate options (paths absolute, ``out`` = ``DIR/<id>`` filled in by the batch)."""

    id: str
    row: int
    config: GenerateConfig


def read_rows(path: Path) -> list[dict]:
    """The manifest's rows as dicts of raw values. JSONL when the first non-blank character is
    ``{``, else CSV with a header row. Blank lines (JSONL) and empty cells (CSV) are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MirageError(f"{path}: cannot read the manifest ({e})") from e
    if not text.strip():
        raise MirageError(f"{path}: the manifest is empty")
    if text.lstrip().startswith("{"):
        rows = []
        for n, line in enumerate(l for l in text.splitlines() if l.strip()):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MirageError(f"{path}: row {n + 1}: not a JSON object ({e.msg})") from e
            if not isinstance(row, dict):
                raise MirageError(f"{path}: row {n + 1}: not a JSON object")
            rows.append(row)
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
        raise MirageError(f"{path}: a CSV manifest needs a header row with at least image,traj")
    return [{k.strip(): v.strip() for k, v in r.items() if k and v is not None and v.strip() != ""} for r in reader]


def load_manifest(path: Path | str, out: Path | None = None) -> list[Job]:
    """Read and validate every row of the manifest; raise one MirageError listing every bad row.

    Args:
        path: the manifest file. out: the batch directory (each job's ``out`` becomes ``out/<id>``).
    """
    path = Path(path)
    base = path.resolve().parent
    jobs, problems, seen = [], [], {}
    for n, raw in enumerate(read_rows(path), start=1):
        try:
            job = _row_job(raw, n, base, out)
        except _RowError as e:
            problems.append(f"{path}: row {n}, field '{e.field}': {e.problem}")
            continue
        if job.id in seen:
            problems.append(f"{path}: row {n}, field 'id': duplicate id '{job.id}' (also row {seen[job.id]})")
            continue
        seen[job.id] = n
        jobs.append(job)
    if problems:
        raise MirageError("\n".join(problems))
    if not jobs:
        raise MirageError(f"{path}: the manifest has no rows")
    return jobs


class _RowError(Exception):
    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def _row_job(raw: dict, n: int, base: Path, out: Path | None) -> Job:
    """One row -> Job, or _RowError naming the first bad field."""
    row = {str(k).strip().replace("-", "_"): v for k, v in raw.items()}
    job_id = row.pop("id", None)
    values = {}
    for key, value in row.items():
        if value is None:  # JSON null: the option's default, like an empty CSV cell
            continue
        if key in BATCH_OWNED:
            raise _RowError(key, "is set by `mirage batch` (DIR/<id>), not per row")
        if key not in _TYPES:
            raise _RowError(key, "unknown option (use a `mirage generate` option's long name)")
        values[key] = _convert(key, value)
    for key in ("image", "traj"):
        if not values.get(key):
            raise _RowError(key, "is required")
    values["image"] = _existing(base, "image", values["image"])
    rel = base / values["traj"]
    values["traj"] = str(rel) if rel.is_file() else values["traj"]
    if values.get("depth") not in (None, "prior", "model"):
        values["depth"] = _existing(base, "depth", values["depth"])
    if values.get("memory"):
        values["memory"] = _existing(base, "memory", values["memory"])
    job_id = str(job_id) if job_id not in (None, "") else f"{Path(values['image']).stem}-{traj_stem(values['traj'])}"
    if not ID_PATTERN.match(job_id):
        raise _RowError("id", f"'{job_id}' is not a usable directory name (letters, digits, . _ -; at most 128)")
    cfg = GenerateConfig(**values)
    if out is not None:
        cfg = replace(cfg, out=str(Path(out).resolve() / job_id))
    try:
        check_config(cfg)
        _check_traj(cfg.traj)
    except MirageError as e:
        field, _, problem = str(e).partition(": ")
        raise _RowError(field.lstrip("-").replace("-", "_") if field.startswith("--") else "traj", problem or str(e)) from e
    return Job(job_id, n, cfg)


def _existing(base: Path, field: str, value: str) -> str:
    p = base / value
    if not p.is_file():
        raise _RowError(field, f"file not found ({p})")
    return str(p)


def _check_traj(traj: str) -> None:
    """A trajectory that does not load is a bad row (a file or a preset; cheap to load)."""
    from ..trajectories import load_trajectory

    load_trajectory(traj)


def _convert(key: str, value):
    """A raw value (JSON value or CSV text) as the type ``GenerateConfig.<key>`` takes."""
    kind = _TYPES[key].replace(" | None", "")
    if kind == "str":
        if isinstance(value, (dict, list, bool)) or value is None:
            raise _RowError(key, f"must be text (got {json.dumps(value)})")
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise _RowError(key, f"must be true or false (got {value!r})")
    try:
        if isinstance(value, bool):
            raise ValueError
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        return float(value)
    except (TypeError, ValueError):
        raise _RowError(key, f"must be {'an integer' if kind == 'int' else 'a number'} (got {value!r})") from None
