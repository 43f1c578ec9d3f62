"""Loop closure of a finished run: does a closed path come back to what it started from?

Two comparisons, from a run directory of ``mirage generate`` (:func:`score_loop`) or from a run
``mirage eval recon`` has already reopened (:func:`score_reopened`):

- **Frames** (``loop_psnr``): the last generated frame against the first generated frame, when the
  path is closed (:func:`camera_gap`: the last camera is frame 0's within
  :data:`ROTATION_TOL_DEG` degrees of rotation and :data:`TRANSLATION_TOL` reference depths of
  translation); None otherwise. The frames are the run's 8-bit frames: decoded again from the
  kept chunk latents, exactly as the loop made them (``frames_from = "latents"``), or, for a run
  without ``--keep-latents``, decoded from ``video.mp4`` (``"video.mp4"``: H.264 noise is then part
  of the number).
- **Memory** (``loop_memory_psnr``, ``loop_memory_changed``): the final memory rendered from the
  input camera against the *input-only memory* rendered from the same camera, on the pixels the
  input-only memory covers. Both renders are :func:`~mirage_cli.memory.export.render_memory`:
  exact colours for the pixel codec, the features' pseudo-colour map for neural codecs (then the
  comparison is in pseudo-colour, ``colours`` says which). The input camera is the run's own frame
  0 (identity c2w in the run's relative frame, trajectory frame 0's intrinsics at the run's size),
  taken from the pipeline's plan (:func:`mirage_cli.pipeline.generate.run_cameras`).

The input-only memory is the run's input lifted again with its saved ``depth.npy`` and codec
(:func:`mirage_cli.pipeline.generate.input_memory`) when the run is reopened (runs with kept
latents; exact for every write policy). Without kept latents no codec is loaded: it is then the
final memory's input points (``chunk == 0``), exact for write policies ``new`` and ``append``
(which never change the input's points) in a run not started from ``--memory``; for ``replace`` /
``average`` (or ``--memory``) the memory fields are None and ``input_memory`` says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import MirageError
from ..export.run import final_memory_file, finished_record
from ..geometry.rotations import rotation_angle_deg
from ..io import read_video
from ..memory.export import render_memory
from ..memory.latent import LatentMemory
from ..memory.storage import INPUT_CHUNK
from ..pipeline.config import with_backend_defaults
from ..pipeline.rundir import chunk_latents, final_dump, video_file
from .metrics import psnr, to_float

ROTATION_TOL_DEG = 0.1
"""A path is closed when its last camera's rotation is within this angle (degrees) of frame 0's..."""
TRANSLATION_TOL = 1e-3
"""...and its centre within this distance, in units of the run's reference depth (frame 0's median depth)."""
CHANGED_ABS = 0.1
"""A memory pixel has changed when one of its RGB values (in [0, 1]) moved by more than this."""
EXACT_INPUT_POLICIES = ("new", "append")
"""Write policies that never change the input's points: chunk 0 of the final memory is the input-only memory."""
LOOP_FIELDS = ("loop_psnr", "loop_memory_psnr", "loop_memory_changed")
"""The numbers ``mirage eval recon`` adds to a clip's means."""


@dataclass(frozen=True)
class LoopScore:
    """The loop-closure score of one run.

    Attributes:
        run_dir: the run directory. frames: frames of the run's video.
        loop_closed: the last camera equals frame 0's (see :func:`camera_gap`).
        rotation_deg: rotation between the last and the first camera, degrees.
        translation: distance between their centres, in reference depths.
        loop_psnr: PSNR (dB, torchmetrics, data range 1, capped at 100 for identical frames) of the
            last generated frame against the first; None when the path is not closed.
        loop_memory_psnr: PSNR (dB) of the final memory's render from the input camera against the
            input-only memory's, on the pixels the latter covers; None when it covers none or the
            input-only memory is not available (see ``input_memory``).
        loop_memory_changed: fraction in [0, 1] of those pixels whose largest absolute RGB
            difference exceeds :data:`CHANGED_ABS`; None as ``loop_memory_psnr``.
        input_covered: fraction of the input camera's pixels the input-only memory covers (None as above).
        frames_from: ``"latents"`` (the loop's exact frames) or ``"video.mp4"`` (decoded H.264).
        input_memory: how the input-only memory was made, or why there is none.
        memory_file: the final memory read. colours: ``"exact"`` (pixel codec) or ``"pseudo-colour"``.
    """

    run_dir: str
    frames: int
    loop_closed: bool
    rotation_deg: float
    translation: float
    loop_psnr: float | None
    loop_memory_psnr: float | None
    loop_memory_changed: float | None
    input_covered: float | None
    frames_from: str
    input_memory: str
    memory_file: str
    colours: str

    def to_json(self) -> dict:
        """The record as JSON values (numbers rounded to 6 places)."""
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


# ------------------------------------------------------------------------------------ pieces
def camera_gap(cams, unit: float) -> tuple[float, float, bool]:
    """``(rotation degrees, translation in units of unit, closed)`` between the last and the first
    of ``cams`` (c2w); closed within :data:`ROTATION_TOL_DEG` and :data:`TRANSLATION_TOL`."""
    rel = cams.c2w[0, :3, :3].T @ cams.c2w[-1, :3, :3]
    rot = float(rotation_angle_deg(rel))
    trans = float((cams.centers[-1] - cams.centers[0]).norm()) / max(float(unit), 1e-12)
    return rot, trans, rot <= ROTATION_TOL_DEG and trans <= TRANSLATION_TOL


def memory_change(final, inputs, camera) -> tuple[float | None, float | None, float]:
    """``(psnr dB or None, changed fraction or None, covered fraction)``: ``final`` against
    ``inputs`` (two LatentMemory of one codec) rendered from ``camera`` (one Cameras), on the
    pixels ``inputs`` covers (None, None when it covers none)."""
    got, _ = render_memory(final, camera)
    ref, known = render_memory(inputs, camera)
    f = inputs.spatial_factor
    mask = known[0].repeat_interleave(f, 0).repeat_interleave(f, 1)
    covered = float(mask.double().mean())
    if not bool(mask.any()):
        return None, None, covered
    changed = ((got[0] - ref[0]).abs().amax(0) > CHANGED_ABS)[mask].double().mean()
    return psnr(got[0], ref[0], mask), float(changed), covered


def colour_kind(memory) -> str:
    """``"exact"`` for the pixel codec's memory, else ``"pseudo-colour"`` (see :mod:`mirage_cli.memory.export`)."""
    return "exact" if memory.codec.startswith("pixel") else "pseudo-colour"


def _score(run_dir: Path, cams, unit: float, first: np.ndarray, last: np.ndarray, frames: int, frames_from: str,
           final, inputs, input_how: str, memory_file: Path) -> LoopScore:
    """The record from its parts (``first``/``last``: ``(H, W, 3)`` uint8; ``inputs`` may be None)."""
    rot, trans, closed = camera_gap(cams, unit)
    loop = psnr(*to_float(np.stack([last, first]))) if closed else None
    mem_psnr, changed, covered = memory_change(final, inputs, cams[:1]) if inputs is not None else (None, None, None)
    return LoopScore(str(run_dir), frames, closed, rot, trans, loop, mem_psnr, changed, covered, frames_from, input_how,
                     str(memory_file), colour_kind(final))


# ------------------------------------------------------------------------------------ entry points
def score_reopened(run, inputs=None) -> LoopScore:
    """The loop score of a run rebuilt by :func:`mirage_cli.pipeline.generate.reopen` (its exact
    frames, plan cameras and final memory); ``inputs``: its :func:`~mirage_cli.pipeline.generate.input_memory`
    when the caller has it already."""
    from ..pipeline.generate import input_memory

    kept = run.video.kept
    inputs = input_memory(run) if inputs is None else inputs
    return _score(run.plan.out, run.plan.cams, run.plan.reference_depth, kept[0], kept[-1], len(kept), "latents",
                  run.memory, inputs, "re-lifted from depth.npy with the run's codec",
                  final_dump(run.plan.out))


def score_loop(run_dir: Path | str, loaders=None) -> LoopScore:
    """The loop score of the finished run in ``run_dir``.

    A run with kept chunk latents is reopened (its models are loaded, as ``mirage eval recon``
    does); any other is read without a model: cameras from its ``trajectory.json`` and
    ``run.json``, frames from ``video.mp4``, the final memory from ``cache/final.safetensors``
    (else the last chunk dump), the input-only memory from its chunk 0 (see the module docstring).

    Raises:
        MirageError: one line naming the file and the problem (not a run directory, a run not
            finished, no memory kept, no video, an unreadable file).
    """
    from ..pipeline.generate import reopen

    out = Path(run_dir)
    record = finished_record(out, "nothing to score")
    if final_dump(out).is_file() and all(chunk_latents(out, c.index).is_file() for c in record.chunk_plan):
        return score_reopened(reopen(out, loaders))
    return _score_files(out, record)


def _score_files(out: Path, record) -> LoopScore:
    """:func:`score_loop` without a model (see there)."""
    from ..pipeline.generate import run_cameras

    cfg = with_backend_defaults(record.config)
    cams, _ = run_cameras(cfg, out, (record.image.width, record.image.height), record.depth.reference_depth)
    memory_file = final_memory_file(out, len(record.chunk_plan), "a loop score needs it")
    final = LatentMemory.load(memory_file)
    video = video_file(out)
    if not video.is_file():
        raise MirageError(f"{video}: missing; the run's frames are needed (or rerun it with --keep-latents)")
    try:
        frames = read_video(video)
    except (OSError, RuntimeError, ValueError) as e:
        raise MirageError(f"{video}: not a readable video ({e.__class__.__name__})") from e
    if len(frames) != len(cams):
        raise MirageError(f"{video}: {len(frames)} frames but the run's trajectory has {len(cams)}")
    if cfg.write_policy in EXACT_INPUT_POLICIES and not cfg.memory:
        inputs, how = final.select(final.chunk == INPUT_CHUNK), "chunk 0 of the final memory"
    else:
        inputs = None
        how = ("none: " + (f"write policy {cfg.write_policy} changes the input's points" if not cfg.memory else
                           "the run started from --memory") + "; rebuilding the input memory needs the run's "
               "codec and kept latents (--keep-latents, or score it with `mirage eval recon`)")
    return _score(out, cams, record.depth.reference_depth, frames[0], frames[-1], len(frames), "video.mp4", final,
                  inputs, how, memory_file)
