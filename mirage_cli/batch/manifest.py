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
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from ..errors import MirageError
from ..pipeline.config import GenerateConfig, check_config, read_prompt_file, traj_stem

# Options a row may not set: the batch decides where each run goes and never overwrites silently.
BATCH_OWNED = ("out", "overwrite")
PATH_FIELDS = ("image", "depth", "memory")  # relative to the manifest (depth: unless prior/model)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a safe directory name
_TYPES = {f.name: f.type for f in fields(GenerateConfig)}


@dataclass(frozen=True)
class Step:
    """Work a worker does once a job's run is done, in the same worker (its models still loaded).

    ``call`` names a function ``"package.module:function"`` taking ``(job, loaders)`` (``mirage
    eval`` scores the run with it); ``output`` is the file the step writes last: the job counts as
    finished (skipped on a rerun) only when its run is done and this file exists. ``args``: plain
    data for the step (it crosses processes)."""

    call: str
    output: str
    args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One manifest row, validated: its id (the run directory's name), row number (1-based, data
    rows), and the generate options (paths absolute, ``out`` = ``DIR/<id>`` filled in by the batch);
    ``then``: a step to run after the run (None for ``mirage batch``). A job without ``config`` is
    its step alone (``mirage data prepare``: one clip per job, no generate run)."""

    id: str
    row: int
    config: GenerateConfig | None
    then: Step | None = None

    @property
    def step(self) -> Step:
        """``then``, for the code of a step (it runs only for a job that has one); ValueError without."""
        if self.then is None:
            raise ValueError(f"job {self.id}: has no step")
        return self.then

    @property
    def run_config(self) -> GenerateConfig:
        """``config``, for code that runs only for a job with a run; ValueError for a step-only job."""
        if self.config is None:
            raise ValueError(f"job {self.id}: is a step alone (no generate run)")
        return self.config

    @property
    def out(self) -> str:
        """``config.out``, the run directory (the batch fills it in); ValueError for a step-only job."""
        if self.run_config.out is None:
            raise ValueError(f"job {self.id}: has no run directory")
        return self.run_config.out


def read_rows(path: Path, required: tuple[str, ...] = ("image", "traj")) -> list[dict | RowError]:
    """The manifest's rows as dicts of raw values. JSONL when the first non-blank character is
    ``{``, else CSV with a header row (which must name ``required[0]``). Blank lines (JSONL) and
    empty cells (CSV) are skipped. A JSONL line that is not a JSON object stays in the list as a
    :class:`RowError`, so that :func:`validate_rows` reports it with every other bad row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise MirageError(f"{path}: cannot read the manifest ({e})") from e
    if not text.strip():
        raise MirageError(f"{path}: the manifest is empty")
    if text.lstrip().startswith("{"):
        rows = []
        for line in (s for s in text.splitlines() if s.strip()):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                row = RowError("", f"not a JSON object ({e.msg})")
            if not isinstance(row, (dict, RowError)):
                row = RowError("", "not a JSON object")
            rows.append(row)
        return rows
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or required[0] not in [f.strip() for f in reader.fieldnames]:
        raise MirageError(f"{path}: a CSV manifest needs a header row with at least {','.join(required)}")
    return [{k.strip(): v.strip() for k, v in r.items() if k and v is not None and v.strip() != ""} for r in reader]


def load_manifest(path: Path | str, out: Path | None = None) -> list[Job]:
    """Read and validate every row of the manifest; raise one MirageError listing every bad row.

    Args:
        path: the manifest file. out: the batch directory (each job's ``out`` becomes ``out/<id>``).
    """
    path = Path(path)
    base = path.resolve().parent
    return validate_rows(path, read_rows(path), lambda raw, n: _row_job(raw, n, base, out))


def validate_rows(path: Path, rows: list[dict | RowError], build: Callable[[dict, int], Job]) -> list[Job]:
    """``build(row, n)`` for every row (``n`` 1-based); one MirageError with a line per bad row
    (a :class:`RowError`, or an id used twice) once every row was tried."""
    jobs: list[Job] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(rows, start=1):
        if isinstance(raw, RowError):  # a line read_rows could not parse
            problems.append(f"{path}: row {n}: {raw.problem}")
            continue
        try:
            job = build(raw, n)
        except RowError as e:
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


class RowError(Exception):
    """One bad field of one manifest row (collected by :func:`validate_rows`)."""

    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def row_options(raw: dict, owned: tuple[str, ...] = BATCH_OWNED, extra: tuple[str, ...] = ()) -> tuple[str | None, dict]:
    """A raw row -> ``(id or None, values)``: keys normalised (``negative-prompt`` ->
    ``negative_prompt``), JSON nulls dropped, every generate option converted to its type; keys in
    ``extra`` (not generate options) are kept as they are. RowError for an ``owned`` or unknown key."""
    row = {str(k).strip().replace("-", "_"): v for k, v in raw.items()}
    job_id = row.pop("id", None)
    values = {}
    for key, value in row.items():
        if value is None:  # JSON null: the option's default, like an empty CSV cell
            continue
        if key in owned:
            raise RowError(key, "is set by the command for every row, not per row")
        if key in extra:
            values[key] = value
            continue
        if key not in _TYPES:
            raise RowError(key, "unknown option (use a `mirage generate` option's long name)")
        values[key] = _convert(key, value)
    return (str(job_id) if job_id not in (None, "") else None), values


def check_id(job_id: str) -> str:
    if not ID_PATTERN.match(job_id):
        raise RowError("id", f"'{job_id}' is not a usable directory name (letters, digits, . _ -; at most 128)")
    return job_id


def check_row_config(cfg: GenerateConfig) -> None:
    """``check_config`` and the trajectory, as a RowError naming the option."""
    try:
        check_config(cfg)
        assert cfg.traj is not None  # check_config refuses a config without one
        _check_traj(cfg.traj)
    except MirageError as e:
        field, _, problem = str(e).partition(": ")
        raise RowError(field.lstrip("-").replace("-", "_") if field.startswith("--") else "traj", problem or str(e)) from e


def _row_job(raw: dict, n: int, base: Path, out: Path | None) -> Job:
    """One row -> Job, or RowError naming the first bad field."""
    job_id, values = row_options(raw, extra=("prompt_file",))
    if values.get("prompt_file") is not None:  # the CLI's --prompt-file: one prompt per chunk
        if values.get("prompts") is not None:
            raise RowError("prompt_file", "give prompt_file or prompts, not both")
        try:
            values["prompts"] = list(read_prompt_file(existing(base, "prompt_file", str(values.pop("prompt_file")))))
        except MirageError as e:
            raise RowError("prompt_file", str(e)) from None
    values.pop("prompt_file", None)
    for key in ("image", "traj"):
        if not values.get(key):
            raise RowError(key, "is required")
    values["image"] = existing(base, "image", values["image"])
    rel = base / values["traj"]
    values["traj"] = str(rel) if rel.is_file() else values["traj"]
    if values.get("depth") not in (None, "prior", "model"):
        values["depth"] = existing(base, "depth", values["depth"])
    if values.get("memory"):
        values["memory"] = existing(base, "memory", values["memory"])
    job_id = check_id(job_id or f"{Path(values['image']).stem}-{traj_stem(values['traj'])}")
    cfg = GenerateConfig(**values)
    if out is not None:
        cfg = replace(cfg, out=str(Path(out).resolve() / job_id))
    check_row_config(cfg)
    return Job(job_id, n, cfg)


def existing(base: Path, field: str, value: str, folder: bool = False) -> str:
    """``base / value`` as text when that file (or, with ``folder``, folder) exists; else a RowError."""
    p = base / value
    if not (p.is_file() or (folder and p.is_dir())):
        raise RowError(field, f"{'file' if not folder else 'file or folder'} not found ({p})")
    return str(p)


def _check_traj(traj: str) -> None:
    """A trajectory that does not load is a bad row (a file or a preset; cheap to load)."""
    from ..trajectories import load_trajectory

    load_trajectory(traj)


def _is(kind: str, v) -> bool:
    return isinstance(v, str) if kind == "str" else isinstance(v, int) and not isinstance(v, bool)


def _convert(key: str, value):
    """A raw value (JSON value or CSV text) as the type ``GenerateConfig.<key>`` takes."""
    kind = _TYPES[key].replace(" | None", "")
    if kind.startswith("list["):  # JSON list in JSONL; a JSON list as text in a CSV cell
        item = kind[len("list["):-1]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise RowError(key, f"must be a JSON list of {item} (got {value!r})") from None
        if not isinstance(value, list) or not all(_is(item, v) for v in value):
            raise RowError(key, f"must be a list of {'texts' if item == 'str' else 'integers'} (got {json.dumps(value)})")
        return list(value)
    if kind == "str":
        if isinstance(value, (dict, list, bool)) or value is None:
            raise RowError(key, f"must be text (got {json.dumps(value)})")
        return str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise RowError(key, f"must be true or false (got {value!r})")
    try:
        if isinstance(value, bool):
            raise ValueError
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value, 10)
        return float(value)
    except (TypeError, ValueError):
        raise RowError(key, f"must be {'an integer' if kind == 'int' else 'a number'} (got {value!r})") from None
