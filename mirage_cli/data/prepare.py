"""``mirage data prepare``: annotated clips -> training samples -> tar shards, one clip per batch job.

Every clip is one job of the batch machinery (:mod:`mirage_cli.batch`: in-process, ``--workers N``
processes or ``--ray`` actors, each keeping its models loaded, with the same skip / retry semantics);
the job's step (:func:`prepare_job`) reads and checks the clip (:mod:`.clips`), builds its samples
(:mod:`.samples`) and writes them to ``OUT/parts/<clip>.tar``, then ``OUT/parts/<clip>.json`` (its
status; its presence marks the clip done). One more job writes ``dataset.safetensors`` (the empty
prompt's embedding and the white-video latents). When every job has finished, the driver packs the
new parts, in clip-name order, into shards appended after the existing ones and rewrites
``index.json`` and ``prepare.json``; packed parts are removed.

So the same clips give the same shards whatever the workers, a rerun skips the clips already packed
or written (an interrupted run resumes), a bad clip is recorded (``prepare.json``: one line naming
the file, the field and the problem) and the others go on; bad clips are checked again on a rerun.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..backends.mirage import WHITE
from ..batch.manifest import Job, Step
from ..errors import MirageError
from ..io import write_json
from ..models.registry import resolve_model
from .captions import caption_samples, check_caption_model
from .clips import ClipRef, find_clips, read_caption_map, read_clip
from .models import data_models
from .samples import LATENT_DTYPE, TEXT_DTYPE, SampleSpec, build_samples
from .shards import (
    DATASET_FILE,
    INDEX_FILE,
    INDEX_FORMAT,
    INDEX_VERSION,
    pack_shards,
    read_index,
    sample_members,
    save_extras,
    write_index,
    write_tar,
)

PREPARE_FORMAT = "mirage.data-prepare"
PARTS = "parts"
EXTRAS_JOB = "_dataset"
DEFAULT_SIZE = (1280, 704)
DEFAULT_SHARD_SAMPLES = 100  # ~0.8 GB shards at the full size (about 8 MB per sample)
WHITE_PRECEDING = (0, 1, 2)  # white-video latents for target + 0, 1, 2 preceding latent frames
SKIP_KINDS = (  # (kind, pattern in the one-line reason), first match wins
    ("missing member", r": missing"), ("frame count", r"disagree on the frame count|masks for"),
    ("too short", r"fps give|below the training rate"), ("too small", r"smaller than the training size"),
    ("bad depth", r"NaN and|depth is|no depth channel"), ("non-rigid pose", r"not a rigid"),
    ("intrinsics outside the image", r"outside the"), ("bad mask", r"mask"),
    ("unreadable file", r"unreadable|could not be decoded"),
    ("unexpected member", r"unexpected (member|key)"), ("caption", r"caption"),
)


@dataclass(frozen=True)
class PrepareOptions:
    """What ``mirage data prepare`` does (stored in ``index.json``; a rerun into the same OUT must match)."""

    model: str
    size: tuple[int, int] = DEFAULT_SIZE
    frames: int = 81
    fps: float = 16.0
    samples_per_clip: int = 1
    seed: int = 0
    text: bool = True
    captions: str | None = None
    caption_model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    shard_samples: int = DEFAULT_SHARD_SAMPLES
    spec: SampleSpec = field(default_factory=SampleSpec)

    def recorded(self) -> dict:
        """The options that decide the samples (compared with an earlier run's)."""
        d = asdict(self)
        d["size"] = list(self.size)
        for k in ("device", "dtype", "shard_samples"):
            d.pop(k)
        return d


def check_options(opts: PrepareOptions) -> None:
    """Every option checked before anything is read or written (one line each)."""
    W, H = opts.size
    if W < 32 or H < 32 or W % 32 or H % 32:
        raise MirageError(f"--size {W}x{H}: sides must be multiples of 32 pixels (Wan2.2 VAE 16x, patch 2)")
    spec = opts.spec
    if opts.frames < spec.preceding + spec.target:
        raise MirageError(f"--frames {opts.frames}: must be >= preceding + target frames = {spec.preceding + spec.target}")
    if not opts.fps > 0:
        raise MirageError(f"--fps: must be > 0 (got {opts.fps})")
    if opts.samples_per_clip < 1:
        raise MirageError(f"--samples-per-clip: must be >= 1 (got {opts.samples_per_clip})")
    if opts.shard_samples < 1:
        raise MirageError(f"--shard-samples: must be >= 1 (got {opts.shard_samples})")
    if not 0 <= spec.max_references <= 64:
        raise MirageError(f"--max-references: must be 0..64 (got {spec.max_references})")


@dataclass
class PrepareResult:
    """The closing summary (also in ``prepare.json``)."""

    clips: int
    ok: int
    skipped: dict[str, int]
    failed: int
    samples: int
    shards: int
    bytes: int
    seconds: float
    clips_per_minute: float | None
    record: dict


def prepare(sources: list[str], out: Path | str, opts: PrepareOptions, batch=None,
            on_update: Callable | None = None, warn: Callable[[str], None] = print) -> PrepareResult:
    """Prepare every clip under ``sources`` into shards in ``out`` (see the module docstring).

    Args:
        batch: :class:`~mirage_cli.batch.runner.BatchOptions` (workers / Ray / retries; its ``out`` is
            replaced by ``out/parts``), or None (in-process).
        on_update: called with the batch record whenever a job changes state (a progress bar).
        warn: where warnings go.

    Raises:
        MirageError: bad options, sources, model or caption file (before anything is written); an
            earlier run in ``out`` with other options; no sample written at all (after recording why).
    """
    from ..batch.runner import BatchOptions, run_jobs

    t0 = time.perf_counter()
    check_options(opts)
    opts = replace(opts, model=str(Path(opts.model).resolve()) if Path(opts.model).is_dir() else opts.model,
                   captions=str(Path(opts.captions).resolve()) if opts.captions else None)
    out = Path(out)
    refs = find_clips(sources)
    captions = read_caption_map(Path(opts.captions)) if opts.captions else {}
    resolve_model(opts.model, ["vae", "tokenizer", "text_encoder"] if opts.text else ["vae"])
    if opts.caption_model:
        check_caption_model(opts.caption_model)
    index = _open_out(out, opts)
    packed = {c for s in index["shards"] for c in s["clips"]}
    parts = out / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    for ref in refs:  # bad clips are checked again (their files may have been fixed)
        status = parts / f"{ref.name}.json"
        if status.exists() and json.loads(status.read_text()).get("status") != "ok":
            status.unlink()
    todo = [r for r in refs if r.name not in packed]
    args = {"options": _plain(opts), "parts": str(parts)}
    jobs = [Job(r.name, n + 1, None, then=Step("mirage_cli.data.prepare:prepare_job", str(parts / f"{r.name}.json"),
                                                {**args, "clip": asdict(r), "caption": _mapped(captions, r)}))
            for n, r in enumerate(todo)]
    if not (out / DATASET_FILE).exists():
        jobs.append(Job(EXTRAS_JOB, 0, None, then=Step("mirage_cli.data.prepare:extras_job", str(out / DATASET_FILE), args)))
    bopts = replace(batch or BatchOptions(out=str(parts)), out=str(parts))
    record = run_jobs(jobs, bopts, " ".join(map(str, sources)), on_update or (lambda r: None)) if jobs else None

    statuses: dict[str, dict[str, Any]] = {}  # clip name -> its status record (JSON)
    for r in refs:
        path = parts / f"{r.name}.json"
        if r.name in packed:
            statuses[r.name] = {"status": "ok", "folder": r.folder, "packed": True}
        elif path.exists():
            statuses[r.name] = json.loads(path.read_text())
        else:
            rec = record.jobs.get(r.name) if record else None
            statuses[r.name] = {"status": "failed", "folder": r.folder,
                                "reason": (rec.error if rec else None) or "did not finish"}
    new = [(r.name, parts / f"{r.name}.tar") for r in refs
           if r.name not in packed and statuses[r.name]["status"] == "ok" and statuses[r.name].get("samples")]
    shards = pack_shards(new, out, len(index["shards"]), opts.shard_samples)
    for s in shards:
        for c in s["clips"]:
            statuses[c]["shard"] = s["file"]
    index["shards"] += shards
    index["samples"] = sum(s["samples"] for s in index["shards"])
    write_index(out, index)
    for name, tar in new:  # packed: the index holds them now
        tar.unlink(missing_ok=True)
        (parts / f"{name}.json").unlink(missing_ok=True)
    if record is not None and record.jobs.get(EXTRAS_JOB) and record.jobs[EXTRAS_JOB].status == "failed":
        raise MirageError(f"{out / DATASET_FILE}: could not be written ({record.jobs[EXTRAS_JOB].error})")

    seconds = time.perf_counter() - t0
    bad = {n: s for n, s in statuses.items() if s["status"] == "bad"}
    kinds: dict[str, int] = {}
    for s in bad.values():
        kinds[skip_kind(s["reason"])] = kinds.get(skip_kind(s["reason"]), 0) + 1
    ok_now = [n for n, _ in new]
    result = PrepareResult(
        clips=len(refs), ok=sum(s["status"] == "ok" for s in statuses.values()), skipped=kinds,
        failed=sum(s["status"] == "failed" for s in statuses.values()), samples=index["samples"],
        shards=len(index["shards"]), bytes=sum(s["bytes"] for s in index["shards"]), seconds=round(seconds, 3),
        clips_per_minute=round(60 * len(ok_now) / seconds, 3) if ok_now else None, record={})
    doc = {"format": PREPARE_FORMAT, "version": 1, "sources": [str(s) for s in sources], "out": str(out.resolve()),
           "options": opts.recorded(), "workers": record.workers if record else "none needed",
           "summary": {k: v for k, v in asdict(result).items() if k != "record"},
           "this_run": {"clips_prepared": len(ok_now), "seconds": round(seconds, 3)}, "clips": statuses}
    write_json(out / "prepare.json", doc)
    result.record = doc
    for name, s in bad.items():
        warn(f"skipped {name}: {s['reason']}")
    for name, s in statuses.items():
        if s["status"] == "failed":
            warn(f"failed {name}: {s['reason']}")
    if index["samples"] == 0:
        raise MirageError(f"{out}: no sample written ({len(bad)} bad clips, {result.failed} failed; see "
                          f"{out / 'prepare.json'})")
    return result


def skip_kind(reason: str) -> str:
    """The kind of a bad clip's one-line reason, for the summary (``SKIP_KINDS``)."""
    return next((k for k, pat in SKIP_KINDS if re.search(pat, reason)), "other")


def _mapped(captions: dict[str, str], ref: ClipRef) -> str | None:
    for k in (ref.name, ref.folder, Path(ref.folder).name):
        if k in captions:
            return captions[k]
    return None


def _plain(opts: PrepareOptions) -> dict:
    d = asdict(opts)
    d["size"] = list(opts.size)
    return d


def _options(d: dict) -> PrepareOptions:
    d = dict(d)
    d["size"] = tuple(d["size"])
    d["spec"] = SampleSpec(**d["spec"])
    return PrepareOptions(**d)


def _open_out(out: Path, opts: PrepareOptions) -> dict:
    """The index of ``out`` (a new, empty one if there is none); an earlier run with other options is refused."""
    if (out / INDEX_FILE).exists():
        index = read_index(out)
        if index.get("options") != opts.recorded():
            was = index.get("options") or {}
            diff = next((k for k in opts.recorded() if was.get(k) != opts.recorded()[k]), "options")
            raise MirageError(f"{out}: holds shards made with other options ({diff}: {was.get(diff)!r} there, "
                              f"{opts.recorded().get(diff)!r} now); use another --out")
        return index
    if out.exists() and any(p for p in out.iterdir() if p.name != PARTS):
        raise MirageError(f"{out}: exists and is not a shard folder of `mirage data prepare` (choose a new --out)")
    return {"format": INDEX_FORMAT, "version": INDEX_VERSION, "options": opts.recorded(), "samples": 0, "shards": []}


# ------------------------------------------------------------------------------------ the jobs
def prepare_job(job, loaders=None) -> None:
    """The step of a clip's job (run by a worker): read and check the clip, build its samples, write
    ``parts/<clip>.tar`` then ``parts/<clip>.json``. A bad clip writes its reason instead."""
    args = job.then.args
    opts = _options(args["options"])
    ref = ClipRef(**args["clip"])
    parts = Path(args["parts"])
    t0 = time.perf_counter()
    models = data_models(opts.model, opts.device, opts.dtype, opts.text)  # outside the try: not the clip's fault
    try:
        clip = read_clip(ref, opts.size, opts.frames, opts.fps, opts.seed)
        caption = args.get("caption")
        source: str | None = "--captions"  # where the caption came from
        if caption is None and clip.caption is not None:
            caption, source = clip.caption, clip.caption_source
        if caption is None and opts.caption_model is None:
            raise MirageError(f"{ref.folder}: caption: missing (give clip.txt, --captions FILE or --caption-model)")
        samples = build_samples(clip, models, opts.spec, opts.samples_per_clip, opts.seed, caption or "",
                                source or "", text=opts.text,
                                captioner=caption_samples(opts.caption_model, opts.seed, opts.device, opts.fps, ref.name)
                                if caption is None else None)
        members = [m for s in samples for m in sample_members(s.key, s.tensors, s.meta, s.caption)]
        write_tar(parts / f"{ref.name}.tar", members)
        status = {"status": "ok", "folder": ref.folder, "samples": len(samples),
                  "references": [len(s.meta["references"]) for s in samples]}
    except MirageError as e:
        status = {"status": "bad", "folder": ref.folder, "reason": str(e)}
    status["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(parts / f"{ref.name}.json", status)


def extras_job(job, loaders=None) -> None:
    """The dataset-wide tensors (``dataset.safetensors``): the empty prompt's embedding and the white-video
    latents for the target plus 0..2 preceding latent frames, encoded as the mirage backend builds its
    VACE context (:meth:`~mirage_cli.models.wan_vae.WanVAECodec.constant_latent`, level ``WHITE``)."""
    opts = _options(job.then.args["options"])
    models = data_models(opts.model, opts.device, opts.dtype, opts.text)
    codec = models.codec
    W, H = opts.size
    tf = codec.temporal_factor
    t_lat = 1 + (opts.spec.target - 1) // tf
    white = {t_lat + p: codec.constant_latent(WHITE, 1 + tf * (t_lat + p - 1), H, W).to(LATENT_DTYPE)
             for p in WHITE_PRECEDING}
    empty = models.text.embed("").to(TEXT_DTYPE) if models.text is not None else None
    save_extras(Path(job.then.output), empty, white)
